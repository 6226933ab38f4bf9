"""The Manifest value: what one stored backup is; object naming; JSON in and out.

Layout (a contract; restore and retention depend on it)::

    <prefix>/<cluster>/<id>.db.zst.age   the sealed snapshot (zstd, then age)
    <prefix>/<cluster>/<id>.json         its manifest, written last

with ``<id> = <YYYYMMDDTHHMMSSZ>-r<revision>-<node>``. A backup exists only when its
manifest exists.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from .bundle.record import BundleRecord
from .keyspace.summary import KeyspaceSummary

FORMAT_VERSION = 1
OBJECT_SUFFIX = ".db.zst.age"
MANIFEST_SUFFIX = ".json"
_ID = re.compile(r"^(\d{8}T\d{6}Z)-r(\d+)-([A-Za-z0-9._-]+)$")


def backup_id(created_at: datetime, revision: int, node: str) -> str:
    """The id of a backup: UTC timestamp, etcd revision, node name."""
    return f"{created_at.astimezone(UTC):%Y%m%dT%H%M%SZ}-r{revision}-{node}"


def parse_id(text: str) -> tuple[datetime, int, str] | None:
    """Split an id into (created_at, revision, node); None when it is not an id."""
    m = _ID.match(text)
    if not m:
        return None
    ts = datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return ts, int(m.group(2)), m.group(3)


def cluster_prefix(cluster: str) -> str:
    """Key prefix (relative to the store root) of one cluster's backups."""
    return f"{cluster}/"


def object_key(cluster: str, bid: str) -> str:
    return f"{cluster}/{bid}{OBJECT_SUFFIX}"


def manifest_key(cluster: str, bid: str) -> str:
    return f"{cluster}/{bid}{MANIFEST_SUFFIX}"


def format_time(ts: datetime) -> str:
    """RFC 3339 UTC with a Z, second precision."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# A manifest with a wrongly typed field (say ``"revision": "many"``) is invalid, not a backup.
_TYPE_CHECKS: dict[str, Any] = {
    "str": lambda v: isinstance(v, str),
    "int": _is_int,
    "bool": lambda v: isinstance(v, bool),
    "float": lambda v: _is_int(v) or isinstance(v, float),
    "int | None": lambda v: v is None or _is_int(v),
    "str | None": lambda v: v is None or isinstance(v, str),
}


@dataclass(frozen=True)
class Compression:
    algorithm: str = "zstd"
    level: int = 3


@dataclass(frozen=True)
class Encryption:
    format: str = "age"
    recipients: tuple[str, ...] = ()


@dataclass(frozen=True)
class Manifest:
    """Everything known about one stored backup. Plaintext; never holds a secret."""

    id: str
    object: str
    created_at: str
    cluster: str
    node: str
    revision: int
    db_size: int
    snapshot_sha256: str
    object_size: int
    object_sha256: str
    etcd_endpoint: str = ""
    etcd_version: str = ""
    etcd_member_id: str = ""
    etcd_cluster_id: str = ""
    source: str = "snapshot"
    hash: int | None = None
    total_keys: int | None = None
    total_size: int | None = None
    status_rules: str | None = None
    storage_version: str | None = None
    verified: bool = False
    verifier_version: str | None = None
    compressed_size: int | None = None
    compression: Compression = field(default_factory=Compression)
    encryption: Encryption = field(default_factory=Encryption)
    object_lock_mode: str | None = None
    retain_until: str | None = None
    agent_version: str = ""
    duration_seconds: float = 0.0
    keyspace: KeyspaceSummary | None = None
    format_version: int = FORMAT_VERSION
    # the control-plane bundle sealed beside the snapshot (bundle/); None in older manifests
    bundle: BundleRecord | None = None
    # what asked for it: "schedule", "request" (etcd-backupctl backup) or "command" (the
    # one-shot etcd-backup-agent backup); None in older manifests
    trigger: str | None = None

    @property
    def created(self) -> datetime:
        return parse_time(self.created_at)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["encryption"]["recipients"] = list(self.encryption.recipients)
        if self.bundle is None:
            del d["bundle"]
        if d["keyspace"] is None:
            del d["keyspace"]  # optional: absent in manifests without an analysis
        if d["trigger"] is None:
            del d["trigger"]
        order = ["format_version", "id", "object", "created_at"]
        return {k: d[k] for k in order} | {k: v for k, v in d.items() if k not in order}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        if not isinstance(data, dict):
            raise ValueError("manifest is not a JSON object")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(f"unsupported manifest format_version {version!r}")
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        comp = kwargs.get("compression") or {}
        enc = kwargs.get("encryption") or {}
        kwargs["compression"] = Compression(
            algorithm=str(comp.get("algorithm", "zstd")), level=int(comp.get("level", 3))
        )
        kwargs["encryption"] = Encryption(
            format=str(enc.get("format", "age")),
            recipients=tuple(str(r) for r in enc.get("recipients", ())),
        )
        if kwargs.get("bundle") is not None:
            kwargs["bundle"] = BundleRecord.from_dict(kwargs["bundle"])
        kwargs["keyspace"] = KeyspaceSummary.from_dict(kwargs.get("keyspace"))
        try:
            m = cls(**kwargs)
        except TypeError as exc:
            raise ValueError(f"manifest is missing fields: {exc}") from None
        for f in fields(cls):
            ok = _TYPE_CHECKS.get(str(f.type))
            if ok is not None and not ok(getattr(m, f.name)):
                raise ValueError(f"manifest field {f.name!r} is not of type {f.type}")
        return m

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"manifest is not valid JSON: {exc}") from None
        return cls.from_dict(data)
