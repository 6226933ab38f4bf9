"""Fetch a stored backup to a checked local plaintext snapshot: one implementation for
restore, ``verify --backup``, drills and the keyspace commands.

Order of trust: the stored object's sha256 is checked before anything decrypted is used;
the plaintext lands in a private scratch dir and is checked (sha256 of the db part,
trailer, native verification, manifest revision/hash/key count) before anyone reads it.
Only this module's own scratch files are ever removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from .. import log as logsetup
from .. import scratch as scratch_mod
from ..bundle.check import verify_bundle
from ..catalog import find_backup, list_backups
from ..config import Settings
from ..errors import CryptoError, RestoreError, StoreError, VerificationError
from ..events import Emit, no_emit, note, progress
from ..manifest import Manifest
from ..seal import unseal_stream
from ..snapshot import verify as snapverify
from ..store.base import Store

CHUNK = 1024 * 1024
TRAILER = 32


@dataclass(frozen=True)
class CheckedSnapshot:
    """A decrypted snapshot (db + trailer) that matched its manifest."""

    manifest: Manifest
    path: Path
    revision: int
    total_keys: int | None
    hash: int | None
    storage_version: str | None = None  # set for etcd 3.6 snapshots (meta/storageVersion)


def work_root(settings: Settings) -> Path:
    return settings.restore.work_dir or settings.spool.dir


@contextlib.contextmanager
def scratch_dir(settings: Settings, prefix: str) -> Iterator[Path]:
    """A private temporary directory (0700) in the work dir, removed afterwards."""
    with scratch_mod.scratch_dir(work_root(settings), prefix) as path:
        yield path


def resolve_backup(settings: Settings, store: Store, backup: str) -> Manifest:
    """The manifest of ``backup`` (an id or "latest"); BackupNotFound when there is none."""
    try:
        catalog = list_backups(store, settings.cluster)
    except ValueError as exc:
        raise StoreError(f"{store.describe()}: unreadable manifest: {exc}") from None
    return find_backup(catalog, backup)


def _size_error(size: int, manifest: Manifest) -> VerificationError:
    return VerificationError(
        f"decrypted snapshot has {size} bytes, expected {manifest.db_size} + {TRAILER}"
    )


def check_plaintext(path: Path, manifest: Manifest, emit: Emit) -> None:
    """Check the decrypted file: db size, sha256 of the db part, and the etcd trailer."""
    size = path.stat().st_size
    if size != manifest.db_size + TRAILER:
        raise _size_error(size, manifest)
    digest = hashlib.sha256()
    remaining = size - TRAILER
    with path.open("rb") as f:
        while remaining:
            chunk = f.read(min(CHUNK, remaining))
            if not chunk:
                raise VerificationError("decrypted snapshot ended early")
            digest.update(chunk)
            remaining -= len(chunk)
            progress(emit, "checksum", size - TRAILER - remaining, size - TRAILER)
        trailer = f.read(TRAILER)
    if digest.hexdigest() != manifest.snapshot_sha256:
        raise VerificationError("decrypted snapshot sha256 differs from the manifest")
    if trailer != digest.digest():
        raise VerificationError("decrypted snapshot sha256 trailer does not match its data")


def verify_against_manifest(
    path: Path, manifest: Manifest, known_sha256: str | None = None
) -> snapverify.VerifyReport:
    """Natively verify ``path`` and compare revision, hash and key count with the manifest.

    ``known_sha256``: the data's digest, already computed while it was written."""
    report = snapverify.verify_snapshot(
        path, manifest.status_rules or "auto", known_sha256=known_sha256
    )
    if report.sound and report.trailer_ok is not True:
        raise VerificationError("decrypted snapshot has no matching sha256 trailer")
    if not report.sound or report.status is None:
        problems = report.problems or ["no status"]
        raise VerificationError(f"snapshot failed native verification: {problems[0]}", problems)
    st = report.status
    mismatches = []
    if st.revision != manifest.revision:
        mismatches.append(f"revision {st.revision} != manifest {manifest.revision}")
    if manifest.hash is not None and st.hash != manifest.hash:
        mismatches.append(f"hash {st.hash} != manifest {manifest.hash}")
    if manifest.total_keys is not None and st.total_key != manifest.total_keys:
        mismatches.append(f"key count {st.total_key} != manifest {manifest.total_keys}")
    if mismatches:
        raise VerificationError("snapshot differs from its manifest: " + "; ".join(mismatches))
    return report


class _FetchReader:
    """The store's download stream, hashed and counted as the decrypter reads it."""

    def __init__(self, body: Any, manifest: Manifest, emit: Emit) -> None:
        self.body = body
        self.manifest = manifest
        self.emit = emit
        self.digest = hashlib.sha256()
        self.count = 0
        self._shown = 0.0

    def read(self, n: int = -1) -> bytes:
        data: bytes = self.body.read(CHUNK if n is None or n < 0 else n)
        self.digest.update(data)
        self.count += len(data)
        now = time.monotonic()
        if not data or now - self._shown >= 0.25:
            self._shown = now
            progress(self.emit, "fetch", self.count, self.manifest.object_size)
        return data

    def readinto(self, buf: Any) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def drain(self) -> None:
        while self.read(CHUNK):
            pass

    def matches(self) -> bool:
        m = self.manifest
        return self.count == m.object_size and self.digest.hexdigest() == m.object_sha256

    def mismatch(self) -> VerificationError:
        m = self.manifest
        return VerificationError(
            f"stored object {m.object} does not match its manifest "
            f"({self.count} bytes, sha256 {self.digest.hexdigest()[:16]}..., expected "
            f"{m.object_size} bytes, {m.object_sha256[:16]}...): "
            "tampered or damaged; nothing was decrypted"
        )


