"""The daemon's wiring of retention and the control socket, with fakes for both."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import etcd_backup_agent.daemon as daemon_mod
from etcd_backup_agent.config import Settings, from_dict
from etcd_backup_agent.daemon import Daemon


def settings(tmp_path: Path, recipient: str, **extra: Any) -> Settings:
    data: dict[str, Any] = {
        "cluster": {"name": "c", "node": "n1"},
        "etcd": {"endpoints": ["http://127.0.0.1:1"]},
        "encryption": {"recipients": [recipient]},
        "store": {"type": "local", "path": str(tmp_path / "store")},
        "spool": {"dir": str(tmp_path / "spool")},
        "control": {"socket": str(tmp_path / "agent.sock")},
    }
    data.update(extra)
    return from_dict(data)


def test_retention_adapter_calls_prune_and_counts(
    tmp_path: Path, age_identity: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []

    class Result:
        deleted = ("a", "b")
        locked = ("c",)
        failed = ()

    class Report:
        result = Result()

    def prune(store: Any, s: Settings, now: Any, dry_run: bool) -> Report:
        calls.append({"store": store, "dry_run": dry_run, "now": now})
        return Report()

    monkeypatch.setattr(daemon_mod, "prune", prune)
    d = Daemon(settings(tmp_path, age_identity[1], retention={"keep_last": 3}))
    d._run_retention(d.wiring)
    assert len(calls) == 1 and calls[0]["dry_run"] is False
    assert d.metrics.value("etcd_backup_retention_deleted_total") == 2
    assert d.metrics.value("etcd_backup_retention_runs_total", result="success") == 1


def test_retention_adapter_counts_a_failure(
    tmp_path: Path, age_identity: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def prune(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("listing incomplete")

    monkeypatch.setattr(daemon_mod, "prune", prune)
    d = Daemon(settings(tmp_path, age_identity[1], retention={"keep_last": 3}))
    d._run_retention(d.wiring)
    assert d.metrics.value("etcd_backup_retention_runs_total", result="failure") == 1


def test_retention_adapter_is_skipped_without_rules(
    tmp_path: Path, age_identity: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def prune(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("must not be called without rules")

    monkeypatch.setattr(daemon_mod, "prune", prune)
    d = Daemon(settings(tmp_path, age_identity[1]))
    d._run_retention(d.wiring)


def test_control_adapter_wires_operations_and_stops(
    tmp_path: Path, age_identity: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    class Operations:
        def __init__(
            self,
            s: Settings,
            *,
            backup: Any,
            exclusive: Any,
            status: Any,
            on_drill: Any,
            current: Any,
        ) -> None:
            seen.update(
                settings=s,
                backup=backup,
                exclusive=exclusive,
                status=status,
                on_drill=on_drill,
                current=current,
            )

    class ControlServer:
        def __init__(self, control: Any, ops: Operations) -> None:
            seen["control"] = control

        def start(self) -> None:
            seen["started"] = True

        def stop(self) -> None:
            seen["stopped"] = True

    monkeypatch.setattr(daemon_mod, "Operations", Operations)
    monkeypatch.setattr(daemon_mod, "ControlServer", ControlServer)
    d = Daemon(settings(tmp_path, age_identity[1]))
    d._start_control()
    assert seen["started"] and seen["backup"] == d.backup_now
    # the socket's ops read the live settings: a reload swaps the wiring, they follow it
    assert seen["current"]() is d.wiring.settings
    status = seen["status"]()
    assert status["cluster"] == "c" and status["coordination"]["mode"] == "etcd-lock"
    assert status["spool"]["pending_uploads"] == 0
    seen["on_drill"]("success", "full")
    assert d.metrics.value("etcd_backup_drills_total", result="success", kind="full") == 1
    d._stop_control()
    assert seen["stopped"]


def test_socket_ops_share_the_daemons_single_flight(
    tmp_path: Path, age_identity: tuple[Path, str]
) -> None:
    """A socket prune/restore/drill/verify is refused (busy) while a backup or drill runs."""
    from etcd_backup_agent.errors import Busy
    from etcd_backup_agent.operations import Operations

    d = Daemon(settings(tmp_path, age_identity[1]))
    ops = Operations(d.settings, backup=d.backup_now, exclusive=d.exclusive)
    assert d.flight.try_enter()  # a scheduled backup is running
    try:
        with pytest.raises(Busy, match="a backup or drill is running"):
            ops.prune({"dry_run": True}, lambda _e: None)
    finally:
        d.flight.leave()
    result = ops.prune({"dry_run": True}, lambda _e: None)  # free again: it runs
    assert result["dry_run"] is True and not d.flight.busy
