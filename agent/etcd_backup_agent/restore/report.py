"""What a restore request returns, typed, and how the operator reads it.

Three outcomes: ``RestoreReport`` (a data dir was written, maybe swapped in),
``SwapDryRun`` (``--dry-run``: the plan, nothing touched) and ``PlacedSnapshot`` (k3s/RKE2:
the verified snapshot placed for ``--cluster-reset``). Each encodes to the JSON the socket
and ``--json`` carry (``to_dict``) and decodes back (``result_from_dict``), so the socket
client and the offline command render the same value with ``format_result``.
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..bundle.install import InstallPlan, format_install
from .etcdutl import Etcdutl
from .member import K8S_BUMP, MemberSpec
from .swap import SwapPlan


@dataclass(frozen=True)
class MemberCommand:
    name: str
    peer_urls: str
    argv: list[str]

    @property
    def text(self) -> str:
        return shlex.join(self.argv)


@dataclass(frozen=True)
class RestoreReport:
    """What was restored, where, and what the operator does next."""

    backup_id: str
    created_at: str
    age_seconds: float
    revision: int
    total_keys: int | None
    hash: int | None
    data_dir: str
    name: str
    initial_cluster: str
    initial_cluster_token: str
    initial_advertise_peer_urls: str
    etcdutl_version: str | None
    bump_revision: int | None
    next_steps: list[str] = field(default_factory=list)
    recommendations: list[str] = field(default_factory=list)
    member_commands: list[MemberCommand] = field(default_factory=list)
    swap: SwapPlan | None = None
    engine: str = "native"
    wal_dir: str | None = None
    member_id: str | None = None
    cluster_id: str | None = None
    snapshot_file: str | None = None
    storage_version: str | None = None
    bundle_install: InstallPlan | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["member_commands"] = [
            {"name": c.name, "peer_urls": c.peer_urls, "argv": c.argv, "command": c.text}
            for c in self.member_commands
        ]
        if self.bundle_install is None:
            del d["bundle_install"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RestoreReport:
        plain = {k: v for k, v in d.items() if k in _REPORT_FIELDS}
        plain["member_commands"] = [
            MemberCommand(str(c["name"]), str(c["peer_urls"]), [str(a) for a in c["argv"]])
            for c in d.get("member_commands") or []
        ]
        plain["swap"] = SwapPlan.from_dict(d["swap"]) if d.get("swap") else None
        plain["bundle_install"] = _install(d)
        plain.setdefault("engine", "etcdutl")  # replies of daemons older than the native engine
        return cls(**plain)


_REPORT_FIELDS = frozenset(RestoreReport.__dataclass_fields__)


@dataclass(frozen=True)
class SwapDryRun:
    """``--dry-run``: the swap (and bundle install) that would run; nothing was changed."""

    swap: SwapPlan
    bundle_install: InstallPlan | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"dry_run": True, "swap": self.swap.to_dict()}
        if self.bundle_install is not None:
            d["bundle_install"] = self.bundle_install.to_dict()
        return d


@dataclass(frozen=True)
class PlacedSnapshot:
    """k3s/RKE2: the verified snapshot is where ``--cluster-reset`` restores from."""

    placed_snapshot: str
    source: str
    revision: int | None
    layout: str
    command: str
    swap: SwapPlan

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


RestoreResult = RestoreReport | SwapDryRun | PlacedSnapshot


def _install(d: dict[str, Any]) -> InstallPlan | None:
    return InstallPlan.from_dict(d["bundle_install"]) if d.get("bundle_install") else None


def result_from_dict(d: dict[str, Any]) -> RestoreResult | None:
    """The typed result of a restore reply; None when it is none of the three."""
    if "placed_snapshot" in d:
        swap = SwapPlan.from_dict(d["swap"])
        return PlacedSnapshot(
            str(d["placed_snapshot"]),
            str(d["source"]),
            d.get("revision"),
            str(d.get("layout", swap.layout)),
            str(d["command"]),
            swap,
        )
    if "next_steps" in d:
        return RestoreReport.from_dict(d)
    if "swap" in d:
        return SwapDryRun(SwapPlan.from_dict(d["swap"]), _install(d))
    return None


# --- what the operator does next --------------------------------------------------------


def member_commands(
    config: Path | None, spec: MemberSpec, what: list[str], identity: list[str]
) -> list[MemberCommand]:
    """The restore command of every member of ``--initial-cluster`` (same token for all):
    ``what`` is restored (a backup id, or ``--snapshot FILE``) with ``identity``'s flags."""
    out = []
    for name, urls in spec.members():
        argv = ["etcd-backup-agent", "restore", *what]
        if config is not None:
            argv += ["--config", str(config)]
        argv += [
            *identity,
            "--data-dir",
            str(spec.data_dir),
            "--name",
            name,
            "--initial-cluster",
            spec.cluster,
            "--initial-advertise-peer-urls",
            urls,
            "--initial-cluster-token",
            spec.initial_cluster_token,
        ]
        if spec.wal_dir is not None:
            argv += ["--wal-dir", str(spec.wal_dir)]
        if spec.bump_revision is not None:
            argv += ["--bump-revision", str(spec.bump_revision), "--mark-compacted"]
        out.append(MemberCommand(name, urls, argv))
    return out


