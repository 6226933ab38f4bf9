from __future__ import annotations

import struct
from pathlib import Path

from etcd_backup_agent.snapshot.check import check_db
from etcd_backup_agent.snapshot.verify import verify_snapshot
from tests.snapfixtures import etcd_buckets, flip, put_u64, write

PS = 4096
HISTORY = [("put", f"/k{i:04d}".encode(), b"v" * (i % 50)) for i in range(200)]


def _db(tmp_path: Path, **kwargs: object) -> tuple[Path, dict[int, str]]:
    path = tmp_path / "s.db"
    layout = write(path, etcd_buckets(HISTORY, big=9000), per_leaf=16, trailer=False, **kwargs)
    return path, layout


def _problems(path: Path) -> list[str]:
    return [str(p) for p in check_db(path)]


def _first(layout: dict[int, str], kind: str) -> int:
    return next(pid for pid, k in sorted(layout.items()) if k == kind)


def _branch_children(path: Path, pid: int) -> list[int]:
    raw = path.read_bytes()[pid * PS : (pid + 1) * PS]
    count = struct.unpack_from("<H", raw, 10)[0]
    return [struct.unpack_from("<Q", raw, 16 + 16 * i + 8)[0] for i in range(count)]


def test_clean_file_has_no_problems(tmp_path: Path) -> None:
    path, _ = _db(tmp_path, freelist=[], extra_free_pages=3)
    assert _problems(path) == []
    path, _ = _db(tmp_path)  # etcd style: no freelist persisted
    assert _problems(path) == []


def test_duplicate_freelist_entry_is_already_freed(tmp_path: Path) -> None:
    path, layout = _db(tmp_path, freelist=[], extra_free_pages=2)
    free = [pid for pid, k in layout.items() if k == "free"]
    fl = _first(layout, "freelist")
    put_u64(path, fl * PS + 16 + 8, free[0])  # second id := first id
    problems = _problems(path)
    assert f"page {free[0]}: already freed" in problems
    assert f"page {free[1]}: unreachable unfreed" in problems


def test_freelist_with_ffff_count_form(tmp_path: Path) -> None:
    path, layout = _db(tmp_path, freelist=[], extra_free_pages=3, big_count=True)
    assert _problems(path) == []
    fl = _first(layout, "freelist")
    assert struct.unpack_from("<H", path.read_bytes(), fl * PS + 10)[0] == 0xFFFF


def test_unreachable_unfreed(tmp_path: Path) -> None:
    path, layout = _db(tmp_path, freelist=[], stray_pages=1)
    stray = _first(layout, "stray")
    assert _problems(path) == [f"page {stray}: unreachable unfreed"]


def test_stray_pages_are_free_without_a_persisted_freelist(tmp_path: Path) -> None:
    path, _ = _db(tmp_path, stray_pages=2)
    assert _problems(path) == []


def test_reachable_freed(tmp_path: Path) -> None:
    path, layout = _db(tmp_path, freelist=[])
    leaf = _first(layout, "leaf")
    path, _ = _db(tmp_path, freelist=[leaf])
    assert f"page {leaf}: reachable freed" in _problems(path)


def test_branch_corruption_multiple_references(tmp_path: Path) -> None:
    path, layout = _db(tmp_path)
    branch = _first(layout, "branch")
    children = _branch_children(path, branch)
    put_u64(path, branch * PS + 16 + 16 + 8, children[0])  # child 1 := child 0
    problems = _problems(path)
    assert f"page {children[0]}: multiple references" in problems


def test_branch_child_out_of_bounds(tmp_path: Path) -> None:
    path, layout = _db(tmp_path)
    branch = _first(layout, "branch")
    put_u64(path, branch * PS + 16 + 8, 10_000)
    assert any(p.startswith("page 10000: out of bounds") for p in _problems(path))


def test_leaf_invalid_type(tmp_path: Path) -> None:
    path, layout = _db(tmp_path)
    leaf = _first(layout, "leaf")
    flip(path, leaf * PS + 8, 0x22)  # leaf (0x02) -> 0x20
    assert f"page {leaf}: invalid type: unknown<20>" in _problems(path)


