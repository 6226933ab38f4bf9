"""Read the backups of one cluster from a store: manifests, leftovers, unreadable files.

A backup exists only when its manifest exists (see ``manifest``) and its object is in the
same listing with the size the manifest records. A manifest whose object is missing or has
another size is *incomplete*: it is reported, never counted as a backup (not by ``latest``,
retention, scheduling or drills) and never deleted here. Objects without a manifest are
orphans to report, and manifests that do not parse are listed with the reason, never
silently dropped. The check costs nothing: the listing already holds every object's size.
"""

from __future__ import annotations

from dataclasses import dataclass

from .bundle.record import BUNDLE_SUFFIX
from .errors import BackupNotFound, StoreNotFound
from .manifest import (
    MANIFEST_SUFFIX,
    OBJECT_SUFFIX,
    Manifest,
    cluster_prefix,
    object_key,
)
from .store.base import Store

LATEST = "latest"


@dataclass(frozen=True)
class Incomplete:
    """A manifest whose object is missing or does not have the recorded size."""

    manifest: Manifest
    reason: str


@dataclass(frozen=True)
class Catalog:
    """The backups of one cluster, newest first, and what else was found beside them."""

    backups: tuple[Manifest, ...]
    orphans: tuple[str, ...] = ()
    unreadable: tuple[str, ...] = ()
    complete: bool = True
    incomplete: tuple[Incomplete, ...] = ()

    @property
    def newest_verified(self) -> Manifest | None:
        return next((m for m in self.backups if m.verified), None)


def sort_key(m: Manifest) -> tuple[float, int, str]:
    """Order backups by creation time (whole seconds), then revision, then id."""
    return m.created.timestamp(), m.revision, m.id


# Manifests are written once and never changed: a long-running reader may keep the parsed
# ones, keyed by (store key, size), and read only the new ones on the next listing.
ManifestCache = dict[tuple[str, int], Manifest]


def list_backups(store: Store, cluster: str, cache: ManifestCache | None = None) -> Catalog:
    """List the backups of ``cluster``; keys outside its prefix are never looked at.

    With ``cache``, manifests already read (same key and size) are not fetched again, and
    entries for keys no longer listed are dropped from it.
    """
    prefix = cluster_prefix(cluster)
    listing = store.list(prefix)
    sizes = {o.key: o.size for o in listing.objects}
    manifests: dict[str, str] = {}
    objects: dict[str, str] = {}
    for o in listing.objects:
        name = o.key[len(prefix) :] if o.key.startswith(prefix) else ""
        if not name or "/" in name:
            continue  # another cluster's key, or something nested we did not write
        if name.endswith(MANIFEST_SUFFIX):
            manifests[name[: -len(MANIFEST_SUFFIX)]] = o.key
        elif name.endswith(OBJECT_SUFFIX):
            objects[name[: -len(OBJECT_SUFFIX)]] = o.key
        elif name.endswith(BUNDLE_SUFFIX):  # a bundle without its manifest is an orphan too
            objects[name[: -len(BUNDLE_SUFFIX)] + BUNDLE_SUFFIX] = o.key

    backups: list[Manifest] = []
    unreadable: list[str] = []
    incomplete: list[Incomplete] = []

    def add(m: Manifest) -> None:
        problem = _object_problem(m, sizes.get(objects.get(m.id, "")))
        if problem:
            incomplete.append(Incomplete(m, problem))
        else:
            backups.append(m)

    for bid, key in sorted(manifests.items()):
        cached = cache.get((key, sizes[key])) if cache is not None else None
        if cached is not None:
            add(cached)
            continue
        try:
            data = store.get_bytes(key)
        except StoreNotFound:
            unreadable.append(f"{key}: vanished while listing")
            continue
        problem, manifest = _check(data, cluster, bid)
        if manifest is None:
            unreadable.append(f"{key}: {problem}")
        else:
            add(manifest)
            if cache is not None:
                cache[(key, sizes[key])] = manifest
    if cache is not None:
        for gone in [k for k in cache if sizes.get(k[0]) != k[1]]:
            del cache[gone]
    backups.sort(key=sort_key, reverse=True)
    orphans = tuple(
        key
        for bid, key in sorted(objects.items())
        if bid.removesuffix(BUNDLE_SUFFIX) not in manifests
    )
    return Catalog(
        backups=tuple(backups),
        orphans=orphans,
        unreadable=tuple(unreadable),
        complete=listing.complete,
        incomplete=tuple(sorted(incomplete, key=lambda i: sort_key(i.manifest), reverse=True)),
    )


def _object_problem(m: Manifest, listed_size: int | None) -> str:
    """Why the listed object does not complete ``m`` ('' when it does)."""
    if listed_size is None:
        return f"object {m.object} is missing"
    if m.object_size > 0 and listed_size != m.object_size:
        return f"object {m.object} has {listed_size} bytes, the manifest says {m.object_size}"
    return ""


def _check(data: bytes, cluster: str, bid: str) -> tuple[str, Manifest | None]:
    """Parse a manifest and check it describes the key it was read from."""
    try:
        m = Manifest.from_json(data)
        m.created  # noqa: B018 -- a manifest whose time does not parse cannot be ordered
    except (ValueError, TypeError, AttributeError) as exc:
        return str(exc) or type(exc).__name__, None
    if m.id != bid:
        return f"id {m.id!r} does not match the key", None
    if m.cluster != cluster:
        return f"cluster {m.cluster!r} does not match the prefix {cluster!r}", None
    if m.object != object_key(cluster, bid):
        return f"object {m.object!r} is not beside the manifest", None
    return "", m


def find_backup(catalog: Catalog, id_or_latest: str) -> Manifest:
    """Return the backup with this id, or the newest verified one for ``"latest"``."""
    if id_or_latest == LATEST:
        newest = catalog.newest_verified
        if newest is None:
            raise BackupNotFound("no verified backup in the store")
        return newest
    for m in catalog.backups:
        if m.id == id_or_latest:
            return m
    for i in catalog.incomplete:
        if i.manifest.id == id_or_latest:
            raise BackupNotFound(f"backup {id_or_latest!r} is incomplete: {i.reason}")
    raise BackupNotFound(f"no backup with id {id_or_latest!r}")
