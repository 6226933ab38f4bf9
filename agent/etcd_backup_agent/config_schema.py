"""The config keys: one declaration per key, on its settings dataclass field.

``setting(...)`` gives a key's kind, default, bounds, doc line and example value. This module
is that table and nothing else, so it is long by design (one entry per key); ``config`` reads
documents with it and ``config_reference`` renders docs/config.md and config/example.toml
from it.
"""

from __future__ import annotations

import socket
from dataclasses import MISSING, Field, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# The placeholder in config/example.toml (age's documentation key): nobody holds its identity.
EXAMPLE_RECIPIENT = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
MiB = 1024 * 1024


class Kind(Enum):
    STRING = "string"
    BOOL = "boolean"
    INT = "integer"
    SIZE = "byte size"
    DURATION = "duration"
    STRINGS = "list of strings"
    PATH = "path"


@dataclass(frozen=True)
class Opt:
    """One config key: how it is read, checked and documented (its default is the field's)."""

    kind: Kind
    doc: str
    key: str = ""  # the TOML key when it differs from the field name
    choices: tuple[str, ...] = ()
    minimum: int = 0
    maximum: int | None = None
    allow_zero: bool = True  # durations
    must_read: bool = False  # paths: the file must exist and be readable at load time
    type_doc: str = ""  # the reference's type column when the kind says too little
    default_doc: str = ""  # the reference's default column when the default is computed
    example: str = ""  # TOML literal for the example config; "" = the default
    active: bool = True  # False: the example shows the key commented out


def setting(kind: Kind, default: T, doc: str, **opt: Any) -> T:
    """A dataclass field declaring one config key (see ``Opt``)."""
    return field(default=default, metadata={"opt": Opt(kind, doc, **opt)})


def opt_of(f: Field[Any]) -> Opt | None:
    o = f.metadata.get("opt")
    return o if isinstance(o, Opt) else None


def default_of(f: Field[Any]) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    raise TypeError(f"{f.name} has no default")


STRING, BOOL, INT, SIZE, DURATION, STRINGS, PATH = (
    Kind.STRING,
    Kind.BOOL,
    Kind.INT,
    Kind.SIZE,
    Kind.DURATION,
    Kind.STRINGS,
    Kind.PATH,
)
_READABLE = {"must_read": True, "active": False}


@dataclass(frozen=True)
class EtcdSettings:
    endpoints: tuple[str, ...] = setting(
        STRINGS,
        ("http://127.0.0.1:2379",),
        "client URLs of the local etcd member, tried in order; at least one.",
        example='["https://127.0.0.1:2379"]',
    )
    ca_file: Path | None = setting(
        PATH,
        None,
        "CA bundle that signed etcd's server certificate"
        " (kubeadm: /etc/kubernetes/pki/etcd/ca.crt).",
        example='"/etc/kubernetes/pki/etcd/ca.crt"',
        **_READABLE,
    )
    cert_file: Path | None = setting(
        PATH,
        None,
        "client certificate etcd accepts; with `key_file`.",
        example='"/etc/kubernetes/pki/apiserver-etcd-client.crt"',
        **_READABLE,
    )
    key_file: Path | None = setting(
        PATH,
        None,
        "the client certificate's key; with `cert_file`.",
        example='"/etc/kubernetes/pki/apiserver-etcd-client.key"',
        **_READABLE,
    )
    username: str | None = setting(
        STRING,
        None,
        "etcd user (auth enabled; a user with the root role); requires `password_file`.",
        example='"root"',
        active=False,
    )
    password_file: Path | None = setting(
        PATH,
        None,
        "file holding the etcd user's password (a trailing newline is ignored);"
        " requires `username`.",
        example='"/etc/etcd-backup-agent/etcd-password"',
        **_READABLE,
    )
    snapshot_timeout: float = setting(
        DURATION, 3600.0, "deadline for the whole snapshot stream.", allow_zero=False
    )
    dial_timeout: float = setting(
        DURATION, 10.0, "deadline for connecting and status requests.", allow_zero=False
    )
    snapshot_rate_limit: int = setting(
        SIZE,
        0,
        'cap on the snapshot stream, in bytes per second (e.g. `"50MiB"`); `0` = as fast as'
        " etcd sends. The agent reads more slowly and gRPC flow control slows etcd's sender,"
        " so a busy member spends less disk and network on the backup (the backup takes"
        " longer: db size / rate).",
        example='"50MiB"',
        active=False,
    )


