"""Made-up manifests and an in-memory store for retention and catalog tests."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from etcd_backup_agent.errors import ObjectLocked, StoreNotFound
from etcd_backup_agent.manifest import Manifest, backup_id, manifest_key, object_key
from etcd_backup_agent.store.base import Listing, PutResult, StoredObject


def at(text: str) -> datetime:
    """'2026-11-24T08:00:00' (UTC) -> aware datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def fake_manifest(
    created: str,
    *,
    verified: bool = True,
    cluster: str = "c1",
    node: str = "n1",
    revision: int | None = None,
    retain_until: str | None = None,
) -> Manifest:
    """A manifest for a backup taken at ``created`` (UTC, ISO 8601 without zone)."""
    ts = at(created.removesuffix("Z"))
    rev = revision if revision is not None else int(ts.timestamp()) % 10_000_000
    bid = backup_id(ts, rev, node)
    return Manifest(
        id=bid,
        object=object_key(cluster, bid),
        created_at=ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
        cluster=cluster,
        node=node,
        revision=rev,
        db_size=1024,
        snapshot_sha256="0" * 64,
        object_size=10,
        object_sha256="1" * 64,
        verified=verified,
        retain_until=retain_until,
    )


def with_lock(m: Manifest, until: str) -> Manifest:
    return replace(m, retain_until=until)


class MemoryStore:
    """A Store in a dict; ``locked`` keys refuse deletion; ``complete`` is what list reports."""

    def __init__(self, complete: bool = True) -> None:
        self.data: dict[str, bytes] = {}
        self.locked: set[str] = set()
        self.complete = complete
        self.calls: list[tuple[str, str]] = []

    def describe(self) -> str:
        return "memory:"

    def put_file(
        self, key: str, src: Path, *, lock: bool = False, cancel: object = None
    ) -> PutResult:
        return self.put_bytes(key, src.read_bytes(), lock=lock)

    def put_bytes(self, key: str, data: bytes, *, lock: bool = False) -> PutResult:
        self.calls.append(("put", key))
        self.data[key] = data
        return PutResult(key=key, size=len(data))

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.data[key]
        except KeyError:
            raise StoreNotFound(f"{key} does not exist") from None

    def open_read(self, key: str) -> BinaryIO:
        return io.BytesIO(self.get_bytes(key))

    def list(self, prefix: str) -> Listing:
        objs = tuple(
            StoredObject(key=k, size=len(v))
            for k, v in sorted(self.data.items())
            if k.startswith(prefix)
        )
        return Listing(objects=objs, complete=self.complete)

    def delete(self, key: str) -> None:
        self.calls.append(("delete", key))
        if key in self.locked:
            raise ObjectLocked(f"{key} is locked")
        self.data.pop(key, None)

    def close(self) -> None:
        return None

    def add(self, m: Manifest, *, with_object: bool = True) -> None:
        """Store ``m`` as a complete backup (object, then manifest)."""
        if with_object:
            # the size the manifest records: another size makes the backup incomplete
            self.data[object_key(m.cluster, m.id)] = b"s" * m.object_size
        self.data[manifest_key(m.cluster, m.id)] = m.to_json().encode()
