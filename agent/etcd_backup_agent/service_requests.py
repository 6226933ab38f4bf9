"""The requests the agent serves besides backups: list, verify, restore, drill, the keyspace
reads and the bundle. ``Requests`` is a part of ``service.Agent``; each runs on the wiring in
force when it arrived and, when heavy, on the agent's single flight.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from .catalog import Catalog, list_backups
from .drill import DrillReport, drill
from .errors import RestoreError, UsageError
from .events import Emit
from .keyspace.analyze import KeyspaceReport
from .keyspace.diff import DiffReport
from .keyspace.extract import ExtractResult
from .keyspace.requests import DiffRequest, ExtractRequest, InspectRequest
from .manifest import Manifest
from .requests import BundleRequest, DrillRequest, IdentityRef, VerifyRequest, required
from .restore.fetch import BackupCheck, check_backup, resolve_backup
from .restore.options import RestoreOptions
from .restore.report import RestoreResult
from .wiring import Wiring

if TYPE_CHECKING:
    from contextlib import AbstractContextManager


class Requests:
    """Agent methods behind the socket's ops (and the offline commands)."""

    if TYPE_CHECKING:

        def exclusive(self, what: str) -> AbstractContextManager[None]: ...
        def request(self) -> AbstractContextManager[Wiring]: ...
        def record_requested_drill(self, result: str, kind: str) -> None: ...

    def list(self) -> Catalog:
        with self.request() as w:
            try:
                return list_backups(w.store, w.settings.cluster)
            except ValueError as exc:
                raise RestoreError(f"unreadable manifest in the store: {exc}") from None

    def verify(self, req: VerifyRequest, emit: Emit) -> BackupCheck:
        identity, _ = required(req.identity)
        with self.request() as w, self.exclusive("verify"):
            return check_backup(w.settings, w.store, req.backup, identity, emit)

    # keyspace ops (keyspace/ops.py): a stored backup is checked as verify does, then read
    def inspect(
        self, req: InspectRequest, identity: IdentityRef | None, emit: Emit
    ) -> KeyspaceReport:
        from .keyspace import ops as ks

        text, _ = required(identity)
        with self.request() as w, self.exclusive("inspect"):
            return ks.inspect_backup(w.settings, w.store, req, text, emit)

    def diff(self, req: DiffRequest, identity: IdentityRef | None, emit: Emit) -> DiffReport:
        from .keyspace import ops as ks

        text, _ = required(identity)
        with self.request() as w, self.exclusive("diff"):
            return ks.diff_backups(w.settings, w.store, req, text, emit)

    def extract(
        self, req: ExtractRequest, identity: IdentityRef | None, emit: Emit
    ) -> ExtractResult:
        from .keyspace import ops as ks

        text, _ = required(identity)
        with self.request() as w, self.exclusive("extract"):
            return ks.extract_backup(w.settings, w.store, req, text, emit)

    def restore(
        self, options: RestoreOptions, identity: IdentityRef | None, emit: Emit
    ) -> RestoreResult:
        """restore/request.py on this agent's store and single flight (a dry run, which
        only plans, runs beside a backup)."""
        from .restore.request import run_restore

        text = required(identity) if options.snapshot is None else None
        with self.request() as w:
            return run_restore(
                w.settings,
                options,
                text,
                emit,
                exclusive=self.exclusive,
                open_store=lambda: contextlib.nullcontext(w.store),
            )

    def drill(self, req: DrillRequest, emit: Emit) -> DrillReport:
        """A drill of a stored backup, asked for now (counted and shown in the status)."""
        with self.request() as w:
            if req.identity is not None:
                identity, _ = req.identity.read()
            elif w.settings.drill.identity_file is not None:
                identity, _ = IdentityRef(str(w.settings.drill.identity_file)).read()
            else:
                raise UsageError(
                    "a full drill needs an identity: [drill] identity_file or --identity"
                )
            with self.exclusive("drill"):
                return drill(
                    w.settings,
                    w.store,
                    req.backup,
                    identity,
                    emit,
                    on_drill=self.record_requested_drill,
                )

    def bundle_of(self, backup: str) -> Manifest:
        """The backup whose bundle record ``bundle_list`` shows (names, modes, sha256)."""
        with self.request() as w:
            return resolve_backup(w.settings, w.store, backup)

    def bundle_extract(self, req: BundleRequest, emit: Emit) -> dict[str, Any]:
        # the checked tar, written by the caller (bundle/ops.py: write_fetched), so the
        # daemon never writes where a socket client names
        from .bundle.ops import bundle_fetch

        identity, _ = required(req.identity)
        with self.request() as w, self.exclusive("extract a bundle"):
            return bundle_fetch(w.settings, w.store, req.backup, identity, emit)
