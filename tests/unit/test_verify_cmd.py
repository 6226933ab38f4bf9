from __future__ import annotations

import json
from pathlib import Path

import pytest

from etcd_backup_agent.cli import main
from etcd_backup_agent.snapshot.status import compute_status
from tests.snapfixtures import etcd_buckets, flip, write

HISTORY = [("put", b"/a", b"1"), ("put", b"/b", b"2"), ("del", b"/a", b"")]


@pytest.fixture
def snap(tmp_path: Path) -> Path:
    path = tmp_path / "s.db"
    write(path, etcd_buckets(HISTORY, storage_version=b"3.6.0"))
    return path


def test_json_has_exactly_etcdutl_keys(snap: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(snap), "-w", "json", "--rules", "3.5"]) == 0
    out = json.loads(capsys.readouterr().out)
    st = compute_status(snap, rules="3.5")
    assert out == {
        "hash": st.hash,
        "revision": 4,
        "totalKey": st.total_key,
        "totalSize": st.total_size,
    }


def test_json_with_36_rules_adds_version(snap: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(snap), "-w", "json", "--rules", "3.6"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["version"] == "3.6.0" and out["totalKey"] == 1
    assert list(out) == ["hash", "revision", "totalKey", "totalSize", "version"]


def test_table_output(snap: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(snap)]) == 0
    out = capsys.readouterr().out
    assert "HASH" in out and "VERSION" in out and f"{compute_status(snap).hash:x}" in out


def test_unsound_exits_1_with_one_reason_per_line(
    snap: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flip(snap, 16 + 40, 0x01)  # meta 0 checksum
    assert main(["verify", str(snap), "-w", "json"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert "page 0: meta page invalid: meta checksum mismatch" in lines
    assert any(line.startswith("sha256 trailer mismatch") for line in lines)


def test_missing_trailer_needs_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "raw.db"
    write(path, etcd_buckets(HISTORY), trailer=False)
    assert main(["verify", str(path)]) == 1
    err = capsys.readouterr().err
    assert "no sha256 trailer" in err and "--allow-no-trailer" in err
    assert main(["verify", str(path), "--allow-no-trailer"]) == 0


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify"]) == 2
    with pytest.raises(SystemExit) as info:
        main(["verify", "x", "--rules", "3.7"])
    assert info.value.code == 2


def test_missing_file_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(tmp_path / "nope.db")]) == 1
    assert "cannot read" in capsys.readouterr().err
