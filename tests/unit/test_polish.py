"""Regressions from the operator trial: each test failed before its fix."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from etcd_backup_agent.config import Settings
from etcd_backup_agent.keyspace.extract import Extracted
from etcd_backup_agent.keyspace.k8s_values import as_document


def test_a_brace_that_is_not_json_is_reported_as_other() -> None:
    value = b"{not json at all"
    doc, note = as_document(value, keep_server_fields=False)
    assert note == "opaque"
    assert doc["x-etcd-backup-agent"]["encoding"] == "other"
    assert "neither JSON nor protobuf" in doc["x-etcd-backup-agent"]["note"]
    ex = Extracted(b"/registry/x/y", 3, value)
    assert ex.encoding == "other"
    assert ex.to_dict()["encoding"] == "other"
    assert "neither JSON nor protobuf" in ex.note()
    # a JSON value that is not an object is not a Kubernetes object either
    assert Extracted(b"/k", 3, b"{}").encoding == "json"
    assert Extracted(b"/k", 3, b'{"a": [1,').encoding == "other"


def test_inspect_prints_the_binary_units_list_prints() -> None:
    from etcd_backup_agent.keyspace.render import human
    from etcd_backup_agent.units import human_size

    # before: "37.8 kB" in inspect where list said "36.9 KiB"
    assert human(37786) == "36.9 KiB" == human_size(37786)
    assert human(None) == "-"


def test_backupctl_backup_prints_the_offline_backup_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from etcd_backup_agent.cli.render import show
    from tests.fake_backups import fake_manifest

    m = replace(
        fake_manifest("2026-01-01T00:00:00"),
        db_size=36864,
        object_size=1529,
        duration_seconds=0.064,
    )
    show("backup", m.to_dict() | {"store": "s3://bucket/prefix/"})
    out = capsys.readouterr().out.splitlines()
    # before: "36864 bytes -> 1529 bytes sealed in 0.064 s" and "object: c1/...":
    # a key without the store, unlike `etcd-backup-agent backup`
    assert out[0].endswith("36.0 KiB -> 1.5 KiB sealed in 64ms"), out
    assert out[1] == f"object: s3://bucket/prefix/{m.object}"


def _db(path: Path, keys: list[bytes]) -> Path:
    from tests.boltwriter import build_db
    from tests.unit.test_keyspace import _kv, _revkey

    items = {_revkey(rev, False): _kv(k, b"v" * 10) for rev, k in enumerate(keys, 1)}
    path.write_bytes(build_db({b"key": items, b"meta": {}})[0])
    return path


def test_the_agents_own_lock_key_is_not_in_the_figures_nor_the_diff(tmp_path: Path) -> None:
    from etcd_backup_agent.config import CoordinationSettings, Settings
    from etcd_backup_agent.keyspace import ops

    settings = Settings(coordination=CoordinationSettings(lock_prefix="/backup-locks/"))
    (tmp_path / "w").mkdir()
    settings = replace(settings, inspect=replace(settings.inspect, work_dir=tmp_path / "w"))
    cm = b"/registry/configmaps/ns/cm"
    offline = _db(tmp_path / "a", [cm])
    online = _db(tmp_path / "b", [cm, b"/backup-locks/prod", b"/backup-locksmith"])
    report = ops.inspect_path(settings, online, 5)
    # before: the lock key counted as one (non-kubernetes) object
    others = [r for r in report.resources if r.resource == "(non-kubernetes)"]
    assert [r.objects for r in others] == [1]  # /backup-locksmith: not under the prefix
    assert report.objects == 2
    d = ops.diff_paths(settings, offline, online, max_changes=10)
    # before: the lock key was listed as added
    assert [c.key for c in d.changes] == ["/backup-locksmith"] and d.unchanged == 1


class _Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, object]]] = []

    def info(self, event: str, **kw: object) -> None:
        self.lines.append(("info", event, kw))

    def warning(self, event: str, **kw: object) -> None:
        self.lines.append(("warning", event, kw))

    def error(self, event: str, **kw: object) -> None:
        self.lines.append(("error", event, kw))


def _bundle_settings(tmp_path: Path, **bundle: object) -> Settings:
    from etcd_backup_agent.config import BundleSettings

    return Settings(bundle=BundleSettings(**bundle))  # type: ignore[arg-type]


def test_an_explicit_layout_with_nothing_on_disk_is_a_failed_bundle(tmp_path: Path) -> None:
    from etcd_backup_agent.bundle.attach import build_record
    from tests.fake_backups import fake_manifest

    root = tmp_path / "root"
    root.mkdir()
    m = fake_manifest("2026-01-01T00:00:00")
    log = _Log()
    got = build_record(_bundle_settings(tmp_path, layout="k3s", root=root), m, tmp_path, log)
    # before: status ok with 0 files, warnings only
    assert got.bundle is not None and got.bundle.status == "failed"
    assert "layout = 'k3s'" in got.bundle.error and "server/token" in got.bundle.error
    assert [e for e in log.lines if e[0] == "error"]
    # auto-detection finding nothing stays "no bundle", not a failure
    auto = build_record(_bundle_settings(tmp_path, root=root), m, tmp_path, _Log())
    assert auto.bundle is None


def test_max_bytes_is_the_only_cause_logged(tmp_path: Path) -> None:
    from etcd_backup_agent.bundle.attach import build_record
    from tests.fake_backups import fake_manifest

    root = tmp_path / "root"
    (root / "etc/kubernetes/pki").mkdir(parents=True)
    (root / "etc/kubernetes/pki/ca.key").write_bytes(b"K" * 100)
    (root / "etc/kubernetes/manifests").mkdir(parents=True)
    (root / "etc/kubernetes/enc.yaml").write_bytes(b"kind: EncryptionConfiguration\n")
    (root / "etc/kubernetes/manifests/kube-apiserver.yaml").write_text(
        "spec:\n  containers:\n  - command:\n"
        "    - --encryption-provider-config=/etc/kubernetes/enc.yaml\n"
    )
    log = _Log()
    s = _bundle_settings(tmp_path, layout="kubeadm", root=root, max_bytes=10)
    got = build_record(s, fake_manifest("2026-01-01T00:00:00"), tmp_path, log)
    assert got.bundle is not None and got.bundle.status == "failed"
    assert "max_bytes" in got.bundle.error
    # before: also "kube-apiserver encrypts Secrets with ..., which the bundle could not read"
    assert not [e for e in log.lines if "could not read" in str(e)]
    assert not [w for w in got.bundle.warnings if "could not read" in w]


def test_config_check_names_a_bundle_root_that_does_not_exist(tmp_path: Path) -> None:
    from etcd_backup_agent.config import ConfigError, from_dict

    base = {"encryption": {"recipients": ["age1" + "q" * 58]}}
    with pytest.raises(ConfigError) as err:
        from_dict(base | {"bundle": {"root": str(tmp_path / "nope")}})
    assert any("bundle.root: directory" in p and "does not exist" in p for p in err.value.problems)
    assert from_dict(base | {"bundle": {"root": str(tmp_path)}}).bundle.root == tmp_path


class _NoStore:
    """A store that must not be touched."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the store was used ({name}) before the target was checked")


