"""Read an etcd raft snapshot file (``member/snap/<term>-<index>.snap``) and check it.

Facts from etcd release-3.5 ``server/etcdserver/api/snap/snapshotter.go`` and raftpb:

- The file is a ``snappb.Snapshot``: ``crc`` (field 1) is CRC-32C (Castagnoli) of ``data``
  (field 2), which is a marshalled ``raftpb.Snapshot``; etcd refuses empty data or crc 0.
- The name is ``%016x-%016x.snap`` of the metadata's term and index.
- ``raftpb.Snapshot``: data (1), metadata (2: conf_state 1, index 2, term 3);
  ``ConfState``: voters (1), learners (2).
- The data is the v2 store as JSON; members live at ``/0/members/<hex id>/raftAttributes``
  (``{"peerURLs": [...]}``), with ``attributes`` (the name) once a member has published it.

Every problem raises ``SnapError`` naming the file and what is wrong.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import google_crc32c

from .pbdecode import Message, PbError

_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.snap$")
MAX_SNAP_BYTES = 512 * 1024 * 1024


class SnapError(ValueError):
    """The snap file is damaged or is not what etcd writes."""


@dataclass(frozen=True)
class SnapMember:
    id: int
    peer_urls: tuple[str, ...]
    name: str | None  # None: the member never published its attributes
    is_learner: bool = False


@dataclass(frozen=True)
class SnapFile:
    name: str
    crc: int
    index: int
    term: int
    voters: tuple[int, ...]
    learners: tuple[int, ...]
    members: tuple[SnapMember, ...]
    removed: tuple[int, ...]
    store_index: int  # the v2 store's CurrentIndex


def snap_names(snap_dir: str | os.PathLike[str]) -> list[str]:
    """The ``.snap`` files of ``snap_dir``, newest (highest term, index) first."""
    try:
        names = os.listdir(snap_dir)
    except OSError as exc:
        raise SnapError(f"cannot list {snap_dir}: {exc.strerror or exc}") from None
    return sorted((n for n in names if n.endswith(".snap")), reverse=True)


def read_snap(path: str | os.PathLike[str]) -> SnapFile:
    """Read and check one snap file; raise SnapError on the first problem."""
    p = Path(path)
    name = p.name
    try:
        size = p.stat().st_size
        if size > MAX_SNAP_BYTES:
            raise SnapError(f"{name}: {size} bytes is more than a v2 store snapshot can be")
        raw = p.read_bytes()
    except OSError as exc:
        raise SnapError(f"cannot read {p}: {exc.strerror or exc}") from None
    if not raw:
        raise SnapError(f"{name}: empty file")
    try:
        outer = Message(raw, "snappb.Snapshot")
        crc = outer.uint32(1)
        data = outer.bytes_(2) or b""
    except PbError as exc:
        raise SnapError(f"{name}: {exc}") from None
    if not data or crc == 0:
        raise SnapError(f"{name}: no snapshot data or a zero crc (etcd: empty snapshot)")
    computed = google_crc32c.value(data)
    if computed != crc:
        raise SnapError(f"{name}: crc mismatch: stored {crc:#010x}, computed {computed:#010x}")
    try:
        snap = Message(data, "raftpb.Snapshot")
        meta = Message(snap.bytes_(2) or b"", "raftpb.SnapshotMetadata")
        conf = Message(meta.bytes_(1) or b"", "raftpb.ConfState")
        store = snap.bytes_(1) or b""
        index, term = meta.uint(2), meta.uint(3)
        voters, learners = tuple(conf.repeated_uint(1)), tuple(conf.repeated_uint(2))
    except PbError as exc:
        raise SnapError(f"{name}: {exc}") from None
    m = _NAME.match(name)
    if m is None or (int(m.group(1), 16), int(m.group(2), 16)) != (term, index):
        raise SnapError(f"{name}: not named after its term {term} and index {index}")
    members, removed, store_index = _v2_members(store, name)
    return SnapFile(name, crc, index, term, voters, learners, members, removed, store_index)


def _node(parent: Any, key: str) -> Any:
    children = parent.get("Children") if isinstance(parent, dict) else None
    return children.get(key) if isinstance(children, dict) else None


def _v2_members(store: bytes, name: str) -> tuple[tuple[SnapMember, ...], tuple[int, ...], int]:
    try:
        doc = json.loads(store)
    except ValueError as exc:
        raise SnapError(f"{name}: the v2 store is not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("Root"), dict):
        raise SnapError(f"{name}: the v2 store has no Root")
    cluster = _node(doc["Root"], "0")
    members: list[SnapMember] = []
    try:
        for hex_id, node in sorted(
            ((_node(cluster, "members") or {}).get("Children") or {}).items()
        ):
            raft = json.loads(_node(node, "raftAttributes")["Value"])
            attrs_node = _node(node, "attributes")
            attrs = json.loads(attrs_node["Value"]) if attrs_node else None
            members.append(
                SnapMember(
                    id=int(hex_id, 16),
                    peer_urls=tuple(str(u) for u in raft.get("peerURLs") or []),
                    name=str(attrs.get("name", "")) if attrs else None,
                    is_learner=bool(raft.get("isLearner", False)),
                )
            )
        removed = tuple(
            int(h, 16) for h in ((_node(cluster, "removed_members") or {}).get("Children") or {})
        )
        store_index = int(doc.get("CurrentIndex", 0))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SnapError(f"{name}: malformed member in the v2 store: {exc!r}") from None
    return tuple(members), removed, store_index
