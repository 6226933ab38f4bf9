"""TOML configuration -> typed, validated settings.

Every problem names the file, the key path and what is expected; unknown keys are
errors, so typos never silently fall back to defaults. Secrets are never read from
the TOML itself: only paths to files that hold them.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

from .durations import parse_duration
from .errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/etcd-backup-agent/config.toml")

T = TypeVar("T")

# The placeholder in config/example.toml (age's documentation key): nobody holds its identity.
EXAMPLE_RECIPIENT = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
_AGE_RECIPIENT = re.compile(r"^age1[02-9ac-hj-np-z]{58}$")
_CLUSTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_SECRET_KEYS = {
    "aws_secret_access_key",
    "aws_access_key_id",
    "secret_access_key",
    "access_key_id",
    "secret_key",
    "access_key",
    "password",
    "aws_session_token",
    "session_token",
    "identity",
}


@dataclass(frozen=True)
class EtcdSettings:
    endpoints: tuple[str, ...] = ("http://127.0.0.1:2379",)
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    username: str | None = None
    password_file: Path | None = None
    snapshot_timeout: float = 3600.0
    dial_timeout: float = 10.0
    snapshot_rate_limit: int = 0


@dataclass(frozen=True)
class EncryptionSettings:
    recipients: tuple[str, ...] = ()


@dataclass(frozen=True)
class CompressionSettings:
    level: int = 3
    threads: int = 0


@dataclass(frozen=True)
class S3Settings:
    bucket: str = ""
    prefix: str = ""
    region: str | None = None
    endpoint_url: str | None = None
    addressing_style: str = "auto"
    ca_file: Path | None = None
    verify_tls: bool = True
    checksum: str = "when_required"
    storage_class: str | None = None
    sse: str = "none"
    kms_key_id: str | None = None
    object_lock_mode: str | None = None
    object_lock_days: int = 0
    multipart_chunk_size: int = 16 * 1024 * 1024
    max_concurrency: int = 2
    credentials_file: Path | None = None
    profile: str | None = None
    multipart_abort_after: float = 86400.0
    retry_max_time: float = 300.0


@dataclass(frozen=True)
class StoreSettings:
    type: str = "local"
    path: Path = Path("/var/lib/etcd-backup-agent/backups")
    s3: S3Settings | None = None


@dataclass(frozen=True)
class SpoolSettings:
    dir: Path = Path("/var/lib/etcd-backup-agent/spool")
    max_bytes: int = 0
    keep_unuploaded: bool = False


@dataclass(frozen=True)
class ScheduleSettings:
    interval: float = 3600.0
    jitter: float = 0.0
    at: tuple[str, ...] = ()
    retry_attempts: int = 3
    retry_backoff: float = 30.0


@dataclass(frozen=True)
class CoordinationSettings:
    mode: str = "etcd-lock"
    lock_prefix: str = "/etcd-backup-agent/locks"
    lock_ttl: float = 60.0


@dataclass(frozen=True)
class RetentionSettings:
    keep_last: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0
    keep_within: float = 0.0

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
    enabled: bool = True
    listen: str = "127.0.0.1:9471"


@dataclass(frozen=True)
class ControlSettings:
    socket: Path = Path("/run/etcd-backup-agent/agent.sock")
    group: str | None = None
    max_connections: int = 64
    idle_timeout: float = 30.0
    max_request_bytes: int = 65536


@dataclass(frozen=True)
class RestoreSettings:
    engine: str = "native"
    etcdutl: str = "etcdutl"
    manifests_dir: Path = Path("/etc/kubernetes/manifests")
    etcd_config: Path = Path("/etc/etcd/etcd.conf.yml")
    work_dir: Path | None = None
    reset_snapshot_dir: Path | None = None


@dataclass(frozen=True)
class DrillSettings:
    interval: float = 0.0
    identity_file: Path | None = None
    etcd: str = "etcd"
    sample_keys: int = 100


@dataclass(frozen=True)
class BundleSettings:
    """The control-plane bundle (docs/bundle.md); paths are absolute paths on the node."""

    enabled: bool | None = None  # None: on when a known layout is detected
    layout: str = "auto"
    root: Path = Path("/")  # where the node's "/" is (tests point it at a temp tree)
    data_dir: str = ""  # k3s/RKE2 data dir; "" = /var/lib/rancher/<layout>
    paths: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    max_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True)
class InspectSettings:
    """[inspect]: the keyspace analysis (every backup, and inspect/diff/extract)."""

    on_backup: bool = True
    prefixes: tuple[str, ...] = ("/registry/",)
    top_resources: int = 20
    top_objects: int = 20
    top_namespaces: int = 10
    memory_budget: int = 64 * 1024 * 1024
    work_dir: Path | None = None


@dataclass(frozen=True)
class DaemonSettings:
    shutdown_grace: float = 60.0


@dataclass(frozen=True)
class LogSettings:
    level: str = "info"
    format: str = "auto"


@dataclass(frozen=True)
class Settings:
    source: Path | None = None
    cluster: str = "default"
    node: str = field(default_factory=socket.gethostname)
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


INT64_MAX = 2**63 - 1
# longer durations overflow datetime arithmetic in scheduling and retention
MAX_DURATION = 100 * 365 * 86400.0


class _Section:
    """Typed reads from one TOML table, collecting problems instead of raising."""

    def __init__(self, reader: _Reader, path: str, table: dict[str, Any]) -> None:
        self.reader = reader
        self.path = path
        self.table = table
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def problem(self, name: str, message: str) -> None:
        self.reader.problem(self.key(name), message)

    def _get(self, name: str, default: T, check: Callable[[Any], T | None], expected: str) -> T:
        self.seen.add(name)
        self.reader.accepted.add(self.key(name))
        if name not in self.table:
            return default
        raw = self.table[name]
        value = check(raw)
        if value is None:
            self.problem(name, f"expected {expected}, got {_describe(raw)}")
            return default
        return value

    def string(self, name: str, default: T, choices: tuple[str, ...] = ()) -> str | T:
        def check(v: Any) -> str | None:
            return v if isinstance(v, str) else None

        expected = "one of " + ", ".join(repr(c) for c in choices) if choices else "a string"
        value: str | T = self._get(name, cast(Any, default), check, "a string")
        if choices and isinstance(value, str) and value not in choices:
            self.problem(name, f"expected {expected}, got {value!r}")
            return default
        return value

    def boolean(self, name: str, default: bool) -> bool:
        return self._get(
            name, default, lambda v: v if isinstance(v, bool) else None, "true or false"
        )

    def integer(self, name: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
        def check(v: Any) -> int | None:
            return v if isinstance(v, int) and not isinstance(v, bool) else None

        value = self._get(name, default, check, "an integer")
        # TOML integers are 64-bit; beyond that a value is a typo, not a setting
        if value < minimum or value > (INT64_MAX if maximum is None else maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            bound += "" if maximum is not None or value < minimum else " (at most 2**63-1)"
            self.problem(name, f"expected an integer {bound}, got {value}")
            return default
        return value

    def size(self, name: str, default: int) -> int:
        """A byte size: an integer, or a string such as "512MiB", "2GB"."""

        def check(v: Any) -> int | None:
            if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= INT64_MAX:
                return v
            if isinstance(v, str):
                size = _parse_size(v)
                return size if size is not None and size <= INT64_MAX else None
            return None

        return self._get(name, default, check, 'a byte size such as 1073741824 or "1GiB"')

    def duration(self, name: str, default: float, allow_zero: bool = True) -> float:
        def check(v: Any) -> float | None:
            if not isinstance(v, str):
                return None
            try:
                seconds = parse_duration(v)
            except ValueError:
                return None
            if (seconds == 0 and not allow_zero) or seconds > MAX_DURATION:
                return None
            return seconds

        expected = 'a duration string such as "90s", "15m", "1h", "7d" (at most 100 years)'
        if not allow_zero:
            expected += " (greater than zero)"
        return self._get(name, default, check, expected)

    def str_list(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        def check(v: Any) -> tuple[str, ...] | None:
            if isinstance(v, list) and all(isinstance(x, str) for x in v):
                return tuple(v)
            return None

        return self._get(name, default, check, "a list of strings")

    def path_(self, name: str, default: Path | None, must_read: bool = False) -> Path | None:
        raw = self._get(name, None, lambda v: v if isinstance(v, str) and v else None, "a path")
        if raw is None:
            return default
        path = Path(raw)
        if not path.is_absolute() and self.reader.file is not None:
            path = self.reader.file.parent / path
        if must_read:
            if not path.is_file():
                self.problem(name, f"file {str(path)!r} does not exist")
            elif not os.access(path, os.R_OK):
                self.problem(name, f"file {str(path)!r} is not readable")
        return path

    def sub(self, name: str) -> _Section:
        self.seen.add(name)
        raw = self.table.get(name, {})
        if not isinstance(raw, dict):
            self.problem(name, f"expected a table [{self.key(name)}], got {_describe(raw)}")
            raw = {}
        return _Section(self.reader, self.key(name), raw)

    def has(self, name: str) -> bool:
        return name in self.table

    def finish(self) -> None:
        for name in self.table:
            if name in self.seen:
                continue
            if name.lower() in _SECRET_KEYS:
                self.problem(
                    name,
                    "secrets are never accepted inline in the config; put it in a file readable "
                    "only by root and name that file (e.g. password_file, credentials_file, "
                    "identity_file)",
                )
            else:
                self.problem(name, "unknown key (check the spelling; see config/example.toml)")


class _Reader:
    def __init__(self, file: Path | None) -> None:
        self.file = file
        self.problems: list[str] = []
        self.accepted: set[str] = set()  # dotted keys of every value read

    def problem(self, key: str, message: str) -> None:
        where = str(self.file) if self.file is not None else "<config>"
        self.problems.append(f"{where}: {key}: {message}")


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)


def _parse_size(text: str) -> int | None:
    m = _SIZE.match(text)
    if not m:
        return None
    number = float(m.group(1))
    unit = (m.group(2) or "b").lower().rstrip("b") or "b"
    factors = {"b": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}
    factors |= {"ki": 1024, "mi": 1024**2, "gi": 1024**3, "ti": 1024**4}
    if unit not in factors:
        return None
    return int(number * factors[unit])


def read_recipients_file(path: Path) -> list[str]:
    """Return the recipients listed in ``path``: one per line, ``#`` starts a comment."""
    out = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            out.append(line)
    return out