def test_bundle_extract_checks_the_target_before_fetching(tmp_path: Path) -> None:
    from etcd_backup_agent.bundle.ops import bundle_extract
    from etcd_backup_agent.errors import RestoreError, UsageError

    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("mine")
    store: Any = _NoStore()
    with pytest.raises(RestoreError, match="not empty"):
        bundle_extract(Settings(), store, "latest", "AGE-SECRET-KEY-1X", full, lambda e: None)
    (tmp_path / "file").write_text("")
    with pytest.raises(RestoreError, match="not a directory"):
        bundle_extract(Settings(), store, "latest", "k", tmp_path / "file", lambda e: None)
    with pytest.raises(UsageError, match="absolute"):
        bundle_extract(Settings(), store, "latest", "k", Path("rel"), lambda e: None)


def test_the_daemon_takes_no_extract_directory_and_the_client_checks_the_tar(
    tmp_path: Path,
) -> None:
    import base64
    import io
    import json
    import tarfile

    from etcd_backup_agent.bundle.ops import write_fetched
    from etcd_backup_agent.control.protocol import ProtocolError, parse_request
    from etcd_backup_agent.errors import RestoreError

    def line(args: dict[str, object]) -> bytes:
        return json.dumps({"v": 1, "op": "bundle_extract", "args": args}).encode()

    # before: the daemon (root) wrote into whatever "to" a socket client named
    with pytest.raises(ProtocolError, match="unknown argument 'to'"):
        parse_request(line({"backup": "latest", "identity": "k", "to": "/etc/x"}))
    assert parse_request(line({"backup": "latest", "identity": "k"})).op == "bundle_extract"

    def tar_of(name: str, data: bytes) -> str:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as t:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o640
            t.addfile(info, io.BytesIO(data))
        return base64.b64encode(buf.getvalue()).decode()

    reply = {"backup": "b1", "tar_base64": tar_of("etc/k/ca.key", b"KEY"), "warnings": []}
    done = write_fetched(reply, tmp_path / "out")
    assert done["written"] == ["etc/k/ca.key"] and done["to"] == str(tmp_path / "out")
    assert (tmp_path / "out/etc/k/ca.key").read_bytes() == b"KEY"
    bad = reply | {"tar_base64": tar_of("../escape", b"x")}
    with pytest.raises(RestoreError, match=r"'\.\.' in the name"):
        write_fetched(bad, tmp_path / "out2")
    assert not (tmp_path / "escape").exists() and not (tmp_path / "out2").exists()
