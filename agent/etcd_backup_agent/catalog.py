"""Placeholder catalog (replaced by the retention branch)."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import BackupNotFound
from .manifest import MANIFEST_SUFFIX, Manifest, cluster_prefix
from .store.base import Store


@dataclass(frozen=True)
class Catalog:
    backups: tuple[Manifest, ...]
    orphans: tuple[str, ...] = ()
    unreadable: tuple[str, ...] = ()
    complete: bool = True


def list_backups(store: Store, cluster: str) -> Catalog:
    listing = store.list(cluster_prefix(cluster))
    out = [
        Manifest.from_json(store.get_bytes(o.key))
        for o in listing.objects
        if o.key.endswith(MANIFEST_SUFFIX)
    ]
    out.sort(key=lambda m: m.created_at, reverse=True)
    return Catalog(backups=tuple(out), complete=listing.complete)


def find_backup(catalog: Catalog, id_or_latest: str) -> Manifest:
    for m in catalog.backups:
        if id_or_latest in (m.id, "latest"):
            return m
    raise BackupNotFound(id_or_latest)
