"""The daemon's stop fits the unit's TimeoutStopSec; status never waits for etcd (hole 10)."""

from __future__ import annotations

from pathlib import Path

import pytest

from etcd_backup_agent.daemon import STOP_BUDGET, Daemon, stop_plan
from tests.unit.test_service import settings

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "etcd-backup-agent.service"


def timeout_stop_sec() -> float:
    line = next(x for x in UNIT.read_text().splitlines() if x.startswith("TimeoutStopSec="))
    return float(line.split("=", 1)[1].rstrip("s"))


@pytest.mark.parametrize("grace", [0.0, 1.0, 30.0, 60.0, 75.0, 600.0, 86400.0])
def test_every_stop_path_fits_timeoutstopsec(grace: float) -> None:
    wait, cancel = stop_plan(grace)
    assert wait <= grace
    assert cancel >= 10.0  # a cancelled backup always gets time to clean up
    # grace + cancel wait + the worker join (5 s) + control stop (in the grace)
    assert wait + cancel + 5.0 <= STOP_BUDGET < timeout_stop_sec() - 5.0


def test_status_reads_the_cached_holder_and_never_calls_etcd(
    tmp_path: Path, age_identity: tuple[Path, str]
) -> None:
    s = settings(tmp_path, age_identity[1], coordination={"mode": "etcd-lock"})
    d = Daemon(s).agent
    calls: list[str] = []

    def holder() -> str:
        calls.append("holder")
        return "n9 pid=1"

    try:
        d.wiring.probe_coordinator.holder = holder  # type: ignore[method-assign]
        for _ in range(5):
            assert d.status().to_wire()["coordination"]["holder"] is None
        assert calls == []
        d.probe_etcd()  # the probe thread's job; etcd is down here, so no holder either
        d._holder = "n9 pid=1"
        assert d.status().to_wire()["coordination"]["holder"] == "n9 pid=1"
        assert calls == []
    finally:
        d.close()
