"""Restore drills against a real backup: full and plaintext, passing and failing loudly."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from etcd_backup_agent import config as config_mod
from etcd_backup_agent.cli import main as agent_main
from etcd_backup_agent.control.dispatch import dispatch
from etcd_backup_agent.drill import drill_plaintext
from etcd_backup_agent.manifest import Manifest
from etcd_backup_agent.seal import unseal_stream
from etcd_backup_agent.service import Agent
from tests.integration.restore_fixtures import *  # noqa: F403
from tests.integration.restore_fixtures import Backed, copy_store, make_config

pytestmark = pytest.mark.integration


def _etcd_children() -> set[int]:
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().split()
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat[3]) == os.getpid() and b"--name\0drill" in cmd:
                out.add(int(entry.name))
    return out


def test_full_drill_passes_and_reports(backed: Backed, tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "agent", backed.store, backed.recipient, identity=backed.identity)
    agent = Agent(config_mod.load(cfg))
    report = dispatch(agent, "drill", {"backup": "latest"}, lambda e: None)
    assert report["result"] == "success", report
    assert report["revision"] == backed.revision
    assert report["live_keys"] == len(backed.written)
    assert report["sampled"] == 20
    assert (agent.last_drill.result, agent.last_drill.kind) == ("success", "full")
    assert not any((tmp_path / "agent" / "work").iterdir())
    assert not _etcd_children()


def test_corrupted_object_fails_loudly(backed: Backed, tmp_path: Path) -> None:
    store = copy_store(backed, tmp_path / "store")
    (obj,) = store.glob("test/*.age")
    data = bytearray(obj.read_bytes())
    data[-100] ^= 0xFF
    obj.write_bytes(bytes(data))
    cfg = make_config(tmp_path / "agent", store, backed.recipient, identity=backed.identity)
    agent = Agent(config_mod.load(cfg))
    report = dispatch(agent, "drill", {}, lambda e: None)
    assert report["result"] == "failure"
    assert "does not match its manifest" in report["error"]
    assert (agent.last_drill.result, agent.last_drill.kind) == ("failure", "full")
    assert agent_main(["drill", "--config", str(cfg)]) == 1


def test_plaintext_drill_standalone(backed: Backed, tmp_path: Path) -> None:
    (mpath,) = backed.store.glob("test/*.json")
    manifest = Manifest.from_json(mpath.read_bytes())
    snap = tmp_path / "snapshot.db"
    with (backed.store / manifest.object).open("rb") as src:
        unseal_stream(src, snap, backed.identity.read_text())
    settings = config_mod.load(make_config(tmp_path / "agent", backed.store, backed.recipient))
    report = drill_plaintext(snap, manifest, settings)
    assert report.result == "success", report
    assert report.kind == "full" and report.source == "spool"
    # a snapshot that is not the manifest's backup fails
    bad = tmp_path / "bad.db"
    shutil.copy(snap, bad)
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    report = drill_plaintext(bad, manifest, settings)
    assert report.result == "failure" and report.error
