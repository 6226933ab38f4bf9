"""Temp trees laid out like control-plane nodes, with real keys made by openssl."""

from __future__ import annotations

import base64
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

APISERVER_YAML = """apiVersion: v1
kind: Pod
metadata:
  name: kube-apiserver
  namespace: kube-system
spec:
  containers:
  - command:
    - kube-apiserver
    - --advertise-address=10.0.0.1
    - --client-ca-file=/etc/kubernetes/pki/ca.crt
    - --encryption-provider-config={enc}
    - --audit-policy-file=/etc/kubernetes/audit/policy.yaml
    - --etcd-servers=https://127.0.0.1:2379
    - --service-account-key-file=/etc/kubernetes/pki/sa.pub
    image: registry.k8s.io/kube-apiserver:v1.30.0
    name: kube-apiserver
"""

ETCD_YAML = """apiVersion: v1
kind: Pod
metadata:
  name: etcd
  namespace: kube-system
spec:
  containers:
  - command:
    - etcd
    - --data-dir=/var/lib/etcd
    - --name=cp1
    name: etcd
    volumeMounts:
    - mountPath: /var/lib/etcd
      name: etcd-data
  volumes:
  - hostPath:
      path: /var/lib/etcd
      type: DirectoryOrCreate
    name: etcd-data
"""


def encryption_config() -> str:
    key = base64.b64encode(os.urandom(32)).decode()
    return (
        "apiVersion: apiserver.config.k8s.io/v1\n"
        "kind: EncryptionConfiguration\n"
        "resources:\n"
        "  - resources: [secrets]\n"
        "    providers:\n"
        "      - aescbc:\n"
        "          keys:\n"
        f"            - name: key1\n              secret: {key}\n"
        "      - identity: {}\n"
    )


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_ca(directory: Path, name: str, cn: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", str(directory / f"{name}.key"), "-out", str(directory / f"{name}.crt"),
        "-subj", f"/CN={cn}",
    )  # fmt: skip
    (directory / f"{name}.key").chmod(0o600)
    (directory / f"{name}.crt").chmod(0o644)


@dataclass(frozen=True)
class KubeadmNode:
    root: Path
    encryption_config: str  # absolute on the node
    # relative names the bundle must hold ("etc/kubernetes/pki/ca.key"), dirs end in "/"
    expected: tuple[str, ...]
    private_keys: tuple[Path, ...]


def make_kubeadm_node(root: Path, enc: str = "/etc/kubernetes/enc/encryption.yaml") -> KubeadmNode:
    """/etc/kubernetes with pki (CA, etcd CA, front-proxy CA, sa keys), manifests, an
    encryption config outside pki, an audit policy, and a relative symlink."""
    k = root / "etc" / "kubernetes"
    pki = k / "pki"
    (pki / "etcd").mkdir(parents=True)
    pki.chmod(0o755)
    (pki / "etcd").chmod(0o700)
    make_ca(pki, "ca", "kubernetes")
    make_ca(pki / "etcd", "ca", "etcd-ca")
    make_ca(pki, "front-proxy-ca", "front-proxy-ca")
    _openssl("genrsa", "-out", str(pki / "sa.key"), "2048")
    (pki / "sa.key").chmod(0o600)
    _openssl("rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))
    (pki / "sa.pub").chmod(0o644)
    (pki / "ca-current.crt").symlink_to("ca.crt")
    manifests = k / "manifests"
    manifests.mkdir()
    (manifests / "kube-apiserver.yaml").write_text(APISERVER_YAML.format(enc=enc))
    (manifests / "etcd.yaml").write_text(ETCD_YAML)
    for p in manifests.iterdir():
        p.chmod(0o600)
    enc_path = root / enc.lstrip("/")
    enc_path.parent.mkdir(parents=True, exist_ok=True)
    enc_path.write_text(encryption_config())
    enc_path.chmod(0o600)
    audit = k / "audit" / "policy.yaml"
    audit.parent.mkdir()
    audit.write_text("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n")
    audit.chmod(0o640)
    (k / "admin.conf").write_text("not collected: outside the bundle's paths\n")
    expected = [
        "etc/kubernetes/pki/",
        "etc/kubernetes/pki/ca-current.crt",
        "etc/kubernetes/pki/ca.crt",
        "etc/kubernetes/pki/ca.key",
        "etc/kubernetes/pki/etcd/",
        "etc/kubernetes/pki/etcd/ca.crt",
        "etc/kubernetes/pki/etcd/ca.key",
        "etc/kubernetes/pki/front-proxy-ca.crt",
        "etc/kubernetes/pki/front-proxy-ca.key",
        "etc/kubernetes/pki/sa.key",
        "etc/kubernetes/pki/sa.pub",
        "etc/kubernetes/manifests/",
        "etc/kubernetes/manifests/etcd.yaml",
        "etc/kubernetes/manifests/kube-apiserver.yaml",
        "etc/kubernetes/audit/policy.yaml",
        enc.lstrip("/"),
    ]
    keys = (pki / "ca.key", pki / "etcd" / "ca.key", pki / "front-proxy-ca.key", pki / "sa.key")
    return KubeadmNode(root, enc, tuple(sorted(expected)), keys)


@dataclass(frozen=True)
class RancherNode:
    root: Path
    expected: tuple[str, ...]
    private_keys: tuple[Path, ...]
    token: str


def make_rancher_node(root: Path, layout: str = "k3s") -> RancherNode:
    """/var/lib/rancher/<layout>/server with token, tls (CAs) and the encryption config."""
    server = root / "var" / "lib" / "rancher" / layout / "server"
    tls = server / "tls"
    cred = server / "cred"
    tls.mkdir(parents=True)
    cred.mkdir()
    make_ca(tls, "server-ca", "k3s-server-ca")
    make_ca(tls, "client-ca", "k3s-client-ca")
    token = "K10" + os.urandom(16).hex() + "::server:" + os.urandom(16).hex()
    (server / "token").write_text(token + "\n")
    (server / "token").chmod(0o600)
    (cred / "encryption-config.json").write_text('{"kind":"EncryptionConfiguration"}\n')
    (cred / "encryption-config.json").chmod(0o600)
    (cred / "passwd").write_text("not collected\n")
    base = f"var/lib/rancher/{layout}/server"
    expected = (
        f"{base}/cred/encryption-config.json",
        f"{base}/tls/",
        f"{base}/tls/client-ca.crt",
        f"{base}/tls/client-ca.key",
        f"{base}/tls/server-ca.crt",
        f"{base}/tls/server-ca.key",
        f"{base}/token",
    )
    return RancherNode(
        root, tuple(sorted(expected)), (tls / "server-ca.key", tls / "client-ca.key"), token
    )


def pem_body(key: Path) -> str:
    """A line from the middle of a PEM file: what a leak would contain."""
    lines = [ln for ln in key.read_text().splitlines() if ln and not ln.startswith("-----")]
    return lines[len(lines) // 2]