def test_leaf_key_order(tmp_path: Path) -> None:
    path, layout = _db(tmp_path)
    branch = _first(layout, "branch")
    leaf = _branch_children(path, branch)[1]
    raw = path.read_bytes()
    pos = struct.unpack_from("<I", raw, leaf * PS + 16 + 4)[0]
    flip(path, leaf * PS + 16 + pos, 0xFF)  # first key's first byte: 0x00 -> 0xff
    problems = _problems(path)
    assert any(p.startswith(f"page {leaf}: keys out of order") for p in problems)


def test_leaf_key_beyond_parent_bound(tmp_path: Path) -> None:
    path, layout = _db(tmp_path)
    branch = _first(layout, "branch")
    leaf = _branch_children(path, branch)[1]
    raw = path.read_bytes()
    count = struct.unpack_from("<H", raw, leaf * PS + 10)[0]
    elem = leaf * PS + 16 + 16 * (count - 1)
    pos = struct.unpack_from("<I", raw, elem + 4)[0]
    flip(path, elem + pos, 0xFF)  # last key's first byte: 0x00 -> 0xff
    problems = _problems(path)
    assert any(
        p.startswith(f"page {leaf}: last key") and "is not before the next parent key" in p
        for p in problems
    )
    assert not any("keys out of order" in p for p in problems)


def test_header_id_mismatch(tmp_path: Path) -> None:
    path, layout = _db(tmp_path)
    leaf = _first(layout, "leaf")
    put_u64(path, leaf * PS, leaf + 1)
    assert f"page {leaf}: header carries page id {leaf + 1}" in _problems(path)


def test_meta_checksum(tmp_path: Path) -> None:
    path, _ = _db(tmp_path)
    flip(path, 16 + 40, 0x01)  # meta 0 freelist field
    assert _problems(path) == ["page 0: meta page invalid: meta checksum mismatch"]


def test_both_metas_bad_is_not_a_bolt_file(tmp_path: Path) -> None:
    path, _ = _db(tmp_path)
    flip(path, 16, 0x01)
    flip(path, PS + 16, 0x01)
    assert _problems(path) == ["not a bolt file: no valid meta page (bad magic or checksum)"]


def test_truncated(tmp_path: Path) -> None:
    path, _ = _db(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert any(p.startswith("truncated: the database needs") for p in _problems(path))


def test_garbage_and_empty_files(tmp_path: Path) -> None:
    f = tmp_path / "g"
    f.write_bytes(b"hello world" * 1000)
    assert _problems(f)[0].startswith("not a bolt file")
    f.write_bytes(b"")
    assert _problems(f)[0].startswith("not a bolt file")
    assert check_db(tmp_path / "missing")[0].message.startswith("cannot read")


def test_page_sizes_other_than_4096(tmp_path: Path) -> None:
    for ps in (1024, 16384):
        path = tmp_path / f"s{ps}.db"
        write(path, etcd_buckets(HISTORY), page_size=ps, per_leaf=4)
        flip(path, 16 + 8, 0x01)  # meta 0 page size corrupt: must probe for meta 1
        report = verify_snapshot(path, require_trailer=False)
        assert report.status is not None and report.status.total_size % ps == 0
        assert report.problems[-1:] != []
        assert "page 0: meta page invalid" in " ".join(report.problems)


def test_verify_reports_trailer_and_missing_trailer(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    write(path, etcd_buckets(HISTORY))
    assert verify_snapshot(path).sound
    data = path.read_bytes()
    path.write_bytes(data[:-32])
    r = verify_snapshot(path)
    assert not r.sound and r.trailer_ok is None and "no sha256 trailer" in r.problems[0]
    assert verify_snapshot(path, require_trailer=False).sound
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    r = verify_snapshot(path)
    assert r.trailer_ok is False and "sha256 trailer mismatch" in r.problems[0]
