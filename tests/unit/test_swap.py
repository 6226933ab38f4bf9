"""Guided swap: kubeadm manifests and systemd config edits, dry run, rollback info."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from etcd_backup_agent.errors import RestoreError
from etcd_backup_agent.restore.swap import rewrite_etcd_config, rewrite_etcd_manifest, swap

ETCD_YAML = """\
apiVersion: v1
kind: Pod
metadata:
  annotations:
    kubeadm.kubernetes.io/etcd.advertise-client-urls: https://10.0.0.1:2379
  creationTimestamp: null
  labels:
    component: etcd
    tier: control-plane
  name: etcd
  namespace: kube-system
spec:
  containers:
  - command:
    - etcd
    - --advertise-client-urls=https://10.0.0.1:2379
    - --cert-file=/etc/kubernetes/pki/etcd/server.crt
    - --client-cert-auth=true
    - --data-dir=/var/lib/etcd
    - --experimental-initial-corrupt-check=true
    - --initial-advertise-peer-urls=https://10.0.0.1:2380
    - --initial-cluster=cp1=https://10.0.0.1:2380
    - --key-file=/etc/kubernetes/pki/etcd/server.key
    - --listen-client-urls=https://127.0.0.1:2379,https://10.0.0.1:2379
    - --name=cp1
    - --snapshot-count=10000
    image: registry.k8s.io/etcd:3.5.12-0
    imagePullPolicy: IfNotPresent
    livenessProbe:
      failureThreshold: 8
      httpGet:
        host: 127.0.0.1
        path: /health?exclude=NOSPACE&serializable=true
        port: 2381
        scheme: HTTP
    name: etcd
    resources:
      requests:
        cpu: 100m
        memory: 100Mi
    volumeMounts:
    - mountPath: /var/lib/etcd
      name: etcd-data
    - mountPath: /etc/kubernetes/pki/etcd
      name: etcd-certs
  hostNetwork: true
  priority: 2000001000
  priorityClassName: system-node-critical
  securityContext:
    seccompProfile:
      type: RuntimeDefault
  volumes:
  - hostPath:
      path: /etc/kubernetes/pki/etcd
      type: DirectoryOrCreate
    name: etcd-certs
  - hostPath:
      path: /var/lib/etcd
      type: DirectoryOrCreate
    name: etcd-data
status: {}
"""

APISERVER_YAML = """\
apiVersion: v1
kind: Pod
metadata:
  name: kube-apiserver
  namespace: kube-system
spec:
  containers:
  - command:
    - kube-apiserver
    - --etcd-servers=https://127.0.0.1:2379
    name: kube-apiserver
"""


def _tree(tmp_path: Path) -> Path:
    manifests = tmp_path / "kubernetes" / "manifests"
    manifests.mkdir(parents=True)
    (manifests / "etcd.yaml").write_text(ETCD_YAML)
    (manifests / "kube-apiserver.yaml").write_text(APISERVER_YAML)
    (manifests / "etcd.yaml").chmod(0o600)
    return manifests


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_rewrite_changes_only_the_data_dir_lines() -> None:
    new, changes, old = rewrite_etcd_manifest(ETCD_YAML, "/var/lib/etcd-restored")
    assert old == "/var/lib/etcd"
    before, after = ETCD_YAML.splitlines(), new.splitlines()
    assert len(before) == len(after)
    diff = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert diff == [
        ("    - --data-dir=/var/lib/etcd", "    - --data-dir=/var/lib/etcd-restored"),
        ("    - mountPath: /var/lib/etcd", "    - mountPath: /var/lib/etcd-restored"),
        ("      path: /var/lib/etcd", "      path: /var/lib/etcd-restored"),
    ]
    assert sorted(c.line for c in changes) == [
        i + 1 for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b
    ]
    # idempotent: the rewritten manifest already names the new dir everywhere
    again, more, host = rewrite_etcd_manifest(new, "/var/lib/etcd-restored")
    assert again == new and more == [] and host == "/var/lib/etcd-restored"
    # the certs volume (which appears first) is untouched
    assert "      path: /etc/kubernetes/pki/etcd" in after


def test_rewrite_refuses_an_unknown_manifest() -> None:
    with pytest.raises(RestoreError, match="etcd-data"):
        rewrite_etcd_manifest(APISERVER_YAML, "/x")


def test_kubeadm_dry_run_touches_nothing(tmp_path: Path) -> None:
    manifests = _tree(tmp_path)
    before = _snapshot(tmp_path)
    plan = swap(
        "kubeadm",
        Path("/var/lib/etcd-restored"),
        manifests_dir=manifests,
        etcd_config=tmp_path / "none",
        dry_run=True,
        name="cp1",
        peer_urls="https://10.0.0.1:2380",
    )
    assert not plan.applied and plan.rollback and plan.steps
    assert _snapshot(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kubernetes"]


def test_kubeadm_apply_moves_aside_and_rewrites(tmp_path: Path) -> None:
    manifests = _tree(tmp_path)
    plan = swap(
        "kubeadm",
        Path("/var/lib/etcd-restored"),
        manifests_dir=manifests,
        etcd_config=tmp_path / "none",
        dry_run=False,
        wait=0,
    )
    assert plan.applied
    backup = Path(plan.backup_dir)
    assert backup.parent == manifests.parent and backup.name.startswith("manifests-backup-")
    assert (backup / "etcd.yaml").read_text() == ETCD_YAML
    assert (backup / "kube-apiserver.yaml").read_text() == APISERVER_YAML
    assert (manifests / "kube-apiserver.yaml").read_text() == APISERVER_YAML
    new = (manifests / "etcd.yaml").read_text()
    assert new == rewrite_etcd_manifest(ETCD_YAML, "/var/lib/etcd-restored")[0]
    assert (manifests / "etcd.yaml").stat().st_mode & 0o777 == 0o600
    assert sorted(os.listdir(manifests)) == ["etcd.yaml", "kube-apiserver.yaml"]


def test_kubeadm_refuses_a_name_mismatch(tmp_path: Path) -> None:
    manifests = _tree(tmp_path)
    with pytest.raises(RestoreError, match="--name=cp1"):
        swap(
            "kubeadm",
            Path("/n"),
            manifests_dir=manifests,
            etcd_config=tmp_path,
            dry_run=True,
            name="default",
        )


def test_systemd_config_edit(tmp_path: Path) -> None:
    conf = tmp_path / "etcd" / "etcd.conf.yml"
    conf.parent.mkdir()
    text = "name: cp1\ndata-dir: /var/lib/etcd   # the data\nwal-dir:\nlisten-peer-urls: x\n"
    conf.write_text(text)
    dry = swap(
        "systemd", Path("/srv/etcd-new"), manifests_dir=tmp_path, etcd_config=conf, dry_run=True
    )
    assert conf.read_text() == text and len(list(conf.parent.iterdir())) == 1
    assert dry.old_data_dir == "/var/lib/etcd"
    plan = swap(
        "systemd", Path("/srv/etcd-new"), manifests_dir=tmp_path, etcd_config=conf, dry_run=False
    )
    assert conf.read_text() == text.replace("/var/lib/etcd ", "/srv/etcd-new ")
    assert Path(plan.backup_dir).read_text() == text
    assert any("cp -p" in step for step in plan.rollback)


def test_env_file_variant() -> None:
    new, changes, old = rewrite_etcd_config('ETCD_NAME=a\nETCD_DATA_DIR="/var/lib/etcd"\n', "/n")
    assert new == 'ETCD_NAME=a\nETCD_DATA_DIR="/n"\n' and old == "/var/lib/etcd"
    assert len(changes) == 1
