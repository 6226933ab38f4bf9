"""The boto3 client the S3 store talks through, and the sizes of multipart uploads.

``build_client`` turns ``[store.s3]`` into a client (credentials file or profile, TLS,
checksum mode, addressing style, connection pool sized to the upload concurrency);
``S3Body`` makes a GetObject body a raw reader whose failures are StoreErrors.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ProfileNotFound

from .. import __version__
from ..config import S3Settings
from ..errors import StoreAccessDenied, StoreError

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

MIN_PART = 5 * 1024 * 1024
MAX_PARTS = 10_000
_MIB = 1024 * 1024


def part_size_for(size: int, chunk: int) -> int:
    """The part size to use for ``size`` bytes: ``chunk`` or larger so parts stay <= 10,000."""
    needed = math.ceil(size / MAX_PARTS) if size > 0 else 0
    part = max(chunk, MIN_PART, needed)
    return math.ceil(part / _MIB) * _MIB


def build_client(settings: S3Settings) -> S3Client:
    """An S3 client from the settings: credentials file/profile, TLS, checksums, addressing."""
    style: Literal["auto", "path", "virtual"] = "auto"
    if settings.addressing_style in ("path", "virtual"):
        style = "path" if settings.addressing_style == "path" else "virtual"
    checksum: Literal["when_supported", "when_required"] = (
        "when_supported" if settings.checksum == "when_supported" else "when_required"
    )
    core = botocore.session.Session()
    if settings.credentials_file is not None:
        core.set_config_variable("credentials_file", str(settings.credentials_file))
    if settings.profile is not None:
        core.set_config_variable("profile", settings.profile)
    config = Config(
        region_name=settings.region,
        s3={"addressing_style": style},
        request_checksum_calculation=checksum,
        response_checksum_validation=checksum,
        retries={"mode": "standard", "max_attempts": 3},
        connect_timeout=10,
        read_timeout=60,
        max_pool_connections=max(10, settings.max_concurrency + 2),
        user_agent_extra=f"etcd-backup-agent/{__version__}",
    )
    verify: str | bool = str(settings.ca_file) if settings.ca_file else settings.verify_tls
    try:
        session = boto3.session.Session(botocore_session=core)
        return session.client(
            "s3", endpoint_url=settings.endpoint_url, config=config, verify=verify
        )
    except ProfileNotFound:
        raise StoreAccessDenied(
            f"s3://{settings.bucket}: profile {settings.profile!r} not found in the credentials"
        ) from None
    except (BotoCoreError, ValueError) as exc:
        raise StoreError(f"s3://{settings.bucket}: cannot create the S3 client: {exc}") from None


class S3Body(io.RawIOBase):
    """A raw reader over a botocore StreamingBody; read failures become StoreError."""

    def __init__(self, body: Any, describe: Callable[[BaseException], StoreError]) -> None:
        super().__init__()
        self._body = body
        self._describe = describe

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        try:
            data: bytes = self._body.read(len(view))
        except (BotoCoreError, OSError, ValueError) as exc:
            raise self._describe(exc) from None
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()
