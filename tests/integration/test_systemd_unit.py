"""The systemd unit: it verifies cleanly, its sandbox scores low, and the runtime survives it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "etcd-backup-agent.service"
DROPINS = sorted((ROOT / "systemd" / "examples").glob("*.conf"))
# systemd-analyze security --threshold is in tenths: 25 means an exposure of 2.5.
MAX_EXPOSURE = 2.5

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed"),
]


def _unit_with_fake_binary(tmp_path: Path, dropins: Sequence[Path] = ()) -> Path:
    """A copy of the unit (plus drop-ins) whose ExecStart names an executable that exists."""
    fake = tmp_path / "etcd-backup-agent"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    text = UNIT.read_text()
    assert "ExecStart=/usr/bin/etcd-backup-agent run " in text
    text = text.replace("ExecStart=/usr/bin/etcd-backup-agent", f"ExecStart={fake}")
    unit = tmp_path / "etcd-backup-agent.service"
    unit.write_text(text)
    if dropins:
        d = tmp_path / "etcd-backup-agent.service.d"
        d.mkdir()
        for dropin in dropins:
            shutil.copy(dropin, d / dropin.name)
    return unit


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run(
        [SYSTEMD_ANALYZE, *args], check=False, capture_output=True, text=True, timeout=120
    )


def test_unit_has_the_contract_the_daemon_relies_on() -> None:
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=60",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "ExecStart=/usr/bin/etcd-backup-agent run --config /etc/etcd-backup-agent/config.toml",
        "Restart=on-failure",
        "RuntimeDirectory=etcd-backup-agent",
        "StateDirectory=etcd-backup-agent",
        "UMask=0077",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "MemoryDenyWriteExecute=yes",
    ):
        assert re.search(rf"^{re.escape(line)}$", text, re.MULTILINE), f"missing {line!r}"
    assert re.search(r"^StartLimitBurst=\d+$", text, re.MULTILINE)
    assert re.search(r"^StartLimitIntervalSec=\S+$", text, re.MULTILINE)


def test_verify_reports_nothing(tmp_path: Path) -> None:
    unit = _unit_with_fake_binary(tmp_path)
    result = _analyze("verify", "--man=no", str(unit))
    # verify exits 0 even on "Unknown key" warnings: any stderr is a failure.
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr


def test_verify_catches_a_typo(tmp_path: Path) -> None:
    """The check above can fail: a misspelt directive shows up on stderr."""
    unit = _unit_with_fake_binary(tmp_path)
    unit.write_text(unit.read_text().replace("ProtectHome=yes", "ProtectHoem=yes"))
    result = _analyze("verify", "--man=no", str(unit))
    assert "ProtectHoem" in result.stderr


@pytest.mark.parametrize("dropin", DROPINS, ids=lambda p: p.name)
def test_dropin_examples_verify(tmp_path: Path, dropin: Path) -> None:
    unit = _unit_with_fake_binary(tmp_path, [dropin])
    result = _analyze("verify", "--man=no", str(unit))
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr


def _exposure(output: str) -> float:
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", output)
    assert m, output
    return float(m.group(1))


def test_security_exposure_within_threshold(tmp_path: Path) -> None:
    unit = _unit_with_fake_binary(tmp_path)
    threshold = f"--threshold={int(MAX_EXPOSURE * 10)}"
    result = _analyze("security", "--offline=yes", threshold, "--no-pager", str(unit))
    assert result.returncode == 0, result.stdout + result.stderr
    assert _exposure(result.stdout) <= MAX_EXPOSURE


def test_security_threshold_rejects_an_unhardened_unit(tmp_path: Path) -> None:
    """The threshold check can fail: the same unit without its sandbox scores far above it."""
    unit = _unit_with_fake_binary(tmp_path)
    kept = [
        line
        for line in unit.read_text().splitlines()
        if line.startswith(("[", "Description", "Type", "ExecStart", "NotifyAccess"))
    ]
    unit.write_text("\n".join(kept) + "\n")
    threshold = f"--threshold={int(MAX_EXPOSURE * 10)}"
    result = _analyze("security", "--offline=yes", threshold, "--no-pager", str(unit))
    assert result.returncode != 0
    assert _exposure(result.stdout) > MAX_EXPOSURE


_MDWE_PROBE = r"""
import ctypes, mmap, sys
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
    sys.exit(77)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
except PermissionError:
    pass
else:
    sys.exit("a writable+executable mapping was allowed: MDWE is not in force")
if sys.argv[1] == "jit":
    # What a JIT does: must be refused, or this probe proves nothing.
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
import boto3, etcd3, google_crc32c, grpc, prometheus_client, pyrage, structlog, zstandard
from pyrage import x25519
ident = x25519.Identity.generate()
data = b"etcd" * 100000
assert pyrage.decrypt(pyrage.encrypt(data, [ident.to_public()]), [ident]) == data
packed = zstandard.ZstdCompressor(level=3, threads=2).compress(data)
assert zstandard.ZstdDecompressor().decompress(packed) == data
google_crc32c.value(data)
channel = grpc.insecure_channel("127.0.0.1:9")
try:
    grpc.channel_ready_future(channel).result(timeout=0.5)
except grpc.FutureTimeoutError:
    pass
channel.close()
boto3.session.Session().client(
    "s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y"
)
print("ok")
"""


@pytest.mark.parametrize("mode", ["libraries", "jit"])
def test_runtime_works_under_memory_deny_write_execute(mode: str) -> None:
    """MemoryDenyWriteExecute=yes: the native extensions never need W+X memory.

    systemd 252 enforces it with seccomp; the kernel's PR_SET_MDWE (Linux 6.3+) refuses the
    same mappings, so the probe runs the libraries under it without needing systemd as PID 1.
    """
    result = subprocess.run(
        [sys.executable, "-c", _MDWE_PROBE, mode],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode == 77:
        pytest.skip("kernel without PR_SET_MDWE (Linux < 6.3)")
    if mode == "jit":
        assert result.returncode != 0
        assert "PermissionError" in result.stderr
    else:
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "ok"
