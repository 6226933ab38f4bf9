"""S3Store's error mapping and part sizing (no server needed: exceptions built by hand)."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, SSLError

from etcd_backup_agent.config import S3Settings
from etcd_backup_agent.errors import (
    StoreAccessDenied,
    StoreError,
    StoreNotFound,
    StoreUnavailable,
)
from etcd_backup_agent.store.s3 import S3Store
from etcd_backup_agent.store.s3_client import MIN_PART, part_size_for

MIB = 1024 * 1024


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> S3Store:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKUNIT")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "unit")
    settings = S3Settings(
        bucket="bkt",
        prefix="p",
        region="eu-west-1",
        endpoint_url="https://127.0.0.1:9",
        retry_max_time=0.0,
    )
    return S3Store(settings)


def client_error(code: str, status: int, **extra: str) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": "msg", **extra},
            "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": {}},
        },
        "PutObject",
    )


def test_client_errors(store: S3Store) -> None:
    err, transient = store._error(client_error("NoSuchBucket", 404), "put", "c/a")
    assert isinstance(err, StoreNotFound) and "bucket bkt does not exist" in str(err)
    err, _ = store._error(client_error("SignatureDoesNotMatch", 403), "put", "c/a")
    assert isinstance(err, StoreAccessDenied)
    assert str(err) == "put: access denied to bucket bkt (key p/c/a): SignatureDoesNotMatch"
    err, _ = store._error(client_error("PermanentRedirect", 301, Region="us-west-2"), "put", "c/a")
    assert type(err) is StoreError and "region us-west-2" in str(err) and "eu-west-1" in str(err)
    err, _ = store._error(
        client_error("AuthorizationHeaderMalformed", 400, Region="ap-south-1"), "list", None
    )
    assert "region ap-south-1" in str(err) and "bucket bkt" in str(err)
    for code in ("QuotaExceeded", "EntityTooLarge"):
        err, transient = store._error(client_error(code, 400), "put", "c/a")
        assert type(err) is StoreError and code in str(err) and not transient
    err, transient = store._error(client_error("ServiceUnavailable", 503), "put", "c/a")
    assert type(err) is StoreError and transient and "p/c/a" in str(err)
    err, transient = store._error(client_error("NoSuchKey", 404), "get", "c/a")
    assert isinstance(err, StoreNotFound) and not transient


def test_transport_errors(store: S3Store) -> None:
    err, transient = store._error(
        SSLError(endpoint_url="https://127.0.0.1:9", error="bad"), "list", None
    )
    assert isinstance(err, StoreUnavailable) and "TLS failure" in str(err) and not transient
    err, transient = store._error(EndpointConnectionError(endpoint_url="x"), "get", "c/a")
    assert isinstance(err, StoreUnavailable) and transient
    assert "endpoint unreachable: https://127.0.0.1:9" in str(err) and "bkt" in str(err)


def test_invalid_keys(store: S3Store) -> None:
    for key in ("", "/abs", "a/../b", "a//b"):
        with pytest.raises(StoreError, match="invalid key"):
            store.put_bytes(key, b"")


def test_part_size() -> None:
    assert part_size_for(0, 16 * MIB) == 16 * MIB
    assert part_size_for(100 * MIB, MIN_PART) == MIN_PART
    big = 200 * 1024**3  # 200 GiB needs parts > 20 MiB to stay within 10,000
    part = part_size_for(big, 8 * MIB)
    assert part % MIB == 0 and big / part <= 10_000


def test_a_shutdown_ends_a_retry_loop_with_the_default_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the default retry_max_time (300 s), a store that stays down kept a stopping
    agent in its retry loop for minutes; the agent's cancel event now ends it."""
    import threading

    from etcd_backup_agent.errors import Cancelled

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKUNIT")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "unit")
    settings = S3Settings(bucket="bkt", region="eu-west-1", endpoint_url="https://127.0.0.1:9")
    assert settings.retry_max_time == 300.0
    cancel = threading.Event()
    store = S3Store(settings, cancel=cancel)
    attempts: list[int] = []
    outcome: list[BaseException] = []

    def down() -> None:
        attempts.append(1)
        if len(attempts) == 3:
            cancel.set()  # the shutdown arrives while the store is retried
        raise EndpointConnectionError(endpoint_url="https://127.0.0.1:9")

    def call() -> None:
        try:
            store._call("list", None, down)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=call)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "the retry loop did not end on cancel"
    assert isinstance(outcome[0], Cancelled) and "cancelled while retrying" in str(outcome[0])
    assert len(attempts) == 3
