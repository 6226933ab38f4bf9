"""The native verifier judged by a stock tool: `etcdutl snapshot status` (etcd 3.5.1).

etcdutl 3.5's status opens the file with bbolt and runs ``tx.Check()`` before hashing, so
its exit code is an independent verdict: sound (0) or corrupt (an error, a panic, or a hang
on a cyclic page graph). On >= 500 mutated snapshots the two verdicts must agree, except in
the explained ways below; the native verifier must never call sound what etcdutl refuses.
"""

from __future__ import annotations

import concurrent.futures
import random
import re
import struct
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from etcd_backup_agent.snapshot.verify import verify_snapshot
from tests.boltwriter import Inline, build_db, fnv1a64
from tests.reliability import counters
from tests.servers import etcd_bin
from tests.snapfixtures import etcd_buckets

pytestmark = pytest.mark.integration

CASES = 520
HANG = 3.0  # seconds; etcdutl loops forever on some cyclic page graphs

# Why etcdutl (bbolt 1.3.6's tx.Check plus a hash of every key and value) accepts a file
# the native verifier refuses. Each pattern matches the native verifier's first problem.
STRICTER = {
    # bbolt maps the pages the meta names and never compares that with the file length
    r"is neither whole pages nor pages \+ a 32-byte trailer": "file size (padding/truncation "
    "past the last used page)",
    # bbolt 1.3.6's Check does not check key order (added in bbolt 1.3.7)
    r"keys out of order|is before its parent's key": "key order",
    # etcdutl hashes value bytes; it never decodes mvccpb.KeyValue
    r"undecodable KeyValue": "KeyValue encoding",
    # bbolt reads elements with unchecked pointer arithmetic into the next page
    r"points past the end of the page|truncated header": "element bounds",
    # Check only visits reachable pages; a freed or leaked page's content is never read
    r"unreachable unfreed|invalid type|freelist unreadable": "pages Check never reads",
}


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
    if kind == 0:  # flip bits anywhere
        for _ in range(rng.randint(1, 4)):
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
    elif kind == 1:  # overwrite a header field of a random page
        page = rng.randrange(len(buf) // 4096)
        off, fmt = rng.choice([(0, "<Q"), (8, "<H"), (10, "<H"), (12, "<I")])
        value = rng.choice([0, 1, 2, 0xFFFF, 0xFFFFFFFF, rng.randrange(1 << 16)])
        struct.pack_into(
            fmt, buf, page * 4096 + off, value & ((1 << (8 * struct.calcsize(fmt))) - 1)
        )
    elif kind == 2:  # overwrite an element field (pos/ksize/vsize or child id)
        page = rng.randrange(2, len(buf) // 4096)
        off = page * 4096 + 16 + 4 * rng.randrange(16)
        struct.pack_into("<I", buf, off, rng.choice([0, 1, 4095, 1 << 20, 0xFFFFFFFF]))
    elif kind == 3:  # truncate or extend
        cut = rng.randrange(len(buf))
        buf = buf[:cut] if rng.random() < 0.7 else buf + bytes(rng.randrange(1, 5000))
    else:  # meta fields with a recomputed checksum: a "valid" but lying meta
        meta = rng.randrange(2) * 4096
        field = rng.choice([32, 48, 56])  # root, freelist, pgid
        struct.pack_into("<Q", buf, meta + 16 + field, rng.choice([0, 3, 10**6, 2**64 - 1]))
        struct.pack_into("<Q", buf, meta + 16 + 56, fnv1a64(bytes(buf[meta + 16 : meta + 72])))
    return bytes(buf)


def etcdutl_sound(path: Path) -> bool:
    try:
        r = subprocess.run(
            [etcd_bin("etcdutl"), "snapshot", "status", str(path), "-w", "json"],
            capture_output=True,
            timeout=HANG,
        )
    except subprocess.TimeoutExpired:
        return False  # a hang is a refusal: no status ever comes
    return r.returncode == 0


def test_native_verdicts_match_etcdutl_on_mutated_snapshots(tmp_path: Path) -> None:
    base = _base()
    (tmp_path / "base.db").write_bytes(base)
    assert etcdutl_sound(tmp_path / "base.db")
    assert verify_snapshot(tmp_path / "base.db", require_trailer=False).sound
    rng = random.Random(20261201)
    paths = []
    for case in range(CASES):
        p = tmp_path / f"m{case}.db"
        p.write_bytes(_mutate(base, rng))
        paths.append(p)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        stock = list(pool.map(etcdutl_sound, paths))
    counters.add("malformed_inputs", CASES)

    verdicts: Counter[tuple[bool, bool]] = Counter()
    explained: Counter[str] = Counter()
    unexplained = []
    for p, stock_sound in zip(paths, stock, strict=True):
        report = verify_snapshot(p, require_trailer=False)
        verdicts[report.sound, stock_sound] += 1
        if report.sound and not stock_sound:
            unexplained.append(f"{p.name}: native says sound, etcdutl refuses")
        elif stock_sound and not report.sound:
            why = next(
                (w for pat, w in STRICTER.items() if re.search(pat, report.problems[0])), None
            )
            if why is None:
                unexplained.append(f"{p.name}: native refuses: {report.problems[0]}")
            else:
                explained[why] += 1
        elif report.sound:
            # both sound: the native status is etcdutl's own numbers
            st = subprocess.run(
                [etcd_bin("etcdutl"), "snapshot", "status", str(p), "-w", "json"],
                capture_output=True,
                check=True,
                timeout=30,
                text=True,
            ).stdout
            assert report.status is not None
            assert f'"hash":{report.status.hash},' in st, (p.name, st)
    assert not unexplained, unexplained
    # the mutations hit structure often, and etcdutl agreed on most of them
    assert verdicts[False, False] > CASES // 3, verdicts
    assert verdicts[True, True] > CASES // 5, verdicts
    counters.note(
        f"verifier oracle: verdicts (native, etcdutl) {dict(verdicts)}; stricter {dict(explained)}"
    )
