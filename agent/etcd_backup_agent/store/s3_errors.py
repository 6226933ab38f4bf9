"""botocore/boto3 errors -> the agent's StoreError family, and whether a retry may help.

Every message names the operation, the bucket and the key; none echoes the server's text
for access errors (some include the string to sign).
"""

from __future__ import annotations

from dataclasses import dataclass

from boto3.exceptions import Boto3Error
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
    ResponseStreamingError,
    SSLError,
)

from ..errors import StoreAccessDenied, StoreError, StoreNotFound, StoreUnavailable

# what a boto call can raise; map_error turns each into a StoreError
BOTO_ERRORS = (BotoCoreError, ClientError, Boto3Error, OSError)

_ACCESS_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "AllAccessDisabled",
    "AccountProblem",
    "403",
}
_REGION_CODES = {
    "PermanentRedirect",
    "AuthorizationHeaderMalformed",
    "301",
    "IllegalLocationConstraintException",
}
_TRANSIENT_CODES = {
    "ServiceUnavailable",
    "SlowDown",
    "InternalError",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "Throttling",
    "ThrottlingException",
    "503",
    "500",
    "502",
    "504",
}
_NOT_FOUND_KEY = {"NoSuchKey", "404", "NotFound", "NoSuchUpload"}
_LOCK_CODES = {"InvalidRequest", "ObjectLockConfigurationNotFoundError", "InvalidBucketState"}


@dataclass(frozen=True)
class S3Where:
    """What an error message names: the bucket, the key prefix, the endpoint, the region."""

    bucket: str
    root: str  # the key prefix with its trailing slash, or ""
    endpoint: str
    region: str | None


def map_error(exc: BaseException, op: str, key: str | None, at: S3Where) -> tuple[StoreError, bool]:
    """Map a boto error to (StoreError naming bucket and key, whether it is transient)."""
    where = f"bucket {at.bucket}" + (f" (key {at.root}{key})" if key is not None else "")
    cause: BaseException | None = exc
    while isinstance(cause, Boto3Error) and (cause.__cause__ or cause.__context__):
        cause = cause.__cause__ or cause.__context__
    exc = cause or exc
    if isinstance(exc, StoreError):
        return exc, False
    if isinstance(exc, SSLError):
        return StoreUnavailable(
            f"{op}: TLS failure talking to {at.endpoint} ({where}); check ca_file "
            f"and the endpoint's certificate"
        ), False
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError | ConnectionClosedError):
        return StoreUnavailable(f"{op}: endpoint unreachable: {at.endpoint} ({where})"), True
    if isinstance(exc, ReadTimeoutError | IncompleteReadError | ResponseStreamingError):
        return StoreUnavailable(
            f"{op}: connection to {at.endpoint} failed mid-transfer ({where})"
        ), True
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | ProfileNotFound):
        return StoreAccessDenied(
            f"{op}: access denied to {where}: no usable credentials "
            f"(credentials_file, profile or the default AWS chain)"
        ), False
    if isinstance(exc, ClientError):
        return _client_error(exc, op, key, where, at)
    if isinstance(exc, BotoCoreError | Boto3Error):
        return StoreError(f"{op}: {where}: {type(exc).__name__}: {exc}"), False
    if isinstance(exc, OSError):
        return StoreError(f"{op}: {where}: {exc.strerror or exc}"), False
    return StoreError(f"{op}: {where}: {type(exc).__name__}: {exc}"), False


def _client_error(
    exc: ClientError, op: str, key: str | None, where: str, at: S3Where
) -> tuple[StoreError, bool]:
    err = exc.response.get("Error", {})
    meta = exc.response.get("ResponseMetadata", {})
    code = str(err.get("Code") or meta.get("HTTPStatusCode") or "")
    status = int(meta.get("HTTPStatusCode") or 0)
    message = str(err.get("Message") or "")[:200]
    if code == "NoSuchBucket":
        return StoreNotFound(f"{op}: bucket {at.bucket} does not exist"), False
    if code in _NOT_FOUND_KEY:
        return StoreNotFound(f"{op}: {at.root}{key} does not exist in {where}"), False
    if code in _ACCESS_CODES:
        # never echo the server's message: some include the string to sign
        return StoreAccessDenied(f"{op}: access denied to {where}: {code}"), False
    if code in _REGION_CODES or status == 301:
        headers = meta.get("HTTPHeaders", {})
        region = err.get("Region") or headers.get("x-amz-bucket-region") or "another region"
        return StoreError(
            f"{op}: {where} is in region {region}, not the configured region "
            f'{at.region or "(none)"}: set [store.s3] region = "{region}"'
        ), False
    if code in ("QuotaExceeded", "EntityTooLarge"):
        return StoreError(f"{op}: {where}: {code}: {message}"), False
    if code in _TRANSIENT_CODES or status >= 500:
        return StoreError(f"{op}: {where}: service unavailable: {code} {message}".strip()), True
    if code in _LOCK_CODES and "lock" in message.lower():
        return StoreError(
            f"{op}: {where}: {code}: {message} (object_lock_mode needs a bucket created "
            f"with Object Lock enabled)"
        ), False
    return StoreError(f"{op}: {where}: {code}: {message}"), False
