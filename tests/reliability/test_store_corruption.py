"""Damage in the store: verify, drill and restore refuse it; the good backups stay offered.

Also hostile manifests (missing fields, wrong types, unknown versions, ``../`` objects,
another cluster's objects): listed as unreadable, never restored or pruned, and nothing
outside the prefix is touched (a canary file beside the store).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.agent_helpers import run_agent
from tests.integration.restore_fixtures import make_config
from tests.reliability import counters
from tests.reliability.checker import LocalView, check_store
from tests.servers import EtcdServer, put_many

pytestmark = pytest.mark.integration


@dataclass
class Three:
    """A store with three real backups (newest first) of a stopped etcd."""

    base: Path
    store: Path
    config: Path
    identity: Path
    ids: list[str]


@pytest.fixture(scope="module")
def three(
    tmp_path_factory: pytest.TempPathFactory, age_identity: tuple[Path, str]
) -> Iterator[Three]:
    base = tmp_path_factory.mktemp("three")
    server = EtcdServer(base / "etcd-data").start()
    try:
        put_many(server, 100)
        cfg = make_config(base / "agent", base / "store", age_identity[1], server.endpoint)
        for i in range(3):
            server.ctl("put", f"/registry/round/{i}", "x")
            r = run_agent("backup", "--config", cfg)
            assert r.returncode == 0, r.stderr
    finally:
        server.stop()
    ids = check_store(LocalView(base / "store"), age_identity[0], base / "scratch").ids
    assert len(ids) == 3
    yield Three(base, base / "store", cfg, age_identity[0], ids)


def damaged_copy(three: Three, dst: Path) -> Path:
    """The same config over a copy of the store (the config names the store path)."""
    shutil.copytree(three.store, dst / "store")
    text = three.config.read_text().replace(str(three.store), str(dst / "store"))
    cfg = dst / "config.toml"
    cfg.write_text(text)
    return cfg


def obj(store: Path, bid: str) -> Path:
    return store / "test" / f"{bid}.db.zst.age"


def flip(store: Path, bid: str) -> None:
    p = obj(store, bid)
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x10
    p.write_bytes(bytes(data))


def truncate(store: Path, bid: str) -> None:
    p = obj(store, bid)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def swap(store: Path, a: str, b: str) -> None:
    pa, pb = obj(store, a), obj(store, b)
    da, db = pa.read_bytes(), pb.read_bytes()
    pa.write_bytes(db)
    pb.write_bytes(da)


@pytest.mark.parametrize("damage", ["bit flip", "truncation", "swap"])
def test_damaged_objects_are_refused_and_the_good_ones_still_offered(
    three: Three, tmp_path: Path, damage: str
) -> None:
    cfg = damaged_copy(three, tmp_path)
    store = tmp_path / "store"
    newest, middle, oldest = three.ids
    bad = [newest] if damage != "swap" else [newest, middle]
    if damage == "bit flip":
        flip(store, newest)
    elif damage == "truncation":
        truncate(store, newest)
    else:
        swap(store, newest, middle)
    counters.fault(f"store object {damage}")
    key = ["--identity", str(three.identity), "--config", str(cfg)]
    for bid in bad:
        v = run_agent("verify", "--backup", bid, *key)
        assert v.returncode == 1, (damage, "verify", v.stdout, v.stderr)
        d = run_agent("drill", bid, *key)
        assert d.returncode != 0, (damage, "drill", d.stdout, d.stderr)
        r = run_agent("restore", bid, "--data-dir", str(tmp_path / f"r-{bid}"), *key)
        assert r.returncode != 0, (damage, "restore", r.stdout, r.stderr)
        assert not (tmp_path / f"r-{bid}" / "member").exists(), "restore left a data dir"
        assert "Traceback" not in v.stderr + d.stderr + r.stderr
    # the good backup is still listed, verified, and restorable
    listed = [m["id"] for m in json.loads(run_agent("list", "--json", "--config", cfg).stdout)]
    assert oldest in listed
    assert run_agent("verify", "--backup", oldest, *key).returncode == 0
    ok = run_agent("restore", oldest, "--data-dir", str(tmp_path / "good"), *key)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "good" / "member").is_dir()


def hostile_manifests(good: dict[str, object], cluster: str) -> dict[str, object]:
    """Name -> manifest content: each must be listed as invalid, never used."""

    def variant(**changes: object) -> dict[str, object]:
        return {**good, **changes}

    missing = dict(good)
    del missing["object_sha256"]
    return {
        "missing-field": missing,
        "wrong-type": variant(revision="many"),
        "unknown-version": variant(format_version=99),
        "dotdot": variant(object="../canary.txt"),
        "other-cluster": variant(object=f"other/{good['id']}.db.zst.age", cluster="other"),
        "not-an-object": [1, 2, 3],
        "bad-time": variant(created_at="yesterday"),
    }


def test_hostile_manifests_are_listed_invalid_and_never_used(three: Three, tmp_path: Path) -> None:
    cfg = damaged_copy(three, tmp_path)
    store = tmp_path / "store"
    canary = tmp_path / "canary.txt"
    canary.write_text("do not touch\n")
    (store / "canary.txt").write_text("outside the cluster prefix\n")
    other = store / "other"
    other.mkdir()
    shutil.copy(obj(store, three.ids[0]), other / f"{three.ids[0]}.db.zst.age")
    good = json.loads((store / "test" / f"{three.ids[0]}.json").read_text())
    hostile = hostile_manifests(good, "test")
    hostile_ids = []
    for i, (name, content) in enumerate(hostile.items()):
        # an id newer than every real backup: "latest" and retention would pick it first
        bid = f"20991231T2359{i:02d}Z-r{900 + i}-{name}"
        body = content if not isinstance(content, dict) else {**content, "id": bid}
        if isinstance(body, dict) and name != "dotdot" and name != "other-cluster":
            body["object"] = f"test/{bid}.db.zst.age"
        (store / "test" / f"{bid}.json").write_text(json.dumps(body))
        hostile_ids.append(bid)
    counters.add("malformed_inputs", len(hostile))

    r = run_agent("list", "--json", "--orphans", "--config", cfg)
    assert r.returncode == 0, r.stderr
    listed = [m["id"] for m in json.loads(r.stdout)["backups"]]
    assert listed == three.ids, listed
    text = run_agent("list", "--config", cfg)
    for bid in hostile_ids:
        assert bid in text.stderr, (bid, text.stderr)  # "unreadable manifest: ..."
    key = ["--identity", str(three.identity), "--config", str(cfg)]
    latest = run_agent("verify", "--backup", "latest", "--json", *key)
    assert latest.returncode == 0 and three.ids[0] in latest.stdout, latest.stdout
    for bid in hostile_ids:
        r = run_agent("restore", bid, "--data-dir", str(tmp_path / f"r-{bid}"), *key)
        assert r.returncode != 0 and "Traceback" not in r.stderr, (bid, r.stderr)
    # retention with keep_last = 1 deletes the two older real backups and nothing else
    cfg.write_text(cfg.read_text() + "\n[retention]\nkeep_last = 1\n")
    p = run_agent("prune", "--config", cfg)
    assert p.returncode == 0, p.stdout + p.stderr
    left = sorted(x.name for x in (store / "test").iterdir())
    for bid in hostile_ids:
        assert f"{bid}.json" in left, bid
    assert f"{three.ids[0]}.json" in left and f"{three.ids[1]}.json" not in left
    assert canary.read_text() == "do not touch\n"
    assert (store / "canary.txt").exists()
    assert (other / f"{three.ids[0]}.db.zst.age").exists()
