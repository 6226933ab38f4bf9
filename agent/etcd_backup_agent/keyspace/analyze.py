"""Streaming analysis of a snapshot's keyspace, per Kubernetes resource and namespace.

Memory is bounded whatever the database size: revisions go through the external sort of
records.py, then one ordered pass keeps per-resource counters, a bounded heap of the
largest objects, and per resource a bounded heap of its largest namespaces. Keys of one
(resource, namespace) are contiguous in key order, so a namespace is finished as soon as
the next one starts.

Figures: an object's bytes are ``len(key) + len(value)`` of its latest revision (as
auger counts them); ``all_revisions_bytes`` counts every retained revision (a tombstone
counts its key); ``history_bytes = all_revisions_bytes - bytes`` is what compaction
would free; ``free_bytes`` (bolt free pages) is what defrag would give back.
"""

from __future__ import annotations

import heapq
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..snapshot.bolt import BoltFile
from .k8s_keys import OTHER, normalize_prefixes, parent_decides, parse_key
from .k8s_values import ENCODINGS
from .records import TOMBSTONE, TRAILER, sorted_revisions
from .summary import KeyspaceSummary, ResourceSummary
from .tree import free_pages

ANALYZER_VERSION = "1"
MAX_RESOURCES = 5000
OVERFLOW = "(other resources)"
DEFAULT_BUDGET = 64 * 1024 * 1024


@dataclass(frozen=True)
class Options:
    """How to analyze: key prefixes, how many rows to keep, the memory budget for the sort."""

    prefixes: tuple[str, ...] = ("/registry/",)
    top_objects: int = 20
    top_namespaces: int = 10
    memory_budget: int = DEFAULT_BUDGET
    work_dir: Path | None = None
    exclude: tuple[bytes, ...] = ()
    """Key prefixes left out of every figure (the agent's own lock keys)."""


@dataclass(frozen=True)
class NamespaceStats:
    namespace: str
    objects: int
    bytes: int


@dataclass(frozen=True)
class ResourceStats:
    """One resource: live objects and their bytes, and what its history costs."""

    resource: str
    objects: int
    bytes: int
    revisions: int
    all_revisions_bytes: int
    history_bytes: int
    tombstones: int
    deleted: int
    encodings: tuple[tuple[str, int], ...]
    namespaces: int
    top_namespaces: tuple[NamespaceStats, ...]


@dataclass(frozen=True)
class ObjectSize:
    key: str
    resource: str
    namespace: str | None
    bytes: int
    revisions: int
    all_revisions_bytes: int
    encoding: str


@dataclass(frozen=True)
class EncryptionStats:
    provider: str
    version: str
    key_name: str
    objects: int


@dataclass(frozen=True)
class KeyspaceReport:
    """Everything ``inspect`` reports about one snapshot."""

    revision: int
    compact_revision: int
    db_size: int
    file_size: int
    page_size: int
    free_bytes: int | None
    objects: int
    bytes: int
    revisions: int
    all_revisions_bytes: int
    history_bytes: int
    tombstones: int
    deleted: int
    undecodable: int
    prefixes: tuple[str, ...]
    resources: tuple[ResourceStats, ...]
    largest: tuple[ObjectSize, ...]
    encryption: tuple[EncryptionStats, ...]
    spilled_bytes: int
    analyzer_version: str = ANALYZER_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for r in d["resources"]:
            r["encodings"] = dict(r["encodings"])
        return d

    def summary(self, top: int) -> KeyspaceSummary:
        """The bounded summary for a manifest: totals, ``top`` resources, the rest summed."""
        rows = [_summary_row(r) for r in self.resources[:top]]
        rest = self.resources[top:]
        other = None
        if rest:
            other = ResourceSummary(
                resource="(other)",
                objects=sum(r.objects for r in rest),
                bytes=sum(r.bytes for r in rest),
                history_bytes=sum(r.history_bytes for r in rest),
                tombstones=sum(r.tombstones for r in rest),
            )
        return KeyspaceSummary(
            objects=self.objects,
            bytes=self.bytes,
            history_bytes=self.history_bytes,
            revisions=self.revisions,
            tombstones=self.tombstones,
            db_size=self.db_size,
            free_bytes=self.free_bytes,
            resource_count=len(self.resources),
            resources=tuple(rows),
            other=other,
        )


