"""One restore request, as the socket and the offline command make it: check the options,
plan the guided swap before anything is written, restore, then swap in (``--apply``).

The order matters for the operator: every refusal (bad flags, a manifest the swap cannot
edit, an existing target) comes before the download, and a dry run touches nothing.
"""

from __future__ import annotations

from dataclasses import replace

from ..bundle.install import InstallPlan
from ..config import Settings
from ..errors import UsageError
from ..events import Emit
from ..store.base import Store
from .options import RestoreOptions
from .report import RestoreResult, SwapDryRun
from .reset import cluster_reset
from .run import restore, restore_snapshot
from .swap import SwapPlan, swap
from .types import Exclusive, OpenStore

Identity = tuple[str, str]  # (the age identity's text, how member commands name it)


def run_restore(
    settings: Settings,
    options: RestoreOptions,
    identity: Identity | None,
    emit: Emit,
    *,
    exclusive: Exclusive,
    open_store: OpenStore,
) -> RestoreResult:
    """Serve ``options``; ``identity`` is needed for a stored backup (not for ``snapshot``)."""
    if options.snapshot is None and identity is None:
        raise UsageError("an age identity is required: identity_file (a path) or identity")
    options.check()
    if options.resets:
        text = identity[0] if identity is not None else None
        return cluster_reset(
            settings, options, text, emit, exclusive=exclusive, open_store=open_store
        )
    spec = options.member_spec(settings.restore.engine)
    spec.check()
    if options.dry_run and options.layout is None:
        raise UsageError("--dry-run prints the swap plan: give --layout too")
    with_bundle = options.with_bundle
    if with_bundle and (options.layout != "kubeadm" or not (options.apply or options.dry_run)):
        raise UsageError("--with-bundle goes with --apply --layout kubeadm (or --dry-run)")
    if with_bundle and options.snapshot is not None:
        raise UsageError("--with-bundle needs a stored backup, not --snapshot")

    def plan_swap(dry_run: bool) -> SwapPlan:
        assert options.layout is not None
        return swap(
            options.layout,
            spec.data_dir,
            manifests_dir=settings.restore.manifests_dir,
            etcd_config=settings.restore.etcd_config,
            dry_run=dry_run,
            name=spec.name,
            peer_urls=spec.initial_advertise_peer_urls,
            wait=options.swap_wait,
        )

    def install(store: Store, backup: str, dry_run: bool) -> InstallPlan:
        from ..bundle.ops import install_bundle  # bundle/install.py: copied aside, never deleted

        assert identity is not None
        return install_bundle(settings, store, backup, identity[0], dry_run)

    if options.swaps:
        plan = plan_swap(dry_run=True)  # validates the manifests/config before the restore
        if options.dry_run:
            installed = None
            if with_bundle:
                assert options.backup is not None
                with open_store() as store:
                    installed = install(store, options.backup, True)
            return SwapDryRun(plan, installed)
    if options.snapshot is not None:
        with exclusive("restore"):
            report = restore_snapshot(
                settings,
                options.snapshot,
                spec,
                emit,
                allow_no_trailer=options.allow_no_trailer,
            )
            if options.apply:
                report = replace(report, swap=plan_swap(dry_run=False))
        return report
    assert identity is not None and options.backup is not None
    with exclusive("restore"), open_store() as store:
        report = restore(
            settings, store, options.backup, identity[0], spec, emit, identity_hint=identity[1]
        )
        if options.apply and with_bundle:
            report = replace(report, bundle_install=install(store, report.backup_id, False))
        if options.apply:
            report = replace(report, swap=plan_swap(dry_run=False))
    return report