def load(path: Path | str | None = None) -> Settings:
    """Load and validate ``path``; raise ConfigError listing every problem."""
    file = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    try:
        text = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError([f"{file}: file does not exist (pass --config FILE)"]) from None
    except OSError as exc:
        raise ConfigError([f"{file}: cannot read: {exc.strerror}"]) from None
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{file}: not valid TOML: {exc}"]) from None
    return from_dict(data, file)


def from_dict(data: dict[str, Any], file: Path | None = None) -> Settings:
    """Validate a parsed TOML document; raise ConfigError listing every problem."""
    return _parse(data, _Reader(file))


def accepted_keys() -> frozenset[str]:
    """Every key the loader accepts, dotted with its table ("store.s3.bucket").

    Found by running the loader itself (with the optional [store.s3] table present), so
    the list cannot drift from the code; docs/config.md is checked against it.
    """
    reader = _Reader(None)
    with contextlib.suppress(ConfigError):  # required keys are missing; every key was read
        _parse({"store": {"s3": {}}}, reader)
    return frozenset(reader.accepted)


def _parse(data: dict[str, Any], reader: _Reader) -> Settings:
    file = reader.file
    root = _Section(reader, "", data)

    cluster_s = root.sub("cluster")
    cluster = cluster_s.string("name", "default")
    if not _CLUSTER_NAME.match(cluster):
        cluster_s.problem("name", "expected 1-63 letters, digits, '.', '_' or '-'")
    node = cluster_s.string("node", socket.gethostname())
    if not _CLUSTER_NAME.match(node):
        cluster_s.problem("node", "expected 1-63 letters, digits, '.', '_' or '-'")
    cluster_s.finish()

    etcd = _etcd(root.sub("etcd"))
    encryption = _encryption(root.sub("encryption"))

    comp_s = root.sub("compression")
    compression = CompressionSettings(
        level=comp_s.integer("level", 3, minimum=1, maximum=19),
        threads=comp_s.integer("threads", 0, minimum=0, maximum=64),
    )
    comp_s.finish()

    store = _store(root.sub("store"))

    spool_s = root.sub("spool")
    spool = SpoolSettings(
        dir=spool_s.path_("dir", SpoolSettings.dir) or SpoolSettings.dir,
        max_bytes=spool_s.size("max_bytes", 0),
        keep_unuploaded=spool_s.boolean("keep_unuploaded", False),
    )
    spool_s.finish()

    schedule = _schedule(root.sub("schedule"))

    coord_s = root.sub("coordination")
    coordination = CoordinationSettings(
        mode=coord_s.string("mode", "etcd-lock", ("etcd-lock", "leader-member", "none")),
        lock_prefix=coord_s.string("lock_prefix", CoordinationSettings.lock_prefix),
        lock_ttl=coord_s.duration("lock_ttl", 60.0, allow_zero=False),
    )
    coord_s.finish()

    ret_s = root.sub("retention")
    retention = RetentionSettings(
        keep_last=ret_s.integer("keep_last", 0),
        keep_hourly=ret_s.integer("keep_hourly", 0),
        keep_daily=ret_s.integer("keep_daily", 0),
        keep_weekly=ret_s.integer("keep_weekly", 0),
        keep_monthly=ret_s.integer("keep_monthly", 0),
        keep_yearly=ret_s.integer("keep_yearly", 0),
        keep_within=ret_s.duration("keep_within", 0.0),
    )
    ret_s.finish()

    met_s = root.sub("metrics")
    metrics = MetricsSettings(
        enabled=met_s.boolean("enabled", True),
        listen=met_s.string("listen", MetricsSettings.listen),
    )
    if _split_listen(metrics.listen) is None:
        met_s.problem(
            "listen", f"expected HOST:PORT such as '127.0.0.1:9471', got {metrics.listen!r}"
        )
    met_s.finish()

    ctl_s = root.sub("control")
    control = ControlSettings(
        socket=ctl_s.path_("socket", ControlSettings.socket) or ControlSettings.socket,
        group=ctl_s.string("group", None),
        max_connections=ctl_s.integer("max_connections", 64, minimum=1, maximum=4096),
        idle_timeout=ctl_s.duration("idle_timeout", 30.0, allow_zero=False),
        max_request_bytes=ctl_s.size("max_request_bytes", 65536),
    )
    ctl_s.finish()

    res_s = root.sub("restore")
    restore = RestoreSettings(
        engine=res_s.string("engine", "native", choices=("native", "etcdutl")),
        etcdutl=res_s.string("etcdutl", "etcdutl"),
        manifests_dir=res_s.path_("manifests_dir", RestoreSettings.manifests_dir)
        or RestoreSettings.manifests_dir,
        etcd_config=res_s.path_("etcd_config", RestoreSettings.etcd_config)
        or RestoreSettings.etcd_config,
        work_dir=res_s.path_("work_dir", None),
        reset_snapshot_dir=res_s.path_("reset_snapshot_dir", None),
    )
    res_s.finish()

    drill_s = root.sub("drill")
    drill = DrillSettings(
        interval=drill_s.duration("interval", 0.0),
        identity_file=drill_s.path_("identity_file", None, must_read=True),
        etcd=drill_s.string("etcd", "etcd"),
        sample_keys=drill_s.integer("sample_keys", 100, minimum=0),
    )
    drill_s.finish()

    daemon_s = root.sub("daemon")
    daemon = DaemonSettings(shutdown_grace=daemon_s.duration("shutdown_grace", 60.0))
    daemon_s.finish()

    inspect = _inspect(root.sub("inspect"))

    log_s = root.sub("log")
    log = LogSettings(
        level=log_s.string("level", "info", ("debug", "info", "warning", "error")),
        format=log_s.string("format", "auto", ("auto", "json", "console")),
    )
    log_s.finish()

    bundle = _bundle(root.sub("bundle"))

    root.finish()
    if reader.problems:
        raise ConfigError(reader.problems)
    return Settings(
        source=file,
        cluster=cluster,
        node=node,
        etcd=etcd,
        encryption=encryption,
        compression=compression,
        store=store,
        spool=spool,
        schedule=schedule,
        coordination=coordination,
        retention=retention,
        metrics=metrics,
        control=control,
        restore=restore,
        drill=drill,
        daemon=daemon,
        inspect=inspect,
        log=log,
        bundle=bundle,
    )


