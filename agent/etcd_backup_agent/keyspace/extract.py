"""Objects out of a snapshot, as of its latest revision or an older retained one.

The selected keys' revisions are sorted like the analysis' (bounded memory); the chosen
revision of each key is then read back from the ``key`` bucket by its revision key.
Rendering (JSON/YAML for kubectl, raw bytes) is separate and pure.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import UsageError
from ..snapshot.bolt import BoltFile
from .analyze import DEFAULT_BUDGET
from .k8s_values import as_document, checked_encoding, encrypted_marker
from .records import TOMBSTONE, TRAILER, kv_parts, meta_compact_revision, sorted_revisions
from .tree import find_bucket, get

FORMATS = ("json", "yaml", "raw")


@dataclass(frozen=True)
class Selector:
    """Exactly one of ``key`` or ``prefix``; ``revision`` None means the latest."""

    key: bytes | None = None
    prefix: bytes | None = None
    revision: int | None = None

    def check(self) -> None:
        if (self.key is None) == (self.prefix is None):
            raise UsageError("give exactly one of --key K or --prefix P")
        if self.prefix is not None and not self.prefix:
            raise UsageError("--prefix must not be empty")
        if self.revision is not None and self.revision < 1:
            raise UsageError("--revision must be a positive etcd revision")

    def wants(self, ukey: bytes) -> bool:
        if self.key is not None:
            return ukey == self.key
        assert self.prefix is not None
        return ukey.startswith(self.prefix)


@dataclass(frozen=True)
class Extracted:
    """One object's stored value at the chosen revision."""

    key: bytes
    mod_revision: int
    value: bytes

    @property
    def encoding(self) -> str:
        return checked_encoding(self.value)

    def note(self) -> str:
        if self.encoding == "encrypted":
            m = encrypted_marker(self.value)
            who = f" ({m.provider} {m.version}, key {m.key_name!r})" if m else ""
            return (
                f"encrypted at rest{who}: written as raw bytes, not decrypted; "
                "the apiserver's encryption key is needed to read it"
            )
        if self.encoding == "protobuf":
            return "protobuf: envelope and metadata decoded, the rest kept as raw protobuf"
        if self.encoding == "other":
            return "not a Kubernetes object (neither JSON nor protobuf): kept as raw bytes"
        return ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key.decode("utf-8", "replace"),
            "key_base64": base64.b64encode(self.key).decode(),
            "mod_revision": self.mod_revision,
            "encoding": self.encoding,
            "note": self.note(),
            "value_base64": base64.b64encode(self.value).decode(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Extracted:
        return cls(
            base64.b64decode(d["key_base64"]),
            int(d["mod_revision"]),
            base64.b64decode(d["value_base64"]),
        )


@dataclass(frozen=True)
class ExtractResult:
    revision: int
    compact_revision: int
    objects: tuple[Extracted, ...]
    deleted: tuple[str, ...]
    truncated: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "compact_revision": self.compact_revision,
            "objects": [o.to_dict() for o in self.objects],
            "deleted": list(self.deleted),
            "truncated": self.truncated,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExtractResult:
        return cls(
            int(d["revision"]),
            int(d["compact_revision"]),
            tuple(Extracted.from_dict(o) for o in d["objects"]),
            tuple(str(x) for x in d.get("deleted", ())),
            bool(d.get("truncated")),
        )


def extract_file(
    path: Path,
    selector: Selector,
    work_dir: Path,
    budget: int = DEFAULT_BUDGET,
    max_bytes: int = 64 * 1024 * 1024,
) -> ExtractResult:
    """The selected objects; ``deleted`` lists keys whose chosen revision is a deletion."""
    selector.check()
    from .analyze import _last_revision

    with BoltFile(path) as db:
        current = _last_revision(db)
        compact = meta_compact_revision(db)
        rev = selector.revision
        if rev is not None and rev < compact:
            raise UsageError(
                f"revision {rev} is compacted: this snapshot keeps history from revision "
                f"{compact} to {current} only"
            )
        if rev is not None and rev > current:
            raise UsageError(f"revision {rev} is after this snapshot's revision {current}")
        bucket = find_bucket(db, b"key")
        objects: list[Extracted] = []
        deleted: list[str] = []
        total = 0
        truncated = False
        with sorted_revisions(db, work_dir, budget, want=selector.wants) as (groups, *_):
            for rec, ukey in _chosen(groups, rev):
                if rec[-6] & TOMBSTONE:
                    deleted.append(ukey.decode("utf-8", "replace"))
                    continue
                if bucket is None:
                    break
                rev_key = rec[-TRAILER : -TRAILER + 17]
                raw = get(db, bucket, rev_key)
                if raw is None:
                    continue
                _, voff, vlen = kv_parts(raw)
                if total + vlen > max_bytes and objects:
                    truncated = True
                    break
                total += vlen
                main = int.from_bytes(rev_key[:8], "big")
                objects.append(Extracted(ukey, main, raw[voff : voff + vlen]))
    return ExtractResult(rev or current, compact, tuple(objects), tuple(deleted), truncated)


def _chosen(groups: Iterator[list[bytes]], rev: int | None) -> Iterator[tuple[bytes, bytes]]:
    """(record, user key) of the revision in force at ``rev`` (the latest when None)."""
    for group in groups:
        pick = group[-1]
        if rev is not None:
            older = [r for r in group if int.from_bytes(r[-TRAILER : -TRAILER + 8], "big") <= rev]
            if not older:
                continue
            pick = older[-1]
        ukey = pick[: -TRAILER - 2]
        if b"\x00" in ukey:
            ukey = ukey.replace(b"\x00\xff", b"\x00")
        yield pick, ukey


# --- rendering ------------------------------------------------------------------------


def documents(objects: tuple[Extracted, ...], keep_server_fields: bool) -> list[dict[str, Any]]:
    return [as_document(o.value, keep_server_fields)[0] for o in objects]


def render_stdout(objects: tuple[Extracted, ...], fmt: str, keep_server_fields: bool) -> bytes:
    """All objects in one stream: raw as ``etcdctl get --print-value-only`` prints them
    (each value then a newline), JSON as one object or a ``List``, YAML as documents."""
    if fmt == "raw":
        return b"".join(o.value + b"\n" for o in objects)
    docs = documents(objects, keep_server_fields)
    if fmt == "json":
        body: Any = (
            docs[0] if len(docs) == 1 else {"apiVersion": "v1", "kind": "List", "items": docs}
        )
        return (json.dumps(body, indent=2, ensure_ascii=False) + "\n").encode()
    return yaml.safe_dump_all(docs, sort_keys=False, allow_unicode=True).encode()


def file_name(key: bytes, fmt: str, encoding: str) -> str:
    """A safe relative file name for a key: segments kept, anything odd percent-escaped."""
    text = key.decode("utf-8", "replace").strip("/")
    safe = []
    for segment in text.split("/"):
        part = segment
        if part in ("", ".", ".."):
            # never an empty, "." or ".." path segment: the file stays under --out
            part = part.replace(".", "%2E") or "%2F"
        safe.append("".join(c if c.isalnum() or c in "-_.:@" else f"%{ord(c):02X}" for c in part))
    ext = {"json": ".json", "yaml": ".yaml", "raw": ".bin"}[fmt]
    if encoding == "encrypted" or (fmt != "raw" and encoding not in ("json", "protobuf")):
        ext = ".bin"
    return "/".join(safe) + ext


def write_files(
    objects: tuple[Extracted, ...], out: Path, fmt: str, keep_server_fields: bool
) -> list[Path]:
    """One file per object under ``out``; values that cannot be rendered are written raw."""
    written = []
    for o in objects:
        enc = o.encoding
        path = out / file_name(o.key, fmt, enc)
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "raw" or enc == "encrypted" or enc not in ("json", "protobuf"):
            data = o.value
        elif fmt == "json":
            doc = as_document(o.value, keep_server_fields)[0]
            data = (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode()
        else:
            doc = as_document(o.value, keep_server_fields)[0]
            data = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True).encode()
        path.write_bytes(data)
        written.append(path)
    return written
