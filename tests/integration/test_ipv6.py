"""An etcd listening on [::1] is backed up through an IPv6 endpoint URL."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.agent_helpers import run_agent, write_config
from tests.servers import EtcdServer, free_port

pytestmark = pytest.mark.integration


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_backup_over_ipv6_loopback(tmp_path: Path, age_identity: tuple[Path, str]) -> None:
    port = free_port()
    url = f"http://[::1]:{port}"
    server = EtcdServer(
        tmp_path / "etcd",
        client_port=port,
        extra_args=["--listen-client-urls", url, "--advertise-client-urls", url],
    )
    server.start(wait=False)
    try:
        cfg = write_config(
            tmp_path / "c.toml", endpoint=url, recipient=age_identity[1], root=tmp_path
        )
        for _ in range(50):
            r = run_agent("backup", "--config", cfg, "--json")
            if r.returncode == 0 or "unavailable" not in r.stderr:
                break
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["etcd_endpoint"] == url
    finally:
        server.stop()
