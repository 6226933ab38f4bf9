"""The package as an operator gets it: plain `pip install .` into a clean venv, no etcd on PATH.

Every other test runs the source tree (PYTHONPATH=agent); this one catches what only the
built package gets wrong: a subpackage or data file left out of the wheel, a runtime
dependency that only the dev extras bring, a command whose --help fails to import.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.agent_helpers import REPO, write_config
from tests.servers import EtcdServer, etcd_bin, etcdutl_status, put_many

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Enumerates every (sub)command of both programs from the installed parsers, so a new
# command is covered without editing this list.
LIST_COMMANDS = """
import argparse
from etcd_backup_agent.cli import build_parser
from etcd_backup_agent.cli.ctl import build_parser as ctl_parser

def walk(parser, path):
    yield path
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, [*path, name])

for prog, build in (("etcd-backup-agent", build_parser), ("etcd-backupctl", ctl_parser)):
    for path in walk(build(), [prog]):
        print(" ".join(path))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding the package installed from a copy of the sources (the tree stays clean)."""
    base = tmp_path_factory.mktemp("pip")
    src = base / "src"
    src.mkdir()
    shutil.copytree(
        REPO / "agent", src / "agent", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    shutil.copy(REPO / "pyproject.toml", src)
    shutil.copy(REPO / "README.md", src)
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    proc = subprocess.run(
        [str(env_dir / "bin" / "pip"), "install", "--disable-pip-version-check", str(src)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return env_dir


def operator_env(venv_dir: Path) -> dict[str, str]:
    """The venv's bin and the system dirs only: no etcd, etcdctl or etcdutl, no PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = f"{venv_dir / 'bin'}{os.pathsep}/usr/bin{os.pathsep}/bin"
    for tool in ("etcd", "etcdctl", "etcdutl"):
        assert shutil.which(tool, path=env["PATH"]) is None, f"{tool} is on the test PATH"
    return env


def site_package(venv_dir: Path) -> Path:
    pyver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return venv_dir / "lib" / pyver / "site-packages" / "etcd_backup_agent"


def test_the_wheel_holds_every_module_and_py_typed(installed: Path) -> None:
    source = REPO / "agent" / "etcd_backup_agent"
    want = {
        p.relative_to(source).as_posix()
        for p in source.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    target = site_package(installed)
    have = {
        p.relative_to(target).as_posix()
        for p in target.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert "py.typed" in want
    assert want - have == set(), "files of the source tree missing from the installed package"


def test_every_command_help_runs_from_the_installed_package(installed: Path) -> None:
    env = operator_env(installed)
    listed = subprocess.run(
        [str(installed / "bin" / "python"), "-c", LIST_COMMANDS],
        capture_output=True,
        text=True,
        env=env,
        cwd=installed,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    commands = [line.split() for line in listed.stdout.splitlines() if line.strip()]
    names = {" ".join(c) for c in commands}
    # The README's command table, spot-checked: a command dropped from a parser fails here.
    for expected in (
        "etcd-backup-agent backup",
        "etcd-backup-agent verify",
        "etcd-backup-agent bundle extract",
        "etcd-backup-agent inspect",
        "etcd-backup-agent diff",
        "etcd-backup-agent extract",
        "etcd-backupctl status",
        "etcd-backupctl bundle list",
        "etcd-backupctl extract",
    ):
        assert expected in names
    for prog, *rest in commands:
        proc = subprocess.run(
            [str(installed / "bin" / prog), *rest, "--help"],
            capture_output=True,
            text=True,
            env=env,
            cwd=installed,
            timeout=120,
        )
        shown = " ".join([prog, *rest])
        assert proc.returncode == 0, f"{shown} --help: {proc.stderr[-2000:]}"
        assert proc.stdout.startswith("usage: "), shown
        assert "Traceback" not in proc.stdout + proc.stderr, shown
        if prog == "etcd-backup-agent" and rest and rest[0] not in ("config", "store"):
            # README: every etcd-backup-agent command has --help with examples
            # (config and store only group their subcommands, which have them).
            assert "example" in proc.stdout, f"{shown} --help has no examples"


def test_one_backup_with_no_etcd_binary_on_path(
    installed: Path, etcd: EtcdServer, age_identity: tuple[Path, str], tmp_path: Path
) -> None:
    key, recipient = age_identity
    put_many(etcd, 5, prefix="/registry/configmaps/prod/")
    cfg = write_config(
        tmp_path / "config.toml", endpoint=etcd.endpoint, recipient=recipient, root=tmp_path
    )
    env = operator_env(installed)
    agent = str(installed / "bin" / "etcd-backup-agent")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [agent, *args, "--config", str(cfg)],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=300,
        )

    backup = run("backup", "--json")
    assert backup.returncode == 0, backup.stderr[-3000:]
    manifest = json.loads(backup.stdout)
    assert manifest["verified"] is True
    assert "AGE-SECRET-KEY" not in backup.stdout + backup.stderr

    # The stock tools are the oracle: age, zstd, etcdutl read the stored object.
    obj = tmp_path / "store" / manifest["object"]
    plain = tmp_path / "restored.db"
    with plain.open("wb") as out:
        age = subprocess.Popen(["age", "-d", "-i", str(key), str(obj)], stdout=subprocess.PIPE)
        zstd = subprocess.run(["zstd", "-d", "-c"], stdin=age.stdout, stdout=out, timeout=60)
        assert age.stdout is not None
        age.stdout.close()
        assert age.wait(timeout=60) == 0
        assert zstd.returncode == 0
    status = etcdutl_status(plain)
    assert status["revision"] == manifest["revision"]
    assert status["totalKey"] == manifest["total_keys"]
    assert etcd_bin("etcdutl")  # the oracle exists; the product never needed it

    verify = run("verify", "--backup", "latest", "--identity", str(key), "-w", "json")
    assert verify.returncode == 0, verify.stderr[-3000:]
    # -w json with --backup was ignored (a table was printed)
    checked = json.loads(verify.stdout)
    assert checked["backup_id"] == manifest["id"] and checked["native_ok"] is True
    listing = run("list", "--json")
    assert listing.returncode == 0, listing.stderr
    assert [b["id"] for b in json.loads(listing.stdout)] == [manifest["id"]]
