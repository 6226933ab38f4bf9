"""The control-plane bundle end to end: real etcd 3.5.1, the CLI, judged by age/zstd/tar."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.agent_helpers import run_agent, write_config
from tests.bundle_fixtures import make_kubeadm_node, make_rancher_node, pem_body
from tests.servers import EtcdServer

pytestmark = pytest.mark.integration


def stock_list(obj: Path, key: Path) -> list[str]:
    """``age -d -i KEY OBJ | zstd -d | tar -t``, as the docs tell an operator to run it."""
    out = subprocess.run(
        f"age -d -i {key} {obj} | zstd -d -q | tar -t",
        shell=True,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return sorted(out.splitlines())


def bundle_config(
    tmp_path: Path, etcd: EtcdServer, recipient: str, root: Path, **bundle: Any
) -> Path:
    return write_config(
        tmp_path / "c.toml",
        endpoint=etcd.endpoint,
        recipient=recipient,
        root=tmp_path,
        extra={"bundle": {"root": root} | bundle},
    )


def backup(cfg: Path) -> tuple[dict[str, Any], str]:
    r = run_agent("backup", "--config", cfg, "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout), r.stdout + r.stderr


def node_files(root: Path, names: tuple[str, ...]) -> dict[str, Path]:
    return {n.rstrip("/"): root / n.rstrip("/") for n in names}


def assert_same_tree(node: Path, out: Path, names: tuple[str, ...]) -> None:
    for name in names:
        src, dst = node / name.rstrip("/"), out / name.rstrip("/")
        s, d = os.lstat(src), os.lstat(dst)
        assert (s.st_mode, s.st_uid, s.st_gid) == (d.st_mode, d.st_uid, d.st_gid), name
        if src.is_symlink():
            assert os.readlink(dst) == os.readlink(src), name
        elif src.is_file():
            assert dst.read_bytes() == src.read_bytes(), name
            assert int(d.st_mtime) == int(s.st_mtime), name


def test_kubeadm_bundle_read_by_stock_tools_and_extracted_identically(
    tmp_path: Path, etcd: EtcdServer, age_identity: tuple[Path, str]
) -> None:
    key, recipient = age_identity
    node = make_kubeadm_node(tmp_path / "node")
    etcd.ctl("put", "/registry/secrets/default/s1", "ciphertext")
    cfg = bundle_config(tmp_path, etcd, recipient, node.root)
    manifest, out = backup(cfg)
    transcript = [out]

    rec = manifest["bundle"]
    assert rec["status"] == "ok", rec
    assert rec["layout"] == "kubeadm"
    assert rec["encryption_config"] == node.encryption_config
    assert rec["encryption_config_saved"] is True
    assert rec["warnings"] == []
    assert rec["object"] == f"test/{manifest['id']}.bundle.tar.zst.age"
    obj = tmp_path / "store" / rec["object"]
    assert obj.stat().st_size == rec["object_size"]
    assert hashlib.sha256(obj.read_bytes()).hexdigest() == rec["object_sha256"]

    # the stock tools list exactly the expected files
    assert stock_list(obj, key) == sorted(node.expected)

    # the manifest's file list matches the node, file by file
    files = {f["path"]: f for f in rec["files"]}
    assert sorted(f["path"] + ("/" if f["type"] == "dir" else "") for f in rec["files"]) == sorted(
        node.expected
    )
    for name, path in node_files(node.root, node.expected).items():
        f, st = files[name], os.lstat(path)
        assert f["mode"] == f"{st.st_mode & 0o7777:04o}", name
        if path.is_symlink():
            assert (f["type"], f["link"]) == ("symlink", os.readlink(path))
        elif path.is_file():
            assert f["type"] == "file"
            assert f["size"] == st.st_size
            assert f["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    stored_manifest = (tmp_path / "store" / "test" / f"{manifest['id']}.json").read_text()

    listing = run_agent("bundle", "list", "latest", "--config", cfg)
    assert listing.returncode == 0, listing.stderr
    assert "etc/kubernetes/pki/ca.key" in listing.stdout
    # the object's size as the store holds it, readable (it was raw bytes only)
    stored_size = (tmp_path / "store" / manifest["bundle"]["object"]).stat().st_size
    assert f"KiB ({stored_size} bytes), sha256" in listing.stdout, listing.stdout
    transcript.append(listing.stdout + listing.stderr)

    dest = tmp_path / "extracted"
    r = run_agent("bundle", "extract", "latest", "--identity", key, "--to", dest, "--config", cfg)
    assert r.returncode == 0, r.stderr
    transcript.append(r.stdout + r.stderr)
    assert_same_tree(node.root, dest, node.expected)
    got = sorted(
        str(p.relative_to(dest)) + ("/" if p.is_dir() and not p.is_symlink() else "")
        for p in dest.rglob("*")
    )
    # the parents of the listed paths are created too, and nothing else
    parents = {f"{a}/" for n in node.expected for a in Path(n).parents if str(a) != "."}
    parents -= set(node.expected)
    assert sorted(set(got) - parents) == sorted(node.expected)
    assert parents <= {"etc/", "etc/kubernetes/", "etc/kubernetes/audit/", "etc/kubernetes/enc/"}

    v = run_agent("verify", "--backup", "latest", "--identity", key, "--json", "--config", cfg)
    assert v.returncode == 0, v.stderr
    check = json.loads(v.stdout)
    assert (check["bundle"], check["bundle_files"]) == ("ok", len(node.expected))
    transcript.append(v.stdout + v.stderr)

    # the private keys never leave the bundle: not in logs, replies or the manifest
    for k in node.private_keys:
        body = pem_body(k)
        assert body not in stored_manifest
        for text in transcript:
            assert body not in text


@pytest.mark.parametrize("layout", ["k3s", "rke2"])
def test_k3s_and_rke2_layouts(
    tmp_path: Path, etcd: EtcdServer, age_identity: tuple[Path, str], layout: str
) -> None:
    key, recipient = age_identity
    node = make_rancher_node(tmp_path / "node", layout)
    cfg = bundle_config(tmp_path, etcd, recipient, node.root)
    manifest, out = backup(cfg)
    rec = manifest["bundle"]
    assert (rec["status"], rec["layout"]) == ("ok", layout)
    assert (
        rec["encryption_config"] == f"/var/lib/rancher/{layout}/server/cred/encryption-config.json"
    )
    assert rec["encryption_config_saved"] is True
    assert stock_list(tmp_path / "store" / rec["object"], key) == sorted(node.expected)
    dest = tmp_path / "x"
    r = run_agent("bundle", "extract", manifest["id"], "--identity", key, "--to", dest, "-c", cfg)
    assert r.returncode == 0, r.stderr
    assert_same_tree(node.root, dest, node.expected)
    for text in (out, r.stdout + r.stderr, json.dumps(manifest)):
        assert node.token not in text
        for k in node.private_keys:
            assert pem_body(k) not in text


def test_tampered_bundle_fails_verify(
    tmp_path: Path, etcd: EtcdServer, age_identity: tuple[Path, str]
) -> None:
    key, recipient = age_identity
    node = make_kubeadm_node(tmp_path / "node")
    cfg = bundle_config(tmp_path, etcd, recipient, node.root)
    manifest, _ = backup(cfg)
    obj = tmp_path / "store" / manifest["bundle"]["object"]
    data = bytearray(obj.read_bytes())
    data[len(data) // 2] ^= 0x01
    obj.write_bytes(bytes(data))
    v = run_agent("verify", "--backup", "latest", "--identity", key, "--config", cfg)
    assert v.returncode == 1, v.stdout + v.stderr
    assert "bundle object" in v.stderr and "does not match its manifest" in v.stderr
    r = run_agent(
        "bundle", "extract", "latest", "--identity", key, "--to", tmp_path / "x", "-c", cfg
    )
    assert r.returncode == 1
    assert not (tmp_path / "x").exists()


def test_retention_removes_the_bundle_with_its_snapshot(
    tmp_path: Path, etcd: EtcdServer, age_identity: tuple[Path, str]
) -> None:
    node = make_kubeadm_node(tmp_path / "node")
    cfg = write_config(
        tmp_path / "c.toml",
        endpoint=etcd.endpoint,
        recipient=age_identity[1],
        root=tmp_path,
        extra={"bundle": {"root": node.root}, "retention": {"keep_last": 1}},
    )
    first, _ = backup(cfg)
    time.sleep(1.1)  # distinct second-resolution ids
    etcd.ctl("put", "/k", "v")
    second, _ = backup(cfg)
    store = tmp_path / "store" / "test"
    assert len(list(store.iterdir())) == 6
    r = run_agent("prune", "--config", cfg, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["deleted"] == [first["id"]]
    assert sorted(p.name for p in store.iterdir()) == sorted(
        [
            f"{second['id']}.json",
            f"{second['id']}.db.zst.age",
            f"{second['id']}.bundle.tar.zst.age",
        ]
    )


@pytest.mark.parametrize("kind", ["dangling", "directory"])
def test_unreadable_encryption_config_warns(
    tmp_path: Path, etcd: EtcdServer, age_identity: tuple[Path, str], kind: str
) -> None:
    node = make_kubeadm_node(tmp_path / "node")
    enc = node.root / node.encryption_config.lstrip("/")
    enc.unlink()
    if kind == "directory":
        enc.mkdir()  # what a mistaken hostPath mount leaves behind
    else:
        enc.symlink_to("/nonexistent/encryption.yaml")
    cfg = bundle_config(tmp_path, etcd, age_identity[1], node.root)
    manifest, out = backup(cfg)
    rec = manifest["bundle"]
    assert rec["status"] == "ok"  # the rest of the bundle is still stored
    assert rec["encryption_config_saved"] is False
    sentence = "Secrets in these backups cannot be decrypted after a restore without it"
    assert any(sentence in w for w in rec["warnings"]), rec["warnings"]
    assert sentence in out  # the log line on stderr
    listing = run_agent("bundle", "list", "latest", "-c", cfg)
    assert sentence in listing.stdout


def test_oversized_bundle_fails_but_the_snapshot_is_stored(
    tmp_path: Path, etcd: EtcdServer, age_identity: tuple[Path, str]
) -> None:
    key, recipient = age_identity
    node = make_kubeadm_node(tmp_path / "node")
    cfg = bundle_config(tmp_path, etcd, recipient, node.root, max_bytes=1000)
    manifest, _ = backup(cfg)
    rec = manifest["bundle"]
    assert rec["status"] == "failed" and "max_bytes" in rec["error"]
    assert rec["object"] == "" and rec["files"] == []
    store = tmp_path / "store" / "test"
    assert sorted(p.name for p in store.iterdir()) == [
        f"{manifest['id']}.db.zst.age",
        f"{manifest['id']}.json",
    ]
    v = run_agent("verify", "--backup", "latest", "--identity", key, "--json", "-c", cfg)
    assert v.returncode == 0, v.stderr
    assert json.loads(v.stdout)["bundle"] == "failed"
    r = run_agent(
        "bundle", "extract", "latest", "--identity", key, "--to", tmp_path / "x", "-c", cfg
    )
    assert r.returncode == 1 and "failed at backup time" in r.stderr


def _craft_tar(members: list[tuple[str, str, bytes]]) -> bytes:
    """A tar an attacker wrote: (name, link target or "", data) per member."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, link, data in members:
            info = tarfile.TarInfo(name)
            if link:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize(
    "evil",
    [
        [("etc/ok", "", b"fine"), ("../escaped", "", b"evil")],
        [("etc/ok", "", b"fine"), ("/tmp/bundle-absolute-evil", "", b"evil")],
        [("etc/a/../../../escaped", "", b"evil")],
        [("etc/link", "../../escaped", b"")],
        [("etc/link", ".", b""), ("etc/link/escaped", "", b"evil")],
    ],
    ids=["dotdot", "absolute", "dotdot-inside", "link-out", "write-through-link"],
)
def test_crafted_bundle_with_traversal_is_refused_on_extract(
    tmp_path: Path,
    etcd: EtcdServer,
    age_identity: tuple[Path, str],
    evil: list[tuple[str, str, bytes]],
) -> None:
    key, recipient = age_identity
    node = make_kubeadm_node(tmp_path / "node")
    cfg = bundle_config(tmp_path, etcd, recipient, node.root)
    manifest, _ = backup(cfg)
    # replace the stored bundle by a crafted one, sealed by the stock tools, and make the
    # manifest agree with it: only extract's own checks stand between it and the disk
    tar = _craft_tar(evil)
    sealed = subprocess.run(
        ["sh", "-c", f"zstd -q -c | age -r {recipient}"], input=tar, capture_output=True, check=True
    ).stdout
    store = tmp_path / "store"
    (store / manifest["bundle"]["object"]).write_bytes(sealed)
    mpath = store / "test" / f"{manifest['id']}.json"
    doc = json.loads(mpath.read_text())
    doc["bundle"] |= {
        "object_size": len(sealed),
        "object_sha256": hashlib.sha256(sealed).hexdigest(),
        "tar_size": len(tar),
        "tar_sha256": hashlib.sha256(tar).hexdigest(),
    }
    mpath.write_text(json.dumps(doc))
    dest = tmp_path / "deep" / "dest"
    r = run_agent("bundle", "extract", "latest", "--identity", key, "--to", dest, "-c", cfg)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "refusing" in r.stderr
    assert not dest.exists()
    assert not (tmp_path / "deep" / "escaped").exists()
    assert not (tmp_path / "escaped").exists()
    assert not Path("/tmp/bundle-absolute-evil").exists()


