"""etcd-backupctl without a daemon: a clear message naming a real offline command."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from etcd_backup_agent.cli import build_parser
from etcd_backup_agent.control.client import OFFLINE_EQUIVALENT, main


@pytest.mark.parametrize(("op", "offline"), [("status", "list"), ("prune", "prune")])
def test_daemon_not_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], op: str, offline: str
) -> None:
    sock = tmp_path / "none.sock"
    assert main(["--socket", str(sock), op]) == 1
    err = capsys.readouterr().err
    assert "not running" in err and str(sock) in err
    assert f"`etcd-backup-agent {offline} ..." in err
    assert "Traceback" not in err


def test_offline_equivalents_are_real_commands() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for op, offline in OFFLINE_EQUIVALENT.items():
        assert offline.split()[0] in sub.choices, (op, offline)