def next_steps(spec: MemberSpec, multi: bool) -> list[str]:
    """Exact steps for this node after the restore (layout-neutral)."""
    flags = shlex.join(
        [
            "--name",
            spec.name,
            "--data-dir",
            str(spec.data_dir),
            *spec.cluster_flags(),
            "--initial-cluster-state",
            "new",
            *(["--wal-dir", str(spec.wal_dir)] if spec.wal_dir is not None else []),
        ]
    )
    steps = [
        "Stop kube-apiserver (kubeadm: move /etc/kubernetes/manifests/kube-apiserver.yaml out) "
        "and the old etcd on this node; keep the old data dir: nothing was deleted.",
        f"Start etcd on this node with: {flags} "
        "(kubeadm: point the etcd-data hostPath in etcd.yaml at the new dir; systemd: set "
        "data-dir in the etcd config; or use `restore --apply --layout kubeadm|systemd`).",
    ]
    if multi:
        steps.append(
            "Run the per-member restore command below on every other member's node, then "
            "start etcd there with its own --name and peer URLs and the same --initial-cluster "
            "and token."
        )
    steps += [
        "Check: etcdctl endpoint status --cluster -w table (revision as restored) and "
        "etcdctl member list.",
        "Start kube-apiserver again, then restart kube-controller-manager, kube-scheduler and "
        "kubelets so no component keeps a cache newer than the snapshot.",
    ]
    return steps


def recommendations(etcdutl: Etcdutl | None, spec: MemberSpec) -> list[str]:
    if spec.bump_revision:
        return []
    if etcdutl is None or etcdutl.can_bump:
        return [
            f"For Kubernetes, restore with --bump-revision {K8S_BUMP} --mark-compacted so "
            "watch caches newer than the snapshot re-list instead of missing changes."
        ]
    return [
        f"etcdutl {etcdutl.version_text} cannot bump the revision (needs >= 3.5.10): restart "
        "every kube-apiserver, controller and kubelet after the restore so no watch cache "
        "keeps resource versions newer than the snapshot."
    ]


# --- rendering --------------------------------------------------------------------------


def format_result(result: RestoreResult) -> list[str]:
    """The result as the operator reads it (``etcd-backup-agent|etcd-backupctl restore``)."""
    if isinstance(result, PlacedSnapshot):
        lines = [
            f"placed {result.source} (revision {result.revision}) at {result.placed_snapshot}",
            "next steps:",
        ]
        lines += [f"  {i}. {step}" for i, step in enumerate(result.swap.steps[1:], 1)]
        lines.append(f"the command: {result.command}")
        return lines
    if isinstance(result, SwapDryRun):
        lines = ["dry run: nothing was changed"]
        if result.bundle_install is not None:
            lines += format_install(result.bundle_install)
        return lines + result.swap.lines()
    return _report_lines(result)


def _report_lines(r: RestoreReport) -> list[str]:
    if r.backup_id:
        lines = [
            f"restored backup {r.backup_id} into {r.data_dir}",
            f"  taken {r.created_at} ({r.age_seconds / 3600:.1f} h ago), "
            f"revision {r.revision}, {r.total_keys} keys (bbolt count)",
        ]
    else:
        lines = [
            f"restored snapshot {r.snapshot_file} into {r.data_dir}",
            f"  revision {r.revision}, {r.total_keys} keys (bbolt count)",
        ]
    engine = f"etcdutl {r.etcdutl_version}" if r.engine == "etcdutl" else r.engine
    lines.append(
        f"  member {r.name} ({r.member_id}) of {r.initial_cluster} "
        f"(token {r.initial_cluster_token}, cluster {r.cluster_id}), engine {engine}"
    )
    if r.wal_dir:
        lines.append(f"  WAL in {r.wal_dir}")
    if r.bump_revision:
        lines.append(f"  revision bumped by {r.bump_revision} and marked compacted")
    lines.append("next steps:")
    lines += [f"  {i}. {step}" for i, step in enumerate(r.next_steps, 1)]
    lines += [f"note: {rec}" for rec in r.recommendations]
    if r.member_commands:
        lines.append("restore every member (same backup, same --initial-cluster and token):")
        for c in r.member_commands:
            if c.name == r.name:
                lines.append(f"  # member {c.name} ({c.peer_urls}): this node, done")
                continue
            lines.append(f"  # member {c.name} ({c.peer_urls}), on its own node:")
            lines.append(f"  {c.text}")
    if r.bundle_install is not None:
        lines += format_install(r.bundle_install)
    if r.swap is not None:
        lines += r.swap.lines()
    return lines
