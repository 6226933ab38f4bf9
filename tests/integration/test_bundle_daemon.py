"""The bundle in the running daemon: status and metric warnings, etcd-backupctl bundle."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.agent_helpers import agent_env
from tests.bundle_fixtures import make_kubeadm_node, pem_body
from tests.integration.agents import new_agent
from tests.integration.restore_fixtures import short_dir
from tests.servers import EtcdServer

pytestmark = pytest.mark.integration

MAIN = "import sys; from etcd_backup_agent.cli.ctl import main; sys.exit(main())"
SENTENCE = "Secrets in these backups cannot be decrypted after a restore without it"


def backupctl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", MAIN, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env=agent_env(),
    )


def test_daemon_warns_about_a_lost_encryption_config_and_serves_the_bundle(
    tmp_path: Path, etcd: EtcdServer, age_identity: tuple[Path, str]
) -> None:
    key, recipient = age_identity
    node = make_kubeadm_node(tmp_path / "node")
    enc = node.root / node.encryption_config.lstrip("/")
    enc.unlink()
    enc.symlink_to("/nonexistent/encryption.yaml")  # a dangling path: the file is gone
    sockdir = short_dir()
    sock = sockdir / "agent.sock"
    agent = new_agent(
        tmp_path,
        endpoints=[etcd.endpoint],
        recipient=recipient,
        store=tmp_path / "store",
        spool=tmp_path / "spool",
        interval="1h",
        control_socket=sock,
        extra={"bundle": {"root": node.root}},
    ).start()
    try:
        agent.wait_log("backup stored", timeout=60)
        samples = agent.scrape()
        assert samples[("etcd_backup_bundle_encryption_config_missing", ())] == 1
        assert samples[("etcd_backup_bundle_failed", ())] == 0
        assert samples[("etcd_backup_bundle_warnings", ())] >= 1
        assert SENTENCE in agent.log_text()

        status = backupctl("status", "--socket", sock)
        assert status.returncode == 0, status.stderr
        assert "bundle:       ok (kubeadm" in status.stdout
        assert SENTENCE in status.stdout

        listing = backupctl("bundle", "list", "latest", "--socket", sock)
        assert listing.returncode == 0, listing.stderr
        assert "etc/kubernetes/pki/sa.key" in listing.stdout

        dest = tmp_path / "out"
        ex = backupctl(
            "bundle", "extract", "latest", "--identity", key, "--to", dest, "--socket", sock
        )
        assert ex.returncode == 0, ex.stderr
        for k in node.private_keys:
            rel = k.relative_to(node.root)
            assert (
                hashlib.sha256((dest / rel).read_bytes()).digest()
                == hashlib.sha256(k.read_bytes()).digest()
            )
        json_reply = backupctl("bundle", "list", "latest", "--socket", sock, "--json")
        transcript = [
            agent.log_text(),
            agent.scrape_text(),
            status.stdout + status.stderr,
            listing.stdout + listing.stderr,
            ex.stdout + ex.stderr,
            json_reply.stdout,
        ]
        for k in node.private_keys:
            for text in transcript:
                assert pem_body(k) not in text
    finally:
        agent.stop()
        shutil.rmtree(sockdir, ignore_errors=True)
