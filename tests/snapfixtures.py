"""Helpers shared by the snapshot tests: etcd-shaped buckets, KeyValue encoding, mutation."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import google_crc32c

from tests.boltwriter import Inline, Tree, build_db


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def kv(key: bytes, value: bytes = b"", rev: int = 1, version: int = 1, lease: int = 0) -> bytes:
    """An mvccpb.KeyValue message."""
    out = b"\x0a" + varint(len(key)) + key
    out += b"\x10" + varint(rev) + b"\x18" + varint(rev) + b"\x20" + varint(version)
    if value:
        out += b"\x2a" + varint(len(value)) + value
    if lease:
        out += b"\x30" + varint(lease)
    return out


def tombstone(key: bytes) -> bytes:
    return b"\x0a" + varint(len(key)) + key


def revkey(main: int, sub: int = 0, tomb: bool = False) -> bytes:
    return main.to_bytes(8, "big") + b"_" + sub.to_bytes(8, "big") + (b"t" if tomb else b"")


def etcd_buckets(
    history: list[tuple[str, bytes, bytes]], storage_version: bytes | None = None, big: int = 0
) -> dict[bytes, Tree]:
    """Buckets shaped like etcd's from a history of ("put"|"del", key, value) operations."""
    keyb: Tree = {}
    for rev, (op, key, value) in enumerate(history, start=2):
        if op == "put":
            keyb[revkey(rev)] = kv(key, value, rev)
        else:
            keyb[revkey(rev, tomb=True)] = tombstone(key)
    meta: Tree = {b"consistent_index": (7).to_bytes(8, "big"), b"term": (2).to_bytes(8, "big")}
    if storage_version is not None:
        meta[b"storageVersion"] = storage_version
    buckets: dict[bytes, Tree] = {
        b"key": keyb,
        b"meta": meta,
        b"cluster": {b"clusterVersion": b"3.6.0"},
        b"members": {b"8e9e05c52164694d": b'{"id":1,"peerURLs":["http://127.0.0.1:2380"]}'},
        b"members_removed": {},
        b"lease": {},
        b"alarm": {},
        b"auth": {b"authEnabled": b"\x00", b"authRevision": (1).to_bytes(8, "big")},
        b"authUsers": {},
        b"authRoles": {},
    }
    if big:
        buckets[b"big"] = {b"blob": bytes(range(256)) * (big // 256)}
    return buckets


def naive_status(buckets: dict[bytes, Tree]) -> tuple[int, int]:
    """(crc32c hash, 3.5 total keys) computed directly from the model, as etcdutl defines."""
    crc = 0
    total = 0
    for name in sorted(buckets):
        crc = google_crc32c.extend(crc, name)
        items = buckets[name]
        for k in sorted(items):
            v = items[k]
            crc = google_crc32c.extend(crc, k)
            if isinstance(v, bytes):
                crc = google_crc32c.extend(crc, v)
            total += 1
    return crc, total


def write(path: Path, buckets: dict[bytes, Tree], **kwargs: object) -> dict[int, str]:
    data, layout = build_db(buckets, **kwargs)  # type: ignore[arg-type]
    path.write_bytes(data)
    return layout


def put_u64(path: Path, offset: int, value: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(struct.pack("<Q", value))


def flip(path: Path, offset: int, mask: int = 0xFF) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        b = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([b ^ mask]))


__all__ = [
    "Inline",
    "etcd_buckets",
    "flip",
    "kv",
    "naive_status",
    "put_u64",
    "revkey",
    "tombstone",
    "write",
]


def append_trailer(path: Path) -> str:
    """Append the sha256 of the file to it, as etcd's snapshot stream does; return the hex."""
    digest = hashlib.sha256(path.read_bytes()).digest()
    with path.open("ab") as f:
        f.write(digest)
    return digest.hex()
