"""The bounded keyspace summary a manifest carries: totals plus the top resources."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

SUMMARY_VERSION = 1


@dataclass(frozen=True)
class ResourceSummary:
    resource: str
    objects: int
    bytes: int
    history_bytes: int
    tombstones: int


@dataclass(frozen=True)
class KeyspaceSummary:
    """Totals of one snapshot's keyspace and its ``resources`` with the most bytes.

    ``other`` aggregates every resource beyond the top ones, so the rows add up to the
    totals. ``history_bytes`` is what compaction would free (older revisions and
    tombstones); ``free_bytes`` is bolt's free pages, what defrag gives back.
    """

    objects: int
    bytes: int
    history_bytes: int
    revisions: int
    tombstones: int
    db_size: int
    free_bytes: int | None
    resource_count: int
    resources: tuple[ResourceSummary, ...]
    other: ResourceSummary | None = None
    version: int = SUMMARY_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> KeyspaceSummary | None:
        """The summary of a manifest; None when absent or not understood (never raises)."""
        if not isinstance(data, dict):
            return None
        try:
            rows = tuple(_row(r) for r in data.get("resources", ()))
            other = data.get("other")
            free = data.get("free_bytes")
            return cls(
                objects=int(data["objects"]),
                bytes=int(data["bytes"]),
                history_bytes=int(data["history_bytes"]),
                revisions=int(data["revisions"]),
                tombstones=int(data["tombstones"]),
                db_size=int(data["db_size"]),
                free_bytes=None if free is None else int(free),
                resource_count=int(data.get("resource_count", len(rows))),
                resources=rows,
                other=_row(other) if isinstance(other, dict) else None,
                version=int(data.get("version", SUMMARY_VERSION)),
            )
        except (KeyError, TypeError, ValueError):
            return None


def _row(r: Any) -> ResourceSummary:
    if not isinstance(r, dict):
        raise TypeError("resource row is not an object")
    return ResourceSummary(
        resource=str(r["resource"]),
        objects=int(r["objects"]),
        bytes=int(r["bytes"]),
        history_bytes=int(r["history_bytes"]),
        tombstones=int(r["tombstones"]),
    )
