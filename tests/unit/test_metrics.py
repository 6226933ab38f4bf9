"""The metric set, its exposition (promtool) and /healthz."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from etcd_backup_agent.manifest import Manifest
from etcd_backup_agent.metrics import Health, Metrics, MetricsServer, health

EXPECTED = {
    "etcd_backup_last_success_timestamp_seconds",
    "etcd_backup_last_attempt_timestamp_seconds",
    "etcd_backup_expected_interval_seconds",
    "etcd_backup_runs",
    "etcd_backup_duration_seconds",
    "etcd_backup_snapshot_size_bytes",
    "etcd_backup_stored_size_bytes",
    "etcd_backup_snapshot_revision",
    "etcd_backup_snapshot_keys",
    "etcd_backup_verification_failures",
    "etcd_backup_retention_deleted",
    "etcd_backup_retention_runs",
    "etcd_backup_retention_last_success_timestamp_seconds",
    "etcd_backup_stored_backups",
    "etcd_backup_oldest_backup_timestamp_seconds",
    "etcd_backup_store_up",
    "etcd_backup_etcd_up",
    "etcd_backup_is_leader",
    "etcd_backup_skipped_runs",
    "etcd_backup_build_info",
    "etcd_backup_drill_last_success_timestamp_seconds",
    "etcd_backup_drills",
    "etcd_backup_spool_bytes",
    "etcd_backup_pending_uploads",
    "etcd_backup_bundle_failed",
    "etcd_backup_bundle_encryption_config_missing",
    "etcd_backup_bundle_warnings",
    "etcd_backup_keyspace_objects",
    "etcd_backup_keyspace_bytes",
    "etcd_backup_keyspace_history_bytes",
    "etcd_backup_incomplete_backups",
}
# no sample until a backup with a keyspace summary is known: a made-up 0 would look like
# a drop (and then growth) to the alert rules
UNTIL_ANALYZED = {name for name in EXPECTED if name.startswith("etcd_backup_keyspace_")}


def manifest(created: str, node: str = "n1") -> Manifest:
    return Manifest(
        id=f"x-{created}",
        object="c/x.db.zst.age",
        created_at=created,
        cluster="c",
        node=node,
        revision=42,
        db_size=1000,
        snapshot_sha256="0" * 64,
        object_size=500,
        object_sha256="1" * 64,
        total_keys=7,
    )


def test_every_metric_is_exposed_with_cluster_label_and_both_results() -> None:
    m = Metrics("prod", "1.2.3")
    families = {f.name: f for f in text_string_to_metric_families(m.exposition().decode())}
    assert set(families) == EXPECTED
    for fam in families.values():
        assert bool(fam.samples) != (fam.name in UNTIL_ANALYZED), fam.name
        assert all(s.labels.get("cluster") == "prod" for s in fam.samples), fam.name
    results = {s.labels["result"] for s in families["etcd_backup_runs"].samples}
    assert results == {"success", "failure"}
    assert not any(s.name.endswith("_created") for f in families.values() for s in f.samples)


@pytest.mark.integration
def test_exposition_passes_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool missing: install the Debian package prometheus")
    m = Metrics("prod", "1.2.3")
    m.stage("snapshot", 1.5)
    m.success(manifest("2026-01-01T10:00:00Z"), 3.0)
    r = subprocess.run(
        [promtool, "check", "metrics"], input=m.exposition(), capture_output=True, check=False
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_seed_sets_last_success_count_and_oldest_without_going_back() -> None:
    m = Metrics("c", "0")
    m.seed([manifest("2026-01-01T10:00:00Z"), manifest("2026-01-01T08:00:00Z")])
    assert m.value("etcd_backup_stored_backups") == 2
    assert m.value("etcd_backup_last_success_timestamp_seconds") == 1767261600
    assert m.value("etcd_backup_oldest_backup_timestamp_seconds") == 1767254400
    m.seed([manifest("2026-01-01T08:00:00Z")])  # after pruning: last success stays
    assert m.value("etcd_backup_last_success_timestamp_seconds") == 1767261600


def test_health_with_a_fake_clock() -> None:
    assert health(100.0, 99.0, 90.0, 60.0) == Health(True, "ok")
    assert not health(100.0, None, 90.0, 60.0).ok
    assert not health(200.0, 100.0, 190.0, 60.0).ok  # the loop stopped beating
    stale = health(300.0, 299.0, 100.0, 60.0)
    assert not stale.ok and "2 intervals" in stale.reason


def test_healthz_endpoint_turns_503_when_stale() -> None:
    clock = {"now": 100.0}

    def check() -> Health:
        return health(clock["now"], clock["now"] - 1, 90.0, 10.0)

    server = MetricsServer("127.0.0.1", 0, Metrics("c", "0"), check)
    server.start()
    host, port = server.address
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=5) as resp:
            assert resp.status == 200
            assert json.loads(resp.read()) == {"ok": True, "reason": "ok"}
        clock["now"] = 111.0
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=5)
        assert err.value.code == 503
        assert "ago" in json.loads(err.value.read())["reason"]
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as resp:
            assert b"etcd_backup_build_info" in resp.read()
    finally:
        server.stop()


def test_bundle_gauges_follow_the_last_stored_backup() -> None:
    from dataclasses import replace

    from etcd_backup_agent.bundle.record import BundleRecord

    m = Metrics("prod", "1.2.3")
    lost = BundleRecord(
        status="ok",
        layout="kubeadm",
        encryption_config="/etc/kubernetes/enc.yaml",
        warnings=("w1", "w2"),
    )
    m.success(replace(manifest("2025-01-01T00:00:00Z"), bundle=lost), 1.0)
    assert m.value("etcd_backup_bundle_encryption_config_missing") == 1
    assert m.value("etcd_backup_bundle_warnings") == 2
    assert m.value("etcd_backup_bundle_failed") == 0
    failed = BundleRecord(status="failed", layout="kubeadm", error="x")
    m.success(replace(manifest("2025-01-01T01:00:00Z"), bundle=failed), 1.0)
    assert m.value("etcd_backup_bundle_failed") == 1
    assert m.value("etcd_backup_bundle_encryption_config_missing") == 0


def test_bundle_gauges_are_seeded_from_the_store_after_a_restart() -> None:
    """A restarted agent has stored nothing yet: the newest stored backup's bundle counts, so
    the missing-encryption-config alert does not resolve itself on a restart."""
    from dataclasses import replace

    from etcd_backup_agent.bundle.record import BundleRecord

    lost = BundleRecord(status="ok", layout="kubeadm", encryption_config="/etc/kubernetes/e.yaml")
    m = Metrics("prod", "1.2.3")
    m.seed(
        [manifest("2025-01-01T00:00:00Z"), replace(manifest("2025-01-01T01:00:00Z"), bundle=lost)]
    )
    assert m.value("etcd_backup_bundle_encryption_config_missing") == 1
    assert m.last_bundle == lost
    # what this process stores afterwards wins over a later seed
    fine = BundleRecord(status="ok", layout="kubeadm")
    m.success(replace(manifest("2025-01-01T02:00:00Z"), bundle=fine), 1.0)
    m.seed([replace(manifest("2025-01-01T01:00:00Z"), bundle=lost)])
    assert m.value("etcd_backup_bundle_encryption_config_missing") == 0
