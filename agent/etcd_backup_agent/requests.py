"""The typed requests the Agent serves (decoded from the socket's JSON by control/dispatch.py,
built directly by the offline commands).

The keyspace requests are in keyspace/requests.py; a restore's options are the restore's own.
Identities stay references (a path, or text a client sent) until the request reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import UsageError

Args = Mapping[str, Any]  # a request's arguments, as docs/socket-protocol.md names them


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


@dataclass(frozen=True)
class IdentityRef:
    """Where a request's age identity comes from; the text never shows in a repr."""

    file: str | None = None
    text: str | None = field(default=None, repr=False)

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> IdentityRef | None:
        """``identity_file`` / ``identity`` of a request; None when it names neither."""
        file, text = args.get("identity_file"), args.get("identity")
        if file is None and text is None:
            return None
        return cls(None if file is None else str(file), None if text is None else str(text))

    def read(self) -> tuple[str, str]:
        """(identity text, a hint to print in commands); UsageError when unreadable."""
        return read_identity({"identity_file": self.file, "identity": self.text})


@dataclass(frozen=True)
class VerifyRequest:
    backup: str
    identity: IdentityRef | None = None

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> VerifyRequest:
        return cls(str(args["backup"]), IdentityRef.from_args(args))


@dataclass(frozen=True)
class PruneRequest:
    dry_run: bool = False

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> PruneRequest:
        return cls(bool(args.get("dry_run")))


@dataclass(frozen=True)
class DrillRequest:
    backup: str = "latest"
    identity: IdentityRef | None = None  # None: [drill] identity_file

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> DrillRequest:
        return cls(str(args.get("backup", "latest")), IdentityRef.from_args(args))


@dataclass(frozen=True)
class BundleRequest:
    backup: str
    identity: IdentityRef | None = None  # bundle_extract only

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> BundleRequest:
        return cls(str(args["backup"]), IdentityRef.from_args(args))


def required(identity: IdentityRef | None) -> tuple[str, str]:
    """Read an identity the request must carry."""
    return (identity or IdentityRef()).read()
