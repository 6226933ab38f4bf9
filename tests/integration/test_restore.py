"""Restore end to end with real etcd, etcdutl and age; and every refusal."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from etcd_backup_agent.cli import main as agent_main
from etcd_backup_agent.manifest import Manifest
from tests.integration.restore_fixtures import *  # noqa: F403
from tests.integration.restore_fixtures import Backed, copy_store, make_config
from tests.servers import EtcdServer, free_port, read_all

pytestmark = pytest.mark.integration


def _manifest(store: Path) -> Manifest:
    (m,) = sorted(store.glob("test/*.json"))
    return Manifest.from_json(m.read_bytes())


def _restore_argv(cfg: Path, key: Path, data_dir: Path, port: int, *extra: str) -> list[str]:
    url = f"http://127.0.0.1:{port}"
    return [
        "restore",
        "latest",
        "--config",
        str(cfg),
        "--identity",
        str(key),
        "--data-dir",
        str(data_dir),
        "--name",
        "default",
        "--initial-cluster",
        f"default={url}",
        "--initial-advertise-peer-urls",
        url,
        *extra,
    ]


@pytest.mark.parametrize("engine", ["native", "etcdutl"])
def test_disaster_restore_offline_brings_back_every_key(
    backed: Backed, tmp_path: Path, capsys: pytest.CaptureFixture[str], engine: str
) -> None:
    cfg = make_config(tmp_path / "agent", backed.store, backed.recipient, engine=engine)
    manifest = _manifest(backed.store)
    assert manifest.revision == backed.revision
    # the disaster: the old data dir is gone (a copy of it here; the fixture's stays)
    lost = tmp_path / "lost-data"
    shutil.copytree(backed.data_dir, lost)
    shutil.rmtree(lost)
    new = tmp_path / "restored"
    port = free_port()
    argv = _restore_argv(cfg, backed.identity, new, port, "--json")
    assert agent_main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["revision"] == manifest.revision
    assert report["data_dir"] == str(new)
    assert report["engine"] == engine
    assert report["next_steps"] and report["recommendations"]
    if engine == "etcdutl":
        assert "3.5.10" in report["recommendations"][0]
    else:
        assert "--bump-revision 1000000000" in report["recommendations"][0]
    assert not list(tmp_path.glob(".restored.restoring-*"))
    server = EtcdServer(new, peer_port=port)
    server.start()
    try:
        assert read_all(server) == backed.written
        status = json.loads(server.ctl("endpoint", "status", "-w", "json").stdout)
        assert int(status[0]["Status"]["header"]["revision"]) == manifest.revision
    finally:
        server.stop()


def test_three_member_restore_with_printed_commands(
    backed: Backed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    members = [EtcdServer(tmp_path / f"m{i}", name=f"m{i}") for i in range(3)]
    initial = ",".join(f"{m.name}={m.peer_url}" for m in members)
    first = members[0]
    argv = [
        "restore",
        "latest",
        "--config",
        str(backed.config),
        "--identity",
        str(backed.identity),
        "--data-dir",
        str(first.data_dir),
        "--name",
        "m0",
        "--initial-cluster",
        initial,
        "--initial-advertise-peer-urls",
        first.peer_url,
        "--initial-cluster-token",
        "restored",
        "--json",
    ]
    assert agent_main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    commands = {c["name"]: c["argv"] for c in report["member_commands"]}
    assert set(commands) == {"m0", "m1", "m2"}
    for m in members[1:]:
        cmd = list(commands[m.name])
        assert cmd[:3] == ["etcd-backup-agent", "restore", report["backup_id"]]
        cmd[cmd.index("--data-dir") + 1] = str(m.data_dir)
        cmd[cmd.index("--identity") + 1] = str(backed.identity)
        assert cmd[cmd.index("--initial-advertise-peer-urls") + 1] == m.peer_url
        assert agent_main([*cmd[1:], "--json"]) == 0
        capsys.readouterr()
    for m in members:
        m.initial_cluster = initial
        m.initial_cluster_token = "restored"
    try:
        for m in members:
            m.start(wait=False)
        for m in members:
            m.wait_ready(timeout=60)
        assert read_all(members[2]) == backed.written
        out = members[1].ctl("member", "list", "-w", "json").stdout
        assert len(json.loads(out)["members"]) == 3
    finally:
        for m in members:
            m.stop()


def test_refuses_non_empty_target(backed: Backed, tmp_path: Path) -> None:
    target = tmp_path / "busy"
    target.mkdir()
    (target / "keep.txt").write_text("precious")
    assert agent_main(_restore_argv(backed.config, backed.identity, target, free_port())) == 1
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    assert (target / "keep.txt").read_text() == "precious"


def test_empty_existing_target_is_used(backed: Backed, tmp_path: Path) -> None:
    target = tmp_path / "empty"
    target.mkdir()
    assert agent_main(_restore_argv(backed.config, backed.identity, target, free_port())) == 0
    assert (target / "member" / "snap" / "db").is_file()


def test_wrong_identity_writes_nothing(
    backed: Backed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.txt"
    subprocess.run(["age-keygen", "-o", str(other)], check=True, capture_output=True)
    target = tmp_path / "t"
    assert agent_main(_restore_argv(backed.config, other, target, free_port())) == 1
    err = capsys.readouterr().err
    assert "decrypt" in err and "AGE-SECRET-KEY" not in err
    assert not target.exists()
    assert list(tmp_path.iterdir()) == [other]


def test_tampered_object_detected_before_decrypting(
    backed: Backed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = copy_store(backed, tmp_path / "store")
    (obj,) = store.glob("test/*.age")
    data = bytearray(obj.read_bytes())
    data[len(data) // 2] ^= 0x01
    obj.write_bytes(bytes(data))
    cfg = make_config(tmp_path / "agent", store, backed.recipient)
    target = tmp_path / "t"
    assert agent_main(_restore_argv(cfg, backed.identity, target, free_port())) == 1
    err = capsys.readouterr().err
    assert "does not match its manifest" in err and "nothing was decrypted" in err
    assert not target.exists()
    assert not any((tmp_path / "agent" / "work").iterdir())


def test_unknown_id_and_missing_manifest(
    backed: Backed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _restore_argv(backed.config, backed.identity, tmp_path / "t", free_port())
    argv[1] = "20000101T000000Z-r1-nowhere"
    assert agent_main(argv) == 1
    assert "20000101T000000Z-r1-nowhere" in capsys.readouterr().err
    store = copy_store(backed, tmp_path / "store")
    for m in store.glob("test/*.json"):
        m.unlink()  # object without manifest: not a backup
    cfg = make_config(tmp_path / "agent", store, backed.recipient)
    assert agent_main(_restore_argv(cfg, backed.identity, tmp_path / "t", free_port())) == 1
    assert not (tmp_path / "t").exists()


def test_bump_revision_refused_on_old_etcdutl(
    backed: Backed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = make_config(tmp_path / "agent", backed.store, backed.recipient, engine="etcdutl")
    argv = _restore_argv(
        cfg,
        backed.identity,
        tmp_path / "t",
        free_port(),
        "--bump-revision",
        "1000000000",
        "--mark-compacted",
    )
    assert agent_main(argv) == 1
    err = capsys.readouterr().err
    assert "3.5.10" in err and "3.5.1" in err
    assert not (tmp_path / "t").exists()


def test_verify_backup_command(backed: Backed, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "verify",
        "--backup",
        "latest",
        "--config",
        str(backed.config),
        "--identity",
        str(backed.identity),
        "--json",
    ]
    assert agent_main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["revision"] == backed.revision
    assert agent_main(["verify", "--backup", "latest", "--config", str(backed.config)]) == 2
    assert "--identity" in capsys.readouterr().err


def test_restore_apply_kubeadm_and_dry_run(
    backed: Backed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.unit.test_swap import APISERVER_YAML, ETCD_YAML

    cfg = make_config(tmp_path / "agent", backed.store, backed.recipient)
    manifests = tmp_path / "agent" / "kubernetes" / "manifests"
    manifests.mkdir(parents=True)
    (manifests / "etcd.yaml").write_text(ETCD_YAML)
    (manifests / "kube-apiserver.yaml").write_text(APISERVER_YAML)
    peer = "https://10.0.0.1:2380"
    new = tmp_path / "var-lib-etcd-restored"
    base = [
        "restore",
        "latest",
        "--config",
        str(cfg),
        "--identity",
        str(backed.identity),
        "--data-dir",
        str(new),
        "--name",
        "cp1",
        "--initial-cluster",
        f"cp1={peer}",
        "--initial-advertise-peer-urls",
        peer,
        "--layout",
        "kubeadm",
    ]
    assert agent_main([*base, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run: nothing was changed" in out and "rollback:" in out
    assert not new.exists()
    assert sorted(p.name for p in manifests.parent.iterdir()) == ["manifests"]
    assert agent_main([*base, "--apply", "--swap-wait", "0", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (new / "member" / "snap" / "db").is_file()
    # the native engine (the default) bumps for Kubernetes layouts unless told otherwise
    assert report["engine"] == "native" and report["bump_revision"] == 1_000_000_000
    assert report["swap"]["applied"] is True
    assert f"path: {new}" in (manifests / "etcd.yaml").read_text()
    assert (Path(report["swap"]["backup_dir"]) / "etcd.yaml").read_text() == ETCD_YAML