def _bundle(s: _Section) -> BundleSettings:
    def check_bool(v: Any) -> bool | None:
        return v if isinstance(v, bool) else None

    enabled: bool | None = s._get("enabled", None, check_bool, "true or false")
    layout = s.string("layout", "auto", ("auto", "kubeadm", "k3s", "rke2", "none"))
    paths = s.str_list("paths", ())
    data_dir = s.string("data_dir", "")
    for p in (*paths, *([data_dir] if data_dir else [])):
        if not p.startswith("/"):
            s.problem("paths" if p in paths else "data_dir", f"expected absolute paths, got {p!r}")
    root = s.path_("root", Path("/")) or Path("/")
    if not root.is_dir():  # else every path is "missing" and the bundle silently off
        s.problem("root", f"directory {str(root)!r} does not exist")
    settings = BundleSettings(
        enabled=enabled,
        layout=layout,
        root=root,
        data_dir=data_dir,
        paths=paths,
        exclude=s.str_list("exclude", ()),
        max_bytes=s.size("max_bytes", BundleSettings.max_bytes),
    )
    s.finish()
    return settings


def _inspect(s: _Section) -> InspectSettings:
    prefixes = s.str_list("prefixes", InspectSettings.prefixes)
    if not prefixes or any(not p.startswith("/") or not p.strip("/") for p in prefixes):
        s.problem("prefixes", "expected key prefixes such as ['/registry/', '/kubernetes.io/']")
        prefixes = InspectSettings.prefixes
    settings = InspectSettings(
        on_backup=s.boolean("on_backup", True),
        prefixes=prefixes,
        top_resources=s.integer("top_resources", 20, minimum=1, maximum=200),
        top_objects=s.integer("top_objects", 20, minimum=0, maximum=1000),
        top_namespaces=s.integer("top_namespaces", 10, minimum=0, maximum=1000),
        memory_budget=s.size("memory_budget", 64 * 1024 * 1024),
        work_dir=s.path_("work_dir", None),
    )
    if settings.memory_budget < 1024 * 1024:
        s.problem("memory_budget", "expected at least 1MiB")
    s.finish()
    return settings


