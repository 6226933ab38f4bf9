"""The pipeline's safety rules, with a fake etcd stream and the real verifier and seal."""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyrage
import pytest

from etcd_backup_agent.config import Settings, from_dict
from etcd_backup_agent.errors import SnapshotCorrupt, StoreError, VerificationError
from etcd_backup_agent.etcd_source import EtcdSource
from etcd_backup_agent.fsutil import disk_usage, punch_hole
from etcd_backup_agent.pipeline import Pipeline
from etcd_backup_agent.seal import seal_file
from etcd_backup_agent.store.base import PutResult
from etcd_backup_agent.store.local import LocalStore, LocalWriter
from tests.boltwriter import build_db
from tests.snapfixtures import etcd_buckets

RECIPIENT = str(pyrage.x25519.Identity.generate().to_public())


@dataclass
class _Resp:
    blob: bytes
    remaining_bytes: int


class _Stream:
    def __init__(self, blobs: list[bytes]) -> None:
        self.blobs = blobs

    def __iter__(self) -> Any:
        total = sum(len(b) for b in self.blobs)
        for b in self.blobs:
            total -= len(b)
            yield _Resp(b, total)

    def cancel(self) -> None:
        return None


class _Status:
    version = "3.5.1"
    dbSize = 0
    leader = 1
    raftIndex = 1
    raftTerm = 1

    class header:
        member_id = 1
        cluster_id = 2
        revision = 5


class _Stub:
    def __init__(self, blobs: list[bytes]) -> None:
        self.blobs = blobs

    def Snapshot(self, *args: Any, **kwargs: Any) -> _Stream:
        return _Stream(self.blobs)

    def Status(self, *args: Any, **kwargs: Any) -> _Status:
        return _Status()


class _Client:
    call_credentials = None
    metadata = None

    def __init__(self, blobs: list[bytes]) -> None:
        self.maintenancestub = _Stub(blobs)

    def close(self) -> None:
        return None


def fake_source(settings: Settings, db: bytes, trailer: bytes | None = None) -> EtcdSource:
    """An EtcdSource whose etcd streams ``db`` in 32 KiB blobs plus a trailer blob."""
    blobs = [db[i : i + 32768] for i in range(0, len(db), 32768)]
    blobs.append(hashlib.sha256(db).digest() if trailer is None else trailer)
    source = EtcdSource(settings.etcd)
    source._client = _Client([b for b in blobs if b])
    return source


def settings(tmp_path: Path, **extra: Any) -> Settings:
    data: dict[str, Any] = {
        "cluster": {"name": "c", "node": "n1"},
        "encryption": {"recipients": [RECIPIENT]},
        "store": {"type": "local", "path": str(tmp_path / "store")},
        "spool": {"dir": str(tmp_path / "spool")},
    }
    for k, v in extra.items():
        data.setdefault(k, {}).update(v)
    return from_dict(data)


def good_db() -> bytes:
    history = [("put", f"/k/{i}".encode(), b"v" * 50) for i in range(300)]
    data, _ = build_db(etcd_buckets(history), trailer=False)
    return data


def spool_files(tmp_path: Path) -> list[Path]:
    return [p for p in (tmp_path / "spool").rglob("*") if p.is_file()]


def store_files(tmp_path: Path) -> list[Path]:
    root = tmp_path / "store"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_sound_snapshot_is_stored_with_verified_fields(tmp_path: Path) -> None:
    s = settings(tmp_path)
    out = Pipeline(s, LocalStore(s.store.path)).run(fake_source(s, good_db()))
    m = out.manifest
    assert m.verified and m.revision == 301 and m.total_keys is not None
    # the id names the revision etcd reported as the backup began (fixed before the upload)
    assert m.object.startswith("c/") and m.id.endswith("-r5-n1")
    assert sorted(p.name for p in store_files(tmp_path)) == [f"{m.id}.db.zst.age", f"{m.id}.json"]
    assert spool_files(tmp_path) == []


def test_missing_trailer_stores_nothing(tmp_path: Path) -> None:
    s = settings(tmp_path)
    source = fake_source(s, good_db(), trailer=b"")
    with pytest.raises(SnapshotCorrupt, match="without the 32-byte sha256 trailer"):
        Pipeline(s, LocalStore(s.store.path)).run(source)
    assert store_files(tmp_path) == [] and spool_files(tmp_path) == []


def test_wrong_trailer_stores_nothing(tmp_path: Path) -> None:
    s = settings(tmp_path)
    with pytest.raises(SnapshotCorrupt, match="does not match"):
        Pipeline(s, LocalStore(s.store.path)).run(fake_source(s, good_db(), trailer=b"\0" * 32))
    assert store_files(tmp_path) == [] and spool_files(tmp_path) == []


def test_snapshot_failing_native_verification_is_never_stored(tmp_path: Path) -> None:
    s = settings(tmp_path)
    db = bytearray(good_db())
    db[3 * 4096 + 8] = 0x10  # page 3's type becomes "freelist": an invalid page type
    with pytest.raises(VerificationError) as info:
        Pipeline(s, LocalStore(s.store.path)).run(fake_source(s, bytes(db)))
    assert info.value.problems
    assert store_files(tmp_path) == [] and spool_files(tmp_path) == []


class _ShortWriter(LocalWriter):
    def complete(self) -> PutResult:
        result = super().complete()
        return PutResult(key=result.key, size=result.size - 1)


class _ShortStore(LocalStore):
    """A store that reports a different size than it was given (a broken upload)."""

    def put_file(
        self, key: str, src: Path, *, lock: bool = False, cancel: threading.Event | None = None
    ) -> PutResult:
        result = super().put_file(key, src, lock=lock, cancel=cancel)
        return PutResult(key=key, size=result.size - 1)

    def open_write(self, key: str, **kwargs: Any) -> LocalWriter:
        return _ShortWriter(self, key, None)


