"""The operations behind the control socket and the offline commands, one method each.

Every method takes ``(args, emit)``: ``args`` is the schema-checked argument object of
control/protocol.py, ``emit`` receives progress and log events. Each returns a JSON-able
result or raises AgentError. Identities are read here (a path read by this process, or
text sent by the client), used, and dropped; never logged or stored.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import __version__
from . import log as logsetup
from .config import Settings
from .errors import Busy, RestoreError, UsageError
from .restore import (
    K8S_BUMP,
    Emit,
    MemberSpec,
    check_backup,
    check_local_snapshot,
    place_backup,
    place_file,
    restore,
    restore_snapshot,
)
from .retention import prune, report_dict
from .store import open_store
from .store.base import Store

BackupFn = Callable[[Emit], dict[str, Any]]
StatusFn = Callable[[], dict[str, Any]]
OnDrill = Callable[[str, str], None]
# The daemon's guard for heavy ops: a context manager that raises Busy when it cannot enter.
Exclusive = Callable[[str], AbstractContextManager[None]]
OPS = (
    "status",
    "list",
    "backup",
    "verify",
    "prune",
    "restore",
    "drill",
    "bundle_list",
    "bundle_extract",
    "inspect",
    "diff",
    "extract",
)


def read_identity(args: dict[str, Any]) -> tuple[str, str]:
    """(identity text, a hint to print in commands) from ``identity`` or ``identity_file``."""
    text = args.get("identity")
    if isinstance(text, str) and text:
        return text, "KEY_FILE"
    path = args.get("identity_file")
    if not isinstance(path, str) or not path:
        raise UsageError("an age identity is required: identity_file (a path) or identity")
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(65536), path
    except FileNotFoundError:
        raise UsageError(f"identity file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read identity file {path}: {exc.__class__.__name__}") from None


class Operations:
    """What the agent can do on request; shared by the socket server and the commands."""

    def __init__(
        self,
        settings: Settings,
        *,
        backup: BackupFn | None = None,
        status: StatusFn | None = None,
        on_drill: OnDrill | None = None,
        store: Store | None = None,
        exclusive: Exclusive | None = None,
        current: Callable[[], Settings] | None = None,
    ) -> None:
        self._settings = settings
        self._current = current  # the daemon's live settings (a SIGHUP reload replaces them)
        self._backup = backup
        self._exclusive_hook = exclusive
        self._status = status
        self._on_drill = on_drill
        self._store = store
        self._heavy = threading.Lock()
        self.log = logsetup.get("operations")

    @property
    def settings(self) -> Settings:
        return self._current() if self._current is not None else self._settings

    @contextmanager
    def _exclusive(self, what: str) -> Iterator[None]:
        """One heavy op at a time; inside the daemon, also never beside its own backups/drills."""
        if self._exclusive_hook is not None:
            with self._exclusive_hook(what):
                yield
            return
        if not self._heavy.acquire(blocking=False):
            raise Busy(f"cannot {what} now: another backup, restore, drill or prune is running")
        try:
            yield
        finally:
            self._heavy.release()

    @contextmanager
    def _opened_store(self) -> Iterator[Store]:
        if self._store is not None:
            yield self._store
            return
        store = open_store(self.settings)
        try:
            yield store
        finally:
            store.close()

    def dispatch(self, op: str, args: dict[str, Any], emit: Emit) -> Any:
        """Run ``op``; the op names are those of control/protocol.py."""
        if op not in OPS:
            raise UsageError(f"unknown operation {op!r}")
        if self._current is not None:
            # one request sees one config, even when a reload lands while it runs
            pinned = copy.copy(self)
            pinned._settings, pinned._current = self._current(), None
            return pinned.dispatch(op, args, emit)
        method: Callable[[dict[str, Any], Emit], Any] | None = getattr(self, op, None)
        if method is None:
            raise UsageError(f"unknown operation {op!r}")
        return method(args, emit)

    # -- ops ------------------------------------------------------------------------

    def status(self, args: dict[str, Any], emit: Emit) -> dict[str, Any]:
        base: dict[str, Any] = {
            "agent_version": __version__,
            "cluster": self.settings.cluster,
            "node": self.settings.node,
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "busy": self._heavy.locked(),
        }
        if self._status is not None:
            base |= self._status()
        return base

    def list(self, args: dict[str, Any], emit: Emit) -> dict[str, Any]:
        from .catalog import list_backups

        with self._opened_store() as store:
            try:
                catalog = list_backups(store, self.settings.cluster)
            except ValueError as exc:
                raise RestoreError(f"unreadable manifest in the store: {exc}") from None
        return {
            "backups": [m.to_dict() for m in catalog.backups],
            "orphans": list(catalog.orphans),
            "incomplete": [
                {"id": i.manifest.id, "object": i.manifest.object, "reason": i.reason}
                for i in catalog.incomplete
            ],
            "complete": catalog.complete,
        }

    def backup(self, args: dict[str, Any], emit: Emit) -> dict[str, Any]:
        if self._backup is not None:
            done = self._backup(emit)  # the daemon's backup_now keeps its own single flight
            with self._opened_store() as store:
                return {**done, "store": store.describe()}  # the client names the object
        with self._exclusive("back up"):
            from .etcd_source import EtcdSource
            from .pipeline import Pipeline

            with self._opened_store() as store:
                source = EtcdSource(self.settings.etcd)
                try:

                    def prog(stage: str, done: int, total: int) -> None:
                        emit({"event": "progress", "stage": stage, "done": done, "total": total})

                    outcome = Pipeline(self.settings, store, progress=prog).run(source)
                finally:
                    source.close()
                return {**outcome.manifest.to_dict(), "store": store.describe()}

    def verify(self, args: dict[str, Any], emit: Emit) -> dict[str, Any]:
        identity, _ = read_identity(args)
        with self._exclusive("verify"), self._opened_store() as store:
            return check_backup(self.settings, store, args["backup"], identity, emit).to_dict()

    # keyspace ops (keyspace/ops.py): a stored backup is checked as verify does, then read
    def inspect(self, args: dict[str, Any], emit: Emit) -> dict[str, Any]:
        from .keyspace import ops as ks
        from .keyspace.requests import InspectRequest

        req, (identity, _) = InspectRequest.from_args(args), read_identity(args)
        with self._exclusive("inspect"), self._opened_store() as store:
            return ks.inspect_backup(self.settings, store, req, identity, emit).to_dict()

    def diff(self, args: dict[str, Any], emit: Emit) -> dict[str, Any]:
        from .keyspace import ops as ks
        from .keyspace.requests import DiffRequest

        req, (identity, _) = DiffRequest.from_args(args), read_identity(args)
        with self._exclusive("diff"), self._opened_store() as store:
            return ks.diff_backups(self.settings, store, req, identity, emit).to_dict()

    def extract(self, args: dict[str, Any], emit: Emit) -> dict[str, Any]:
        from .keyspace import ops as ks
        from .keyspace.requests import ExtractRequest

        req, (identity, _) = ExtractRequest.from_args(args), read_identity(args)
        with self._exclusive("extract"), self._opened_store() as store:
            return ks.extract_backup(self.settings, store, req, identity, emit).to_dict()

    def prune(self, args: dict[str, Any], emit: Emit) -> dict[str, Any]:
        with self._exclusive("prune"), self._opened_store() as store:
            report = prune(store, self.settings, datetime.now(UTC), bool(args.get("dry_run")))
        return report_dict(report)

    def restore(self, args: dict[str, Any], emit: Emit) -> dict[str, Any]:
        from .swap import KUBERNETES_LAYOUTS, LAYOUTS, RESET_LAYOUTS, swap

        snapshot = Path(args["snapshot"]) if args.get("snapshot") else None
        if snapshot is None:
            identity, hint = read_identity(args)
        layout = args.get("layout")
        apply = bool(args.get("apply"))
        if (apply or layout) and layout not in LAYOUTS:
            raise UsageError(f"--apply needs --layout {' or '.join(LAYOUTS)}")
        if layout in RESET_LAYOUTS:
            return self._restore_cluster_reset(args, str(layout), snapshot, emit)
        if not args.get("data_dir"):
            raise UsageError("--data-dir is required (the NEW data dir)")
        data_dir = Path(args["data_dir"])
        if not data_dir.is_absolute():
            raise UsageError("data_dir must be an absolute path")
        name = str(args.get("name", "default"))
        peers = str(args.get("initial_advertise_peer_urls", "http://127.0.0.1:2380"))
        bump = args.get("bump_revision")
        marked = bool(args.get("mark_compacted"))
        if (
            bump is None
            and layout in KUBERNETES_LAYOUTS
            and self.settings.restore.engine == "native"
        ):
            # Kubernetes watch caches must re-list after a restore: bump unless told not to
            bump, marked = K8S_BUMP, True
        if bump == 0:
            bump, marked = None, False
        spec = MemberSpec(
            data_dir=data_dir,
            name=name,
            initial_advertise_peer_urls=peers,
            initial_cluster=str(args.get("initial_cluster", "")),
            initial_cluster_token=str(args.get("initial_cluster_token", "etcd-cluster")),
            bump_revision=bump,
            mark_compacted=marked,
            wal_dir=Path(args["wal_dir"]) if args.get("wal_dir") else None,
        )
        spec.check()
        if args.get("dry_run") and layout is None:
            raise UsageError("--dry-run prints the swap plan: give --layout too")

        def plan_swap(layout: str, dry_run: bool, wait: float = 30.0) -> dict[str, Any]:
            return swap(
                layout,
                data_dir,
                manifests_dir=self.settings.restore.manifests_dir,
                etcd_config=self.settings.restore.etcd_config,
                dry_run=dry_run,
                name=name,
                peer_urls=peers,
                wait=wait,
            ).to_dict()

        with_bundle = bool(args.get("with_bundle"))
        if with_bundle and (layout != "kubeadm" or not (apply or args.get("dry_run"))):
            raise UsageError("--with-bundle goes with --apply --layout kubeadm (or --dry-run)")
        if with_bundle and snapshot is not None:
            raise UsageError("--with-bundle needs a stored backup, not --snapshot")
        if layout is not None and (apply or args.get("dry_run")):
            # planning validates the manifests/config before anything is restored
            plan = plan_swap(layout, dry_run=True)
            if args.get("dry_run"):
                dry: dict[str, Any] = {"dry_run": True, "swap": plan}
                if with_bundle:
                    dry["bundle_install"] = self._install_bundle(args["backup"], identity, True)
                return dry
        installed = None
        if snapshot is not None:
            with self._exclusive("restore"):
                report = restore_snapshot(
                    self.settings,
                    snapshot,
                    spec,
                    emit,
                    allow_no_trailer=bool(args.get("allow_no_trailer")),
                )
                if apply and layout is not None:
                    report.swap = plan_swap(
                        layout, dry_run=False, wait=float(args.get("swap_wait", 30.0))
                    )
            return report.to_dict()
        with self._exclusive("restore"), self._opened_store() as store:
            report = restore(
                self.settings, store, args["backup"], identity, spec, emit, identity_hint=hint
            )
            if apply and with_bundle:  # bundle/install.py: files copied aside, never deleted
                installed = self._install_bundle(report.backup_id, identity, False, store)
            del identity
            if apply and layout is not None:
                report.swap = plan_swap(
                    layout, dry_run=False, wait=float(args.get("swap_wait", 30.0))
                )
        result = report.to_dict()
        if installed is not None:
            result["bundle_install"] = installed
        return result

    def _install_bundle(
        self, backup: str, identity: str, dry_run: bool, store: Store | None = None
    ) -> dict[str, Any]:
        from .bundle.ops import install_bundle

        if store is not None:
            return install_bundle(self.settings, store, backup, identity, dry_run)
        with self._opened_store() as opened:
            return install_bundle(self.settings, opened, backup, identity, dry_run)

    def _restore_cluster_reset(
        self, args: dict[str, Any], layout: str, snapshot: Path | None, emit: Emit
    ) -> dict[str, Any]:
        """k3s/RKE2: put the verified snapshot where ``--cluster-reset`` restores from."""
        from .swap import cluster_reset_command, plan_cluster_reset

        directory = self.settings.restore.reset_snapshot_dir
        if snapshot is not None:
            name = f"etcd-backup-agent-{snapshot.name}"
            plan = plan_cluster_reset(layout, directory, name)
            if args.get("dry_run"):
                return {"dry_run": True, "swap": plan.to_dict()}
            with self._exclusive("restore"):
                report, _ = check_local_snapshot(snapshot, bool(args.get("allow_no_trailer")))
                place_file(snapshot, Path(plan.new_data_dir))
            revision = report.status.revision if report.status else None
            source = str(snapshot)
        else:
            identity, _ = read_identity(args)
            with self._exclusive("restore"), self._opened_store() as store:
                from .restore import resolve_backup

                manifest = resolve_backup(self.settings, store, args["backup"])
                plan = plan_cluster_reset(layout, directory, f"etcd-backup-agent-{manifest.id}.db")
                if args.get("dry_run"):
                    return {"dry_run": True, "swap": plan.to_dict()}
                _, checked, _ = place_backup(
                    self.settings, store, manifest.id, identity, Path(plan.backup_dir), emit
                )
            del identity
            revision = checked.revision
            source = manifest.id
        plan.applied = True
        return {
            "placed_snapshot": plan.new_data_dir,
            "source": source,
            "revision": revision,
            "layout": layout,
            "command": cluster_reset_command(plan),
            "swap": plan.to_dict(),
        }

    def drill(self, args: dict[str, Any], emit: Emit) -> dict[str, Any]:
        from .drill import drill

        if "identity" in args or "identity_file" in args:
            identity, _ = read_identity(args)
        elif self.settings.drill.identity_file is not None:
            identity, _ = read_identity({"identity_file": str(self.settings.drill.identity_file)})
        else:
            raise UsageError("a full drill needs an identity: [drill] identity_file or --identity")
        with self._exclusive("drill"), self._opened_store() as store:
            report = drill(
                self.settings,
                store,
                str(args.get("backup", "latest")),
                identity,
                emit,
                on_drill=self._on_drill,
            )
        return report.to_dict()

    # -- the control-plane bundle (bundle/) ---------------------------------------------

    def bundle_list(self, args: dict[str, Any], emit: Emit) -> dict[str, Any]:
        from .bundle.ops import bundle_list

        with self._opened_store() as store:
            return bundle_list(self.settings, store, str(args["backup"]))

    def bundle_extract(self, args: dict[str, Any], emit: Emit) -> dict[str, Any]:
        # the checked tar, written by the caller (bundle/ops.py: write_fetched), so the
        # daemon never writes where a socket client names
        from .bundle.ops import bundle_fetch

        identity, _ = read_identity(args)
        with self._exclusive("extract a bundle"), self._opened_store() as store:
            return bundle_fetch(self.settings, store, str(args["backup"]), identity, emit)