def _etcd(s: _Section) -> EtcdSettings:
    endpoints = s.str_list("endpoints", EtcdSettings.endpoints)
    if not endpoints:
        s.problem("endpoints", "expected at least one URL such as 'https://127.0.0.1:2379'")
    for url in endpoints:
        if not re.match(r"^(https?://)?[^/\s:]+(:\d+)?/?$", url) and not re.match(
            r"^(https?://)?\[[0-9a-fA-F:]+\](:\d+)?/?$", url
        ):
            s.problem("endpoints", f"expected URLs such as 'https://127.0.0.1:2379', got {url!r}")
    ca = s.path_("ca_file", None, must_read=True)
    cert = s.path_("cert_file", None, must_read=True)
    key = s.path_("key_file", None, must_read=True)
    if (cert is None) != (key is None):
        s.problem("cert_file", "cert_file and key_file must be given together")
    username = s.string("username", None)
    password_file = s.path_("password_file", None, must_read=True)
    if username is not None and password_file is None:
        s.problem("password_file", "required when username is set (a file holding the password)")
    if password_file is not None and username is None:
        s.problem("username", "required when password_file is set")
    settings = EtcdSettings(
        endpoints=endpoints,
        ca_file=ca,
        cert_file=cert,
        key_file=key,
        username=username,
        password_file=password_file,
        snapshot_timeout=s.duration("snapshot_timeout", 3600.0, allow_zero=False),
        dial_timeout=s.duration("dial_timeout", 10.0, allow_zero=False),
        snapshot_rate_limit=s.size("snapshot_rate_limit", 0),
    )
    s.finish()
    return settings


