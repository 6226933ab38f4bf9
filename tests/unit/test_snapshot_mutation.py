"""Randomized corruption: verification yields sound or clean problems, never an exception."""

from __future__ import annotations

import random
import struct
from pathlib import Path

from etcd_backup_agent.snapshot.verify import verify_snapshot
from tests.boltwriter import Inline, build_db
from tests.snapfixtures import etcd_buckets

CASES = 200


def _base() -> bytes:
    buckets = etcd_buckets(
        [("put", f"/k{i:03d}".encode(), b"v" * i) for i in range(120)],
        storage_version=b"3.6.0",
        big=6000,
    )
    buckets[b"nest"] = {b"a": b"1", b"child": {b"x": b"y"}, b"inl": Inline({b"p": b"q"})}
    data, _ = build_db(buckets, per_leaf=8, freelist=[], extra_free_pages=2, trailer=False)
    return data


def _mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    kind = rng.randrange(5)
    if kind == 0:  # flip bytes anywhere
        for _ in range(rng.randint(1, 4)):
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
    elif kind == 1:  # overwrite a header field of a random page
        page = rng.randrange(len(buf) // 4096)
        field = rng.choice([(0, "<Q"), (8, "<H"), (10, "<H"), (12, "<I")])
        value = rng.choice([0, 1, 2, 0xFFFF, 0xFFFFFFFF, rng.randrange(1 << 16)])
        struct.pack_into(
            field[1],
            buf,
            page * 4096 + field[0],
            value & ((1 << (8 * struct.calcsize(field[1]))) - 1),
        )
    elif kind == 2:  # overwrite an element field (pos/ksize/vsize or child id)
        page = rng.randrange(2, len(buf) // 4096)
        off = page * 4096 + 16 + 4 * rng.randrange(16)
        struct.pack_into("<I", buf, off, rng.choice([0, 1, 4095, 1 << 20, 0xFFFFFFFF]))
    elif kind == 3:  # truncate or extend
        cut = rng.randrange(len(buf))
        buf = buf[:cut] if rng.random() < 0.7 else buf + bytes(rng.randrange(1, 5000))
    else:  # meta fields with a recomputed checksum: a "valid" but lying meta
        from tests.boltwriter import fnv1a64

        meta = rng.randrange(2) * 4096
        field = rng.choice([32, 48, 56])  # root, freelist, pgid
        struct.pack_into("<Q", buf, meta + 16 + field, rng.choice([0, 3, 10**6, 2**64 - 1]))
        struct.pack_into("<Q", buf, meta + 16 + 56, fnv1a64(bytes(buf[meta + 16 : meta + 72])))
    return bytes(buf)


def test_random_mutations_never_raise(tmp_path: Path) -> None:
    base = _base()
    path = tmp_path / "m.db"
    path.write_bytes(base)
    assert verify_snapshot(path, require_trailer=False).sound
    rng = random.Random(20261124)
    unsound = 0
    for case in range(CASES):
        path.write_bytes(_mutate(base, rng))
        for rules in ("auto", "3.5"):
            report = verify_snapshot(path, rules=rules, require_trailer=False)
            assert report.sound == (not report.problems), case
            assert all(isinstance(p, str) and p and "\n" not in p for p in report.problems), case
            if report.sound:
                assert report.status is not None, case
        unsound += not report.sound
    assert unsound > CASES // 4  # the mutations do hit structure
