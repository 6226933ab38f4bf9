"""Shared fixtures: real etcd on loopback, age identities, configs."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import EtcdServer, etcd_cluster

# Fixtures that start a stock binary (etcd, weed, age-keygen): a test using one, directly or
# through another fixture, runs a stock binary and so is an integration test.
STOCK_FIXTURES = frozenset({"etcd", "cluster", "weed", "own_weed", "age_identity"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if STOCK_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    server = EtcdServer(tmp_path / "etcd-data").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _no_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No AWS_* variable of the developer's shell may steer a test's S3 client."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[EtcdServer]]:
    """A three-member etcd cluster on loopback, each member stopped by its pid."""
    (tmp_path / "etcd").mkdir()
    members = etcd_cluster(tmp_path / "etcd", 3)
    try:
        yield members
    finally:
        for m in members:
            m.stop()


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
