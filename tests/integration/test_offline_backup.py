"""Offline backup of a stopped etcd's data dir (`backup --from-data-dir`)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.agent_helpers import run_agent, write_config
from tests.servers import (
    EtcdServer,
    put_many,
    stock_restore_and_read,
)

pytestmark = pytest.mark.integration


def test_data_dir_backup_round_trips(
    tmp_path: Path, etcd: EtcdServer, age_identity: tuple[Path, str]
) -> None:
    key, recipient = age_identity
    written = put_many(etcd, 500)
    cfg = write_config(
        tmp_path / "c.toml", endpoint=etcd.endpoint, recipient=recipient, root=tmp_path
    )

    r = run_agent("backup", "--config", cfg, "--from-data-dir", etcd.data_dir)
    assert r.returncode == 1
    assert "locked by a running etcd" in r.stderr and "--force" in r.stderr

    etcd.stop()
    r = run_agent("backup", "--config", cfg, "--from-data-dir", etcd.data_dir, "--json")
    assert r.returncode == 0, r.stderr
    manifest = json.loads(r.stdout)
    assert manifest["source"] == "data-dir"
    assert manifest["verified"] is True

    snap = tmp_path / "snap.db"
    obj = tmp_path / "store" / manifest["object"]
    subprocess.run(f"age -d -i {key} {obj} | zstd -d -q -o {snap}", shell=True, check=True)
    # no --skip-hash-check: the agent appended the sha256 trailer etcdctl would write
    assert stock_restore_and_read(snap, tmp_path) == written


def test_data_dir_that_is_not_etcd(tmp_path: Path, age_identity: tuple[Path, str]) -> None:
    cfg = write_config(
        tmp_path / "c.toml", endpoint="http://127.0.0.1:1", recipient=age_identity[1], root=tmp_path
    )
    r = run_agent("backup", "--config", cfg, "--from-data-dir", tmp_path)
    assert r.returncode == 1
    assert "member/snap/db" in r.stderr and "does not exist" in r.stderr