@dataclass(frozen=True)
class EncryptionSettings:
    recipients: tuple[str, ...] = setting(
        STRINGS,
        (),
        "**required** (or `recipients_file`): age X25519 public keys (`age1...`); create a"
        " key pair off the node with `etcd-backup-agent keygen --out backup-key.txt`."
        " Identities (`AGE-SECRET-KEY-...`) and the example placeholder are refused.",
        example=f'["{EXAMPLE_RECIPIENT}"]',
    )
    recipients_file: Path | None = setting(
        PATH,
        None,
        "file with one recipient per line (`#` starts a comment), merged with `recipients`.",
        example='"/etc/etcd-backup-agent/recipients.txt"',
        **_READABLE,
    )


@dataclass(frozen=True)
class CompressionSettings:
    level: int = setting(
        INT, 3, "zstd compression level (3 is a good default; 1 is fastest).", minimum=1, maximum=19
    )
    threads: int = setting(
        INT, 0, "zstd worker threads (0 = single-threaded).", minimum=0, maximum=64
    )


@dataclass(frozen=True)
class S3Settings:
    bucket: str = setting(
        STRING,
        "",
        '**required** for `type = "s3"`: bucket name, 3-63 characters.',
        example='"etcd-backups"',
        active=False,
    )
    prefix: str = setting(
        STRING,
        "",
        "key prefix: objects are `<prefix>/<cluster>/<id>...` (slashes trimmed).",
        example='"k8s"',
        active=False,
    )
    region: str | None = setting(
        STRING,
        None,
        "S3 region (boto3's default chain when unset).",
        example='"eu-central-1"',
        active=False,
    )
    endpoint_url: str | None = setting(
        STRING,
        None,
        "endpoint for S3-compatible stores (MinIO, Ceph RGW, SeaweedFS, R2...).",
        example='"https://s3.example.com"',
        active=False,
    )
    addressing_style: str = setting(
        STRING,
        "auto",
        "bucket addressing style.",
        choices=("auto", "path", "virtual"),
        active=False,
    )
    ca_file: Path | None = setting(
        PATH,
        None,
        "CA bundle for the endpoint's TLS certificate.",
        example='"/etc/ssl/certs/my-ca.pem"',
        **_READABLE,
    )
    verify_tls: bool = setting(BOOL, True, "verify the endpoint's TLS certificate.", active=False)
    checksum: str = setting(
        STRING,
        "when_required",
        'when boto3 sends request checksums (`"when_supported"` on AWS S3).',
        choices=("when_required", "when_supported"),
        active=False,
    )
    storage_class: str | None = setting(
        STRING,
        None,
        'storage class of stored objects (e.g. `"STANDARD_IA"`).',
        example='"STANDARD_IA"',
        active=False,
    )
    sse: str = setting(
        STRING,
        "none",
        "server-side encryption (on top of age).",
        choices=("none", "AES256", "aws:kms"),
        active=False,
    )
    kms_key_id: str | None = setting(
        STRING,
        None,
        'KMS key for `sse = "aws:kms"` only.',
        example='"arn:aws:kms:..."',
        active=False,
    )
    object_lock_mode: str | None = setting(
        STRING,
        None,
        "object lock for stored objects and manifests (bucket needs Object Lock).",
        choices=("GOVERNANCE", "COMPLIANCE"),
        example='"GOVERNANCE"',
        active=False,
    )
    object_lock_days: int = setting(
        INT,
        0,
        "retention days of the lock; required (> 0) with `object_lock_mode`.",
        maximum=36500,
        example="30",
        active=False,
    )
    multipart_chunk_size: int = setting(
        SIZE,
        16 * MiB,
        "multipart upload part size.",
        type_doc="size >= 5MiB",
        active=False,
    )
    max_concurrency: int = setting(
        INT, 2, "parallel part uploads.", minimum=1, maximum=64, active=False
    )
    credentials_file: Path | None = setting(
        PATH,
        None,
        "AWS shared-credentials file; default: boto3's chain.",
        example='"/etc/etcd-backup-agent/aws-credentials"',
        **_READABLE,
    )
    profile: str | None = setting(
        STRING,
        None,
        "section of `credentials_file` to use.",
        example='"etcd-backup"',
        active=False,
    )
    multipart_abort_after: float = setting(
        DURATION,
        86400.0,
        "at start, abort this agent's incomplete multipart uploads older than this.",
        active=False,
    )
    retry_max_time: float = setting(
        DURATION, 300.0, "stop retrying transient store errors after this.", active=False
    )


