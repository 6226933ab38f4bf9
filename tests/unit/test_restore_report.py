"""Restore results: typed values, their JSON (socket and --json) and the operator's text."""

from __future__ import annotations

import json
from pathlib import Path

from etcd_backup_agent.bundle.install import InstallPlan
from etcd_backup_agent.restore.member import MemberSpec
from etcd_backup_agent.restore.report import (
    PlacedSnapshot,
    RestoreReport,
    SwapDryRun,
    format_result,
    member_commands,
    next_steps,
    result_from_dict,
)
from etcd_backup_agent.restore.swap import plan_cluster_reset, plan_systemd

SPEC = MemberSpec(
    data_dir=Path("/var/lib/etcd-new"),
    name="cp1",
    initial_advertise_peer_urls="https://10.0.0.1:2380",
    initial_cluster="cp1=https://10.0.0.1:2380,cp2=https://10.0.0.2:2380",
    initial_cluster_token="tok",
    bump_revision=1000,
    mark_compacted=True,
)


def _report(tmp_path: Path) -> RestoreReport:
    conf = tmp_path / "etcd.conf.yml"
    conf.write_text("name: cp1\ndata-dir: /var/lib/etcd\n")
    plan, _ = plan_systemd(conf, SPEC.data_dir)
    return RestoreReport(
        backup_id="20260101T000000Z-r42-cp1",
        created_at="2026-01-01T00:00:00Z",
        age_seconds=7200.0,
        revision=42,
        total_keys=10,
        hash=123,
        data_dir=str(SPEC.data_dir),
        name=SPEC.name,
        initial_cluster=SPEC.cluster,
        initial_cluster_token=SPEC.initial_cluster_token,
        initial_advertise_peer_urls=SPEC.initial_advertise_peer_urls,
        etcdutl_version=None,
        bump_revision=1000,
        next_steps=next_steps(SPEC, True),
        member_commands=member_commands(None, SPEC, ["b1"], ["--identity", "/k"]),
        swap=plan,
        member_id="aa",
        cluster_id="bb",
        bundle_install=InstallPlan("/", "/aside", replaced=("etc/x",), created=("etc/y",)),
    )


def test_the_json_round_trips_through_the_socket(tmp_path: Path) -> None:
    report = _report(tmp_path)
    wire = json.loads(json.dumps(report.to_dict()))
    assert result_from_dict(wire) == report
    assert wire["member_commands"][1]["command"].startswith("etcd-backup-agent restore b1 ")
    assert wire["swap"]["changes"][str(tmp_path / "etcd.conf.yml")][0]["line"] == 2


def test_the_text_names_every_member_and_the_swap(tmp_path: Path) -> None:
    decoded = result_from_dict(_report(tmp_path).to_dict())  # what etcd-backupctl renders
    assert isinstance(decoded, RestoreReport)
    text = "\n".join(format_result(decoded))
    assert "restored backup 20260101T000000Z-r42-cp1 into /var/lib/etcd-new" in text
    assert "(2.0 h ago), revision 42, 10 keys" in text
    assert "engine native" in text and "revision bumped by 1000 and marked compacted" in text
    assert "# member cp1 (https://10.0.0.1:2380): this node, done" in text
    assert "--name cp2 --initial-cluster" in text
    assert "replaced etc/x (original copied to /aside/etc/x)" in text
    assert "systemd swap (planned)" in text and "data-dir: /var/lib/etcd  ->  data-dir:" in text


def test_member_commands_of_a_backup_and_of_a_snapshot() -> None:
    backup = member_commands(Path("/c.toml"), SPEC, ["b1"], ["--identity", "/k"])[1].argv
    assert backup[:8] == ["etcd-backup-agent", "restore", "b1", "--config", "/c.toml",
                          "--identity", "/k", "--data-dir"]  # fmt: skip
    snap = member_commands(None, SPEC, ["--snapshot", "/s.db"], [])[1].argv
    assert snap[:5] == ["etcd-backup-agent", "restore", "--snapshot", "/s.db", "--data-dir"]
    assert snap[-3:] == ["--bump-revision", "1000", "--mark-compacted"]
    assert "https://10.0.0.2:2380" in snap and "cp2" in snap


def test_dry_runs_and_placed_snapshots_decode_to_their_own_kind(tmp_path: Path) -> None:
    plan = plan_cluster_reset("k3s", tmp_path / "snaps", "etcd-backup-agent-b1.db")
    dry = SwapDryRun(plan)
    assert dry.to_dict() == {"dry_run": True, "swap": plan.to_dict()}
    assert result_from_dict(dry.to_dict()) == dry
    assert format_result(dry)[0] == "dry run: nothing was changed"
    placed = PlacedSnapshot(plan.new_data_dir, "b1", 42, "k3s", "k3s server ...", plan)
    assert result_from_dict(placed.to_dict()) == placed
    assert format_result(placed)[-1] == "the command: k3s server ..."
    assert result_from_dict({"something": "else"}) is None
