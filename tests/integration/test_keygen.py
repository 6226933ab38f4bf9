"""``etcd-backup-agent keygen``: identities that stock age reads, written safely."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECIPIENT = re.compile(r"age1[02-9ac-hj-np-z]{58}")


def keygen(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "agent")}
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "etcd_backup_agent.cli", "keygen", *args],
        check=False,
        capture_output="stdout" not in kwargs,
        text=True,
        env=env,
        timeout=60,
        **kwargs,
    )


def stock(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} missing: run `make setup` (Debian package age)")
    return path


@pytest.mark.integration
def test_identity_decrypts_what_stock_age_encrypts_for_the_printed_recipient(
    tmp_path: Path,
) -> None:
    key = tmp_path / "key.txt"
    result = keygen("--out", str(key))
    assert result.returncode == 0, result.stderr
    printed = RECIPIENT.findall(result.stdout)
    assert printed, result.stdout
    recipient = printed[0]
    assert f'recipients = ["{recipient}"]' in result.stdout
    assert "OFF the node" in result.stderr

    lines = key.read_text().splitlines()
    assert re.fullmatch(r"# created: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", lines[0])
    assert lines[1] == f"# public key: {recipient}"
    assert lines[2].startswith("AGE-SECRET-KEY-1")
    # stock age-keygen derives the same public key from the file
    derived = subprocess.run(
        [stock("age-keygen"), "-y", str(key)], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert derived == recipient

    plain = tmp_path / "plain.bin"
    plain.write_bytes(os.urandom(100_000))
    sealed = tmp_path / "plain.bin.age"
    subprocess.run(
        [stock("age"), "-r", recipient, "-o", str(sealed), str(plain)],
        check=True,
        capture_output=True,
    )
    opened = subprocess.run(
        [stock("age"), "-d", "-i", str(key), str(sealed)], check=True, capture_output=True
    ).stdout
    assert opened == plain.read_bytes()


def test_identity_file_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    key = tmp_path / "key.txt"
    old = os.umask(0o022)
    try:
        assert keygen("--out", str(key)).returncode == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["key.txt"]  # no temp file left behind


def test_refuses_to_overwrite_an_existing_file(tmp_path: Path) -> None:
    key = tmp_path / "key.txt"
    key.write_text("precious\n")
    result = keygen("--out", str(key))
    assert result.returncode == 2
    assert "refusing to overwrite" in result.stderr
    assert key.read_text() == "precious\n"
    assert [p.name for p in tmp_path.iterdir()] == ["key.txt"]


def test_force_replaces_the_file(tmp_path: Path) -> None:
    key = tmp_path / "key.txt"
    key.write_text("old\n")
    key.chmod(0o644)
    result = keygen("--out", str(key), "--force")
    assert result.returncode == 0, result.stderr
    assert key.read_text().splitlines()[2].startswith("AGE-SECRET-KEY-1")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_redirected_stdout_gets_the_identity_and_mode_0600(tmp_path: Path) -> None:
    key = tmp_path / "key.txt"
    with key.open("w") as out:
        key.chmod(0o644)
        result = keygen(stdout=out, stderr=subprocess.PIPE)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    text = key.read_text()
    assert "AGE-SECRET-KEY-1" in text
    assert "AGE-SECRET-KEY" not in result.stderr  # only the public key on stderr
    recipient = RECIPIENT.findall(result.stderr)[0]
    assert f"# public key: {recipient}" in text


def test_refuses_to_print_the_secret_to_a_terminal() -> None:
    leader, follower = os.openpty()
    try:
        result = keygen(stdout=follower, stderr=subprocess.PIPE)
        os.close(follower)
        follower = -1
        os.set_blocking(leader, False)
        try:
            shown = os.read(leader, 65536).decode(errors="replace")
        except (BlockingIOError, OSError):
            shown = ""
    finally:
        if follower >= 0:
            os.close(follower)
        os.close(leader)
    assert result.returncode == 2
    assert "terminal" in result.stderr
    assert "AGE-SECRET-KEY" not in shown