@dataclass(frozen=True)
class StoreSettings:
    type: str = setting(
        STRING,
        "local",
        'where backups are stored; `"s3"` needs `[store.s3]`.',
        choices=("local", "s3"),
    )
    path: Path = setting(
        PATH,
        Path("/var/lib/etcd-backup-agent/backups"),
        'directory of the local store (`type = "local"`), holding'
        " `<cluster>/<id>.db.zst.age` and `<id>.json`.",
    )
    s3: S3Settings | None = None  # the [store.s3] table


@dataclass(frozen=True)
class SpoolSettings:
    dir: Path = setting(
        PATH,
        Path("/var/lib/etcd-backup-agent/spool"),
        "where snapshots are checked and sealed (about 1.5 x the DB size).",
    )
    max_bytes: int = setting(
        SIZE, 0, "do not start a backup while the spool holds more (0 = no bound)."
    )
    keep_unuploaded: bool = setting(
        BOOL, False, "keep sealed backups when the store is down and upload them later."
    )


@dataclass(frozen=True)
class ScheduleSettings:
    interval: float = setting(
        DURATION,
        3600.0,
        "backup period (periods are aligned to the Unix epoch).",
        allow_zero=False,
    )
    jitter: float = setting(
        DURATION,
        0.0,
        "spread of the per-node start offset within a period.",
        type_doc="duration < `interval`",
        example='"2m"',
    )
    at: tuple[str, ...] = setting(
        STRINGS,
        (),
        "daily UTC times; when set, periods run from one time to the next.",
        type_doc='list of `"HH:MM"`',
        example='["02:30", "14:30"]',
        active=False,
    )
    retry_attempts: int = setting(
        INT, 3, "retries of a failed backup within a period.", minimum=0, maximum=100
    )
    retry_backoff: float = setting(DURATION, 30.0, "first retry delay (doubling).")


@dataclass(frozen=True)
class CoordinationSettings:
    mode: str = setting(
        STRING,
        "etcd-lock",
        "who takes a period's backup: one agent via an etcd lease lock, the raft leader's"
        " node (writes nothing), or every node.",
        choices=("etcd-lock", "leader-member", "none"),
    )
    lock_prefix: str = setting(
        STRING,
        "/etcd-backup-agent/locks",
        "etcd key prefix of the lock (`etcd-lock`); the agent's own: keys under it are left"
        " out of the keyspace figures, so it may not cover `/registry/`.",
    )
    lock_ttl: float = setting(DURATION, 60.0, "lease TTL of the lock.", allow_zero=False)


@dataclass(frozen=True)
class RetentionSettings:
    keep_last: int = setting(INT, 0, "keep the newest N backups.", example="24")
    keep_hourly: int = setting(
        INT, 0, "keep the newest backup of each of the last N hours.", active=False
    )
    keep_daily: int = setting(
        INT, 0, "keep the newest backup of each of the last N days.", example="7"
    )
    keep_weekly: int = setting(
        INT, 0, "keep the newest backup of each of the last N ISO weeks.", example="4"
    )
    keep_monthly: int = setting(
        INT, 0, "keep the newest backup of each of the last N months.", example="6"
    )
    keep_yearly: int = setting(
        INT, 0, "keep the newest backup of each of the last N years.", active=False
    )
    keep_within: float = setting(
        DURATION,
        0.0,
        "keep every backup younger than this (0 = off).",
        example='"2d"',
        active=False,
    )

    @property
    def empty(self) -> bool:
        return not any(
            (
                self.keep_last,
                self.keep_hourly,
                self.keep_daily,
                self.keep_weekly,
                self.keep_monthly,
                self.keep_yearly,
                self.keep_within,
            )
        )


@dataclass(frozen=True)
class MetricsSettings:
    enabled: bool = setting(BOOL, True, "serve `/metrics` and `/healthz`.")
    listen: str = setting(
        STRING,
        "127.0.0.1:9471",
        "address of the metrics server (restart to change); keep it on loopback or a"
        " private interface.",
        type_doc='`"HOST:PORT"`',
    )


