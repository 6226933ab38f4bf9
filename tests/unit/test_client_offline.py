"""etcd-backupctl without a daemon: a clear message naming a real offline command."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from etcd_backup_agent.cli import build_parser
from etcd_backup_agent.cli.ctl import OFFLINE_EQUIVALENT, main


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


def test_human_output_of_status_backup_and_prune(capsys: pytest.CaptureFixture[str]) -> None:
    from etcd_backup_agent.cli.render import show

    show(
        "status",
        {
            "cluster": "prod",
            "node": "cp-1",
            "version": "0.1.0",
            "busy": False,
            "last": {
                "result": "failure",
                "at": "2026-11-24T10:00:00Z",
                "error": "etcd unavailable",
            },
            "newest_backup": "2026-11-24T09:00:00Z",
            "next_run": "2026-11-24T10:00:30Z",
            "coordination": {"mode": "etcd-lock", "holder": "cp-2 pid=7"},
            "leader": False,
            "store": {"describe": "s3://b/p/", "up": False},
            "spool": {"bytes": 10, "pending_uploads": 1},
            "drill": {"result": "none", "at": None},
        },
    )
    out = capsys.readouterr().out
    assert "last backup:  failure at 2026-11-24T10:00:00Z: etcd unavailable" in out
    assert "s3://b/p/ (DOWN)" in out and "1 backup(s) waiting for upload" in out
    assert "lock holder cp-2 pid=7" in out

    show(
        "prune",
        {
            "cluster": "prod",
            "store": "local:/b",
            "dry_run": True,
            "decisions": [
                {"id": "B2", "verified": True, "action": "keep", "reasons": ["last #1"]},
                {"id": "B1", "verified": True, "action": "would-delete", "reasons": []},
            ],
            "deleted": ["B1"],
            "locked": [],
            "failed": [],
            "orphans": [],
            "unreadable": [],
            "summary": {
                "backups": 2,
                "kept": 1,
                "deleted": 1,
                "skipped_locked": 0,
                "failed": 0,
                "orphans": 0,
                "unreadable": 0,
            },
        },
    )
    out = capsys.readouterr().out
    assert "KEEP          B2  last #1" in out and "WOULD-DELETE  B1  no rule keeps it" in out
    assert "[dry run]" in out
