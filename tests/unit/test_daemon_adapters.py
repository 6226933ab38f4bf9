"""The daemon's adapters to modules of other branches (retention, control), with fakes."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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


@pytest.fixture
def fake_modules() -> Iterator[dict[str, types.ModuleType]]:
    names = [
        "etcd_backup_agent.retention",
        "etcd_backup_agent.control.server",
        "etcd_backup_agent.operations",
    ]
    saved = {n: sys.modules.get(n) for n in names}
    made = {n: types.ModuleType(n) for n in names}
    sys.modules.update(made)
    try:
        yield made
    finally:
        for n, mod in saved.items():
            if mod is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = mod


def test_retention_adapter_calls_prune_and_counts(
    tmp_path: Path, age_identity: tuple[Path, str], fake_modules: dict[str, types.ModuleType]
) -> None:
    calls: list[dict[str, Any]] = []

    class Report:
        deleted = ("a", "b")
        locked = ("c",)
        failed = ()

    def prune(store: Any, s: Settings, now: Any, dry_run: bool) -> Report:
        calls.append({"store": store, "dry_run": dry_run, "now": now})
        return Report()

    fake_modules["etcd_backup_agent.retention"].prune = prune  # type: ignore[attr-defined]
    d = Daemon(settings(tmp_path, age_identity[1], retention={"keep_last": 3}))
    d._run_retention(d.wiring)
    assert len(calls) == 1 and calls[0]["dry_run"] is False
    assert d.metrics.value("etcd_backup_retention_deleted_total") == 2
    assert d.metrics.value("etcd_backup_retention_runs_total", result="success") == 1


def test_retention_adapter_counts_a_failure(
    tmp_path: Path, age_identity: tuple[Path, str], fake_modules: dict[str, types.ModuleType]
) -> None:
    def prune(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("listing incomplete")

    fake_modules["etcd_backup_agent.retention"].prune = prune  # type: ignore[attr-defined]
    d = Daemon(settings(tmp_path, age_identity[1], retention={"keep_last": 3}))
    d._run_retention(d.wiring)
    assert d.metrics.value("etcd_backup_retention_runs_total", result="failure") == 1


def test_retention_adapter_is_skipped_without_rules(
    tmp_path: Path, age_identity: tuple[Path, str], fake_modules: dict[str, types.ModuleType]
) -> None:
    def prune(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("must not be called without rules")

    fake_modules["etcd_backup_agent.retention"].prune = prune  # type: ignore[attr-defined]
    d = Daemon(settings(tmp_path, age_identity[1]))
    d._run_retention(d.wiring)


def test_control_adapter_wires_operations_and_stops(
    tmp_path: Path, age_identity: tuple[Path, str], fake_modules: dict[str, types.ModuleType]
) -> None:
    seen: dict[str, Any] = {}

    class Operations:
        def __init__(self, s: Settings, *, backup: Any, status: Any, on_drill: Any) -> None:
            seen.update(settings=s, backup=backup, status=status, on_drill=on_drill)

    class ControlServer:
        def __init__(self, control: Any, ops: Operations) -> None:
            seen["control"] = control

        def start(self) -> None:
            seen["started"] = True

        def stop(self) -> None:
            seen["stopped"] = True

    fake_modules["etcd_backup_agent.operations"].Operations = Operations  # type: ignore[attr-defined]
    fake_modules["etcd_backup_agent.control.server"].ControlServer = ControlServer  # type: ignore[attr-defined]
    d = Daemon(settings(tmp_path, age_identity[1]))
    d._start_control()
    assert seen["started"] and seen["backup"] == d.backup_now
    status = seen["status"]()
    assert status["cluster"] == "c" and status["coordination"]["mode"] == "etcd-lock"
    assert status["spool"]["pending_uploads"] == 0
    seen["on_drill"]("success", "manual")
    assert d.metrics.value("etcd_backup_drills_total", result="success", kind="manual") == 1
    d._stop_control()
    assert seen["stopped"]
