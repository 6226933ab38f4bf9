"""The bundle's pure parts: layout detection and flags, the walk, safe extraction, records."""

from __future__ import annotations

import io
import os
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

from etcd_backup_agent.bundle import collect as collect_mod
from etcd_backup_agent.bundle.collect import collect, excluded, holds_file
from etcd_backup_agent.bundle.extract import extract, link_inside, read_members
from etcd_backup_agent.bundle.layout import apiserver_flags, detect, enabled, plan
from etcd_backup_agent.bundle.record import BundleFile, BundleRecord
from etcd_backup_agent.config import BundleSettings, from_dict
from etcd_backup_agent.errors import ConfigError, RestoreError
from etcd_backup_agent.manifest import Manifest

APISERVER = """spec:
  containers:
  - command:
    - kube-apiserver
    - --encryption-provider-config=/etc/kubernetes/enc/enc.yaml
    - "--audit-policy-file=/etc/kubernetes/audit.yaml"
    # - --encryption-provider-config=/commented/out
    - --etcd-servers=https://127.0.0.1:2379
"""


def test_apiserver_flags_reads_the_command_list() -> None:
    flags = apiserver_flags(APISERVER)
    assert flags["encryption-provider-config"] == "/etc/kubernetes/enc/enc.yaml"
    assert flags["audit-policy-file"] == "/etc/kubernetes/audit.yaml"
    assert flags["etcd-servers"] == "https://127.0.0.1:2379"


def test_detect_and_plan(tmp_path: Path) -> None:
    assert detect(tmp_path) == "none"
    cfg = BundleSettings(root=tmp_path)
    assert not enabled(cfg, "none")
    assert enabled(BundleSettings(root=tmp_path, paths=("/etc/x",)), "none")
    assert not enabled(BundleSettings(root=tmp_path, enabled=False), "kubeadm")
    m = tmp_path / "etc/kubernetes/manifests"
    m.mkdir(parents=True)
    (m / "kube-apiserver.yaml").write_text(APISERVER)
    assert detect(tmp_path) == "kubeadm"
    p = plan(cfg, "kubeadm")
    assert p.paths == (
        "/etc/kubernetes/pki",
        "/etc/kubernetes/manifests",
        "/etc/kubernetes/enc/enc.yaml",
        "/etc/kubernetes/audit.yaml",
    )
    assert p.encryption_config == "/etc/kubernetes/enc/enc.yaml"
    (tmp_path / "var/lib/rancher/rke2/server").mkdir(parents=True)
    assert detect(tmp_path) == "rke2"
    r = plan(BundleSettings(root=tmp_path, data_dir="/data/rke2"), "rke2")
    assert r.paths == ("/data/rke2/server/token", "/data/rke2/server/tls")
    assert r.encryption_config == ""  # secrets encryption off: nothing to warn about


def test_config_rejects_relative_paths_and_bad_layouts() -> None:
    base = {"encryption": {"recipients": ["age1" + "q" * 58]}}
    with pytest.raises(ConfigError) as err:
        from_dict(base | {"bundle": {"paths": ["etc/x"], "layout": "openshift", "x": 1}})
    text = "\n".join(err.value.problems)
    assert "bundle.paths: expected absolute paths" in text
    assert "bundle.layout: expected one of" in text
    assert "bundle.x: unknown key" in text
    s = from_dict(base | {"bundle": {"enabled": False, "max_bytes": "1MiB"}})
    assert (s.bundle.enabled, s.bundle.max_bytes) == (False, 1024 * 1024)


def _tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    d = root / "etc/k/pki"
    d.mkdir(parents=True)
    (d / "ca.key").write_bytes(b"KEY")
    (d / "ca.key").chmod(0o600)
    (d / "old.bak").write_bytes(b"old")
    (d / "fifo").parent.mkdir(exist_ok=True)
    os.mkfifo(d / "fifo")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"not ours")
    (d / "out-link").symlink_to(outside)
    (d / "in-link").symlink_to("ca.key")
    return root


