"""The only module that talks to etcd (through the ``etcd3`` client): status, snapshot, lock.

gRPC errors are mapped here to the agent's SourceError tree, so no other module sees a
grpc exception. The snapshot stream is consumed directly from the Maintenance stub so it
can be cancelled, and the 32-byte sha256 trailer is checked as the bytes arrive.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import etcd3
import grpc
from etcd3 import etcdrpc

from .config import EtcdSettings, read_secret_file
from .errors import (
    Cancelled,
    EtcdAuthError,
    EtcdTLSError,
    EtcdUnavailable,
    SnapshotCorrupt,
    SourceError,
)

TRAILER_SIZE = 32
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class EtcdStatus:
    endpoint: str
    version: str
    db_size: int
    leader: int
    member_id: int
    cluster_id: int
    revision: int
    raft_index: int
    raft_term: int

    @property
    def is_leader(self) -> bool:
        return self.leader != 0 and self.leader == self.member_id


@dataclass(frozen=True)
class StreamResult:
    """What the snapshot stream delivered: data bytes (without trailer) and their sha256."""

    size: int
    sha256: str


@dataclass(frozen=True)
class LockGrant:
    """The outcome of one try at a lease-backed lock; ``lost`` is set if the lease lapses."""

    acquired: bool
    key: str
    holder: str | None
    lost: threading.Event


def _first_value(responses: Any) -> str | None:
    for rng in responses or ():
        for value, _meta in rng if isinstance(rng, list) else ():
            if isinstance(value, bytes):
                return value.decode("utf-8", "replace")
    return None


@dataclass(frozen=True)
class _Target:
    url: str
    host: str
    port: int
    secure: bool


def _parse_endpoint(url: str) -> _Target:
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal: gRPC wants it bracketed in host:port
    port = parts.port or 2379
    return _Target(url=url, host=host, port=port, secure=parts.scheme == "https")


def map_grpc_error(exc: BaseException, endpoint: str, what: str) -> SourceError:
    """Translate a gRPC/etcd3 exception into the agent's error tree, naming the endpoint."""
    code = exc.code() if isinstance(exc, grpc.RpcError) and hasattr(exc, "code") else None
    details = ""
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "details"):
        details = str(exc.details() or "")
    text = details or str(exc) or type(exc).__name__
    low = text.lower()
    if any(w in low for w in ("ssl", "handshake", "certificate", "tls", "x509")):
        return EtcdTLSError(f"{what} at {endpoint}: TLS failure ({_short(text)})")
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED) or any(
        w in low
        for w in (
            "authentication failed",
            "permission denied",
            "user name is empty",
            "invalid auth token",
        )
    ):
        hint = ""
        if "permission denied" in low:
            hint = " (snapshots need a user with the root role)"
        return EtcdAuthError(f"{what} at {endpoint}: {_short(text)}{hint}")
    if code == grpc.StatusCode.CANCELLED:
        return EtcdUnavailable(f"{what} at {endpoint}: stream cancelled ({_short(text)})")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return EtcdUnavailable(f"{what} at {endpoint}: timed out ({_short(text)})")
    return EtcdUnavailable(f"{what} at {endpoint}: etcd unavailable ({_short(text)})")


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."


