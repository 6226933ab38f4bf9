from __future__ import annotations

import hashlib
from pathlib import Path

from etcd_backup_agent.snapshot.trailer import check_trailer
from tests.snapfixtures import append_trailer


def _db(path: Path, pages: int = 3) -> bytes:
    data = bytes(range(256)) * (16 * pages)
    path.write_bytes(data)
    return data


def test_valid_trailer(tmp_path: Path) -> None:
    f = tmp_path / "s.db"
    data = _db(f)
    f.write_bytes(data + hashlib.sha256(data).digest())
    r = check_trailer(f)
    assert r.present and r.ok is True
    assert r.actual == hashlib.sha256(data).hexdigest()


def test_missing_trailer(tmp_path: Path) -> None:
    f = tmp_path / "s.db"
    _db(f)
    r = check_trailer(f)
    assert not r.present and r.ok is None
    assert "no sha256 trailer" in r.message


def test_altered_trailer(tmp_path: Path) -> None:
    f = tmp_path / "s.db"
    data = _db(f)
    f.write_bytes(data + bytes(32))
    r = check_trailer(f)
    assert r.present and r.ok is False
    assert "mismatch" in r.message


def test_altered_content(tmp_path: Path) -> None:
    f = tmp_path / "s.db"
    data = _db(f)
    digest = hashlib.sha256(data).digest()
    f.write_bytes(b"X" + data[1:] + digest)
    assert check_trailer(f).ok is False


def test_odd_size_is_truncation(tmp_path: Path) -> None:
    f = tmp_path / "s.db"
    data = _db(f)
    f.write_bytes(data[:-100])
    r = check_trailer(f)
    assert r.ok is False and "truncated" in r.message


def test_append_then_check(tmp_path: Path) -> None:
    f = tmp_path / "s.db"
    data = _db(f, pages=600)  # more than one read chunk
    assert append_trailer(f) == hashlib.sha256(data).hexdigest()
    assert check_trailer(f).ok is True
