"""catalog.list_backups reads one cluster's manifests; find_backup picks one."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from etcd_backup_agent.catalog import Catalog, find_backup, list_backups
from etcd_backup_agent.errors import BackupNotFound
from etcd_backup_agent.manifest import Manifest, manifest_key, object_key
from etcd_backup_agent.store.local import LocalStore
from tests.fake_backups import MemoryStore, fake_manifest


def put(store: LocalStore, key: str, data: bytes) -> None:
    store.put_bytes(key, data)


def test_lists_backups_newest_first(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    ms = [
        fake_manifest(t)
        for t in ("2026-11-23T00:00:00", "2026-11-24T00:00:00", "2026-11-22T00:00:00")
    ]
    for m in ms:
        put(store, object_key("c1", m.id), b"s" * m.object_size)
        put(store, manifest_key("c1", m.id), m.to_json().encode())
    cat = list_backups(store, "c1")
    assert [m.created_at for m in cat.backups] == [
        "2026-11-24T00:00:00Z",
        "2026-11-23T00:00:00Z",
        "2026-11-22T00:00:00Z",
    ]
    assert cat.orphans == () and cat.unreadable == () and cat.complete


def test_objects_without_manifest_are_orphans_not_backups(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    m = fake_manifest("2026-11-24T00:00:00")
    put(store, object_key("c1", m.id), b"s" * m.object_size)
    cat = list_backups(store, "c1")
    assert cat.backups == ()
    assert cat.orphans == (object_key("c1", m.id),)


def test_unreadable_manifests_are_reported_with_the_reason(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    good = fake_manifest("2026-11-24T00:00:00")
    put(store, object_key("c1", good.id), b"s" * good.object_size)
    put(store, manifest_key("c1", good.id), good.to_json().encode())
    bad_json = fake_manifest("2026-11-23T00:00:00")
    put(store, manifest_key("c1", bad_json.id), b"{not json")
    put(store, object_key("c1", bad_json.id), b"sealed")
    wrong_version = fake_manifest("2026-11-22T00:00:00")
    data = wrong_version.to_json().replace('"format_version": 1', '"format_version": 99')
    put(store, manifest_key("c1", wrong_version.id), data.encode())
    renamed = fake_manifest("2026-11-21T00:00:00")
    put(store, manifest_key("c1", "20261121T000000Z-r1-other"), renamed.to_json().encode())
    foreign = fake_manifest("2026-11-20T00:00:00", cluster="c2")
    put(store, manifest_key("c1", foreign.id), foreign.to_json().encode())
    bad_time = replace(fake_manifest("2026-11-19T00:00:00"), created_at="yesterday")
    put(store, manifest_key("c1", bad_time.id), bad_time.to_json().encode())

    cat = list_backups(store, "c1")
    assert [m.id for m in cat.backups] == [good.id]
    reasons = dict(line.split(": ", 1) for line in cat.unreadable)
    assert set(reasons) == {
        manifest_key("c1", m.id) for m in (bad_json, wrong_version, foreign, bad_time)
    } | {manifest_key("c1", "20261121T000000Z-r1-other")}
    assert "not valid JSON" in reasons[manifest_key("c1", bad_json.id)]
    assert "format_version" in reasons[manifest_key("c1", wrong_version.id)]
    assert "does not match the key" in reasons[manifest_key("c1", "20261121T000000Z-r1-other")]
    assert "cluster 'c2'" in reasons[manifest_key("c1", foreign.id)]
    # An object whose manifest exists but does not parse is not an orphan.
    assert cat.orphans == ()


def test_other_clusters_are_not_listed(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    for cluster in ("c1", "c10", "c2"):
        m = fake_manifest("2026-11-24T00:00:00", cluster=cluster)
        put(store, object_key(cluster, m.id), b"s" * m.object_size)
        put(store, manifest_key(cluster, m.id), m.to_json().encode())
    put(store, "c10/20261124T000000Z-r9-x.db.zst.age", b"orphan of c10")
    cat = list_backups(store, "c1")
    assert [m.cluster for m in cat.backups] == ["c1"]
    assert cat.orphans == ()


def test_nested_and_unrelated_keys_are_ignored(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    m = fake_manifest("2026-11-24T00:00:00")
    put(store, f"c1/old/{m.id}.json", m.to_json().encode())
    put(store, "c1/README.txt", b"hello")
    cat = list_backups(store, "c1")
    assert cat == Catalog(backups=(), orphans=(), unreadable=(), complete=True)


def test_incomplete_listing_is_reported() -> None:
    store = MemoryStore(complete=False)
    store.add(fake_manifest("2026-11-24T00:00:00"))
    assert not list_backups(store, "c1").complete


def test_find_by_id_and_latest_is_newest_verified() -> None:
    store = MemoryStore()
    newest_unverified = fake_manifest("2026-11-24T12:00:00", verified=False)
    verified = fake_manifest("2026-11-24T11:00:00")
    older = fake_manifest("2026-11-24T10:00:00")
    for m in (newest_unverified, verified, older):
        store.add(m)
    cat = list_backups(store, "c1")
    assert find_backup(cat, "latest") == verified
    assert find_backup(cat, older.id) == older
    assert find_backup(cat, newest_unverified.id) == newest_unverified
    with pytest.raises(BackupNotFound, match="nope"):
        find_backup(cat, "nope")


def test_latest_without_a_verified_backup_is_not_found() -> None:
    store = MemoryStore()
    store.add(fake_manifest("2026-11-24T12:00:00", verified=False))
    with pytest.raises(BackupNotFound, match="no verified backup"):
        find_backup(list_backups(store, "c1"), "latest")
    with pytest.raises(BackupNotFound):
        find_backup(Catalog(backups=()), "latest")


def test_cache_reads_each_manifest_once_and_forgets_deleted_ones(tmp_path: Path) -> None:
    """A long-running reader fetches only new manifests; deleted ones leave the cache."""
    from etcd_backup_agent.catalog import ManifestCache

    store = LocalStore(tmp_path)

    def _put(m: Manifest) -> Manifest:
        put(store, object_key("c1", m.id), b"s" * m.object_size)
        put(store, manifest_key("c1", m.id), m.to_json().encode())
        return m

    first = _put(fake_manifest("2026-01-01T00:00:00"))
    reads: list[str] = []
    real_get = store.get_bytes

    def counting_get(key: str) -> bytes:
        reads.append(key)
        return real_get(key)

    store.get_bytes = counting_get  # type: ignore[method-assign]
    cache: ManifestCache = {}
    assert [m.id for m in list_backups(store, "c1", cache).backups] == [first.id]
    second = _put(fake_manifest("2026-01-02T00:00:00"))
    catalog = list_backups(store, "c1", cache)
    assert [m.id for m in catalog.backups] == [second.id, first.id]
    assert reads == [manifest_key("c1", first.id), manifest_key("c1", second.id)]
    store.delete(manifest_key("c1", first.id))
    assert [m.id for m in list_backups(store, "c1", cache).backups] == [second.id]
    assert [k for k, _size in cache] == [manifest_key("c1", second.id)]


def test_a_manifest_without_its_object_or_with_another_size_is_incomplete() -> None:
    store = MemoryStore()
    whole, gone, short = (
        fake_manifest(t)
        for t in ("2026-11-22T00:00:00", "2026-11-23T00:00:00", "2026-11-24T00:00:00")
    )
    store.add(whole)
    store.add(gone, with_object=False)
    store.add(short)
    store.data[object_key("c1", short.id)] = b"s" * (short.object_size - 1)
    cache: dict[tuple[str, int], Manifest] = {}
    for _ in range(2):  # a cached manifest is checked against each new listing too
        cat = list_backups(store, "c1", cache=cache)
        assert [m.id for m in cat.backups] == [whole.id]
        assert [(i.manifest.id, i.reason) for i in cat.incomplete] == [
            (short.id, f"object {short.object} has 9 bytes, the manifest says 10"),
            (gone.id, f"object {gone.object} is missing"),
        ]
    assert cat.newest_verified == whole
    assert find_backup(cat, "latest") == whole
    with pytest.raises(BackupNotFound, match=r"is incomplete: object .* is missing"):
        find_backup(cat, gone.id)
    store.data[object_key("c1", gone.id)] = b"s" * gone.object_size  # the object came back
    assert [m.id for m in list_backups(store, "c1", cache=cache).backups] == [gone.id, whole.id]


def test_same_second_backups_order_by_revision() -> None:
    a = replace(fake_manifest("2026-11-24T00:00:00"), revision=6, id="20261124T000000Z-r6-n1")
    b = replace(a, revision=11, id="20261124T000000Z-r11-n1")
    store = MemoryStore()
    for m in (a, b):
        store.add(replace(m, object=object_key("c1", m.id)))
    assert [m.revision for m in list_backups(store, "c1").backups] == [11, 6]
