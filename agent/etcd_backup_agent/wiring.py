"""Everything the agent builds from one configuration, replaced as a whole on SIGHUP."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field, replace

from . import scheduling
from .catalog import ManifestCache
from .config import Settings
from .coordination import Coordinator
from .etcd_source import EtcdSource
from .store import Store, open_store

# Listings that only inform (the probe, the start, the publish check) give up quickly: the
# agent must not wait retry_max_time (300 s by default) to learn that the store is down.
LIST_RETRY_MAX = 5.0


@dataclass
class Wiring:
    """Everything built from one configuration; replaced as a whole on SIGHUP."""

    settings: Settings
    store: Store
    source: EtcdSource  # used by the backup worker only
    probe: EtcdSource  # used by probes and status requests
    coordinator: Coordinator
    probe_coordinator: Coordinator
    policy: scheduling.Policy
    lister: Store  # the same store with a short retry budget, for listings
    manifests: ManifestCache = field(default_factory=dict)  # parsed manifests of the store

    @classmethod
    def build(cls, settings: Settings, cancel: threading.Event | None = None) -> Wiring:
        """``cancel``: the agent's shutdown event, which ends the store's retry loops."""
        store = open_store(settings, cancel)
        s3 = settings.store.s3
        lister = store
        if s3 is not None and s3.retry_max_time > LIST_RETRY_MAX:
            quick = replace(s3, retry_max_time=LIST_RETRY_MAX)
            lister = open_store(replace(settings, store=replace(settings.store, s3=quick)))
        source = EtcdSource(settings.etcd)
        probe = EtcdSource(settings.etcd)
        c = settings.coordination
        return cls(
            settings=settings,
            lister=lister,
            store=store,
            source=source,
            probe=probe,
            coordinator=Coordinator(c, settings.cluster, settings.node, source),
            probe_coordinator=Coordinator(c, settings.cluster, settings.node, probe),
            policy=scheduling.Policy.from_settings(settings.schedule),
        )

    def close(self) -> None:
        for closer in (self.source.close, self.probe.close, self.store.close, self.lister.close):
            with contextlib.suppress(Exception):
                closer()
