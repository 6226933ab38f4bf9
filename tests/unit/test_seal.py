"""Seal/unseal: stock age and zstd read what we write, and tampering never yields plaintext."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
from pathlib import Path

import pyrage
import pytest

from etcd_backup_agent.errors import CryptoError
from etcd_backup_agent.seal import seal_file, unseal_stream
from etcd_backup_agent.seal_child import run_seal


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    p = tmp_path / "snap.db"
    # compressible and incompressible parts, a few MiB: several age chunks and zstd blocks
    p.write_bytes(os.urandom(1 << 20) + b"etcd" * (600_000) + os.urandom(4096))
    return p


@pytest.mark.integration
def test_stock_age_and_zstd_read_sealed_file(
    tmp_path: Path, payload: Path, age_identity: tuple[Path, str]
) -> None:
    key, recipient = age_identity
    sealed = tmp_path / "x.db.zst.age"
    result = seal_file(payload, sealed, [recipient], level=3)
    assert result.input_size == payload.stat().st_size
    assert result.object_size == sealed.stat().st_size
    assert result.object_sha256 == hashlib.sha256(sealed.read_bytes()).hexdigest()
    out = subprocess.run(
        f"age -d -i {key} {sealed} | zstd -d -c", shell=True, check=True, capture_output=True
    ).stdout
    assert out == payload.read_bytes()


def test_child_process_seal_matches(
    tmp_path: Path, payload: Path, age_identity: tuple[Path, str]
) -> None:
    key, recipient = age_identity
    sealed = tmp_path / "x.age"
    result = run_seal(payload, sealed, (recipient,), level=1)
    assert result.object_size == sealed.stat().st_size
    with sealed.open("rb") as f:
        un = unseal_stream(f, tmp_path / "back.db", key.read_text())
    assert (tmp_path / "back.db").read_bytes() == payload.read_bytes()
    assert un.sha256 == hashlib.sha256(payload.read_bytes()).hexdigest()


def test_child_process_failure_leaves_no_output(
    tmp_path: Path, age_identity: tuple[Path, str]
) -> None:
    sealed = tmp_path / "x.age"
    with pytest.raises(CryptoError):
        run_seal(tmp_path / "missing.db", sealed, (age_identity[1],), level=1)
    assert not sealed.exists()


def test_unseal_reads_stock_tool_output(
    tmp_path: Path, payload: Path, age_identity: tuple[Path, str]
) -> None:
    key, recipient = age_identity
    sealed = tmp_path / "stock.age"
    subprocess.run(f"zstd -q -c {payload} | age -r {recipient} -o {sealed}", shell=True, check=True)
    with sealed.open("rb") as f:
        unseal_stream(f, tmp_path / "out.db", key.read_text())
    assert (tmp_path / "out.db").read_bytes() == payload.read_bytes()


def _sealed_bytes(tmp_path: Path, payload: Path, recipient: str) -> bytes:
    sealed = tmp_path / "s.age"
    seal_file(payload, sealed, [recipient], level=1)
    return sealed.read_bytes()


def test_wrong_identity_writes_nothing(
    tmp_path: Path, payload: Path, age_identity: tuple[Path, str]
) -> None:
    data = _sealed_bytes(tmp_path, payload, age_identity[1])
    other = str(pyrage.x25519.Identity.generate())
    dst = tmp_path / "out.db"
    with pytest.raises(CryptoError, match="cannot decrypt"):
        unseal_stream(io.BytesIO(data), dst, other)
    assert list(tmp_path.glob("*out.db*")) == []


@pytest.mark.parametrize("where", [0.5, 0.99])
def test_tampered_object_writes_nothing(
    tmp_path: Path, payload: Path, age_identity: tuple[Path, str], where: float
) -> None:
    data = bytearray(_sealed_bytes(tmp_path, payload, age_identity[1]))
    data[int(len(data) * where)] ^= 0x01
    dst = tmp_path / "out.db"
    with pytest.raises(CryptoError):
        unseal_stream(io.BytesIO(bytes(data)), dst, age_identity[0].read_text())
    assert list(tmp_path.glob("*out.db*")) == []


def test_truncated_object_writes_nothing(
    tmp_path: Path, payload: Path, age_identity: tuple[Path, str]
) -> None:
    data = _sealed_bytes(tmp_path, payload, age_identity[1])
    dst = tmp_path / "out.db"
    with pytest.raises(CryptoError):
        unseal_stream(io.BytesIO(data[: len(data) // 2]), dst, age_identity[0].read_text())
    assert list(tmp_path.glob("*out.db*")) == []


def test_identity_file_without_identity(tmp_path: Path) -> None:
    with pytest.raises(CryptoError, match="no age identity"):
        unseal_stream(io.BytesIO(b""), tmp_path / "o", "# only a comment\n")
