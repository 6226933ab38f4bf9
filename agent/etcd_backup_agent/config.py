"""TOML configuration -> typed, validated settings.

Every key is declared once, on its settings dataclass field (``config_schema``): kind,
default, bounds, doc line and example value. That declaration drives this loader, the
reference (docs/config.md) and the shipped example (config/example.toml); both are rendered
by ``config_reference`` and tests check the files against it. This module adds what one key
cannot say alone: the checks across keys of a table.

Every problem names the file, the key path and what is expected; unknown keys are
errors, so typos never silently fall back to defaults. Secrets are never read from
the TOML itself: only paths to files that hold them.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

from .config_reader import Reader, Section
from .config_schema import (
    EXAMPLE_RECIPIENT,
    BundleSettings,
    CompressionSettings,
    ControlSettings,
    CoordinationSettings,
    DaemonSettings,
    DrillSettings,
    EncryptionSettings,
    EtcdSettings,
    InspectSettings,
    Kind,
    LogSettings,
    MetricsSettings,
    MiB,
    Opt,
    RestoreSettings,
    RetentionSettings,
    S3Settings,
    ScheduleSettings,
    Settings,
    SpoolSettings,
    StoreSettings,
    default_of,
    opt_of,
)
from .errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "EXAMPLE_RECIPIENT",
    "TABLES",
    "BundleSettings",
    "CompressionSettings",
    "ControlSettings",
    "CoordinationSettings",
    "DaemonSettings",
    "DrillSettings",
    "EncryptionSettings",
    "EtcdSettings",
    "InspectSettings",
    "LogSettings",
    "MetricsSettings",
    "RestoreSettings",
    "RetentionSettings",
    "S3Settings",
    "ScheduleSettings",
    "Settings",
    "SpoolSettings",
    "StoreSettings",
    "Table",
    "accepted_keys",
    "from_dict",
    "load",
    "read_recipients_file",
    "read_secret_file",
    "split_listen",
]

DEFAULT_CONFIG_PATH = Path("/etc/etcd-backup-agent/config.toml")

_AGE_RECIPIENT = re.compile(r"^age1[02-9ac-hj-np-z]{58}$")
_CLUSTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def read_recipients_file(path: Path) -> list[str]:
    """Return the recipients listed in ``path``: one per line, ``#`` starts a comment."""
    out = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            out.append(line)
    return out


def _read_key(s: Section, name: str, o: Opt, default: Any) -> Any:
    match o.kind:
        case Kind.STRING:
            return s.string(name, default, o.choices)
        case Kind.BOOL if default is None:
            return s._get(name, None, lambda v: v if isinstance(v, bool) else None, "true or false")
        case Kind.BOOL:
            return s.boolean(name, default)
        case Kind.INT:
            return s.integer(name, default, o.minimum, o.maximum)
        case Kind.SIZE:
            return s.size(name, default)
        case Kind.DURATION:
            return s.duration(name, default, o.allow_zero)
        case Kind.STRINGS:
            return s.str_list(name, default)
        case Kind.PATH:
            return s.path_(name, default, o.must_read)


def _read_table(s: Section, cls: type[Any]) -> dict[str, Any]:
    """Every declared key of ``cls`` read from ``s``, by field name."""
    values: dict[str, Any] = {}
    for f in fields(cls):
        o = opt_of(f)
        if o is not None:
            values[f.name] = _read_key(s, o.key or f.name, o, default_of(f))
    return values


Values = dict[str, Any]


def _check_cluster(s: Section, v: Values) -> None:
    for field_name, key in (("cluster", "name"), ("node", "node")):
        if not _CLUSTER_NAME.match(v[field_name]):
            s.problem(key, "expected 1-63 letters, digits, '.', '_' or '-'")


def _check_etcd(s: Section, v: Values) -> None:
    if not v["endpoints"]:
        s.problem("endpoints", "expected at least one URL such as 'https://127.0.0.1:2379'")
    for url in v["endpoints"]:
        if not re.match(r"^(https?://)?[^/\s:]+(:\d+)?/?$", url) and not re.match(
            r"^(https?://)?\[[0-9a-fA-F:]+\](:\d+)?/?$", url
        ):
            s.problem("endpoints", f"expected URLs such as 'https://127.0.0.1:2379', got {url!r}")
    if (v["cert_file"] is None) != (v["key_file"] is None):
        s.problem("cert_file", "cert_file and key_file must be given together")
    if v["username"] is not None and v["password_file"] is None:
        s.problem("password_file", "required when username is set (a file holding the password)")
    if v["password_file"] is not None and v["username"] is None:
        s.problem("username", "required when password_file is set")


def _check_encryption(s: Section, v: Values) -> None:
    recipients = list(v["recipients"])
    rfile = v["recipients_file"]
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
    v["recipients"] = tuple(dict.fromkeys(recipients))


def _check_store(s: Section, v: Values) -> None:
    if s.has("s3") or v["type"] == "s3":
        sub = s.sub("s3")
        values = _read_table(sub, S3Settings)
        _check_s3(sub, values, required=v["type"] == "s3")
        sub.finish()
        v["s3"] = S3Settings(**values)


def _check_s3(s: Section, v: Values, required: bool) -> None:
    if required and not (3 <= len(v["bucket"]) <= 63):
        s.problem("bucket", "expected a bucket name of 3-63 characters")
    v["prefix"] = v["prefix"].strip("/")
    if v["object_lock_mode"] is not None and v["object_lock_days"] == 0:
        s.problem("object_lock_days", "required (> 0) when object_lock_mode is set")
    if v["kms_key_id"] is not None and v["sse"] != "aws:kms":
        s.problem("kms_key_id", "only valid with sse = 'aws:kms'")
    if v["multipart_chunk_size"] < 5 * MiB:
        s.problem("multipart_chunk_size", "expected at least 5MiB (the S3 minimum part size)")


