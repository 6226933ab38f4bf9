"""One backup: etcd -> spool (trailer checked) -> native verify -> seal -> store -> manifest.

``prepare`` leaves a sealed backup in the spool (object + pending manifest); ``upload``
stores it, manifest last. The daemon may keep a prepared backup in the spool while the
store is down and upload it later; the one-shot command does both at once.

``run`` is the overlapped path (stream, hash, spool and seal at once; verify; publish).
The module is over the ~400-line guideline because ``run``, ``prepare`` and ``upload`` share
one failure matrix (store down with or without ``keep_unuploaded``, cancel, a seal child
that dies, a publish that fails its check) and the rollbacks it needs; the spool itself
lives in spool.py, the stream plumbing in streaming.py and the sealing child in
seal_child.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, cast

from . import __version__
from . import log as logsetup
from .bundle.attach import build_record, discard_pending, store_bundle
from .config import Settings
from .errors import Cancelled, CryptoError, SpoolError, StoreError, VerificationError
from .etcd_source import EtcdSource, EtcdStatus
from .keyspace.hook import with_keyspace
from .manifest import (
    MANIFEST_SUFFIX,
    OBJECT_SUFFIX,
    Compression,
    Encryption,
    Manifest,
    backup_id,
    format_time,
    manifest_key,
    object_key,
)
from .ratelimit import RateLimiter
from .seal_child import SealStream, run_seal
from .snapshot.verify import VERIFIER_VERSION, VerifyReport, verify_snapshot
from .spool import SealedBackup, Spool, spool_error
from .store.base import ObjectWriter, Store
from .store.writer import open_writer
from .streaming import Tee, Throttle, Uploader

StageHook = Callable[[str, float, dict[str, Any]], None]
ProgressHook = Callable[[str, int, int], None]
# Called with the raw (verified) snapshot and its manifest before the raw file is removed.
AfterVerifyHook = Callable[[Path, Manifest], None]


@dataclass
class BackupOutcome:
    manifest: Manifest
    stages: dict[str, float] = field(default_factory=dict)


def _noop_stage(name: str, seconds: float, info: dict[str, Any]) -> None:
    return None


@contextlib.contextmanager
def _removing(path: Path) -> Iterator[Path]:
    """Yield ``path``; remove it when the block fails."""
    try:
        yield path
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        raise


class Pipeline:
    """Take, verify, seal and store backups for one configuration."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        cancel: threading.Event | None = None,
        on_stage: StageHook = _noop_stage,
        progress: ProgressHook | None = None,
        after_verify: AfterVerifyHook | None = None,
        before_publish: Callable[[Manifest], None] | None = None,
        clock: Callable[[], datetime] | None = None,
        spool: Spool | None = None,
        trigger: str | None = None,
    ) -> None:
        self.settings = settings
        self.trigger = trigger  # recorded in the manifest (a flush never drops an asked one)
        self.before_publish = before_publish
        # the daemon passes its own clock so that ids, scheduling and retention share one
        self.clock = clock or (lambda: datetime.now(UTC))
        self.after_verify = after_verify
        self.store = store
        self.cancel = cancel or threading.Event()
        self.on_stage = on_stage
        self.progress = progress
        self.spool = spool or Spool(settings.spool.dir)  # the agent passes its one spool
        self.log = logsetup.get("pipeline")
        self.stages: dict[str, float] = {}
        self._swept = False

    def _stage_done(self, name: str, started: float, **info: Any) -> None:
        self._stage_report(name, time.monotonic() - started, info)

    def _stage_report(self, name: str, seconds: float, info: dict[str, Any]) -> None:
        self.stages[name] = seconds
        self.log.info("stage finished", stage=name, seconds=round(seconds, 3), **info)
        self.on_stage(name, seconds, info)

    def _check_cancel(self) -> None:
        if self.cancel.is_set():
            raise Cancelled("backup cancelled by shutdown")

    # -- stage 1: snapshot ------------------------------------------------------------

    def _snapshot(self, source: EtcdSource, raw: Path) -> tuple[EtcdStatus, str]:
        started = time.monotonic()
        status = source.status()
        part = raw.with_name(raw.name + ".part")
        try:
            with _removing(part), open(part, "xb") as f:
                progress = Throttle(self._progress_hook("snapshot"))
                result = source.snapshot(f, cancel=self.cancel, progress=progress)
                f.flush()
                os.fsync(f.fileno())
            os.replace(part, raw)
        except OSError as exc:
            raise spool_error(exc, self.spool.dir) from None
        self._stage_done(
            "snapshot",
            started,
            bytes=result.size,
            endpoint=source.endpoint,
            etcd_version=status.version,
        )
        return status, result.sha256

    # -- stage 2: verify --------------------------------------------------------------

    def _verify(self, raw: Path, known_sha256: str | None = None) -> VerifyReport:
        started = time.monotonic()
        report = verify_snapshot(raw, "auto", known_sha256=known_sha256)
        if not report.sound or report.status is None:
            problems = report.problems or ["verifier returned no status"]
            self.log.error("verification failed", problems=problems[:20])
            raise VerificationError(
                f"snapshot failed verification: {problems[0]}"
                + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
                problems,
            )
        st = report.status
        self._stage_done(
            "verify", started, revision=st.revision, keys=st.total_key, hash=st.hash, rules=st.rules
        )
        return report

    # -- stage 3: seal ----------------------------------------------------------------

    def _seal(self, raw: Path, manifest: Manifest, consume: bool = False) -> SealedBackup:
        started = time.monotonic()
        opath = self.spool.pending / f"{manifest.id}{OBJECT_SUFFIX}"
        mpath = self.spool.pending / f"{manifest.id}{MANIFEST_SUFFIX}"
        tmp = opath.with_name(opath.name + ".part")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        enc = self.settings.encryption
        comp = self.settings.compression
        result = run_seal(
            raw, tmp, enc.recipients, comp.level, comp.threads, cancel=self.cancel, consume=consume
        )
        manifest = build_record(self.settings, manifest, self.spool.pending, self.log)  # bundle/
        try:
            os.replace(tmp, opath)
            manifest = replace(
                manifest,
                compressed_size=result.compressed_size,
                object_size=result.object_size,
                object_sha256=result.object_sha256,
            )
            _write_atomic(mpath, manifest.to_json().encode())
        except OSError as exc:
            for p in (tmp, opath):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
            raise spool_error(exc, self.spool.dir) from None
        ratio = result.object_size / max(result.input_size, 1)
        self._stage_done(
            "seal",
            started,
            input_bytes=result.input_size,
            compressed_bytes=result.compressed_size,
            object_bytes=result.object_size,
            ratio=round(ratio, 3),
        )
        return SealedBackup(manifest=manifest, object_path=opath, manifest_path=mpath)

    # -- public ------------------------------------------------------------------------

    def prepare(self, source: EtcdSource) -> SealedBackup:
        """Snapshot, verify and seal; the result waits in the spool."""
        self.spool.ensure()
        begun = time.monotonic()
        created = self.clock()
        raw = self.spool.raw_path(f"{created:%Y%m%dT%H%M%S%fZ}")
        try:
            status, sha256 = self._snapshot(source, raw)
            self._check_cancel()
            report = self._verify(raw)
            self._check_cancel()
            manifest = self._manifest(
                created, report, raw, sha256, status=status, source="snapshot"
            )
            manifest = with_keyspace(self.settings, raw, manifest, self.log)  # never fails
            self._after_verify(raw, manifest)
            self._check_cancel()
            sealed = self._seal(raw, manifest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                raw.unlink()
        self.stages["prepare_total"] = time.monotonic() - begun
        return sealed

    def prepare_from_data_dir(self, data_dir: Path, force: bool = False) -> SealedBackup:
        """Back up ``member/snap/db`` of a stopped etcd (appending the sha256 trailer)."""
        self.spool.ensure()
        db = data_dir / "member" / "snap" / "db"
        if not db.is_file():
            raise SpoolError(f"{db} does not exist: is {data_dir} an etcd data dir?")
        created = self.clock()
        raw = self.spool.raw_path(f"{created:%Y%m%dT%H%M%S%fZ}")
        started = time.monotonic()
        try:
            with open(db, "rb") as src:
                if not force:
                    _refuse_if_locked(src, db)
                part = raw.with_name(raw.name + ".part")
                digest = hashlib.sha256()
                with _removing(part), open(part, "xb") as out:
                    for chunk in iter(lambda: src.read(1024 * 1024), b""):
                        digest.update(chunk)
                        out.write(chunk)
                    # the trailer etcdctl would have written: restore needs no --skip-hash-check
                    out.write(digest.digest())
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(part, raw)
            self._stage_done("copy", started, bytes=raw.stat().st_size, data_dir=str(data_dir))
            report = self._verify(raw)
            manifest = self._manifest(
                created, report, raw, digest.hexdigest(), status=None, source="data-dir"
            )
            manifest = with_keyspace(self.settings, raw, manifest, self.log)  # never fails
            return self._seal(raw, manifest)
        except OSError as exc:
            raise spool_error(exc, self.spool.dir) from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                raw.unlink()

    def _after_verify(self, raw: Path, manifest: Manifest) -> None:
        """Run the ``after_verify`` hook; its failure never fails the backup."""
        if self.after_verify is None:
            return
        try:
            self.after_verify(raw, manifest)
        except Exception as exc:
            self.log.error("after-verify hook failed", error=str(exc), id=manifest.id)

    def _manifest(
        self,
        created: datetime,
        report: VerifyReport,
        raw: Path,
        digest: str,
        status: EtcdStatus | None,
        source: str,
        bid: str | None = None,
    ) -> Manifest:
        st = report.status
        assert st is not None
        size = raw.stat().st_size - 32
        bid = bid or backup_id(created, st.revision, self.settings.node)
        return Manifest(
            id=bid,
            object=object_key(self.settings.cluster, bid),
            created_at=format_time(created),
            cluster=self.settings.cluster,
            node=self.settings.node,
            revision=st.revision,
            db_size=size,
            snapshot_sha256=digest,
            object_size=0,
            object_sha256="",
            etcd_endpoint=status.endpoint if status else "",
            etcd_version=status.version if status else "",
            etcd_member_id=f"{status.member_id:x}" if status else "",
            etcd_cluster_id=f"{status.cluster_id:x}" if status else "",
            source=source,
            hash=st.hash,
            total_keys=st.total_key,
            total_size=st.total_size,
            status_rules=st.rules,
            storage_version=st.version,
            verified=True,
            verifier_version=VERIFIER_VERSION,
            compression=Compression(algorithm="zstd", level=self.settings.compression.level),
            encryption=Encryption(format="age", recipients=self.settings.encryption.recipients),
            agent_version=__version__,
            trigger=self.trigger,
        )

    def sweep_stale_uploads(self) -> int:
        """Abort stale incomplete multipart uploads (S3) once per pipeline; best-effort."""
        if self._swept:
            return 0
        self._swept = True
        return sweep_stale_uploads(self.store, self.settings, self.log)

    def upload(self, sealed: SealedBackup) -> Manifest:
        """Store the object, then the manifest (last); remove the spool copy on success."""
        started = time.monotonic()
        self._check_cancel()
        self.sweep_stale_uploads()
        m = sealed.manifest
        locked = self._locked()
        put = self.store.put_file(m.object, sealed.object_path, lock=locked, cancel=self.cancel)
        if put.size != m.object_size:
            self.store.delete(m.object)
            raise StoreError(
                f"{self.store.describe()}: stored object {m.object} has {put.size} bytes, "
                f"expected {m.object_size}"
            )
        if self.cancel.is_set():
            # stored but no manifest yet: remove the object rather than leave an orphan
            with contextlib.suppress(Exception):
                self.store.delete(m.object)
            raise Cancelled("backup cancelled by shutdown")
        m = store_bundle(self.store, m, self.spool.pending, lock=locked, cancel=self.cancel)
        duration = self.stages.get("prepare_total", 0.0) + (time.monotonic() - started)
        final = replace(
            m,
            object_lock_mode=put.lock_mode,
            retain_until=format_time(put.retain_until) if put.retain_until else None,
            duration_seconds=round(duration, 3),
        )
        if self.before_publish is not None:
            try:  # the last word on publishing (one backup per period): it may refuse
                self.before_publish(final)
            except BaseException:
                self._remove_objects(m)
                raise
        self.store.put_bytes(manifest_key(m.cluster, m.id), final.to_json().encode(), lock=locked)
        self.spool.discard(sealed)
        self._stage_done(
            "upload", started, object=m.object, bytes=put.size, store=self.store.describe()
        )
        return final

    def run(self, source: EtcdSource) -> BackupOutcome:
        """One complete backup; on failure nothing is stored and the spool is clean.

        The stages overlap (see docs/architecture.md): while etcd's stream arrives it is
        hashed, written to the spool and fed to the sealing child, whose output is uploaded
        as it comes. The upload is completed, and the manifest written, only after the
        trailer and the native verification passed. When the store fails and
        ``keep_unuploaded`` is set, the verified snapshot is sealed into the spool instead.
        """
        self.stages = {}
        self.spool.ensure()
        self.sweep_stale_uploads()
        begun = time.monotonic()
        created = self.clock()
        raw = self.spool.raw_path(f"{created:%Y%m%dT%H%M%S%fZ}")
        raw = raw.with_name(raw.name + ".part")  # never complete on its own: always removed
        keep = self.settings.spool.keep_unuploaded
        started = time.monotonic()
        status = source.status()
        # The object key is fixed before the upload starts, so the id names the revision
        # etcd reported as the backup began; the manifest's revision is the snapshot's own.
        bid = backup_id(created, status.revision, self.settings.node)
        key = object_key(self.settings.cluster, bid)
        writer: ObjectWriter | None = None
        store_error: BaseException | None = None
        try:
            writer = open_writer(
                self.store,
                key,
                size_hint=status.db_size + status.db_size // 64 + 1024 * 1024,
                lock=self._locked(),
                cancel=self.cancel,
                scratch=self.spool.pending,
                patient=not keep,
            )
        except (StoreError, Cancelled) as exc:
            if not keep or isinstance(exc, Cancelled):
                raise
            store_error = exc
            self.log.warning("store unavailable: sealing into the spool", error=str(exc))
        seal: SealStream | None = None
        uploader: Uploader | None = None
        seal_stage: tuple[float, dict[str, Any]] | None = None
        kept = False
        try:
            enc, comp = self.settings.encryption, self.settings.compression
            if writer is not None:
                seal = SealStream(enc.recipients, comp.level, comp.threads)
            try:
                raw_file = open(raw, "xb")  # noqa: SIM115 (closed below, or on failure)
            except OSError as exc:
                raise spool_error(exc, self.spool.dir) from None
            limit = self.settings.etcd.snapshot_rate_limit
            tee = Tee(raw_file, seal, RateLimiter(limit) if limit else None)
            if seal is not None:

                def on_upload_failure(exc: BaseException) -> None:
                    # from the uploader thread: the stream thread acts on it at its next blob
                    if keep and not isinstance(exc, Cancelled):
                        tee.drop_sealer = True
                    else:
                        tee.failure = exc

                uploader = Uploader(seal, writer, on_upload_failure).start()
            progress = Throttle(self._progress_hook("snapshot"))
            try:
                with raw_file:
                    result = source.snapshot(
                        cast(BinaryIO, tee), cancel=self.cancel, progress=progress
                    )
                # No fsync: this file is read back by this process within seconds and
                # deleted; after a crash, clean_partials removes it unread, so flushing it
                # to disk would protect nothing.
            except OSError as exc:
                raise spool_error(exc, self.spool.dir) from None
            self._stage_done(
                "snapshot",
                started,
                bytes=result.size,
                endpoint=source.endpoint,
                etcd_version=status.version,
            )
            if tee.seal is not None:
                tee.seal.close_input()  # the child finishes while the snapshot is verified
            report = self._verify(raw, known_sha256=result.sha256)
            self._check_cancel()
            manifest = self._manifest(
                created, report, raw, result.sha256, status=status, source="snapshot", bid=bid
            )
            manifest = with_keyspace(self.settings, raw, manifest, self.log)  # never fails
            if uploader is not None and tee.seal is not None:
                uploader.join()
                sealed = tee.seal.finish()
                # sealing overlapped the stream: its stage spans the stream and the drain
                seal_stage = (
                    time.monotonic() - started,
                    {
                        "input_bytes": sealed.input_size,
                        "compressed_bytes": sealed.compressed_size,
                        "object_bytes": sealed.object_size,
                        "ratio": round(sealed.object_size / max(sealed.input_size, 1), 3),
                        "overlapped": True,
                    },
                )
                if uploader.error is None and (
                    sealed.object_size != uploader.size
                    or sealed.object_sha256 != uploader.digest.hexdigest()
                ):
                    raise CryptoError(
                        "sealing: the sealed stream changed between the child and the upload"
                    )
                manifest = replace(
                    manifest,
                    compressed_size=sealed.compressed_size,
                    object_size=sealed.object_size,
                    object_sha256=sealed.object_sha256,
                )
                store_error = store_error or uploader.error
            elif uploader is not None:
                uploader.join()
                store_error = store_error or uploader.error
            self._after_verify(raw, manifest)
            self._check_cancel()
            if store_error is None and writer is not None:
                try:
                    bundled = build_record(self.settings, manifest, self.spool.pending, self.log)
                    final = self._publish(writer, bundled, begun, seal_stage)
                    writer = None
                    self.stages["prepare_total"] = time.monotonic() - begun
                    return BackupOutcome(manifest=final, stages=dict(self.stages))
                except (StoreError, Cancelled) as exc:
                    writer = None  # complete() aborted it
                    if not keep or isinstance(exc, Cancelled):
                        raise
                    store_error = exc
            if isinstance(store_error, Cancelled) or not keep:
                raise store_error or StoreError("upload failed")
            # the store failed: keep the verified snapshot, sealed, for a later upload
            self.log.warning(
                "upload failed; sealing the backup into the spool", error=str(store_error)
            )
            self._seal(raw, manifest, consume=True)
            kept = True
            raise store_error or StoreError("upload failed")
        finally:
            if not kept:
                discard_pending(self.spool.pending, bid)  # a bundle sealed for this backup
            if seal is not None:
                seal.kill()
            if uploader is not None:
                uploader.join()
            if writer is not None:
                writer.abort()
            with contextlib.suppress(FileNotFoundError):
                raw.unlink()

    def _remove_objects(self, m: Manifest) -> None:
        """No manifest will be written: remove its objects rather than leave orphans."""
        for key in (m.object, m.bundle.object if m.bundle is not None else None):
            if key:
                with contextlib.suppress(Exception):
                    self.store.delete(key)

    def _locked(self) -> bool:
        s3 = self.settings.store.s3
        return s3 is not None and bool(s3.object_lock_mode)

    def _progress_hook(self, stage: str) -> Callable[[int, int], None]:
        def hook(done: int, total: int) -> None:
            if self.progress is not None:
                self.progress(stage, done, total)

        return hook

    def _publish(
        self,
        writer: ObjectWriter,
        manifest: Manifest,
        begun: float,
        seal_stage: tuple[float, dict[str, Any]] | None = None,
    ) -> Manifest:
        """Complete the upload, check the stored size, then write the manifest (last).

        ``seal_stage`` is reported once the sealed stream is stored: one "seal" stage per
        backup that is sealed, whichever way (the spool path reports its own)."""
        started = time.monotonic()
        m = manifest
        put = writer.complete()
        if seal_stage is not None:
            self._stage_report("seal", seal_stage[0], seal_stage[1])
        if put.size != m.object_size:
            with contextlib.suppress(Exception):
                self.store.delete(m.object)
            raise StoreError(
                f"{self.store.describe()}: stored object {m.object} has {put.size} bytes, "
                f"expected {m.object_size}"
            )
        if self.cancel.is_set():
            with contextlib.suppress(Exception):
                self.store.delete(m.object)
            raise Cancelled("backup cancelled by shutdown")
        m = store_bundle(self.store, m, self.spool.pending, lock=self._locked(), cancel=self.cancel)
        final = replace(
            m,
            object_lock_mode=put.lock_mode,
            retain_until=format_time(put.retain_until) if put.retain_until else None,
            duration_seconds=round(time.monotonic() - begun, 3),
        )
        try:
            if self.before_publish is not None:
                # the last word on publishing (one backup per period): it may refuse
                self.before_publish(final)
            self.store.put_bytes(
                manifest_key(m.cluster, m.id), final.to_json().encode(), lock=self._locked()
            )
        except BaseException:
            self._remove_objects(m)
            raise
        self._stage_done(
            "upload", started, object=m.object, bytes=put.size, store=self.store.describe()
        )
        return final


def sweep_stale_uploads(store: Store, settings: Settings, log: Any) -> int:
    """Abort incomplete multipart uploads older than ``[store.s3] multipart_abort_after``.

    Only stores with ``sweep_multipart`` (S3) have any. Best-effort: a failure is logged
    and 0 returned; it never fails a backup (the next sweep tries again)."""
    sweep = getattr(store, "sweep_multipart", None)
    if sweep is None:
        return 0
    s3 = settings.store.s3
    older = s3.multipart_abort_after if s3 is not None else 86400.0
    try:
        aborted = int(sweep(older_than_seconds=older))
    except Exception as exc:
        log.warning("cannot sweep stale multipart uploads", error=str(exc))
        return 0
    if aborted:
        log.info("aborted stale multipart uploads", count=aborted)
    return aborted


def _refuse_if_locked(f: Any, db: Path) -> None:
    """bbolt holds an exclusive flock on the db while etcd runs: refuse if we cannot share it."""
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SpoolError(
            f"{db} is locked by a running etcd: stop etcd first, or take an online backup "
            "(`etcd-backup-agent backup` without --from-data-dir); --force copies it anyway "
            "(the copy may be inconsistent)"
        ) from None


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
