"""Age identities of requests: a path this process reads, or text a client sent.

An identity is read when a request needs it, used, and dropped: never logged or stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import UsageError


def read_identity(args: Mapping[str, Any]) -> tuple[str, str]:
    """(identity text, a hint to print in commands) from ``identity`` or ``identity_file``."""
    text = args.get("identity")
    if isinstance(text, str) and text:
        return text, "KEY_FILE"
    path = args.get("identity_file")
    if not isinstance(path, str) or not path:
        raise UsageError("an age identity is required: identity_file (a path) or identity")
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(65536), path
    except FileNotFoundError:
        raise UsageError(f"identity file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read identity file {path}: {exc.__class__.__name__}") from None