@dataclass(frozen=True)
class ControlSettings:
    socket: Path = setting(
        PATH,
        Path("/run/etcd-backup-agent/agent.sock"),
        "unix socket of `etcd-backupctl` (restart to change; at most 107 bytes).",
    )
    group: str | None = setting(
        STRING,
        None,
        "group allowed to use the socket (mode 0660 instead of 0600).",
        example='"etcd-backup"',
        active=False,
    )
    max_connections: int = setting(
        INT, 64, "concurrent socket connections.", minimum=1, maximum=4096
    )
    idle_timeout: float = setting(
        DURATION, 30.0, "close idle socket connections after this.", allow_zero=False
    )
    max_request_bytes: int = setting(
        SIZE, 65536, "largest request accepted on the socket.", example="65536"
    )


@dataclass(frozen=True)
class RestoreSettings:
    engine: str = setting(
        STRING,
        "native",
        "what writes the restored data dir: the agent itself (no etcd binaries needed) or"
        " `etcdutl snapshot restore` (docs/restore.md).",
        choices=("native", "etcdutl"),
    )
    etcdutl: str = setting(
        STRING,
        "etcdutl",
        'etcdutl binary for `engine = "etcdutl"` (PATH lookup when not absolute).',
    )
    manifests_dir: Path = setting(
        PATH,
        Path("/etc/kubernetes/manifests"),
        "kubeadm static pod manifests (guided restore, `--apply`).",
    )
    etcd_config: Path = setting(
        PATH, Path("/etc/etcd/etcd.conf.yml"), "systemd etcd config file (guided restore)."
    )
    work_dir: Path | None = setting(
        PATH,
        None,
        "scratch space for downloads, decryption and drills.",
        default_doc="the spool dir",
        example='"/var/lib/etcd-backup-agent/restore"',
        active=False,
    )
    reset_snapshot_dir: Path | None = setting(
        PATH,
        None,
        "where `--layout k3s` or `--layout rke2` puts the snapshot (default"
        " `/var/lib/rancher/k3s/server/db/snapshots`,"
        " `/var/lib/rancher/rke2/server/db/snapshots`).",
        default_doc="the layout's",
        example='"/var/lib/rancher/k3s/server/db/snapshots"',
        active=False,
    )


@dataclass(frozen=True)
class DrillSettings:
    interval: float = setting(DURATION, 0.0, "period of the daemon's restore drills (0 = off).")
    identity_file: Path | None = setting(
        PATH,
        None,
        'age identity for drills of stored backups ("full" drills of the newest stored'
        " backup); without it the daemon drills each new backup's spooled plaintext"
        " snapshot. A trade-off: see docs/drill.md.",
        example='"/etc/etcd-backup-agent/drill-identity.txt"',
        **_READABLE,
    )
    etcd: str = setting(
        STRING,
        "etcd",
        "etcd binary for full drills (PATH lookup when not absolute); a bare name found"
        " nowhere means native drills (no etcd needed), a path that is not executable fails"
        " the drill. The drill etcd is read with `[etcd] username`/`password_file`.",
    )
    sample_keys: int = setting(INT, 100, "keys read back from the drill etcd.")


@dataclass(frozen=True)
class BundleSettings:
    """The control-plane bundle (docs/bundle.md); paths are absolute paths on the node."""

    enabled: bool | None = setting(
        BOOL,
        None,  # None: on when a known layout is detected
        "seal a bundle with each backup.",
        default_doc="on when a layout is detected (or `paths` given)",
        example="true",
        active=False,
    )
    layout: str = setting(
        STRING,
        "auto",
        "which default paths to collect; `auto` detects the node's layout, `none` collects"
        " only `paths`.",
        choices=("auto", "kubeadm", "k3s", "rke2", "none"),
    )
    root: Path = setting(
        PATH,
        Path("/"),
        "where the node's `/` is: every path is read below it, and detection looks there"
        " (for tests and chroots; leave it at `/`); must be an existing directory.",
        active=False,
    )
    data_dir: str = setting(
        STRING,
        "",
        "k3s/RKE2 data dir (`--data-dir` of the server).",
        type_doc="absolute path",
        default_doc="`/var/lib/rancher/k3s` or `/var/lib/rancher/rke2`",
        example='"/var/lib/rancher/k3s"',
        active=False,
    )
    paths: tuple[str, ...] = setting(
        STRINGS,
        (),
        "extra files or directories; a missing one is a warning.",
        type_doc="list of absolute paths",
        example='["/etc/kubernetes/admin.conf"]',
        active=False,
    )
    exclude: tuple[str, ...] = setting(
        STRINGS,
        (),
        "skipped paths: a glob with a `/` matches the whole path, one without matches the"
        ' name (`"*.old"`).',
        type_doc="list of globs",
        example='["*.old"]',
        active=False,
    )
    max_bytes: int = setting(
        SIZE,
        64 * MiB,
        "largest bundle (file contents); a larger one fails the bundle, not the backup.",
    )


