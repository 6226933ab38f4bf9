"""backup_now (the socket's request) in-process against a real etcd."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from etcd_backup_agent.daemon import Daemon
from tests.servers import EtcdServer, put_many
from tests.unit.test_daemon_adapters import settings

pytestmark = pytest.mark.integration


def test_backup_now_emits_progress_and_returns_the_manifest(
    tmp_path: Path, etcd: EtcdServer, age_identity: tuple[Path, str]
) -> None:
    put_many(etcd, 20)
    s = settings(tmp_path, age_identity[1], etcd={"endpoints": [etcd.endpoint]})
    d = Daemon(s)
    events: list[dict[str, Any]] = []
    try:
        manifest = d.backup_now(events.append)
        assert manifest["cluster"] == "c" and manifest["node"] == "n1"
        assert (tmp_path / "store" / "c" / f"{manifest['id']}.json").exists()
        stages = [e["stage"] for e in events if e["event"] == "stage"]
        assert stages == ["snapshot", "verify", "seal", "upload"]
        assert d.status_dict()["last"]["backup_id"] == manifest["id"]
        assert d.metrics.value("etcd_backup_runs_total", result="success") == 1
        # single flight: a second request while one runs is refused and counted
        assert d.flight.try_enter()
        with pytest.raises(Exception, match="another backup is running"):
            d.backup_now()
        d.flight.leave()
        assert d.metrics.value("etcd_backup_skipped_runs_total", reason="busy") == 1
    finally:
        d.wiring.close()
