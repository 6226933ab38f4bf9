from __future__ import annotations

import struct
from pathlib import Path

import pytest

from etcd_backup_agent.snapshot import bolt
from etcd_backup_agent.snapshot.bolt import BoltError, BoltFile, PageError, fnv1a64
from tests.boltwriter import fnv1a64 as writer_fnv
from tests.snapfixtures import etcd_buckets, put_u64, write

HISTORY = [("put", f"/k{i}".encode(), b"v") for i in range(50)]


def test_fnv1a64_known_values() -> None:
    assert fnv1a64(b"") == 0xCBF29CE484222325
    assert fnv1a64(b"a") == 0xAF63DC4C8601EC8C
    assert fnv1a64(b"etcd") == writer_fnv(b"etcd")


def test_newest_valid_meta_wins(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    write(path, etcd_buckets(HISTORY))
    with BoltFile(path) as db:
        assert db.page_size == 4096
        assert db.meta.page_id == 0 and db.meta.txid == 2
        assert db.metas[1].txid == 1


def test_overflow_span_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.db"
    layout = write(path, etcd_buckets(HISTORY, big=50_000))
    with BoltFile(path) as db:
        pid = next(p for p, k in layout.items() if k == "leaf" and db.read_page(p).overflow > 2)
    monkeypatch.setattr(bolt, "MAX_PAGE_SPAN", 8192)
    with BoltFile(path) as db, pytest.raises(PageError, match="implausibly large"):
        db.read_page(pid)


def test_out_of_bounds_page(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    write(path, etcd_buckets(HISTORY))
    with BoltFile(path) as db, pytest.raises(PageError, match="out of bounds"):
        db.read_page(db.meta.pgid)


def test_freelist_ids_big_count(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    layout = write(path, etcd_buckets(HISTORY), freelist=[], extra_free_pages=3, big_count=True)
    fl = next(p for p, k in layout.items() if k == "freelist")
    free = sorted(p for p, k in layout.items() if k == "free")
    with BoltFile(path) as db:
        assert db.freelist_ids(db.read_page(fl)) == free
    put_u64(path, fl * 4096 + 16, 10**9)  # claimed count far beyond the page
    with BoltFile(path) as db, pytest.raises(PageError, match="does not fit"):
        db.freelist_ids(db.read_page(fl))


def test_wrong_format_version(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    write(path, etcd_buckets(HISTORY))
    with path.open("r+b") as f:
        for meta in (0, 4096):
            f.seek(meta + 16)
            raw = bytearray(f.read(64))
            struct.pack_into("<I", raw, 4, 3)
            struct.pack_into("<Q", raw, 56, fnv1a64(bytes(raw[:56])))
            f.seek(meta + 16)
            f.write(raw)
    with pytest.raises(BoltError, match="not a bolt file"):
        BoltFile(path)