class EtcdSource:
    """A connection to one etcd member, trying the configured endpoints in order."""

    def __init__(self, settings: EtcdSettings) -> None:
        self.settings = settings
        self._client: Any = None
        self._target: _Target | None = None

    @property
    def endpoint(self) -> str:
        return self._target.url if self._target else self.settings.endpoints[0]

    def _credentials(self) -> grpc.ChannelCredentials:
        def read(path: Any) -> bytes | None:
            if path is None:
                return None
            with open(path, "rb") as f:
                return f.read()

        try:
            return grpc.ssl_channel_credentials(
                root_certificates=read(self.settings.ca_file),
                private_key=read(self.settings.key_file),
                certificate_chain=read(self.settings.cert_file),
            )
        except OSError as exc:
            raise EtcdTLSError(f"cannot read TLS files: {exc}") from None

    def _connect(self, target: _Target) -> Any:
        secure = target.secure or self.settings.ca_file is not None
        creds = self._credentials() if secure else None
        ep = etcd3.Endpoint(
            target.host,
            target.port,
            secure=secure,
            creds=creds,
            opts=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
        )
        user = self.settings.username
        password = None
        if self.settings.password_file is not None:
            try:
                password = read_secret_file(self.settings.password_file)
            except OSError as exc:
                raise EtcdAuthError(f"cannot read password_file: {exc.strerror}") from None
        try:
            client = etcd3.MultiEndpointEtcd3Client(
                endpoints=[ep], timeout=self.settings.dial_timeout, user=user, password=password
            )
        except Exception as exc:
            raise map_grpc_error(exc, target.url, "authenticating") from None
        if not secure:
            # gRPC refuses call credentials on plaintext channels; the token also travels
            # as metadata, which is what etcd reads.
            client.call_credentials = None
        return client

    def client(self) -> Any:
        """The connected etcd3 client (first endpoint that answers Status)."""
        if self._client is not None:
            return self._client
        last: SourceError | None = None
        for url in self.settings.endpoints:
            target = _parse_endpoint(url)
            try:
                client = self._connect(target)
                self._client, self._target = client, target
                try:
                    self._status_raw()
                except grpc.RpcError as exc:
                    raise map_grpc_error(exc, target.url, "status") from None
                return client
            except SourceError as exc:
                self.close()
                last = exc
                if isinstance(exc, EtcdAuthError):
                    break
        assert last is not None
        raise last

    def _status_raw(self) -> Any:
        client = self._client
        return client.maintenancestub.Status(
            etcdrpc.StatusRequest(),
            self.settings.dial_timeout,
            credentials=client.call_credentials,
            metadata=client.metadata,
        )

    def status(self) -> EtcdStatus:
        """The member's status, including ``header.member_id`` (dropped by etcd3.status())."""
        self.client()
        try:
            resp = self._status_raw()
        except grpc.RpcError as exc:
            raise map_grpc_error(exc, self.endpoint, "status") from None
        return EtcdStatus(
            endpoint=self.endpoint,
            version=resp.version,
            db_size=resp.dbSize,
            leader=resp.leader,
            member_id=resp.header.member_id,
            cluster_id=resp.header.cluster_id,
            revision=resp.header.revision,
            raft_index=resp.raftIndex,
            raft_term=resp.raftTerm,
        )

    def snapshot(
        self,
        sink: BinaryIO,
        *,
        cancel: threading.Event | None = None,
        progress: Progress | None = None,
    ) -> StreamResult:
        """Stream Maintenance.Snapshot into ``sink`` (data then trailer, like etcdctl).

        Raise SnapshotCorrupt when the stream ends without a valid sha256 trailer, and
        EtcdUnavailable when it is cut. The client-wide timeout is not applied: the
        deadline is ``snapshot_timeout`` for the whole stream.
        """
        client = self.client()
        responses = client.maintenancestub.Snapshot(
            etcdrpc.SnapshotRequest(),
            self.settings.snapshot_timeout,
            credentials=client.call_credentials,
            metadata=client.metadata,
        )
        digest = hashlib.sha256()
        pending: bytes | None = None
        size = 0
        total = 0
        try:
            for resp in responses:
                if cancel is not None and cancel.is_set():
                    responses.cancel()
                    raise Cancelled("snapshot cancelled")
                if pending is not None:
                    digest.update(pending)
                    sink.write(pending)
                    size += len(pending)
                blob = resp.blob
                if not total:
                    total = len(blob) + resp.remaining_bytes
                pending = blob
                if progress is not None:
                    progress(size, total)
        except grpc.RpcError as exc:
            raise map_grpc_error(exc, self.endpoint, "snapshot stream") from None
        except BaseException:
            # the sink failed (spool full, store down, sealer died): end the stream at etcd
            with contextlib.suppress(Exception):
                responses.cancel()
            raise
        if pending is None or len(pending) != TRAILER_SIZE:
            raise SnapshotCorrupt(
                f"snapshot from {self.endpoint} ended without the 32-byte sha256 trailer"
            )
        if pending != digest.digest():
            raise SnapshotCorrupt(
                f"snapshot from {self.endpoint}: sha256 trailer does not match the data"
            )
        if size % 512 != 0:
            raise SnapshotCorrupt(f"snapshot from {self.endpoint}: size {size} is not page-aligned")
        sink.write(pending)
        if progress is not None:
            progress(size, size)
        return StreamResult(size=size, sha256=digest.hexdigest())

    @contextmanager
    def hold_lock(self, key: str, ttl: float, holder: str) -> Iterator[LockGrant]:
        """Try once to take ``key`` under a lease and keep the lease alive for the block.

        The key's value names the ``holder``; when the key is taken, the grant is not
        acquired and names the current holder. A crashed holder's key vanishes with its
        lease after ``ttl``.
        """
        client = self.client()
        seconds = max(1, round(ttl))
        try:
            lease = client.lease(seconds)
            won, responses = client.transaction(
                compare=[client.transactions.create(key) == 0],
                success=[client.transactions.put(key, holder, lease)],
                failure=[client.transactions.get(key)],
            )
        except Exception as exc:
            raise map_grpc_error(exc, self.endpoint, "lock") from None
        if not won:
            with contextlib.suppress(Exception):
                client.revoke_lease(lease.id)
            current = _first_value(responses)
            yield LockGrant(acquired=False, key=key, holder=current, lost=threading.Event())
            return
        grant = LockGrant(acquired=True, key=key, holder=holder, lost=threading.Event())
        done = threading.Event()

        def keep_alive() -> None:
            # refresh at a third of the ttl; a refresh that fails or finds the lease gone
            # marks the grant lost (another agent may take the lock after ttl)
            while not done.wait(seconds / 3):
                try:
                    alive = any(r.TTL > 0 for r in client.refresh_lease(lease.id))
                except Exception:
                    alive = False
                if not alive:
                    grant.lost.set()

        keeper = threading.Thread(target=keep_alive, name="lock-keepalive", daemon=True)
        keeper.start()
        try:
            yield grant
        finally:
            done.set()
            keeper.join(timeout=5)
            # deleting the key with the lease; if this fails the lease expires on its own
            with contextlib.suppress(Exception):
                client.revoke_lease(lease.id)

    def lock_holder(self, key: str) -> str | None:
        """The value stored at lock ``key`` (the holder's name), or None when free."""
        client = self.client()
        try:
            value, _meta = client.get(key)
        except Exception as exc:
            raise map_grpc_error(exc, self.endpoint, "lock holder") from None
        return value.decode("utf-8", "replace") if value is not None else None

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            finally:
                self._client = None
