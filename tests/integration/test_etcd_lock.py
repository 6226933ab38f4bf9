"""The lease-backed lock of EtcdSource against a real etcd: kept alive, exclusive, released."""

from __future__ import annotations

import time

import pytest

from etcd_backup_agent.config import EtcdSettings
from etcd_backup_agent.etcd_source import EtcdSource
from tests.servers import EtcdServer

pytestmark = pytest.mark.integration


def test_lock_is_kept_alive_beyond_its_ttl_and_released(etcd: EtcdServer) -> None:
    a = EtcdSource(EtcdSettings(endpoints=(etcd.endpoint,)))
    b = EtcdSource(EtcdSettings(endpoints=(etcd.endpoint,)))
    key = "/etcd-backup-agent/locks/test"
    try:
        with a.hold_lock(key, 2, "node-a pid=1") as grant:
            assert grant.acquired
            time.sleep(3.5)  # longer than the ttl: only the keep-alive keeps it
            assert not grant.lost.is_set()
            assert b.lock_holder(key) == "node-a pid=1"
            with b.hold_lock(key, 2, "node-b pid=2") as other:
                assert not other.acquired
                assert other.holder == "node-a pid=1"
        assert b.lock_holder(key) is None
        with b.hold_lock(key, 2, "node-b pid=2") as other:
            assert other.acquired
    finally:
        a.close()
        b.close()
