"""The one checker of the suite's invariants, judged by stock tools, used after every fault.

After a fault the store must hold only complete backups: every manifest's object exists with
the manifest's size and sha256, decrypts with stock ``age -d``, decompresses with stock
``zstd -d``, and passes ``etcdutl snapshot status`` with the manifest's revision and hash.
Objects without a manifest (orphans) are returned so the test can check that the product
reports or sweeps them. A ``Ledger`` remembers the newest complete verified backup seen so
far: if it disappears while nothing newer and complete exists, a backup was lost.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tests.reliability import counters
from tests.servers import etcd_bin

OBJECT_SUFFIX = ".db.zst.age"
MANIFEST_SUFFIX = ".json"


class StoreView(Protocol):
    """Read-only access to a store, by key relative to its root (``<cluster>/<name>``)."""

    def listing(self) -> dict[str, int]: ...

    def read(self, key: str) -> bytes: ...


@dataclass
class LocalView:
    root: Path

    def listing(self) -> dict[str, int]:
        if not self.root.exists():
            return {}
        out: dict[str, int] = {}
        for p in self.root.rglob("*"):
            with contextlib.suppress(FileNotFoundError):  # pruned while we walk
                if p.is_file():
                    out[p.relative_to(self.root).as_posix()] = p.stat().st_size
        return out

    def read(self, key: str) -> bytes:
        return (self.root / key).read_bytes()


@dataclass
class S3View:
    client: Any  # a boto3 S3 client (tests only)
    bucket: str
    prefix: str = ""

    def listing(self) -> dict[str, int]:
        out: dict[str, int] = {}
        root = f"{self.prefix.strip('/')}/" if self.prefix.strip("/") else ""
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=root
        ):
            for item in page.get("Contents", []):
                out[item["Key"][len(root) :]] = int(item["Size"])
        return out

    def read(self, key: str) -> bytes:
        root = f"{self.prefix.strip('/')}/" if self.prefix.strip("/") else ""
        for attempt in range(10):  # a restarted SeaweedFS answers InternalError for a while
            try:
                body = self.client.get_object(Bucket=self.bucket, Key=root + key)["Body"]
                return bytes(body.read())
            except Exception as exc:
                if "NoSuchKey" in type(exc).__name__ or attempt == 9:
                    raise
                time.sleep(1)
        raise AssertionError("unreachable")


@dataclass(frozen=True)
class Backup:
    id: str
    created_at: str
    verified: bool
    revision: int


@dataclass
class StoreCheck:
    backups: list[Backup]  # complete ones, newest first
    orphans: list[str]
    leftovers: list[str]  # temporary files a store must never show

    @property
    def ids(self) -> list[str]:
        return [b.id for b in self.backups]


# objects already judged sound by the stock tools, by sha256 (the soak checks often)
_SOUND: dict[str, int] = {}


def stock_status(sealed: bytes, identity: Path, scratch: Path) -> dict[str, Any]:
    """Decrypt with ``age -d``, decompress with ``zstd -d``, ``etcdutl snapshot status``."""
    scratch.mkdir(parents=True, exist_ok=True)
    db = scratch / "check.db"
    db.unlink(missing_ok=True)
    age = subprocess.run(
        ["age", "-d", "-i", str(identity)], input=sealed, capture_output=True, timeout=120
    )
    if age.returncode != 0:
        raise AssertionError(f"age -d failed: {age.stderr.decode(errors='replace')[:300]}")
    z = subprocess.run(
        ["zstd", "-d", "-q", "-o", str(db)], input=age.stdout, capture_output=True, timeout=120
    )
    if z.returncode != 0:
        raise AssertionError(f"zstd -d failed: {z.stderr.decode(errors='replace')[:300]}")
    st = subprocess.run(
        [etcd_bin("etcdutl"), "snapshot", "status", str(db), "-w", "json"],
        capture_output=True,
        timeout=120,
    )
    db.unlink(missing_ok=True)
    if st.returncode != 0:
        raise AssertionError(f"etcdutl snapshot status failed: {st.stderr.decode()[:300]}")
    return json.loads(st.stdout)  # type: ignore[no-any-return]


def check_store(
    view: StoreView,
    identity: Path,
    scratch: Path,
    cluster: str = "test",
    ledger: Ledger | None = None,
) -> StoreCheck:
    """Assert the store holds only complete, stock-decryptable, etcdutl-sound backups."""
    keys = view.listing()
    prefix = f"{cluster}/"
    problems: list[str] = []
    backups: list[Backup] = []
    manifests = sorted(
        k
        for k in keys
        if k.startswith(prefix) and k.endswith(MANIFEST_SUFFIX) and "/" not in k[len(prefix) :]
    )
    ids = {k[len(prefix) : -len(MANIFEST_SUFFIX)] for k in manifests}
    for key in manifests:
        bid = key[len(prefix) : -len(MANIFEST_SUFFIX)]
        try:
            m = json.loads(view.read(key))
        except Exception as exc:
            if key not in view.listing():
                continue  # retention deleted it after the listing: not a problem
            problems.append(f"{key}: manifest unreadable: {exc}")
            continue
        obj = str(m.get("object"))
        if obj != f"{prefix}{bid}{OBJECT_SUFFIX}":
            problems.append(f"{key}: object {obj!r} is not beside it")
            continue
        if obj not in keys:
            problems.append(f"{key}: its object {obj} is missing")
            continue
        if keys[obj] != m.get("object_size"):
            problems.append(
                f"{key}: object is {keys[obj]} bytes, manifest says {m.get('object_size')}"
            )
            continue
        try:
            data = view.read(obj)
        except Exception as exc:
            if key not in view.listing():
                continue  # pruned meanwhile (manifest first, then object)
            problems.append(f"{key}: object unreadable: {exc}")
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest != m.get("object_sha256"):
            problems.append(f"{key}: object sha256 differs from the manifest")
            continue
        if digest not in _SOUND:
            try:
                status = stock_status(data, identity, scratch)
            except AssertionError as exc:
                problems.append(f"{key}: {exc}")
                continue
            if status["revision"] != m.get("revision"):
                problems.append(
                    f"{key}: etcdutl revision {status['revision']} != {m.get('revision')}"
                )
                continue
            if m.get("hash") is not None and status["hash"] != m["hash"]:
                problems.append(f"{key}: etcdutl hash {status['hash']} != {m['hash']}")
                continue
            _SOUND[digest] = int(status["revision"])
        backups.append(
            Backup(
                id=bid,
                created_at=str(m.get("created_at")),
                verified=bool(m.get("verified")),
                revision=int(m.get("revision", 0)),
            )
        )
    orphans = sorted(
        k
        for k in keys
        if k.startswith(prefix)
        and k.endswith(OBJECT_SUFFIX)
        and k[len(prefix) : -len(OBJECT_SUFFIX)] not in ids
    )
    leftovers = sorted(k for k in keys if Path(k).name.startswith(".tmp") or k.endswith(".part"))
    counters.add("store_checks")
    counters.add("backups_checked", len(backups))
    if problems:
        counters.add("backups_lost", len(problems))
        raise AssertionError("store holds incomplete or unsound backups:\n" + "\n".join(problems))
    backups.sort(key=lambda b: (b.created_at, b.id), reverse=True)
    result = StoreCheck(backups=backups, orphans=orphans, leftovers=leftovers)
    if ledger is not None:
        ledger.observe(result)
    return result


@dataclass
class Ledger:
    """The newest complete verified backup seen so far must survive until a newer one exists."""

    newest: Backup | None = None
    lost: list[str] = field(default_factory=list)

    def observe(self, check: StoreCheck) -> None:
        verified = [b for b in check.backups if b.verified]
        if self.newest is not None and self.newest.id not in check.ids:
            newer = [
                b
                for b in verified
                if (b.created_at, b.id) > (self.newest.created_at, self.newest.id)
            ]
            if not newer:
                self.lost.append(self.newest.id)
                counters.add("backups_lost")
                raise AssertionError(
                    f"the newest complete verified backup {self.newest.id} was deleted "
                    f"and nothing newer is complete: {check.ids}"
                )
        if verified:
            top = verified[0]
            if self.newest is None or (top.created_at, top.id) >= (
                self.newest.created_at,
                self.newest.id,
            ):
                self.newest = top
