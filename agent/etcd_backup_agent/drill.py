"""Restore drill: prove a backup restores, with or without an etcd binary.

Every drill first checks the snapshot against its manifest (sha256, native verification:
revision, hash and bbolt key count), restores it into a private scratch dir, then reads
everything the restore wrote back with the package's own readers (datadir/readback.py):
the db's integrity, every bucket but the rewritten membership ones equal to the
snapshot's, revision and key count against the manifest, the members and consistent
index; the WAL's records and CRC chain; the snap file's CRC and conf state. That is a
``native`` drill and needs no etcd binary.

When an etcd binary is configured (``[drill] etcd``) or found, the drill is ``full``: it
also starts a throwaway etcd on free loopback ports from the restored dir, reads it with
the configured credentials (the snapshot holds the cluster's users), compares its
revision and live key count with the manifest and reads a sample of keys. The etcd is
stopped by its pid and every file the drill made is removed, whatever happens.

``source`` says where the snapshot came from: ``store`` (fetched and decrypted) or
``spool`` (the daemon's plaintext snapshot right after a backup). Drills never raise for
what they find: every failure is a report with ``step`` naming the stage that failed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import log as logsetup
from .binaries import find_binary
from .bundle.check import verify_bundle
from .config import Settings
from .datadir.db_read import DbContents, DbReadError, read_db
from .datadir.readback import REWRITTEN, ReadbackError, Want, read_back
from .drill_etcd import LOOPBACK, check_live, drill_etcd_settings, free_port, throwaway_etcd
from .errors import AgentError, RestoreError, VerificationError
from .events import Emit, no_emit, note
from .manifest import Manifest
from .restore.engine import choose_engine
from .restore.fetch import (
    check_plaintext,
    fetched,
    resolve_backup,
    scratch_dir,
    verify_against_manifest,
)
from .restore.member import MemberSpec
from .store.base import Store

SUCCESS = "success"
FAILURE = "failure"
NATIVE = "native"
FULL = "full"
KINDS = (NATIVE, FULL)
SOURCES = ("store", "spool")
OnDrill = Callable[[str, str], None]


@dataclass
class DrillReport:
    """The outcome of one drill; ``result`` is "success" or "failure".

    ``kind``: "native" (read back natively) or "full" (also served by a throwaway etcd);
    ``source``: "store" or "spool"; ``step``: the stage that failed, on failure.
    """

    backup_id: str
    kind: str = NATIVE
    source: str = "store"
    result: str = FAILURE
    step: str | None = None
    engine: str | None = None
    revision: int | None = None
    expected_revision: int | None = None
    live_keys: int | None = None
    manifest_keys: int | None = None
    sampled: int = 0
    seconds: float = 0.0
    checks: list[str] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- the kind of drill and the restore engine ------------------------------------------


def find_drill_etcd(settings: Settings) -> str | None:
    """The etcd binary for a full drill, or None for a native one.

    A bare name (the default ``etcd``) that is nowhere to be found means a native drill;
    a path that was configured but is not executable is an error, not a quieter drill.
    """
    configured = settings.drill.etcd
    found = find_binary(configured)
    if found is None and "/" in configured:
        raise RestoreError(
            f"[drill] etcd {configured!r} is not an executable file: fix the path, or set "
            '[drill] etcd = "etcd" to drill natively where no etcd binary is installed'
        )
    return found


def restore_scratch(snapshot: Path, spec: MemberSpec, settings: Settings, emit: Emit) -> str:
    """Restore ``snapshot`` as ``spec`` (a dir inside a scratch dir) with the configured
    engine (``[restore] engine``, native by default); name the engine."""
    return choose_engine(settings, spec).run(snapshot, spec, emit).label


def _rules(manifest: Manifest) -> str:
    return "3.6" if manifest.status_rules == "3.6" else "3.5"


def _source_db(snapshot: Path, rules: str) -> DbContents:
    try:
        db = read_db(snapshot, rules)
    except DbReadError as exc:
        raise VerificationError(f"snapshot: {exc}") from None
    if db.problems:
        raise VerificationError(f"snapshot fails the integrity check: {db.problems[0]}")
    return db


def _check_key_count(restored: DbContents, source: DbContents, manifest: Manifest) -> str:
    """The restored db's key count, under the manifest's rules, against the manifest."""
    if manifest.total_keys is None:
        return "manifest has no key count"
    rules = _rules(manifest)
    if source.status.total_key != manifest.total_keys:
        raise VerificationError(
            f"snapshot key count {source.status.total_key} ({rules} rules), manifest says "
            f"{manifest.total_keys}"
        )
    kept, want = restored.pairs_outside(REWRITTEN), source.pairs_outside(REWRITTEN)
    if kept != want:
        raise VerificationError(
            f"restored db holds {kept} pairs outside the membership buckets, the snapshot {want}"
        )
    if rules == "3.6" and restored.status.total_key != manifest.total_keys:
        raise VerificationError(
            f"restored db has {restored.status.total_key} live keys, manifest says "
            f"{manifest.total_keys} (3.6 rules)"
        )
    return (
        f"key count: manifest {manifest.total_keys} ({rules} rules) == snapshot; the restored "
        f"db keeps all {want} pairs outside the membership buckets"
    )


# --- drills ----------------------------------------------------------------------------


def drill_plaintext(
    snapshot_path: Path,
    manifest: Manifest,
    settings: Settings | None = None,
    *,
    emit: Emit = no_emit,
    source: str = "spool",
    verify: bool = True,
) -> DrillReport:
    """Drill a plaintext snapshot (db + trailer) described by ``manifest``; never raises for
    drill failures: the report says "failure", which step failed and why."""
    settings = settings or Settings()
    report = DrillReport(backup_id=manifest.id, source=source)
    started = time.monotonic()
    log = logsetup.get("drill")
    try:
        report.step = "etcd binary"
        etcd_binary = find_drill_etcd(settings)
        report.kind = FULL if etcd_binary is not None else NATIVE
        if verify:
            report.step = "verify snapshot"
            check_plaintext(snapshot_path, manifest, emit)
            verify_against_manifest(snapshot_path, manifest)
            report.checks.append("sha256 and native verification match the manifest")
        report.step = "read snapshot"
        source_db = _source_db(snapshot_path, _rules(manifest))
        with scratch_dir(settings, "drill-") as scratch:
            peer = f"http://{LOOPBACK}:{free_port()}"
            spec = MemberSpec(
                data_dir=scratch / "data",
                name="drill",
                initial_advertise_peer_urls=peer,
                initial_cluster_token=f"drill-{os.getpid()}",
            )
            report.step = "restore"
            report.engine = restore_scratch(snapshot_path, spec, settings, emit)
            report.checks.append(f"restored by the {report.engine} engine")
            report.step = "read back"
            note(emit, "reading the restored data dir back")
            want = Want(
                name=spec.name,
                members=((spec.name, (peer,)),),
                token=spec.initial_cluster_token,
                revision=manifest.revision,
                rules=_rules(manifest),
            )
            back = read_back(spec.data_dir, want, source_db)
            report.checks += list(back.checks)
            report.revision = back.db.status.revision
            report.expected_revision = manifest.revision
            report.checks.append(_check_key_count(back.db, source_db, manifest))
            if etcd_binary is not None:
                report.step = "start etcd"
                note(emit, "starting a throwaway etcd on loopback")
                with throwaway_etcd(etcd_binary, spec.data_dir, spec.name, peer) as endpoint:
                    report.step = "read etcd"
                    check_live(
                        drill_etcd_settings(settings, endpoint),
                        manifest,
                        settings.drill.sample_keys,
                        report,
                    )
        report.result = SUCCESS
        report.step = None
    except ReadbackError as exc:
        report.error = f"the restored data dir is wrong: {exc}"
    except AgentError as exc:
        report.error = str(exc)
    except OSError as exc:
        report.error = f"drill failed: {exc}"
    except Exception as exc:  # a drill reports every failure; a bug here is one too
        log.exception("drill failed unexpectedly", backup=manifest.id)
        report.error = f"drill failed unexpectedly: {type(exc).__name__}: {exc}"
    report.seconds = round(time.monotonic() - started, 2)
    fields = {"backup": manifest.id, "kind": report.kind, "source": source}
    if report.result == SUCCESS:
        log.info("drill passed", seconds=report.seconds, **fields)
    else:
        log.error("drill FAILED", step=report.step, error=report.error, **fields)
    return report


def drill(
    settings: Settings,
    store: Store,
    backup: str,
    identity_text: str,
    emit: Emit = no_emit,
    on_drill: OnDrill | None = None,
) -> DrillReport:
    """Drill a stored backup: fetch, check and decrypt ``backup``, then drill it; call
    ``on_drill(result, kind)``. Never raises: every failure is a report."""
    report = DrillReport(backup_id=backup, source="store")
    inner = False
    try:
        report.step = "etcd binary"
        report.kind = FULL if find_drill_etcd(settings) is not None else NATIVE
        report.step = "find backup"
        manifest = resolve_backup(settings, store, backup)
        report.backup_id = manifest.id
        report.step = "fetch and decrypt"
        with fetched(settings, store, manifest, identity_text, emit, "drillfetch-") as checked:
            report.checks.append("object sha256, snapshot sha256 and native verification ok")
            inner = True
            checks = report.checks
            report = drill_plaintext(
                checked.path, manifest, settings, emit=emit, source="store", verify=False
            )
            report.checks[:0] = checks
            if report.result == SUCCESS:
                report.step = "bundle"
                bundle, files = verify_bundle(store, manifest, identity_text, emit)
                report.step = None
                if bundle == "ok":
                    report.checks.append(f"bundle sha256 and file list ok ({files} entries)")
    except AgentError as exc:
        report.result, report.error = FAILURE, str(exc)
    except Exception as exc:  # never an "internal" error: a drill always ends in a report
        logsetup.get("drill").exception("drill failed unexpectedly", backup=backup)
        report.result, report.error = FAILURE, f"drill failed: {type(exc).__name__}: {exc}"
    if (not inner or report.step == "bundle") and report.result != SUCCESS:
        logsetup.get("drill").error(
            "drill FAILED", backup=report.backup_id, step=report.step, error=report.error
        )
    if on_drill is not None:
        on_drill(report.result, report.kind)
    return report
