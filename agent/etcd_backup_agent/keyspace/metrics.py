"""Keyspace gauges of the newest backup, with a cardinality fixed by ``[inspect] top_resources``.

``resource`` takes at most ``top`` values (the resources with the most bytes) plus
``(other)`` for the sum of the rest; label values that leave the top set are removed.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

from .summary import KeyspaceSummary

OTHER_LABEL = "(other)"


class KeyspaceGauges:
    def __init__(self, registry: CollectorRegistry, cluster: str, top: int) -> None:
        self.cluster = cluster
        self.top = top
        self._shown: set[str] = set()
        labels = ("cluster", "resource")
        self.objects = Gauge(
            "etcd_backup_keyspace_objects",
            "Live objects per resource in the newest backup (top resources by bytes).",
            labels,
            registry=registry,
        )
        self.bytes = Gauge(
            "etcd_backup_keyspace_bytes",
            "Bytes (key + value, latest revisions) per resource in the newest backup.",
            labels,
            registry=registry,
        )
        self.history = Gauge(
            "etcd_backup_keyspace_history_bytes",
            "Bytes in older revisions and tombstones of the newest backup (compaction frees).",
            ("cluster",),
            registry=registry,
        )

    def update(self, summary: KeyspaceSummary | None) -> None:
        """Show ``summary``; None (a backup without analysis) leaves the last values."""
        if summary is None:
            return
        rows = list(summary.resources[: self.top])
        rest = list(summary.resources[self.top :])
        other_objects = sum(r.objects for r in rest)
        other_bytes = sum(r.bytes for r in rest)
        if summary.other is not None:
            other_objects += summary.other.objects
            other_bytes += summary.other.bytes
        shown: dict[str, tuple[int, int]] = {r.resource: (r.objects, r.bytes) for r in rows}
        if rest or summary.other is not None:
            shown[OTHER_LABEL] = (other_objects, other_bytes)
        for gone in self._shown - set(shown):
            self.objects.remove(self.cluster, gone)
            self.bytes.remove(self.cluster, gone)
        for name, (objects, size) in shown.items():
            self.objects.labels(self.cluster, name).set(objects)
            self.bytes.labels(self.cluster, name).set(size)
        self._shown = set(shown)
        self.history.labels(self.cluster).set(summary.history_bytes)
