"""Coordination modes with an in-memory etcd stand-in."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from etcd_backup_agent.config import CoordinationSettings
from etcd_backup_agent.coordination import Coordinator, lock_key
from etcd_backup_agent.etcd_source import EtcdStatus, LockGrant


class FakeEtcd:
    def __init__(self, leader: bool = True) -> None:
        self.locks: dict[str, str] = {}
        self.leader = leader

    def status(self) -> EtcdStatus:
        return EtcdStatus("e", "3.5.1", 0, 1 if self.leader else 2, 1, 9, 5, 5, 2)

    @contextmanager
    def hold_lock(self, key: str, ttl: float, holder: str) -> Iterator[LockGrant]:
        if key in self.locks:
            yield LockGrant(False, key, self.locks[key], threading.Event())
            return
        self.locks[key] = holder
        try:
            yield LockGrant(True, key, holder, threading.Event())
        finally:
            del self.locks[key]

    def lock_holder(self, key: str) -> str | None:
        return self.locks.get(key)


NOW = datetime(2026, 1, 1, 10, tzinfo=UTC)


def test_lock_key_is_under_the_prefix_per_cluster() -> None:
    assert lock_key(CoordinationSettings(lock_prefix="/x/locks/"), "prod") == "/x/locks/prod"


def test_etcd_lock_admits_one_and_names_the_holder() -> None:
    etcd = FakeEtcd()
    a = Coordinator(CoordinationSettings(mode="etcd-lock"), "c", "a", etcd)
    b = Coordinator(CoordinationSettings(mode="etcd-lock"), "c", "b", etcd)
    with a.claim() as first:
        assert first.skip is None
        with b.claim() as second:
            assert second.skip == "lock_held"
            assert second.holder is not None and second.holder.startswith("a ")
        assert b.holder() == first.holder
    with b.claim() as again:
        assert again.skip is None


def test_store_recheck_inside_the_lock_skips_a_covered_period() -> None:
    c = Coordinator(CoordinationSettings(mode="etcd-lock"), "c", "a", FakeEtcd())
    with c.claim(lambda: NOW, lambda newest: newest == NOW) as claim:
        assert claim.skip == "already_backed_up"
    with c.claim(lambda: None, lambda newest: newest is not None) as claim:
        assert claim.skip is None


def test_leader_member_mode() -> None:
    s = CoordinationSettings(mode="leader-member")
    with Coordinator(s, "c", "a", FakeEtcd(leader=False)).claim() as claim:
        assert claim.skip == "not_leader"
    with Coordinator(s, "c", "a", FakeEtcd(leader=True)).claim() as claim:
        assert claim.skip is None


def test_none_mode_always_grants() -> None:
    etcd = FakeEtcd(leader=False)
    with Coordinator(CoordinationSettings(mode="none"), "c", "a", etcd).claim() as claim:
        assert claim.skip is None
    assert etcd.locks == {}