def _encryption(s: _Section) -> EncryptionSettings:
    recipients = list(s.str_list("recipients", ()))
    rfile = s.path_("recipients_file", None, must_read=True)
    if rfile is not None and rfile.is_file() and os.access(rfile, os.R_OK):
        try:
            recipients += read_recipients_file(rfile)
        except (OSError, UnicodeDecodeError) as exc:
            s.problem("recipients_file", f"cannot read {str(rfile)!r}: {exc}")
    for r in recipients:
        if r.startswith("AGE-SECRET-KEY-"):
            s.problem(
                "recipients",
                "an age identity (AGE-SECRET-KEY-...) was given where a public recipient "
                "(age1...) is expected; keep identities off the node",
            )
        elif r == EXAMPLE_RECIPIENT:
            s.problem(
                "recipients",
                "this is the placeholder recipient from the example config: replace it with your "
                "own public key (create a key pair off the node with `etcd-backup-agent keygen`)",
            )
        elif not _AGE_RECIPIENT.match(r):
            s.problem(
                "recipients", f"expected age X25519 recipients ('age1' + 58 characters), got {r!r}"
            )
    if not recipients:
        s.problem(
            "recipients",
            "at least one age recipient is required (recipients = ['age1...'] or recipients_file); "
            "create one with `etcd-backup-agent keygen`",
        )
    s.finish()
    return EncryptionSettings(recipients=tuple(dict.fromkeys(recipients)))