_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


def _check_schedule(s: Section, v: Values) -> None:
    for t in v["at"]:
        if not _HHMM.match(t):
            s.problem("at", f"expected UTC times as 'HH:MM', got {t!r}")
    if v["jitter"] >= v["interval"]:
        s.problem("jitter", "must be smaller than interval")


def _check_metrics(s: Section, v: Values) -> None:
    if _split_listen(v["listen"]) is None:
        s.problem("listen", f"expected HOST:PORT such as '127.0.0.1:9471', got {v['listen']!r}")


# Kubernetes' key prefixes ([inspect] prefixes' usual values): the lock must not cover them
_CLUSTER_PREFIXES = ("/registry/", "/kubernetes.io/", "/openshift.io/")


def _check_coordination(s: Section, v: Values) -> None:
    # the keyspace figures and diff leave out every key under the lock prefix (the agent's
    # own), so a prefix covering the cluster's keys would silently hide them all
    prefix = v["lock_prefix"]
    own = prefix.rstrip("/") + "/"
    if (
        not prefix.startswith("/")
        or not prefix.strip("/")
        or any(p.startswith(own) for p in _CLUSTER_PREFIXES)
    ):
        s.problem(
            "lock_prefix",
            "expected a key prefix of the agent's own such as '/etcd-backup-agent/locks', "
            f"not one covering the cluster's keys, got {prefix!r}",
        )


def _check_inspect(s: Section, v: Values) -> None:
    prefixes = v["prefixes"]
    if not prefixes or any(not p.startswith("/") or not p.strip("/") for p in prefixes):
        s.problem("prefixes", "expected key prefixes such as ['/registry/', '/kubernetes.io/']")
    if v["memory_budget"] < MiB:
        s.problem("memory_budget", "expected at least 1MiB")


def _check_bundle(s: Section, v: Values) -> None:
    for key in ("paths", "data_dir"):
        for p in v["paths"] if key == "paths" else [v["data_dir"]] if v["data_dir"] else []:
            if not p.startswith("/"):
                s.problem(key, f"expected absolute paths, got {p!r}")
    if not v["root"].is_dir():  # else every path is "missing" and the bundle silently off
        s.problem("root", f"directory {str(v['root'])!r} does not exist")


@dataclass(frozen=True)
class Table:
    """One TOML table: its settings class, its cross-key checks and its reference prose."""

    name: str
    cls: type[Any]
    check: Callable[[Section, Values], None] | None = None
    intro: str = ""  # paragraph above the key table in docs/config.md
    nested: bool = False  # read by its parent table's check, not at the top level

    def declared(self) -> list[tuple[str, Opt, Any]]:
        """(TOML key, declaration, default) of every key, in declaration order."""
        out = []
        for f in fields(self.cls):
            o = opt_of(f)
            if o is not None:
                out.append((o.key or f.name, o, f.default if f.default is not MISSING else None))
        return out


TABLES: tuple[Table, ...] = (
    Table("cluster", Settings, _check_cluster),
    Table("etcd", EtcdSettings, _check_etcd),
    Table("encryption", EncryptionSettings, _check_encryption),
    Table("compression", CompressionSettings),
    Table("store", StoreSettings, _check_store),
    Table(
        "store.s3",
        S3Settings,
        intro='Read when `[store] type = "s3"` (or when the table is present). See docs/s3.md.',
        nested=True,
    ),
    Table("spool", SpoolSettings),
    Table("schedule", ScheduleSettings, _check_schedule),
    Table("coordination", CoordinationSettings, _check_coordination),
    Table(
        "retention",
        RetentionSettings,
        intro="A backup is kept when any rule keeps it; no rule at all keeps everything. The"
        " newest verified backup is never deleted; object-locked backups are skipped. See"
        " docs/retention.md.",
    ),
    Table("metrics", MetricsSettings, _check_metrics),
    Table("control", ControlSettings),
    Table("restore", RestoreSettings),
    Table("drill", DrillSettings, intro="See docs/drill.md."),
    Table("daemon", DaemonSettings),
    Table(
        "inspect",
        InspectSettings,
        _check_inspect,
        intro="The keyspace analysis (see [inspect.md](inspect.md)): computed on every backup"
        " after verification (its summary goes into the manifest and the"
        " `etcd_backup_keyspace_*` metrics), and on demand by `inspect`, `diff` and `extract`.",
    ),
    Table("log", LogSettings),
    Table(
        "bundle",
        BundleSettings,
        _check_bundle,
        intro="The control-plane bundle sealed beside each snapshot: PKI, static pod"
        " manifests, the encryption config and the k3s/RKE2 token (see docs/bundle.md)."
        " Paths are absolute paths on the node.",
    ),
)


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
    reader = Reader(file)
    root = Section(reader, "", data)
    settings: Values = {}
    for table in TABLES:
        if table.nested:
            continue
        s = root.sub(table.name)
        values = _read_table(s, table.cls)
        if table.check is not None:
            table.check(s, values)
        s.finish()
        if table.cls is Settings:
            settings.update(values)
        else:
            settings[table.name] = table.cls(**values)
    root.finish()
    if reader.problems:
        raise ConfigError(reader.problems)
    return Settings(source=file, **settings)


def accepted_keys() -> frozenset[str]:
    """Every key the loader accepts, dotted with its table ("store.s3.bucket")."""
    return frozenset(f"{t.name}.{key}" for t in TABLES for key, _, _ in t.declared())


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
