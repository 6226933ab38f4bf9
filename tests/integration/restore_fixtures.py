"""Fixtures for the restore, drill and control tests: one real backup per session.

Import the fixtures into a test module with ``from tests.integration.restore_fixtures import *``.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from etcd_backup_agent.cli import main as agent_main
from tests.agent_helpers import write_toml
from tests.servers import EtcdServer, etcd_bin, put_many

__all__ = ["Backed", "backed", "make_config", "short_dir", "write_config"]


def short_dir() -> Path:
    """A short temp dir for unix sockets (108-byte path limit); the caller removes it."""
    return Path(tempfile.mkdtemp(prefix="eba-"))


def write_config(path: Path, **sections: dict[str, Any]) -> Path:
    return write_toml(path, sections)


def make_config(
    base: Path,
    store: Path,
    recipient: str,
    endpoint: str = "http://127.0.0.1:1",
    identity: Path | None = None,
    socket: Path | None = None,
    engine: str | None = None,
) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    drill: dict[str, object] = {"etcd": etcd_bin("etcd"), "sample_keys": 20}
    if identity is not None:
        drill["identity_file"] = str(identity)
    restore: dict[str, object] = {
        "etcdutl": etcd_bin("etcdutl"),
        "manifests_dir": str(base / "kubernetes" / "manifests"),
        "etcd_config": str(base / "etcd" / "etcd.conf.yml"),
        "work_dir": str(base / "work"),
    }
    if engine is not None:
        restore["engine"] = engine
    return write_config(
        base / "config.toml",
        cluster={"name": "test", "node": "node1"},
        etcd={"endpoints": [endpoint]},
        encryption={"recipients": [recipient]},
        store={"type": "local", "path": str(store)},
        spool={"dir": str(base / "spool")},
        coordination={"mode": "none"},
        metrics={"enabled": False},
        control={"socket": str(socket or base / "agent.sock"), "max_connections": 64},
        restore=restore,
        drill=drill,
    )


@dataclass
class Backed:
    """A store holding one real backup of a (stopped) etcd, and what it held."""

    store: Path
    config: Path
    identity: Path
    recipient: str
    written: dict[bytes, bytes]
    revision: int
    data_dir: Path


@pytest.fixture(scope="session")
def backed(tmp_path_factory: pytest.TempPathFactory, age_identity: tuple[Path, str]) -> Backed:
    base = tmp_path_factory.mktemp("backed")
    key, recipient = age_identity
    server = EtcdServer(base / "etcd-data").start()
    try:
        written = put_many(server, 150, value_size=50)
        server.ctl("put", "/registry/last", "x")
        written[b"/registry/last"] = b"x"
        cfg = make_config(base / "agent", base / "store", recipient, server.endpoint)
        assert agent_main(["backup", "--config", str(cfg)]) == 0
        import json

        status = json.loads(server.ctl("endpoint", "status", "-w", "json").stdout)
        revision = int(status[0]["Status"]["header"]["revision"])
    finally:
        server.stop()
    return Backed(base / "store", cfg, key, recipient, written, revision, base / "etcd-data")


def copy_store(backed: Backed, dst: Path) -> Path:
    shutil.copytree(backed.store, dst)
    return dst
