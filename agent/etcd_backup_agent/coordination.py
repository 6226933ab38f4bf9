"""Only one agent per cluster takes a period's backup: etcd lock, leader member, or none.

``claim()`` is a context manager around one backup. It yields a ``Claim``; when
``claim.skip`` is set the caller must not back up and counts the skip under that reason.
In ``etcd-lock`` mode the lock is held (its lease kept alive) for the whole block.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from .config import CoordinationSettings
from .errors import CoordinationError
from .etcd_source import EtcdStatus, LockGrant

MODES = ("etcd-lock", "leader-member", "none")


class LockSource(Protocol):
    """What coordination needs from etcd (EtcdSource provides it)."""

    def status(self) -> EtcdStatus: ...

    def hold_lock(self, key: str, ttl: float, holder: str) -> AbstractContextManager[LockGrant]: ...

    def lock_holder(self, key: str) -> str | None: ...


class BackupSkipped(CoordinationError):
    """This agent must not back up now; ``reason`` is the skip label."""

    code = "skipped"

    def __init__(self, reason: str, message: str = "") -> None:
        self.reason = reason
        super().__init__(message or f"backup skipped: {reason}")


@dataclass
class Claim:
    """The right to back up now (``skip`` is None), or why not."""

    skip: str | None = None
    holder: str | None = None
    grant: LockGrant | None = None

    @property
    def lost(self) -> bool:
        return self.grant is not None and self.grant.lost.is_set()


def lock_key(settings: CoordinationSettings, cluster: str) -> str:
    """The etcd key of the cluster's backup lock."""
    return f"{settings.lock_prefix.rstrip('/')}/{cluster}"


def holder_name(node: str) -> str:
    return f"{node} pid={os.getpid()}"


class Coordinator:
    """Decide, per backup, whether this agent is the one to take it."""

    def __init__(
        self, settings: CoordinationSettings, cluster: str, node: str, source: LockSource
    ) -> None:
        self.settings = settings
        self.cluster = cluster
        self.node = node
        self.source = source
        self.key = lock_key(settings, cluster)

    @property
    def mode(self) -> str:
        return self.settings.mode

    @contextmanager
    def claim(
        self,
        newest_in_store: Callable[[], datetime | None] | None = None,
        covered: Callable[[datetime | None], bool] | None = None,
    ) -> Iterator[Claim]:
        """Claim this backup; re-check the store (inside the lock) when ``covered`` is given.

        ``newest_in_store`` reads the newest stored backup's time; ``covered`` says
        whether that time already covers the current period (skip "already_backed_up").
        """
        mode = self.settings.mode
        if mode == "none":
            yield Claim()
            return
        if mode == "leader-member":
            status = self.source.status()
            if not status.is_leader:
                yield Claim(skip="not_leader", holder=f"member {status.leader:x}")
                return
            yield self._rechecked(Claim(holder=self.node), newest_in_store, covered)
            return
        with self.source.hold_lock(
            self.key, self.settings.lock_ttl, holder_name(self.node)
        ) as grant:
            if not grant.acquired:
                yield Claim(skip="lock_held", holder=grant.holder, grant=grant)
                return
            yield self._rechecked(Claim(holder=grant.holder, grant=grant), newest_in_store, covered)

    @staticmethod
    def _rechecked(
        claim: Claim,
        newest_in_store: Callable[[], datetime | None] | None,
        covered: Callable[[datetime | None], bool] | None,
    ) -> Claim:
        if newest_in_store is not None and covered is not None and covered(newest_in_store()):
            claim.skip = "already_backed_up"
        return claim

    def holder(self) -> str | None:
        """Who holds the lock now (etcd-lock), or the leader's member id (leader-member)."""
        if self.settings.mode == "etcd-lock":
            return self.source.lock_holder(self.key)
        if self.settings.mode == "leader-member":
            status = self.source.status()
            return f"member {status.leader:x}"
        return None
