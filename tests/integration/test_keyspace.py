"""inspect, diff and extract on backups of a real etcd 3.5.1 holding Kubernetes-layout keys.

The figures are checked against what the test wrote (tests/k8s_fixture.py computes them
from its own writes) and against etcdctl; extract's raw output against etcdctl's.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from etcd_backup_agent import config as config_mod
from etcd_backup_agent.cli import ctl
from etcd_backup_agent.cli import main as agent_main
from etcd_backup_agent.control import client
from etcd_backup_agent.control.server import ControlServer
from etcd_backup_agent.manifest import Manifest
from etcd_backup_agent.metrics import Metrics
from etcd_backup_agent.service import Agent
from tests.agent_helpers import run_agent
from tests.integration.restore_fixtures import short_dir, write_config
from tests.k8s_fixture import Expected, fill_cluster, json_object
from tests.servers import EtcdServer, _client

pytestmark = pytest.mark.integration

TOP = 3
PREFIX_OF = {
    "pods": "/registry/pods/",
    "secrets": "/registry/secrets/",
    "services": "/registry/services/specs/",
    "endpoints": "/registry/services/endpoints/",
    "nodes": "/registry/minions/",
    "widgets.example.com": "/registry/example.com/widgets/",
    "customresourcedefinitions.apiextensions.k8s.io": (
        "/registry/apiextensions.k8s.io/customresourcedefinitions/"
    ),
}
WIDGET_NEW = "/registry/example.com/widgets/team-b/new"
POD_KEY = "/registry/pods/default/pod-1"
SECRET_KEY = "/registry/secrets/team-a/s1"


@dataclass
class Cluster:
    server: EtcdServer
    config: Path
    identity: Path
    store: Path
    exp1: Expected
    exp2: Expected
    snap1: Path
    snap2: Path
    ids: tuple[str, str]
    counts2: dict[str, int]
    raw2: dict[str, bytes]
    changes: set[tuple[str, str]]
    w1_at: int
    w1_value_then: bytes


def _count(server: EtcdServer, prefix: str) -> int:
    out = server.ctl("get", "--prefix", "--count-only", "-w", "fields", prefix).stdout.decode()
    m = re.search(r'"Count" : (\d+)', out)
    assert m, out
    return int(m.group(1))


def _manifest_ids(store: Path) -> list[str]:
    ms = [json.loads(p.read_text()) for p in (store / "test").glob("*.json")]
    return [m["id"] for m in sorted(ms, key=lambda m: m["revision"])]


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, age_identity: tuple[Path, str]
) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("keyspace")
    key, recipient = age_identity
    server = EtcdServer(base / "etcd-data").start()
    try:
        cfg = write_config(
            base / "config.toml",
            cluster={"name": "test", "node": "node1"},
            etcd={"endpoints": [server.endpoint]},
            encryption={"recipients": [recipient]},
            store={"type": "local", "path": str(base / "store")},
            spool={"dir": str(base / "spool")},
            coordination={"mode": "none"},
            metrics={"enabled": False},
            control={"socket": str(base / "agent.sock")},
            restore={"work_dir": str(base / "work")},
            inspect={"top_resources": TOP, "memory_budget": "1MiB"},
        )
        exp1 = fill_cluster(server)
        snap1 = base / "snap1.db"
        server.ctl("snapshot", "save", str(snap1))
        assert agent_main(["backup", "--config", str(cfg)]) == 0
        # known changes between the two backups
        c = _client(server)
        try:
            new = json.dumps(json_object("example.com/v1", "Widget", "new", "team-b", {})).encode()
            c.put(WIDGET_NEW, new)
            c.put("/registry/configmaps/default/cm", b'{"kind":"ConfigMap"}')
            c.delete("/registry/pods/team-a/pod-0")
            changed = json.dumps(json_object("example.com/v1", "Widget", "w2", "team-a", {"x": 9}))
            c.put("/registry/example.com/widgets/team-a/w2", changed.encode())
            same, _ = c.get("/registry/minions/node-1")
            c.put("/registry/minions/node-1", same)  # rewritten: new mod revision, same bytes
            w1_then, meta = c.get("/registry/example.com/widgets/team-a/w1")
            w1_at = meta.mod_revision
            c.put("/registry/example.com/widgets/team-a/w1", b'{"kind":"Widget","v":3}')
        finally:
            c.close()
        exp2 = Expected(
            live=dict(exp1.live), resource=dict(exp1.resource), namespace=dict(exp1.namespace)
        )
        changes = {
            ("added", WIDGET_NEW),
            ("added", "/registry/configmaps/default/cm"),
            ("removed", "/registry/pods/team-a/pod-0"),
            ("changed", "/registry/example.com/widgets/team-a/w2"),
            ("changed", "/registry/minions/node-1"),
            ("changed", "/registry/example.com/widgets/team-a/w1"),
        }
        snap2 = base / "snap2.db"
        server.ctl("snapshot", "save", str(snap2))
        assert agent_main(["backup", "--config", str(cfg)]) == 0
        counts2 = {res: _count(server, p) for res, p in PREFIX_OF.items()}
        raw2 = {k: server.ctl("get", k, "--print-value-only").stdout for k in (POD_KEY, SECRET_KEY)}
        ids = _manifest_ids(base / "store")
        assert len(ids) == 2
        yield Cluster(
            server,
            cfg,
            key,
            base / "store",
            exp1,
            exp2,
            snap1,
            snap2,
            (ids[0], ids[1]),
            counts2,
            raw2,
            changes,
            w1_at,
            w1_then,
        )
    finally:
        server.stop()


def _agent_json(*args: str | Path) -> Any:
    r = run_agent(*args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _per_resource(report: dict[str, Any]) -> dict[str, dict[str, int]]:
    return {
        r["resource"]: {k: r[k] for k in ("objects", "bytes", "history_bytes", "tombstones")}
        for r in report["resources"]
    }


def test_inspect_figures_match_the_writes_and_etcdctl(cluster: Cluster) -> None:
    report = _agent_json("inspect", "--snapshot", cluster.snap1, "--json")
    assert _per_resource(report) == cluster.exp1.per_resource()
    assert report["objects"] == len(cluster.exp1.live)
    assert report["compact_revision"] > 0
    # the second snapshot against etcdctl's own counts at that time
    report2 = _agent_json("inspect", "--snapshot", cluster.snap2, "--json")
    got = {r["resource"]: r["objects"] for r in report2["resources"]}
    assert {res: got.get(res, 0) for res in PREFIX_OF} == cluster.counts2
    # encrypted values: reported per provider and key name, as written
    written: dict[tuple[str, str], int] = {}
    for _key, value in cluster.exp1.live.items():
        if value.startswith(b"k8s:enc:"):
            provider, _version, name = value.decode("latin-1").split(":")[2:5]
            written[(provider, name)] = written.get((provider, name), 0) + 1
    assert {(e["provider"], e["key_name"]): e["objects"] for e in report["encryption"]} == written
    assert {e["provider"] for e in report["encryption"]} == {"aescbc", "aesgcm", "secretbox", "kms"}
    assert ("kms", "v2") in {(e["provider"], e["version"]) for e in report["encryption"]}
    pods = next(r for r in report["resources"] if r["resource"] == "pods")
    assert pods["encodings"] == {"protobuf": pods["objects"]}
    assert {n["namespace"] for n in pods["top_namespaces"]} == {"default", "kube-system", "team-a"}
    largest = report["largest"][0]
    want = max(cluster.exp1.live.items(), key=lambda kv: len(kv[0]) + len(kv[1]))
    assert largest["bytes"] == len(want[0]) + len(want[1])


def test_inspect_table_names_the_top_resource(cluster: Cluster) -> None:
    r = run_agent("inspect", "--snapshot", cluster.snap1, "--top", "2")
    assert r.returncode == 0, r.stderr
    assert "pods" in r.stdout and "history" in r.stdout
    assert "not decrypted" in r.stdout


def test_every_backup_carries_a_bounded_summary(cluster: Cluster) -> None:
    path = cluster.store / "test" / f"{cluster.ids[0]}.json"
    data = json.loads(path.read_text())
    ks = data["keyspace"]
    assert ks["objects"] == len(cluster.exp1.live)
    assert len(ks["resources"]) == TOP
    expected = cluster.exp1.per_resource()
    top = sorted(expected.items(), key=lambda kv: -kv[1]["bytes"])[:TOP]
    assert [r["resource"] for r in ks["resources"]] == [name for name, _ in top]
    assert ks["other"]["objects"] == sum(v["objects"] for _, v in list(expected.items())) - sum(
        v["objects"] for _, v in top
    )
    # a manifest written before the analysis existed still loads
    del data["keyspace"]
    assert Manifest.from_dict(data).keyspace is None
    assert Manifest.from_dict(json.loads(path.read_text())).keyspace is not None


def test_metrics_keep_the_configured_cardinality(cluster: Cluster) -> None:
    ms = [
        Manifest.from_json((cluster.store / "test" / f"{i}.json").read_text()) for i in cluster.ids
    ]
    m = Metrics("test", "0", keyspace_top=2)
    m.success(ms[0], 1.0)
    labels = {
        s.labels["resource"]
        for f in _families(m)
        if f.name == "etcd_backup_keyspace_bytes"
        for s in f.samples
    }
    assert len(labels) == 3 and "(other)" in labels
    assert m.value("etcd_backup_keyspace_history_bytes") == ms[0].keyspace.history_bytes  # type: ignore[union-attr]
    # a summary whose top set differs: the old label values go away
    from dataclasses import replace

    ks = ms[1].keyspace
    assert ks is not None
    flipped = replace(ks, resources=tuple(reversed(ks.resources)))
    m.success(replace(ms[1], keyspace=flipped), 1.0)
    after = {
        s.labels["resource"]
        for f in _families(m)
        if f.name == "etcd_backup_keyspace_bytes"
        for s in f.samples
    }
    assert after == {r.resource for r in flipped.resources[:2]} | {"(other)"}


def _families(m: Metrics) -> list[Any]:
    from prometheus_client.parser import text_string_to_metric_families

    return list(text_string_to_metric_families(m.exposition().decode()))


def test_inspect_stored_backup_needs_identity(cluster: Cluster) -> None:
    r = run_agent("inspect", cluster.ids[0], "--config", cluster.config)
    assert r.returncode == 2 and "--identity" in r.stderr
    stored = _agent_json(
        "inspect",
        cluster.ids[0],
        "--config",
        cluster.config,
        "--identity",
        cluster.identity,
        "--json",
    )
    assert _per_resource(stored) == cluster.exp1.per_resource()


def test_diff_reports_exactly_the_known_changes(cluster: Cluster) -> None:
    a, b = cluster.ids
    d = _agent_json(
        "diff", a, b, "--config", cluster.config, "--identity", cluster.identity, "--json"
    )
    assert {(c["kind"], c["key"]) for c in d["changes"]} == cluster.changes
    assert (d["added"], d["removed"], d["changed"]) == (2, 1, 3)
    by_key = {c["key"]: c for c in d["changes"]}
    assert by_key["/registry/minions/node-1"]["value_changed"] is False
    assert by_key["/registry/example.com/widgets/team-a/w2"]["value_changed"] is True
    groups = {(g["resource"], g["namespace"]): g for g in d["groups"]}
    assert groups[("widgets.example.com", "team-b")]["added"] == 1
    assert groups[("pods", "team-a")]["removed"] == 1
    # the files give the same answer, and a snapshot against itself has no change
    files = _agent_json("diff", "--snapshot", cluster.snap1, "--snapshot", cluster.snap2, "--json")
    assert {(c["kind"], c["key"]) for c in files["changes"]} == cluster.changes
    same = _agent_json("diff", "--snapshot", cluster.snap1, "--snapshot", cluster.snap1, "--json")
    assert (same["added"], same["removed"], same["changed"]) == (0, 0, 0)


def test_extract_json_gives_back_what_was_written(cluster: Cluster) -> None:
    key = "/registry/example.com/widgets/team-a/w3"
    written = json.loads(cluster.exp1.live[key.encode()])
    got = _agent_json(
        "extract",
        "latest",
        "--config",
        cluster.config,
        "--identity",
        cluster.identity,
        "--key",
        key,
    )
    for f in ("resourceVersion", "uid", "managedFields", "creationTimestamp", "generation"):
        written["metadata"].pop(f)
    assert got == written
    kept = _agent_json("extract", "--snapshot", cluster.snap2, "--key", key, "--keep-server-fields")
    assert kept == json.loads(cluster.exp1.live[key.encode()])
    y = run_agent("extract", "--snapshot", cluster.snap2, "--key", key, "-o", "yaml")
    assert y.returncode == 0 and yaml.safe_load(y.stdout) == written


def test_extract_raw_is_byte_identical_to_etcdctl(cluster: Cluster, tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.agent_helpers import agent_env

    for key in (POD_KEY, SECRET_KEY):
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "etcd_backup_agent.cli",
                "extract",
                "--snapshot",
                str(cluster.snap2),
                "--key",
                key,
                "-o",
                "raw",
            ],
            capture_output=True,
            env=agent_env(),
            timeout=120,
            check=False,
        )
        assert r.returncode == 0, r.stderr
        assert r.stdout == cluster.raw2[key]
    # the encrypted one says so; files under --out hold the exact stored bytes
    r2 = run_agent(
        "extract",
        "--snapshot",
        cluster.snap2,
        "--prefix",
        "/registry/secrets/team-a/",
        "--out",
        tmp_path / "out",
    )
    assert r2.returncode == 0 and "not decrypted" in r2.stderr
    got = (tmp_path / "out" / "registry" / "secrets" / "team-a" / "s1.bin").read_bytes()
    assert got + b"\n" == cluster.raw2[SECRET_KEY]


def test_extract_protobuf_decodes_envelope_and_metadata(cluster: Cluster) -> None:
    doc = _agent_json("extract", "--snapshot", cluster.snap2, "--key", POD_KEY)
    assert (doc["apiVersion"], doc["kind"]) == ("v1", "Pod")
    assert doc["metadata"] == {"name": "pod-1", "namespace": "default", "labels": {"app": "pod-1"}}
    kept = _agent_json(
        "extract", "--snapshot", cluster.snap2, "--key", POD_KEY, "--keep-server-fields"
    )
    assert kept["metadata"]["creationTimestamp"] == "2023-11-14T22:13:20Z"
    assert kept["metadata"]["generation"] == 3


def test_extract_an_older_retained_revision(cluster: Cluster) -> None:
    key = "/registry/example.com/widgets/team-a/w1"
    r = run_agent(
        "extract",
        "--snapshot",
        cluster.snap2,
        "--key",
        key,
        "--revision",
        str(cluster.w1_at),
        "-o",
        "raw",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.encode() == cluster.w1_value_then + b"\n"
    old = run_agent("extract", "--snapshot", cluster.snap2, "--key", key, "--revision", "2")
    assert old.returncode == 2 and "compacted" in old.stderr
    gone = run_agent("extract", "--snapshot", cluster.snap2, "--key", "/registry/pods/team-a/pod-0")
    assert gone.returncode == 1 and "deleted" in gone.stderr


@pytest.fixture
def served(cluster: Cluster) -> Iterator[Path]:
    sockdir = short_dir()
    sock = sockdir / "agent.sock"
    settings = config_mod.load(cluster.config)
    from dataclasses import replace

    settings = replace(settings, control=replace(settings.control, socket=sock))
    server = ControlServer(settings.control, Agent(settings))
    server.start()
    try:
        yield sock
    finally:
        server.stop()
        shutil.rmtree(sockdir, ignore_errors=True)


def test_the_socket_serves_inspect_diff_and_extract(
    cluster: Cluster, served: Path, capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path
) -> None:
    sock, ident = str(served), str(cluster.identity)
    a, b = cluster.ids
    assert ctl.main(["inspect", a, "--socket", sock, "--identity", ident, "--json"]) == 0
    reply = json.loads(capsysbinary.readouterr().out)
    assert _per_resource(reply["result"]) == cluster.exp1.per_resource()
    assert ctl.main(["diff", a, b, "--socket", sock, "--identity", ident, "--json"]) == 0
    reply = json.loads(capsysbinary.readouterr().out)
    assert {(c["kind"], c["key"]) for c in reply["result"]["changes"]} == cluster.changes
    argv = ["extract", b, "--socket", sock, "--identity", ident, "--key", POD_KEY, "-o", "raw"]
    assert ctl.main(argv) == 0
    assert capsysbinary.readouterr().out == cluster.raw2[POD_KEY]
    assert ctl.main(["inspect", a, "--socket", sock, "--identity", ident]) == 0
    assert b"RESOURCE" in capsysbinary.readouterr().out
    # a bad selector is refused before anything is downloaded
    assert client.call(served, "extract", {"backup": b, "identity_file": ident})["ok"] is False


def test_the_daemon_exports_the_newest_analysis_within_its_cardinality(
    cluster: Cluster, tmp_path: Path, age_identity: tuple[Path, str]
) -> None:
    import time

    from tests.integration.agents import manifests, new_agent

    agent = new_agent(
        tmp_path,
        endpoints=[cluster.server.endpoint],
        recipient=age_identity[1],
        store=tmp_path / "store",
        spool=tmp_path / "spool",
        interval="1h",
        extra="[inspect]\ntop_resources = 2\n",
    ).start()
    try:
        deadline = time.monotonic() + 60
        while not manifests(tmp_path / "store") and time.monotonic() < deadline:
            time.sleep(0.2)
        stored = manifests(tmp_path / "store")
        assert stored, agent.log_text()[-2000:]
        ks = stored[0]["keyspace"]
        assert isinstance(ks, dict) and len(ks["resources"]) == 2
        deadline = time.monotonic() + 30
        samples = agent.scrape()
        while ("etcd_backup_keyspace_history_bytes", ()) not in samples:
            assert time.monotonic() < deadline, "no keyspace metrics after the backup"
            time.sleep(0.2)
            samples = agent.scrape()
        got = {
            dict(labels)["resource"]: value
            for (name, labels), value in samples.items()
            if name == "etcd_backup_keyspace_bytes"
        }
        want = {r["resource"]: r["bytes"] for r in ks["resources"]}
        want["(other)"] = ks["other"]["bytes"]
        assert got == want
        assert sum(got.values()) == ks["bytes"]
        assert samples[("etcd_backup_keyspace_history_bytes", ())] == ks["history_bytes"]
        assert '"stage": "inspect"' in agent.log_text() or "stage=inspect" in agent.log_text()
    finally:
        agent.stop()
