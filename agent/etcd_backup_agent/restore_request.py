"""The socket's (and ``etcd-backup-agent restore``'s) restore request, checked and run.

The arguments are those of docs/socket-protocol.md; the single flight is the agent's
(``exclusive``): planning a swap (``--dry-run``) runs beside a backup, restoring does not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from .config import Settings
from .errors import UsageError
from .requests import read_identity
from .restore import (
    K8S_BUMP,
    Emit,
    MemberSpec,
    check_local_snapshot,
    place_backup,
    place_file,
    restore,
    restore_snapshot,
)
from .store.base import Store

Args = Mapping[str, Any]
Exclusive = Callable[[str], AbstractContextManager[None]]


class RestoreRequest:
    """One restore request against ``store`` with the settings in force when it arrived."""

    def __init__(self, settings: Settings, store: Store, exclusive: Exclusive) -> None:
        self.settings = settings
        self._store = store
        self._exclusive = exclusive

    @contextmanager
    def _opened_store(self) -> Iterator[Store]:
        yield self._store

    def restore(self, args: Args, emit: Emit) -> dict[str, Any]:
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
        self, args: Args, layout: str, snapshot: Path | None, emit: Emit
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
