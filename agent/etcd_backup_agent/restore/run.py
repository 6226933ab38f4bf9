"""Restore one stored backup, or a local plaintext snapshot, into a NEW data dir.

The target is checked, the engine chosen and the snapshot verified before anything is
written; the engine writes beside the target and renames into place (restore/engine.py).
Nothing the operator owns is ever deleted or overwritten.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from .. import log as logsetup
from ..config import Settings
from ..events import Emit, no_emit, note
from ..store.base import Store
from .engine import Engine, EngineResult, choose_engine
from .fetch import check_local_snapshot, fetched, resolve_backup
from .member import MemberSpec, check_target, check_wal_target
from .report import MemberCommand, RestoreReport, member_commands, next_steps, recommendations


def _prepare(settings: Settings, spec: MemberSpec) -> Engine:
    """Refuse a bad member, an existing target or an unusable engine before any work."""
    spec.check()
    check_target(spec.data_dir)
    check_wal_target(spec.wal_dir)
    return choose_engine(settings, spec)


def _report(
    spec: MemberSpec,
    engine: Engine,
    result: EngineResult,
    commands: list[MemberCommand],
    *,
    revision: int,
    total_keys: int | None,
    hash: int | None,
    storage_version: str | None,
    backup_id: str = "",
    created_at: str = "",
    age_seconds: float = 0.0,
    snapshot_file: str | None = None,
) -> RestoreReport:
    return RestoreReport(
        backup_id=backup_id,
        created_at=created_at,
        age_seconds=age_seconds,
        revision=revision,
        total_keys=total_keys,
        hash=hash,
        data_dir=str(spec.data_dir),
        name=spec.name,
        initial_cluster=spec.cluster,
        initial_cluster_token=spec.initial_cluster_token,
        initial_advertise_peer_urls=spec.initial_advertise_peer_urls,
        etcdutl_version=result.etcdutl_version,
        bump_revision=spec.bump_revision,
        next_steps=next_steps(spec, spec.multi),
        recommendations=recommendations(engine.etcdutl, spec),
        member_commands=commands if spec.multi else [],
        engine=result.engine,
        wal_dir=str(spec.wal_dir) if spec.wal_dir is not None else None,
        member_id=result.member_id,
        cluster_id=result.cluster_id,
        snapshot_file=snapshot_file,
        storage_version=storage_version,
    )


def restore(
    settings: Settings,
    store: Store,
    backup: str,
    identity_text: str,
    spec: MemberSpec,
    emit: Emit = no_emit,
    *,
    identity_hint: str = "KEY_FILE",
) -> RestoreReport:
    """Restore ``backup`` (an id or "latest") as member ``spec`` into a new data dir."""
    engine = _prepare(settings, spec)
    manifest = resolve_backup(settings, store, backup)
    log = logsetup.get("restore")
    log.info(
        "restore starting",
        backup=manifest.id,
        data_dir=str(spec.data_dir),
        name=spec.name,
        engine=engine.name,
    )
    with fetched(settings, store, manifest, identity_text, emit, "restore-") as checked:
        result = engine.run(checked.path, spec, emit)
    log.info("restore finished", backup=manifest.id, data_dir=str(spec.data_dir))
    age = (datetime.now(UTC) - manifest.created).total_seconds()
    commands = member_commands(settings.source, spec, [manifest.id], ["--identity", identity_hint])
    return _report(
        spec,
        engine,
        result,
        commands,
        revision=checked.revision,
        total_keys=checked.total_keys,
        hash=checked.hash,
        storage_version=checked.storage_version,
        backup_id=manifest.id,
        created_at=manifest.created_at,
        age_seconds=round(age, 1),
    )


def restore_snapshot(
    settings: Settings,
    snapshot: Path,
    spec: MemberSpec,
    emit: Emit = no_emit,
    *,
    allow_no_trailer: bool = False,
) -> RestoreReport:
    """Restore a local plaintext snapshot file (``etcdctl snapshot save`` output) as ``spec``."""
    engine = _prepare(settings, spec)
    note(emit, f"verifying {snapshot} natively")
    report, has_trailer = check_local_snapshot(snapshot, allow_no_trailer)
    st = report.status
    assert st is not None
    result = engine.run(snapshot, spec, emit, has_trailer)
    logsetup.get("restore").info(
        "restore finished", snapshot=str(snapshot), data_dir=str(spec.data_dir)
    )
    commands = member_commands(settings.source, spec, ["--snapshot", str(snapshot)], [])
    return _report(
        spec,
        engine,
        result,
        commands,
        revision=st.revision,
        total_keys=st.total_key,
        hash=st.hash,
        storage_version=st.version,
        snapshot_file=str(snapshot),
    )