def fetch_and_check(
    store: Store, manifest: Manifest, identity_text: str, scratch: Path, emit: Emit
) -> CheckedSnapshot:
    """Fetch, check, unseal and verify one backup into ``scratch``; raise on any mismatch.

    Fetch, decryption and decompression are one streamed pass (no sealed copy on disk);
    the object's sha256 is computed as it arrives and checked at its end, and the
    plaintext's sha256 as it is written, so nothing is read twice. age authenticates
    every 64 KiB chunk, so tampered bytes never reach the plaintext file; any mismatch
    removes the plaintext and is reported as the object not matching its manifest.
    """
    log = logsetup.get("restore")
    snapshot = scratch / "snapshot.db"
    note(emit, f"fetching and decrypting {manifest.object} ({manifest.object_size} bytes)")
    with store.open_read(manifest.object) as body:
        src = _FetchReader(body, manifest, emit)
        try:
            result = unseal_stream(cast(BinaryIO, src), snapshot, identity_text, durable=False)
            src.drain()  # bytes after the age stream would change the object's sha256
        except CryptoError:
            src.drain()
            if not src.matches():
                raise src.mismatch() from None
            raise
        except OSError as exc:
            raise CryptoError(f"decryption failed: {exc}") from None
    if not src.matches():
        snapshot.unlink(missing_ok=True)
        raise src.mismatch()
    progress(emit, "decrypt", result.size, manifest.db_size + TRAILER)
    if result.size != manifest.db_size + TRAILER:
        raise _size_error(result.size, manifest)
    if result.data_sha256 != manifest.snapshot_sha256:
        raise VerificationError("decrypted snapshot sha256 differs from the manifest")
    if result.trailer.hex() != result.data_sha256:
        raise VerificationError("decrypted snapshot sha256 trailer does not match its data")
    note(emit, "object and snapshot sha256 match the manifest; verifying natively")
    report = verify_against_manifest(snapshot, manifest, known_sha256=result.data_sha256)
    st = report.status
    assert st is not None
    log.info("backup checked", backup=manifest.id, revision=st.revision, keys=st.total_key)
    return CheckedSnapshot(manifest, snapshot, st.revision, st.total_key, st.hash, st.version)


@contextlib.contextmanager
def fetched(
    settings: Settings,
    store: Store,
    manifest: Manifest,
    identity_text: str,
    emit: Emit,
    prefix: str,
) -> Iterator[CheckedSnapshot]:
    """The checked plaintext of ``manifest``'s backup in a scratch dir named ``prefix``...,
    removed when the block ends (see fetch_and_check)."""
    with scratch_dir(settings, prefix) as scratch:
        yield fetch_and_check(store, manifest, identity_text, scratch, emit)


def check_local_snapshot(
    path: Path, allow_no_trailer: bool
) -> tuple[snapverify.VerifyReport, bool]:
    """Verify a local plaintext snapshot natively; return (report, has a trailer)."""
    if not path.is_file():
        raise RestoreError(f"snapshot {path} is not a readable file")
    # one pass: the trailer's sha256 runs beside the tree walk (verify_snapshot)
    report = snapverify.verify_snapshot(path, "auto", require_trailer=False)
    if report.sound and report.trailer_ok is None and not allow_no_trailer:
        raise VerificationError(
            f"snapshot {path} has no sha256 trailer (copied from a data dir?): its integrity "
            "cannot be proven; pass --allow-no-trailer to restore it anyway"
        )
    if not report.sound or report.status is None:
        problems = report.problems or ["no status"]
        raise VerificationError(
            f"snapshot {path} failed native verification: {problems[0]}", problems
        )
    return report, report.trailer_ok is True


@dataclass(frozen=True)
class BackupCheck:
    """The result of checking one stored backup end to end (no restore)."""

    backup_id: str
    revision: int
    total_keys: int | None
    hash: int | None
    object_sha256_ok: bool = True
    snapshot_sha256_ok: bool = True
    native_ok: bool = True
    bundle: str = "none"  # "ok", "none" or "failed" (at backup time); see bundle/check.py
    bundle_files: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_backup(
    settings: Settings, store: Store, backup: str, identity_text: str, emit: Emit = no_emit
) -> BackupCheck:
    """Download, decrypt, decompress and verify ``backup`` against its manifest."""
    manifest = resolve_backup(settings, store, backup)
    with fetched(settings, store, manifest, identity_text, emit, "verify-") as checked:
        pass
    bundle, files = verify_bundle(store, manifest, identity_text, emit)
    return BackupCheck(
        manifest.id,
        checked.revision,
        checked.total_keys,
        checked.hash,
        bundle=bundle,
        bundle_files=files,
    )
