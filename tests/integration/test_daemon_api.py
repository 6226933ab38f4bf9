"""The socket's backup request, in-process against a real etcd."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from etcd_backup_agent.control.dispatch import dispatch
from etcd_backup_agent.service import Agent
from tests.servers import EtcdServer, put_many
from tests.unit.test_service import settings

pytestmark = pytest.mark.integration


def test_backup_now_emits_progress_and_returns_the_manifest(
    tmp_path: Path, etcd: EtcdServer, age_identity: tuple[Path, str]
) -> None:
    put_many(etcd, 20)
    s = settings(tmp_path, age_identity[1], etcd={"endpoints": [etcd.endpoint]})
    d = Agent(s)
    events: list[dict[str, Any]] = []
    try:
        manifest = dispatch(d, "backup", {}, events.append)
        assert manifest["cluster"] == "c" and manifest["node"] == "n1"
        assert (tmp_path / "store" / "c" / f"{manifest['id']}.json").exists()
        stages = [e["stage"] for e in events if e["event"] == "stage"]
        assert stages == ["snapshot", "verify", "seal", "upload"]
        assert manifest["store"] == d.wiring.store.describe()
        assert dispatch(d, "status", {}, events.append)["last"]["backup_id"] == manifest["id"]
        assert d.metrics.value("etcd_backup_runs_total", result="success") == 1
        # single flight: a second request while one runs is refused and counted
        assert d.flight.try_enter()
        with pytest.raises(Exception, match="another backup is running"):
            d.backup("request")
        d.flight.leave()
        assert d.metrics.value("etcd_backup_skipped_runs_total", reason="busy") == 1
    finally:
        d.close()