def test_kubeadm_swap_with_bundle_copies_aside_and_never_deletes(
    tmp_path: Path, etcd: EtcdServer, age_identity: tuple[Path, str]
) -> None:
    from tests.servers import etcd_bin

    key, recipient = age_identity
    node = make_kubeadm_node(tmp_path / "node")
    manifests = node.root / "etc/kubernetes/manifests"
    cfg = write_config(
        tmp_path / "c.toml",
        endpoint=etcd.endpoint,
        recipient=recipient,
        root=tmp_path,
        extra={
            "bundle": {"root": node.root},
            "restore": {"etcdutl": etcd_bin("etcdutl"), "manifests_dir": manifests},
        },
    )
    manifest, _ = backup(cfg)
    pki = node.root / "etc/kubernetes/pki"
    original_ca = (pki / "ca.key").read_bytes()
    # the node drifted after the backup: a rotated key, a lost file, a file of its own
    (pki / "ca.key").write_bytes(b"rotated\n")
    (pki / "sa.pub").unlink()
    (pki / "extra.crt").write_text("the node's own\n")
    new = tmp_path / "etcd-restored"
    args = [
        "restore", "latest", "--identity", key, "--data-dir", new, "--name", "cp1",
        "--initial-cluster", "cp1=http://127.0.0.1:2380", "--layout", "kubeadm",
        "--with-bundle", "--config", cfg,
    ]  # fmt: skip
    dry = run_agent(*args, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "replaced etc/kubernetes/pki/ca.key" in dry.stdout
    assert (pki / "ca.key").read_bytes() == b"rotated\n" and not new.exists()

    r = run_agent(*args, "--apply", "--swap-wait", "0")
    assert r.returncode == 0, r.stderr
    assert "replaced etc/kubernetes/pki/ca.key" in r.stdout
    assert "created  etc/kubernetes/pki/sa.pub" in r.stdout
    assert "skipped  etc/kubernetes/manifests/etcd.yaml" in r.stdout
    assert (pki / "ca.key").read_bytes() == original_ca
    assert (pki / "ca.key").stat().st_mode & 0o7777 == 0o600
    assert (pki / "sa.pub").is_file()
    assert (pki / "extra.crt").read_text() == "the node's own\n"  # never deleted
    asides = list((node.root / "etc/kubernetes").glob("bundle-aside-*"))
    assert len(asides) == 1
    assert (asides[0] / "etc/kubernetes/pki/ca.key").read_bytes() == b"rotated\n"
    # the swap, not the bundle, wrote etcd.yaml: it points at the restored data dir
    assert f"--data-dir={new}" in (manifests / "etcd.yaml").read_text()
    assert (new / "member" / "snap" / "db").is_file()
    assert manifest["id"] in r.stdout, r.stdout


def _backup_without_dac_override(cfg: Path) -> subprocess.CompletedProcess[str]:
    """The backup as root without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH (as a hardened unit
    may run it): a mode-000 file is then unreadable even to root."""
    import sys

    from tests.agent_helpers import agent_env

    return subprocess.run(
        [
            "setpriv",
            "--bounding-set",
            "-dac_override,-dac_read_search",
            sys.executable,
            "-m",
            "etcd_backup_agent.cli",
            "backup",
            "--config",
            str(cfg),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=agent_env(),
    )


@pytest.mark.parametrize("unreadable", ["encryption-config", "sa-key"])
def test_an_unreadable_listed_file_fails_the_bundle_and_the_snapshot_is_stored(
    tmp_path: Path, etcd: EtcdServer, age_identity: tuple[Path, str], unreadable: str
) -> None:
    key, recipient = age_identity
    node = make_kubeadm_node(tmp_path / "node")
    if unreadable == "encryption-config":
        target = node.root / node.encryption_config.lstrip("/")
    else:
        target = node.root / "etc/kubernetes/pki/sa.key"
    target.chmod(0o000)
    cfg = bundle_config(tmp_path, etcd, recipient, node.root)
    r = _backup_without_dac_override(cfg)
    assert r.returncode == 0, r.stderr[-3000:]
    manifest = json.loads(r.stdout)
    rec = manifest["bundle"]
    rel = str(target.relative_to(node.root))
    assert rec["status"] == "failed", rec
    assert f"/{rel}: cannot read: Permission denied" in rec["error"]
    sentence = "Secrets in these backups cannot be decrypted after a restore without it"
    assert (sentence in r.stderr) == (unreadable == "encryption-config")
    assert rec["encryption_config_saved"] == (unreadable == "sa-key")
    # the snapshot is stored, verified and restorable; no bundle object exists
    store = tmp_path / "store" / "test"
    assert sorted(p.name for p in store.iterdir()) == [
        f"{manifest['id']}.db.zst.age",
        f"{manifest['id']}.json",
    ]
    v = run_agent("verify", "--backup", "latest", "--identity", key, "--json", "-c", cfg)
    assert v.returncode == 0, v.stderr
    assert json.loads(v.stdout)["bundle"] == "failed"
