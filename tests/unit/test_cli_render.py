"""cli/render.py: both programs print the same text for the same result."""

from __future__ import annotations

import io
import json

import pytest

from etcd_backup_agent.cli.render import BackupLine, Progress, backup_table, drill_failed, show
from etcd_backup_agent.manifest import Manifest


def _manifest(total_keys: int | None) -> Manifest:
    return Manifest(
        id="20260101T000000Z-r5-n",
        object="prod/snapshots/20260101T000000Z-r5-n.db.zst.age",
        created_at="2026-01-01T00:00:00Z",
        cluster="prod",
        node="n",
        revision=5,
        db_size=36864,
        object_size=1529,
        snapshot_sha256="0" * 64,
        object_sha256="1" * 64,
        total_keys=total_keys,
        verified=True,
    )


@pytest.mark.parametrize("total_keys", [28, None])
def test_list_through_the_socket_prints_what_list_prints_offline(
    total_keys: int | None, capsys: pytest.CaptureFixture[str]
) -> None:
    m = _manifest(total_keys)
    offline = backup_table([BackupLine.of(m)])
    # the socket reply carries the manifest as JSON
    show("list", {"backups": [json.loads(json.dumps(m.to_dict()))], "complete": True})
    assert capsys.readouterr().out.splitlines() == offline
    header, row = offline
    assert header.split()[:3] == ["ID", "CREATED", "(UTC)"]
    # an unknown key count is "-" (the socket's null printed "None" before)
    assert row.split()[-2:] == [str(total_keys) if total_keys is not None else "-", "yes"]
    assert "36.0 KiB" in row and "1.5 KiB" in row


def test_an_incomplete_listing_is_said(capsys: pytest.CaptureFixture[str]) -> None:
    show("list", {"backups": [], "complete": False})
    assert "warning: the store listing was incomplete" in capsys.readouterr().out


def test_a_failed_drill_names_its_step() -> None:
    assert drill_failed({"step": "readback", "error": "revision 4 != 5"}) == (
        "drill FAILED at readback: revision 4 != 5"
    )
    assert drill_failed({"error": "no identity"}) == "drill FAILED: no identity"


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_bar_draws_on_a_tty_and_clears_before_a_log_line() -> None:
    out = _Tty()
    progress = Progress(out, quiet=False)
    progress({"event": "progress", "stage": "fetch", "done": 5, "total": 10})
    assert out.getvalue() == "\rfetch      [" + "#" * 15 + " " * 15 + "]  50.0%"
    progress({"event": "log", "message": "verified"})
    assert out.getvalue().endswith("\r" + " " * 60 + "\rverified\n")
    progress.clear()  # nothing drawn since the log line: nothing to clear
    assert out.getvalue().endswith("verified\n")


def test_no_bar_off_a_tty_and_nothing_at_all_when_quiet() -> None:
    plain = io.StringIO()
    Progress(plain, quiet=False)({"event": "progress", "stage": "fetch", "done": 1, "total": 2})
    assert plain.getvalue() == ""
    quiet = _Tty()
    p = Progress(quiet, quiet=True)  # --json: stdout is for the machine, stderr stays clean
    p({"event": "progress", "stage": "fetch", "done": 1, "total": 2})
    p({"event": "log", "message": "x"})
    assert quiet.getvalue() == ""


def test_a_passed_drill_prints_its_checks_not_empty_fields(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # a passed drill used to print every field of its report, "error: None" among them
    from etcd_backup_agent.drill import DrillReport

    report = DrillReport(
        backup_id="20261201T000000Z-r5-cp1",
        result="success",
        engine="native",
        revision=5,
        expected_revision=5,
        live_keys=10,
        seconds=1.26,
        checks=[
            "sha256 and native verification match the manifest",
            "restored by the native engine",
        ],
    )
    show("drill", report.to_dict())
    out = capsys.readouterr().out
    assert out.splitlines() == [
        "drill passed: backup 20261201T000000Z-r5-cp1 from the store, native drill, 1.3 s",
        "  revision 5, 10 live keys",
        "  ok: sha256 and native verification match the manifest",
        "  ok: restored by the native engine",
    ]
    assert "None" not in out
