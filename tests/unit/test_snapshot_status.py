from __future__ import annotations

import json
from pathlib import Path

import google_crc32c
import pytest

from etcd_backup_agent.errors import VerificationError
from etcd_backup_agent.snapshot.status import compute_status, kv_key, parse_semver
from etcd_backup_agent.snapshot.verify import verify_snapshot
from tests.snapfixtures import Inline, etcd_buckets, flip, kv, naive_status, write

HISTORY = [
    ("put", b"/a", b"1"),
    ("put", b"/b", b"2"),
    ("put", b"/a", b"3"),
    ("del", b"/a", b""),
    ("put", b"/c", b"4"),
    ("del", b"/c", b""),
    ("put", b"/c", b"5"),
    ("put", b"/d", b"6"),
    ("del", b"/d", b""),
]


def test_crc32c_check_value() -> None:
    assert google_crc32c.extend(0, b"123456789") == 0xE3069283


@pytest.mark.parametrize("per_leaf", [64, 3])
@pytest.mark.parametrize("scatter", [False, True])
def test_35_rules_match_the_model(tmp_path: Path, per_leaf: int, scatter: bool) -> None:
    buckets = etcd_buckets(HISTORY * 5, big=20000)
    write(tmp_path / "s.db", buckets, per_leaf=per_leaf, scatter=scatter)
    st = compute_status(tmp_path / "s.db", rules="3.5")
    crc, total = naive_status(buckets)
    assert (st.hash, st.total_key) == (crc, total)
    assert st.revision == len(HISTORY) * 5 + 1
    assert st.total_size == (tmp_path / "s.db").stat().st_size - 32
    assert st.version is None and st.rules == "3.5"
    assert list(st.to_json_dict()) == ["hash", "revision", "totalKey", "totalSize"]


def test_nested_and_inline_buckets_count_but_hash_only_names(tmp_path: Path) -> None:
    buckets = etcd_buckets(HISTORY)
    buckets[b"zz"] = {b"k1": b"v1", b"nested": {b"x": b"y"}, b"inl": Inline({b"p": b"q"})}
    write(tmp_path / "s.db", buckets)
    st = compute_status(tmp_path / "s.db", rules="3.5")
    crc, total = naive_status(buckets)
    assert st.hash == crc  # nested buckets contribute their key only
    assert st.total_key == total


def test_36_counts_live_keys_and_reads_storage_version(tmp_path: Path) -> None:
    write(tmp_path / "s.db", etcd_buckets(HISTORY, storage_version=b"3.6.0"))
    st = compute_status(tmp_path / "s.db", rules="3.6")
    assert st.total_key == 2  # /b and /c are live; /a and /d were deleted
    assert st.version == "3.6.0"
    assert st.revision == len(HISTORY) + 1
    assert st.to_json_dict()["version"] == "3.6.0"
    assert list(st.to_json_dict()) == ["hash", "revision", "totalKey", "totalSize", "version"]
    assert st.hash == naive_status(etcd_buckets(HISTORY, storage_version=b"3.6.0"))[0]


def test_auto_rules_pick_36_when_storage_version_exists(tmp_path: Path) -> None:
    write(tmp_path / "a.db", etcd_buckets(HISTORY, storage_version=b"3.6.1"))
    write(tmp_path / "b.db", etcd_buckets(HISTORY))
    a = compute_status(tmp_path / "a.db")
    b = compute_status(tmp_path / "b.db")
    assert (a.rules, a.version, a.total_key) == ("3.6", "3.6.1", 2)
    assert (b.rules, b.version) == ("3.5", None)
    assert b.total_key == naive_status(etcd_buckets(HISTORY))[1]


def test_36_without_storage_version_reports_empty_version(tmp_path: Path) -> None:
    write(tmp_path / "s.db", etcd_buckets(HISTORY))
    st = compute_status(tmp_path / "s.db", rules="3.6")
    assert st.version == ""
    assert json.loads(json.dumps(st.to_json_dict()))["version"] == ""


def test_36_rejects_malformed_revision_keys(tmp_path: Path) -> None:
    buckets = etcd_buckets(HISTORY, storage_version=b"3.6.0")
    buckets[b"key"][b"\x00" * 8 + b"X" + b"\x00" * 8] = kv(b"/z")
    write(tmp_path / "s.db", buckets)
    report = verify_snapshot(tmp_path / "s.db", rules="3.6")
    assert not report.sound
    assert any("malformed revision key" in p for p in report.problems)
    assert verify_snapshot(tmp_path / "s.db", rules="3.5").sound


def test_short_revision_key_is_a_problem_under_both_rules(tmp_path: Path) -> None:
    buckets = etcd_buckets(HISTORY)
    buckets[b"key"][b"\xff\xff"] = kv(b"/z")
    write(tmp_path / "s.db", buckets)
    for rules in ("3.5", "3.6"):
        report = verify_snapshot(tmp_path / "s.db", rules=rules)
        assert any("shorter than 17 bytes" in p for p in report.problems), rules


def test_compute_status_raises_on_corruption(tmp_path: Path) -> None:
    layout = write(tmp_path / "s.db", etcd_buckets(HISTORY))
    leaf = next(pid for pid, kind in layout.items() if kind == "leaf")
    flip(tmp_path / "s.db", leaf * 4096 + 8, 0x20)  # page flags -> invalid type
    with pytest.raises(VerificationError) as info:
        compute_status(tmp_path / "s.db")
    assert any("invalid type" in p for p in info.value.problems)


def test_kv_key_decoder() -> None:
    assert kv_key(kv(b"/registry/x", b"v" * 300, rev=2**40, lease=7)) == b"/registry/x"
    with pytest.raises(ValueError):
        kv_key(b"\x0a\x05ab")


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        (b"3.6.0", "3.6.0"),
        (b"3.6", ""),
        (b"", ""),
        (b"3.7.0-alpha.0", "3.7.0-alpha.0"),
        (b"x.y.z", ""),
        (b"\xff", ""),
    ],
)
def test_storage_version_parsing(raw: bytes, want: str) -> None:
    assert parse_semver(raw) == want
