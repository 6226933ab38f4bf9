"""Integration fixtures: one SeaweedFS S3 server per session and buckets per test; a server
of its own for a test that stops it; the agents a test starts."""

from __future__ import annotations

import os
import secrets
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.agents import Agent
from tests.servers import WeedServer


@pytest.fixture(scope="session")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WeedServer]:
    """A SeaweedFS server with an S3 gateway on loopback, stopped by pid at session end."""
    server = WeedServer(tmp_path_factory.mktemp("weed"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _bucket_name(kind: str) -> str:
    return f"t-{kind}-{secrets.token_hex(4)}"


@pytest.fixture
def bucket(weed: WeedServer) -> str:
    """A fresh plain bucket."""
    name = _bucket_name("plain")
    weed.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def lock_bucket(weed: WeedServer) -> str:
    """A fresh bucket created with Object Lock (and so versioning) enabled."""
    name = _bucket_name("lock")
    weed.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


@pytest.fixture
def creds_file(weed: WeedServer, tmp_path: Path) -> Path:
    """An AWS shared credentials file for the server, mode 0600."""
    return weed.credentials_file(tmp_path / "credentials", profile="backup")


@pytest.fixture
def own_weed(tmp_path: Path) -> Iterator[WeedServer]:
    """A SeaweedFS server for one test (the test stops, pauses or restarts it by pid)."""
    server = WeedServer(tmp_path / "weed")
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            os.kill(server.proc.pid, signal.SIGCONT)  # a paused server cannot stop
        server.stop()


@pytest.fixture
def agents() -> Iterator[list[Agent]]:
    """Agents a test starts (append them); each is stopped by its pid at the end."""
    started: list[Agent] = []
    try:
        yield started
    finally:
        for a in started:
            a.stop()
