"""The bundle on S3 (SeaweedFS): locked with its snapshot, pruned with it, read back."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC
from pathlib import Path

import pytest

from etcd_backup_agent.manifest import parse_time
from tests.agent_helpers import run_agent, write_config
from tests.bundle_fixtures import make_kubeadm_node
from tests.servers import EtcdServer, WeedServer

pytestmark = pytest.mark.integration

PREFIX = "backups"


def test_object_lock_covers_the_bundle_and_extract_reads_it_back(
    tmp_path: Path,
    etcd: EtcdServer,
    age_identity: tuple[Path, str],
    weed: WeedServer,
    lock_bucket: str,
    creds_file: Path,
) -> None:
    key, recipient = age_identity
    node = make_kubeadm_node(tmp_path / "node")
    s3 = {
        "bucket": lock_bucket,
        "prefix": PREFIX,
        "region": "us-east-1",
        "endpoint_url": weed.endpoint,
        "addressing_style": "path",
        "credentials_file": creds_file,
        "profile": "backup",
        "retry_max_time": "1s",
        "object_lock_mode": "GOVERNANCE",
        "object_lock_days": 1,
    }
    cfg = write_config(
        tmp_path / "c.toml",
        endpoint=etcd.endpoint,
        recipient=recipient,
        root=tmp_path,
        extra={"store": {"type": "s3", "s3": s3}, "bundle": {"root": node.root}},
    )
    r = run_agent("backup", "--config", cfg, "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads(r.stdout)
    assert m["bundle"]["status"] == "ok"
    until = parse_time(m["retain_until"])
    client = weed.client()
    for obj in (m["object"], m["bundle"]["object"]):
        ret = client.get_object_retention(Bucket=lock_bucket, Key=f"{PREFIX}/{obj}")["Retention"]
        assert ret["Mode"] == "GOVERNANCE", obj
        # the bundle is stored a moment after the snapshot: locked at least as long
        assert ret["RetainUntilDate"].astimezone(UTC) >= until, obj

    # a locked bundle cannot be deleted by a plain delete of its current version
    head = client.head_object(Bucket=lock_bucket, Key=f"{PREFIX}/{m['bundle']['object']}")
    with pytest.raises(client.exceptions.ClientError):
        client.delete_object(
            Bucket=lock_bucket,
            Key=f"{PREFIX}/{m['bundle']['object']}",
            VersionId=head["VersionId"],
        )

    sealed = tmp_path / "bundle.age"
    body = client.get_object(Bucket=lock_bucket, Key=f"{PREFIX}/{m['bundle']['object']}")["Body"]
    sealed.write_bytes(body.read())
    listed = subprocess.run(
        f"age -d -i {key} {sealed} | zstd -d -q | tar -t",
        shell=True,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    assert sorted(listed) == sorted(node.expected)

    dest = tmp_path / "out"
    r = run_agent("bundle", "extract", "latest", "--identity", key, "--to", dest, "-c", cfg)
    assert r.returncode == 0, r.stderr
    ca = "etc/kubernetes/pki/ca.key"
    assert (dest / ca).read_bytes() == (node.root / ca).read_bytes()
