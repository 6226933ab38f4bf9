"""``etcd-backup-agent store check`` against SeaweedFS, a dead endpoint and a local dir."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyrage
import pytest

from etcd_backup_agent import cli
from tests.agent_helpers import write_toml
from tests.servers import LOOPBACK, WeedServer, free_port

pytestmark = pytest.mark.integration


def write_config(path: Path, store: dict[str, Any]) -> Path:
    recipient = str(pyrage.x25519.Identity.generate().to_public())
    doc = {"cluster": {"name": "c1", "node": "n1"}, "encryption": {"recipients": [recipient]}}
    return write_toml(path, doc | {"store": store})


def s3_config(tmp_path: Path, endpoint: str, bucket: str, creds: Path) -> Path:
    s3 = {
        "bucket": bucket,
        "prefix": "backups",
        "endpoint_url": endpoint,
        "region": "us-east-1",
        "addressing_style": "path",
        "credentials_file": creds,
        "profile": "backup",
        "retry_max_time": "1s",
    }
    return write_config(tmp_path / "config.toml", {"type": "s3", "s3": s3})


def test_store_check_s3_ok(
    weed: WeedServer,
    bucket: str,
    creds_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = s3_config(tmp_path, weed.endpoint, bucket, creds_file)
    assert cli.main(["store", "check", "--config", str(config)]) == 0
    out = capsys.readouterr()
    assert "list: ok" in out.out and "write: ok" in out.out
    assert "read: ok" in out.out and "delete: ok" in out.out
    assert "store check: OK" in out.out
    assert weed.secret_key not in out.out + out.err and weed.access_key not in out.out + out.err
    left = weed.client().list_objects_v2(Bucket=bucket, Prefix="backups/c1/")
    assert left.get("KeyCount", 0) == 0  # the probe was removed


def test_store_check_s3_unreachable(
    weed: WeedServer,
    bucket: str,
    creds_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    endpoint = f"http://{LOOPBACK}:{free_port()}"  # nothing listens: a stopped S3
    config = s3_config(tmp_path, endpoint, bucket, creds_file)
    assert cli.main(["store", "check", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert f"list: FAILED: list: endpoint unreachable: {endpoint}" in out
    assert "write:" not in out


def test_store_check_s3_access_denied(
    weed: WeedServer, bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad"
    bad.write_text("[backup]\naws_access_key_id = AKNOBODY\naws_secret_access_key = nope\n")
    config = s3_config(tmp_path, weed.endpoint, bucket, bad)
    assert cli.main(["store", "check", "--config", str(config)]) == 1
    assert f"list: FAILED: list: access denied to bucket {bucket}" in capsys.readouterr().out


def test_store_check_local(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "backups"
    config = write_config(tmp_path / "config.toml", {"type": "local", "path": root})
    assert cli.main(["store", "check", "--config", str(config)]) == 0
    assert "store check: OK" in capsys.readouterr().out
    assert list((root / "c1").iterdir()) == []