def test_collect_never_follows_links_and_skips_specials(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    coll = collect(root, ("/etc/k/pki", "/etc/k/missing"), ("*.bak",), 1000)
    by = {i.meta.path: i for i in coll.items}
    assert sorted(by) == [
        "etc/k/pki",
        "etc/k/pki/ca.key",
        "etc/k/pki/in-link",
        "etc/k/pki/out-link",
    ]
    assert by["etc/k/pki/out-link"].meta.type == "symlink"
    assert by["etc/k/pki/out-link"].data == b""  # the target's files are not read
    assert (by["etc/k/pki/ca.key"].meta.mode, by["etc/k/pki/ca.key"].data) == ("0600", b"KEY")
    assert coll.excluded == 1
    assert any("fifo" in w and "skipped" in w for w in coll.warnings)
    assert any("/etc/k/missing: does not exist" in w for w in coll.warnings)
    assert coll.errors == ()
    assert holds_file(coll, "/etc/k/pki/in-link")
    assert not holds_file(coll, "/etc/k/pki/out-link")


def test_an_unreadable_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _tree(tmp_path)
    real_open = os.open

    def refuse(path: object, flags: int, *args: object) -> int:
        if str(path).endswith("ca.key"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(collect_mod.os, "open", refuse)
    coll = collect(root, ("/etc/k/pki",), (), 1000)
    assert coll.errors == ("/etc/k/pki/ca.key: cannot read: Permission denied",)


def test_max_bytes(tmp_path: Path) -> None:
    coll = collect(_tree(tmp_path), ("/etc/k/pki",), (), 4)
    assert any("max_bytes" in e for e in coll.errors)


def test_exclude_globs() -> None:
    assert excluded("/etc/k/pki/a.old", ("*.old",))
    assert excluded("/etc/k/pki/etcd/x", ("/etc/k/pki/etcd/*",))
    assert not excluded("/etc/k/pki/a.crt", ("*.old", "/var/*"))


def _tar(*members: tarfile.TarInfo, data: bytes = b"") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for m in members:
            tar.addfile(m, io.BytesIO(data) if m.isreg() else None)
    return buf.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize(
    "bad",
    [
        _member("../x"),
        _member("/abs"),
        _member("a/../../x"),
        _member("dev", tarfile.CHRTYPE),
        _member("hard", tarfile.LNKTYPE, "a"),
        _member("a/l", tarfile.SYMTYPE, "../../x"),
    ],
)
def test_read_members_refuses(bad: tarfile.TarInfo) -> None:
    with pytest.raises(RestoreError, match="refusing"):
        read_members(_tar(bad))


def test_links() -> None:
    assert link_inside("etc/k/a", "b") == "b"
    assert link_inside("etc/k/a", "/etc/k/pki/b") == "pki/b"
    assert link_inside("etc/k/a", "../x") == "../x"
    with pytest.raises(RestoreError):
        link_inside("etc/a", "../../x")


def test_extract_refuses_a_non_empty_dir_and_writes_modes(tmp_path: Path) -> None:
    f = _member("etc/a")
    f.size, f.mode, f.mtime = 3, 0o640, 1_600_000_000
    members = read_members(_tar(f, data=b"abc"))
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / "x").write_text("")
    with pytest.raises(RestoreError, match="not empty"):
        extract(members, dest, chown=False)
    out = tmp_path / "new"
    assert extract(members, out, chown=False) == ["etc/a"]
    st = (out / "etc/a").stat()
    assert (st.st_mode & 0o7777, int(st.st_mtime)) == (0o640, 1_600_000_000)


def test_old_manifests_load_and_the_record_round_trips() -> None:
    base = {
        "format_version": 1,
        "id": "20250101T000000Z-r5-n",
        "object": "c/20250101T000000Z-r5-n.db.zst.age",
        "created_at": "2025-01-01T00:00:00Z",
        "cluster": "c",
        "node": "n",
        "revision": 5,
        "db_size": 1,
        "snapshot_sha256": "x",
        "object_size": 1,
        "object_sha256": "y",
    }
    old = Manifest.from_dict(base)
    assert old.bundle is None and "bundle" not in old.to_dict()
    rec = BundleRecord(
        status="ok",
        layout="kubeadm",
        object="c/x.bundle.tar.zst.age",
        files=(BundleFile(path="etc/a", type="file", mode="0600", size=1, sha256="z"),),
        warnings=("w",),
    )
    m = Manifest.from_json(replace(old, bundle=rec).to_json())
    assert m.bundle == rec
    with pytest.raises(ValueError, match="bundle record"):
        Manifest.from_dict(base | {"bundle": {"layout": "x"}})


def test_a_bundle_without_its_manifest_is_an_orphan(tmp_path: Path) -> None:
    from etcd_backup_agent.bundle.record import bundle_key
    from etcd_backup_agent.catalog import list_backups
    from etcd_backup_agent.manifest import manifest_key, object_key
    from etcd_backup_agent.store.local import LocalStore
    from tests.fake_backups import fake_manifest

    store = LocalStore(tmp_path)
    kept, lost = fake_manifest("2026-11-24T00:00:00"), fake_manifest("2026-11-23T00:00:00")
    for m in (kept, lost):
        store.put_bytes(object_key("c1", m.id), b"s" * m.object_size)  # the recorded size
        store.put_bytes(bundle_key("c1", m.id), b"bundle")
    store.put_bytes(manifest_key("c1", kept.id), kept.to_json().encode())
    cat = list_backups(store, "c1")
    assert [m.id for m in cat.backups] == [kept.id]
    assert sorted(cat.orphans) == sorted([bundle_key("c1", lost.id), object_key("c1", lost.id)])


def test_install_plan_replaces_creates_skips_and_refuses_a_kind_change(tmp_path: Path) -> None:
    from etcd_backup_agent.bundle.install import apply_install, plan_install

    def member(path: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
        info = _member(path, kind)
        info.size, info.mode = len(data), 0o600 if kind == tarfile.REGTYPE else 0o755
        return info

    blobs = {"etc/k/a": b"new-a", "etc/k/b": b"b", "etc/k/same": b"same", "etc/k/etcd.yaml": b"y"}
    members = []
    for name, data in blobs.items():
        members += read_members(_tar(member(name, data), data=data))
    members += read_members(_tar(member("etc/k", kind=tarfile.DIRTYPE)))
    root = tmp_path / "root"
    (root / "etc/k").mkdir(parents=True)
    (root / "etc/k/a").write_bytes(b"old-a")
    (root / "etc/k/same").write_bytes(b"same")
    (root / "etc/k/same").chmod(0o600)
    (root / "etc/k/mine").write_bytes(b"the node's own")
    aside = tmp_path / "aside"
    plan = plan_install(members, root, aside, frozenset({"etc/k/etcd.yaml"}))
    assert (plan.replaced, plan.created, plan.skipped) == (
        ("etc/k/a",),
        ("etc/k/b",),
        ("etc/k/etcd.yaml",),
    )
    assert set(plan.unchanged) == {"etc/k", "etc/k/same"}
    assert not aside.exists() and (root / "etc/k/a").read_bytes() == b"old-a"  # a plan only
    done = apply_install(members, plan, chown=False)
    assert done.applied
    assert (root / "etc/k/a").read_bytes() == b"new-a"
    assert (aside / "etc/k/a").read_bytes() == b"old-a"
    assert (root / "etc/k/b").read_bytes() == b"b"
    assert (root / "etc/k/mine").read_bytes() == b"the node's own"
    assert not (root / "etc/k/etcd.yaml").exists()
    (root / "etc/k/b").unlink()
    (root / "etc/k/b").mkdir()
    with pytest.raises(RestoreError, match="different kind"):
        plan_install(members, root, aside, frozenset())