def _store(s: _Section) -> StoreSettings:
    kind = s.string("type", "local", ("local", "s3"))
    path = s.path_("path", StoreSettings.path) or StoreSettings.path
    s3: S3Settings | None = None
    if s.has("s3") or kind == "s3":
        s3 = _s3(s.sub("s3"), required=kind == "s3")
    s.finish()
    return StoreSettings(type=kind, path=path, s3=s3)


def _s3(s: _Section, required: bool) -> S3Settings:
    bucket = s.string("bucket", "")
    if required and not (3 <= len(bucket) <= 63):
        s.problem("bucket", "expected a bucket name of 3-63 characters")
    prefix = s.string("prefix", "").strip("/")
    lock_mode = s.string("object_lock_mode", None, ("GOVERNANCE", "COMPLIANCE"))
    lock_days = s.integer("object_lock_days", 0, minimum=0, maximum=36500)
    if lock_mode is not None and lock_days == 0:
        s.problem("object_lock_days", "required (> 0) when object_lock_mode is set")
    sse = s.string("sse", "none", ("none", "AES256", "aws:kms"))
    kms = s.string("kms_key_id", None)
    if kms is not None and sse != "aws:kms":
        s.problem("kms_key_id", "only valid with sse = 'aws:kms'")
    chunk = s.size("multipart_chunk_size", 16 * 1024 * 1024)
    if chunk < 5 * 1024 * 1024:
        s.problem("multipart_chunk_size", "expected at least 5MiB (the S3 minimum part size)")
    settings = S3Settings(
        bucket=bucket,
        prefix=prefix,
        region=s.string("region", None),
        endpoint_url=s.string("endpoint_url", None),
        addressing_style=s.string("addressing_style", "auto", ("auto", "path", "virtual")),
        ca_file=s.path_("ca_file", None, must_read=True),
        verify_tls=s.boolean("verify_tls", True),
        checksum=s.string("checksum", "when_required", ("when_required", "when_supported")),
        storage_class=s.string("storage_class", None),
        sse=sse,
        kms_key_id=kms,
        object_lock_mode=lock_mode,
        object_lock_days=lock_days,
        multipart_chunk_size=chunk,
        max_concurrency=s.integer("max_concurrency", 2, minimum=1, maximum=64),
        credentials_file=s.path_("credentials_file", None, must_read=True),
        profile=s.string("profile", None),
        multipart_abort_after=s.duration("multipart_abort_after", 86400.0),
        retry_max_time=s.duration("retry_max_time", 300.0),
    )
    s.finish()
    return settings


_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


def _schedule(s: _Section) -> ScheduleSettings:
    at = s.str_list("at", ())
    for t in at:
        if not _HHMM.match(t):
            s.problem("at", f"expected UTC times as 'HH:MM', got {t!r}")
    interval = s.duration("interval", 3600.0, allow_zero=False)
    jitter = s.duration("jitter", 0.0)
    if jitter >= interval:
        s.problem("jitter", "must be smaller than interval")
    settings = ScheduleSettings(
        interval=interval,
        jitter=jitter,
        at=at,
        retry_attempts=s.integer("retry_attempts", 3, minimum=0, maximum=100),
        retry_backoff=s.duration("retry_backoff", 30.0),
    )
    s.finish()
    return settings


def _split_listen(listen: str) -> tuple[str, int] | None:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        return None
    return host.strip("[]"), int(port)


def split_listen(listen: str) -> tuple[str, int]:
    """Split a validated 'HOST:PORT' string."""
    parsed = _split_listen(listen)
    if parsed is None:
        raise ValueError(f"bad listen address {listen!r}")
    return parsed


def read_secret_file(path: Path) -> str:
    """Read a one-line secret (password) from ``path``, without its trailing newline."""
    return path.read_text(encoding="utf-8").rstrip("\r\n")