@dataclass(frozen=True)
class InspectSettings:
    """[inspect]: the keyspace analysis (every backup, and inspect/diff/extract)."""

    on_backup: bool = setting(
        BOOL,
        True,
        "analyze every backup after verification; a failed analysis is logged and never"
        " fails the backup.",
        active=False,
    )
    prefixes: tuple[str, ...] = setting(
        STRINGS,
        ("/registry/",),
        "key prefixes of Kubernetes objects (the apiserver's `--etcd-prefix`); OpenShift:"
        ' `["/kubernetes.io/", "/openshift.io/"]`. Other keys are counted as'
        " `(non-kubernetes)`.",
        active=False,
    )
    top_resources: int = setting(
        INT,
        20,
        "resources (by bytes) kept in the manifest summary and exported as metric labels;"
        " the rest are summed as `(other)`. Fixes the metrics' cardinality.",
        minimum=1,
        maximum=200,
        active=False,
    )
    top_objects: int = setting(
        INT, 20, "largest objects listed by `inspect`.", maximum=1000, active=False
    )
    top_namespaces: int = setting(
        INT,
        10,
        "largest namespaces listed per resource by `inspect`.",
        maximum=1000,
        active=False,
    )
    memory_budget: int = setting(
        SIZE,
        64 * MiB,
        "memory for sorting revisions by key; beyond it sorted runs are spilled to the work"
        " dir. At least 1MiB.",
        active=False,
    )
    work_dir: Path | None = setting(
        PATH,
        None,
        "where spill files go (private temporary dir, removed afterwards); falls back to the"
        " system temp dir when the spool is not writable.",
        default_doc="the spool dir",
        example='"/var/lib/etcd-backup-agent/spool"',
        active=False,
    )


@dataclass(frozen=True)
class DaemonSettings:
    shutdown_grace: float = setting(
        DURATION,
        60.0,
        "on SIGTERM, how long a running backup may continue before it is cancelled.",
    )


@dataclass(frozen=True)
class LogSettings:
    level: str = setting(
        STRING, "info", "log level.", choices=("debug", "info", "warning", "error")
    )
    format: str = setting(
        STRING,
        "auto",
        "console on a TTY, JSON lines otherwise (`auto`); every event names its `component`"
        " (`daemon`, `pipeline`, `store`, `control`, ...).",
        choices=("auto", "json", "console"),
    )


@dataclass(frozen=True)
class Settings:
    source: Path | None = None
    # [cluster]
    cluster: str = setting(
        STRING,
        "default",
        "cluster name used in object keys (`<prefix>/<name>/...`); 1-63 letters, digits,"
        " `.`, `_`, `-`.",
        key="name",
        example='"prod-eu1"',
    )
    node: str = field(
        default_factory=socket.gethostname,
        metadata={
            "opt": Opt(
                STRING,
                "this node's name in backup ids; same character rules as `name`.",
                default_doc="the host name",
                example='"cp-1"',
                active=False,
            )
        },
    )
    etcd: EtcdSettings = field(default_factory=EtcdSettings)
    encryption: EncryptionSettings = field(default_factory=EncryptionSettings)
    compression: CompressionSettings = field(default_factory=CompressionSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    spool: SpoolSettings = field(default_factory=SpoolSettings)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    coordination: CoordinationSettings = field(default_factory=CoordinationSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    control: ControlSettings = field(default_factory=ControlSettings)
    restore: RestoreSettings = field(default_factory=RestoreSettings)
    drill: DrillSettings = field(default_factory=DrillSettings)
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    inspect: InspectSettings = field(default_factory=InspectSettings)
    log: LogSettings = field(default_factory=LogSettings)
    bundle: BundleSettings = field(default_factory=BundleSettings)