def _summary_row(r: ResourceStats) -> ResourceSummary:
    return ResourceSummary(r.resource, r.objects, r.bytes, r.history_bytes, r.tombstones)


class _Acc:
    __slots__ = (
        "all_bytes",
        "bytes",
        "deleted",
        "enc",
        "ns_count",
        "ns_heap",
        "objects",
        "revisions",
        "tombstones",
    )

    def __init__(self) -> None:
        self.objects = self.bytes = self.revisions = self.all_bytes = 0
        self.tombstones = self.deleted = self.ns_count = 0
        self.enc = [0, 0, 0, 0]
        self.ns_heap: list[tuple[int, int, str]] = []


def analyze_file(path: str | os.PathLike[str], options: Options = Options()) -> KeyspaceReport:
    """Analyze the snapshot (or raw db) at ``path``."""
    with BoltFile(path) as db:
        return analyze(db, options)


def analyze(db: BoltFile, options: Options = Options()) -> KeyspaceReport:
    """One scan of the ``key`` bucket, one external sort, one ordered pass."""
    from .records import default_work_dir, meta_compact_revision

    prefixes = normalize_prefixes(options.prefixes)
    work_dir = options.work_dir or default_work_dir()
    accs: dict[str, _Acc] = {}
    top_n = max(options.top_objects, 0)
    top_ns = max(options.top_namespaces, 0)
    largest: list[tuple[int, str, str, str | None, int, int, str]] = []
    marker_objects: dict[int, int] = {}
    totals = [0, 0, 0, 0, 0, 0]  # objects, bytes, revisions, all bytes, tombstones, deleted
    cur_res: _Acc | None = None
    cur_ns: str | None = None
    ns_objects = ns_bytes = 0
    tail = TRAILER
    encodings = ENCODINGS
    exclude = options.exclude
    with sorted_revisions(db, work_dir, options.memory_budget) as (groups, info, markers, sorter):
        last_head = b"\x01"
        cacheable = False
        k = parse_key(b"", prefixes)
        acc = _Acc()
        for group in groups:
            first = group[0]
            key = first[: -tail - 2]
            if b"\x00" in key:
                key = key.replace(b"\x00\xff", b"\x00")
            if exclude and key.startswith(exclude):
                continue
            # neighbours in key order share their parent path: classify it once
            head = key[: key.rfind(b"/") + 1]
            if head != last_head or not cacheable:
                last_head = head
                cacheable = parent_decides(head, prefixes)
                k = parse_key(key, prefixes)
                got = accs.get(k.resource)
                if got is None:
                    if len(accs) >= MAX_RESOURCES:
                        got = accs.setdefault(OVERFLOW, _Acc())
                    else:
                        got = accs[k.resource] = _Acc()
                acc = got
            klen = len(key)
            n = len(group)
            if n == 1:
                if first[-6] & TOMBSTONE:
                    tombs = 1
                    all_bytes = klen
                else:
                    tombs = 0
                    all_bytes = klen + int.from_bytes(first[-5:-1], "big")
            else:
                all_bytes = 0
                tombs = 0
                for rec in group:
                    if rec[-6] & TOMBSTONE:
                        tombs += 1
                        all_bytes += klen
                    else:
                        all_bytes += klen + int.from_bytes(rec[-5:-1], "big")
            last = group[-1]
            flags = last[-6]
            acc.revisions += n
            acc.all_bytes += all_bytes
            acc.tombstones += tombs
            live = not flags & TOMBSTONE
            size = 0
            if live:
                size = all_bytes if n == 1 else klen + int.from_bytes(last[-5:-1], "big")
                acc.objects += 1
                acc.bytes += size
                enc = (flags >> 1) & 3
                acc.enc[enc] += 1
                marker = last[-1]
                if marker:
                    marker_objects[marker] = marker_objects.get(marker, 0) + 1
                if top_n:
                    item = (
                        size,
                        key.decode("utf-8", "replace"),
                        k.resource,
                        k.namespace,
                        n,
                        all_bytes,
                        encodings[enc],
                    )
                    if len(largest) < top_n:
                        heapq.heappush(largest, item)
                    elif size > largest[0][0]:
                        heapq.heappushpop(largest, item)
            else:
                acc.deleted += 1
            # namespaces: contiguous in key order, finished when the next one starts
            if acc is not cur_res or k.namespace != cur_ns:
                if cur_res is not None and cur_ns is not None:
                    _push_ns(cur_res, cur_ns, ns_objects, ns_bytes, top_ns)
                cur_res, cur_ns = acc, k.namespace
                ns_objects = ns_bytes = 0
            if live:
                ns_objects += 1
                ns_bytes += size
        if cur_res is not None and cur_ns is not None:
            _push_ns(cur_res, cur_ns, ns_objects, ns_bytes, top_ns)
        spilled = sorter.spilled_bytes
        names = markers.names
    resources = []
    for name, a in accs.items():
        totals[0] += a.objects
        totals[1] += a.bytes
        totals[2] += a.revisions
        totals[3] += a.all_bytes
        totals[4] += a.tombstones
        totals[5] += a.deleted
        top = sorted(a.ns_heap, key=lambda t: (-t[0], t[2]))
        resources.append(
            ResourceStats(
                resource=name,
                objects=a.objects,
                bytes=a.bytes,
                revisions=a.revisions,
                all_revisions_bytes=a.all_bytes,
                history_bytes=a.all_bytes - a.bytes,
                tombstones=a.tombstones,
                deleted=a.deleted,
                encodings=tuple((encodings[i], n) for i, n in enumerate(a.enc) if n),
                namespaces=a.ns_count,
                top_namespaces=tuple(NamespaceStats(ns, o, b) for b, o, ns in top),
            )
        )
    resources.sort(key=lambda r: (-r.bytes, -r.all_revisions_bytes, r.resource))
    biggest = sorted(largest, key=lambda t: (-t[0], t[1]))
    encryption = []
    for idx, count in sorted(marker_objects.items(), key=lambda kv: -kv[1]):
        provider, version, key_name = ([*names[idx].split(":", 2), "", ""])[:3]
        encryption.append(EncryptionStats(provider, version, key_name, count))
    free = free_pages(db)
    return KeyspaceReport(
        revision=_last_revision(db),
        compact_revision=meta_compact_revision(db),
        db_size=db.data_size,
        file_size=db.file_size,
        page_size=db.page_size,
        free_bytes=None if free is None else free * db.page_size,
        objects=totals[0],
        bytes=totals[1],
        revisions=totals[2],
        all_revisions_bytes=totals[3],
        history_bytes=totals[3] - totals[1],
        tombstones=totals[4],
        deleted=totals[5],
        undecodable=info.undecodable,
        prefixes=tuple(p.decode() for p in prefixes),
        resources=tuple(resources),
        largest=tuple(ObjectSize(t[1], t[2], t[3], t[0], t[4], t[5], t[6]) for t in biggest),
        encryption=tuple(encryption),
        spilled_bytes=spilled,
    )


def _push_ns(acc: _Acc, ns: str, objects: int, size: int, top: int) -> None:
    acc.ns_count += 1
    if not top:
        return
    item = (size, objects, ns)
    if len(acc.ns_heap) < top:
        heapq.heappush(acc.ns_heap, item)
    elif item > acc.ns_heap[0]:
        heapq.heappushpop(acc.ns_heap, item)


def _last_revision(db: BoltFile) -> int:
    """The highest main revision in the ``key`` bucket (etcdutl's revision)."""
    from .tree import find_bucket

    bucket = find_bucket(db, b"key")
    if bucket is None:
        return 0
    from ..snapshot.bolt import BRANCH, LEAF

    page = (
        db.page_from_bytes(bucket.inline)
        if bucket.inline is not None
        else db.read_page(bucket.root)
    )
    for _ in range(64):
        if page.flags == LEAF:
            items = db.leaf_items(page)
            return int.from_bytes(items[-1][1][:8], "big") if items else 0
        if page.flags != BRANCH:
            return 0
        page = db.read_page(db.branch_items(page)[-1][1])
    return 0


__all__ = ["OTHER", "KeyspaceReport", "Options", "analyze", "analyze_file"]
