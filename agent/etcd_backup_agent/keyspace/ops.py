"""The keyspace ops behind ``inspect``, ``diff`` and ``extract``: stored backups or files.

A stored backup is fetched, checked against its manifest, decrypted and verified exactly
as ``verify --backup`` does (restore.fetch) into a private scratch dir that is
removed afterwards; the analysis spills its sort runs into the same work dir.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..config import Settings
from ..errors import UsageError, VerificationError
from ..events import Emit
from ..snapshot.bolt import BoltError, PageError
from ..store.base import Store
from .analyze import KeyspaceReport, Options, analyze_file
from .diff import DiffReport, diff_files
from .extract import ExtractResult, Selector, extract_file
from .requests import DiffRequest, ExtractRequest, InspectRequest


def work_dir(settings: Settings) -> Path:
    """Where sort runs go: [inspect] work_dir, else the spool, else the system temp dir."""
    configured = settings.inspect.work_dir
    if configured is not None:
        return configured
    spool = settings.spool.dir
    if spool.is_dir() and os.access(spool, os.W_OK | os.X_OK):
        return spool
    return Path(tempfile.gettempdir())


def options(settings: Settings, top_objects: int | None = None) -> Options:
    ins = settings.inspect
    return Options(
        prefixes=ins.prefixes,
        top_objects=ins.top_objects if top_objects is None else top_objects,
        top_namespaces=ins.top_namespaces,
        memory_budget=ins.memory_budget,
        work_dir=work_dir(settings),
        exclude=excluded(settings),
    )


def excluded(settings: Settings) -> tuple[bytes, ...]:
    """The agent's own keys (its locks, under [coordination] lock_prefix): not the cluster's
    data, and present only in backups taken online, so a diff would list them as added."""
    prefix = settings.coordination.lock_prefix.rstrip("/") + "/"
    return (prefix.encode(),)


@contextlib.contextmanager
def snapshot_of(
    settings: Settings, store: Store | None, backup: str, identity: str | None, emit: Emit
) -> Iterator[Path]:
    """The verified plaintext snapshot of a stored backup, removed when the block ends."""
    from ..restore.fetch import fetched, resolve_backup

    if store is None or identity is None:
        raise UsageError(f"backup {backup}: a stored backup needs the store and --identity")
    manifest = resolve_backup(settings, store, backup)
    with fetched(settings, store, manifest, identity, emit, "inspect-") as checked:
        yield checked.path


@contextlib.contextmanager
def _readable(*paths: Path) -> Iterator[None]:
    """A file that is not a bolt database is an operator's error, not a traceback."""
    try:
        yield
    except (BoltError, PageError) as exc:
        names = " or ".join(str(p) for p in paths)
        hint = ""
        if any(_is_sealed(p) for p in paths):
            hint = (
                " (an age-encrypted backup object: name the backup ID with --identity, "
                "or decrypt it first: age -d -i KEY FILE | zstd -d > snapshot.db)"
            )
        raise VerificationError(f"{names}: not a readable etcd snapshot: {exc}{hint}") from exc


def _is_sealed(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(22) == b"age-encryption.org/v1\n"
    except OSError:
        return False


def inspect_path(settings: Settings, path: Path, top: int) -> KeyspaceReport:
    with _readable(path):
        return analyze_file(path, options(settings, top_objects=top))


def inspect_backup(
    settings: Settings, store: Store, req: InspectRequest, identity: str, emit: Emit
) -> KeyspaceReport:
    with snapshot_of(settings, store, req.backup, identity, emit) as path:
        _note(emit, "analyzing the keyspace")
        return inspect_path(settings, path, req.top)


def diff_paths(settings: Settings, a: Path, b: Path, max_changes: int) -> DiffReport:
    ins = settings.inspect
    with _readable(a, b):
        return diff_files(
            a,
            b,
            ins.prefixes,
            work_dir(settings),
            ins.memory_budget,
            max_changes=max_changes,
            exclude=excluded(settings),
        )


def diff_backups(
    settings: Settings, store: Store, req: DiffRequest, identity: str, emit: Emit
) -> DiffReport:
    with (
        snapshot_of(settings, store, req.a, identity, emit) as a,
        snapshot_of(settings, store, req.b, identity, emit) as b,
    ):
        _note(emit, "comparing the two keyspaces")
        return diff_paths(settings, a, b, req.max_changes)


def selector(req: ExtractRequest) -> Selector:
    sel = Selector(
        key=None if req.key is None else req.key.encode(),
        prefix=None if req.prefix is None else req.prefix.encode(),
        revision=req.revision,
    )
    sel.check()
    return sel


def extract_path(settings: Settings, path: Path, req: ExtractRequest) -> ExtractResult:
    sel = selector(req)
    with _readable(path):
        return extract_file(
            path, sel, work_dir(settings), settings.inspect.memory_budget, req.max_bytes
        )


def extract_backup(
    settings: Settings, store: Store, req: ExtractRequest, identity: str, emit: Emit
) -> ExtractResult:
    selector(req)  # a bad selector fails before anything is downloaded
    with snapshot_of(settings, store, req.backup, identity, emit) as path:
        return extract_path(settings, path, req)


def _note(emit: Emit, message: str) -> None:
    emit({"event": "log", "level": "info", "message": message})
