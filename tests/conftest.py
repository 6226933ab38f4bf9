"""Shared fixtures: real etcd on loopback, age identities, configs."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import EtcdServer


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    server = EtcdServer(tmp_path / "etcd-data").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def age_identity(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """An age identity file made by the stock `age-keygen`, and its recipient."""
    d = tmp_path_factory.mktemp("age")
    key = d / "key.txt"
    tool = shutil.which("age-keygen")
    if tool is None:
        pytest.fail("age-keygen missing: run `make setup` (Debian package age)")
    subprocess.run([tool, "-o", str(key)], check=True, capture_output=True)
    key.chmod(0o600)
    recipient = subprocess.run(
        [tool, "-y", str(key)], check=True, capture_output=True, text=True
    ).stdout.strip()
    return key, recipient