def test_size_mismatch_after_upload_leaves_no_backup(tmp_path: Path) -> None:
    s = settings(tmp_path)
    with pytest.raises(StoreError, match="expected"):
        Pipeline(s, _ShortStore(s.store.path)).run(fake_source(s, good_db()))
    assert not [p for p in store_files(tmp_path) if p.suffix == ".json"]
    assert store_files(tmp_path) == []


class _DownStore(LocalStore):
    def put_file(
        self, key: str, src: Path, *, lock: bool = False, cancel: threading.Event | None = None
    ) -> PutResult:
        raise StoreError("store down")

    def open_write(self, key: str, **kwargs: Any) -> LocalWriter:
        raise StoreError("store down")


def test_failed_upload_discards_or_keeps_the_sealed_backup(tmp_path: Path) -> None:
    s = settings(tmp_path / "a")
    with pytest.raises(StoreError):
        Pipeline(s, _DownStore(s.store.path)).run(fake_source(s, good_db()))
    assert spool_files(tmp_path / "a") == []

    s = settings(tmp_path / "b", spool={"keep_unuploaded": True})
    pipe = Pipeline(s, _DownStore(s.store.path))
    with pytest.raises(StoreError):
        pipe.run(fake_source(s, good_db()))
    waiting = pipe.spool.waiting()
    assert len(waiting) == 1 and waiting[0].object_path.is_file()
    stored = Pipeline(s, LocalStore(s.store.path)).upload(waiting[0])
    assert stored.id == waiting[0].manifest.id
    assert spool_files(tmp_path / "b") == []


class _FailingWriter(LocalWriter):
    """Accepts the first write, then fails like a store that went away mid-upload."""

    def write(self, data: bytes) -> None:
        if self.written:
            raise StoreError("store went away mid-upload")
        super().write(data)


class _MidStreamDownStore(LocalStore):
    def open_write(self, key: str, **kwargs: Any) -> LocalWriter:
        return _FailingWriter(self, key, None)

    def put_file(
        self, key: str, src: Path, *, lock: bool = False, cancel: threading.Event | None = None
    ) -> PutResult:
        raise StoreError("store down")


def incompressible_db() -> bytes:
    history = [("put", f"/r/{i:05d}".encode(), os.urandom(3000)) for i in range(1500)]
    data, _ = build_db(etcd_buckets(history), trailer=False)
    return data


@pytest.mark.integration
@pytest.mark.parametrize("keep", [False, True])
def test_a_store_failing_mid_stream_keeps_a_sealed_copy_only_when_asked(
    tmp_path: Path, keep: bool, age_identity: tuple[Path, str]
) -> None:
    s = settings(tmp_path, spool={"keep_unuploaded": keep})
    s = replace(s, encryption=replace(s.encryption, recipients=(age_identity[1],)))
    db = incompressible_db()
    pipe = Pipeline(s, _MidStreamDownStore(s.store.path))
    with pytest.raises(StoreError, match="went away"):
        pipe.run(fake_source(s, db))
    assert store_files(tmp_path) == []
    waiting = pipe.spool.waiting()
    if not keep:
        assert waiting == [] and spool_files(tmp_path) == []
        return
    # the verified snapshot, sealed into the spool (raw copy gone); stock tools read it
    assert len(waiting) == 1 and {p.name for p in spool_files(tmp_path)} == {
        waiting[0].object_path.name,
        waiting[0].manifest_path.name,
    }
    out = subprocess.run(
        f"age -d -i {age_identity[0]} {waiting[0].object_path} | zstd -d -c",
        shell=True,
        check=True,
        capture_output=True,
    ).stdout
    assert out == db + hashlib.sha256(db).digest()
    assert waiting[0].manifest.object_size == waiting[0].object_path.stat().st_size


@pytest.mark.integration
def test_sealing_into_the_spool_frees_the_raw_copy_as_it_goes(
    tmp_path: Path, age_identity: tuple[Path, str]
) -> None:
    """Spool peak (issue 13): raw + sealed never exceed 1.3x the db, even incompressible."""
    raw = tmp_path / "raw.db"
    size = 24 * 1024 * 1024
    raw.write_bytes(os.urandom(size))
    probe = tmp_path / "probe"
    if not punch_hole(os.open(probe, os.O_CREAT | os.O_RDWR), 0, 4096):
        pytest.skip("this filesystem cannot punch holes")
    sealed = tmp_path / "sealed.age"
    peaks: list[int] = []
    seal_file(
        raw,
        sealed,
        [age_identity[1]],
        level=1,
        consume=True,
        on_punch=lambda _freed: peaks.append(disk_usage(raw) + disk_usage(sealed)),
    )
    assert len(peaks) >= 8  # punched step by step, not once at the end
    assert max(peaks) <= 1.3 * size
    assert disk_usage(raw) <= 64 * 1024  # all of it given back
    out = subprocess.run(
        f"age -d -i {age_identity[0]} {sealed} | zstd -d -c | wc -c",
        shell=True,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert int(out) == size


def test_progress_events_are_throttled(tmp_path: Path) -> None:
    s = settings(tmp_path)
    events: list[tuple[str, int, int]] = []
    db = incompressible_db()  # ~150 blobs of 32 KiB
    started = time.monotonic()
    Pipeline(s, LocalStore(s.store.path), progress=lambda *e: events.append(e)).run(
        fake_source(s, db)
    )
    elapsed = time.monotonic() - started
    blobs = len(db) // 32768
    assert blobs > 100
    assert len(events) <= 2 + elapsed / 0.25
    assert events[-1] == ("snapshot", len(db), len(db))
