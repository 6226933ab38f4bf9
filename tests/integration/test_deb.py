"""The Debian package: metadata, file list, and a venv that runs where it is unpacked."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "opt/etcd-backup-agent"
pytestmark = [pytest.mark.slow, pytest.mark.integration]

# Tags lintian reports that follow from shipping a self-contained venv in /opt (reasons in
# docs/packaging.md). A tag outside this list fails the test.
ACCEPTED_LINTIAN_TAGS = frozenset(
    {
        "dir-or-file-in-opt",
        "wrong-path-for-interpreter",
        "executable-not-elf-or-script",
        "unstripped-binary-or-object",
        "unusual-interpreter",
        "script-not-executable",
        "embedded-library",
        "non-standard-file-perm",
        "non-standard-dir-perm",
        "no-manual-page",
    }
)


def version() -> str:
    text = (ROOT / "agent" / "etcd_backup_agent" / "__init__.py").read_text()
    m = re.search(r'^__version__ = "([^"]+)"$', text, re.MULTILINE)
    assert m
    return m.group(1)


def clean_env() -> dict[str, str]:
    """No PYTHONPATH or venv from the test run leaks into the packaged interpreter."""
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": os.environ.get("HOME", "/root")}


@pytest.fixture(scope="session")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    for tool in ("dpkg-deb", "objdump"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} missing: run `make setup`")
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        ["bash", str(ROOT / "packaging" / "build-deb.sh")],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, "OUT": str(out), "PYTHONPATH": ""},
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    arch = subprocess.run(
        ["dpkg", "--print-architecture"], check=True, capture_output=True, text=True
    ).stdout.strip()
    path = out / f"etcd-backup-agent_{version()}_{arch}.deb"
    assert path.is_file(), sorted(p.name for p in out.iterdir())
    return path


@pytest.fixture(scope="session")
def unpacked(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("root")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    control = root / "DEBIAN"
    subprocess.run(["dpkg-deb", "-e", str(deb), str(control)], check=True)
    yield root


def packaged_python(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the venv's interpreter from the unpacked tree (it finds its venv via pyvenv.cfg)."""
    return subprocess.run(
        [str(root / PREFIX / "bin" / "python"), *args],
        check=False,
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=root,
        timeout=120,
    )


def test_control_metadata(deb: Path) -> None:
    info = subprocess.run(
        ["dpkg-deb", "-I", str(deb)], check=True, capture_output=True, text=True
    ).stdout
    fields = dict(re.findall(r"^ (\S+): (.*)$", info, re.MULTILINE))
    assert fields["Package"] == "etcd-backup-agent"
    assert fields["Version"] == version()
    assert re.search(r"\bpython3 \(>= 3\.1[1-9]~?\)", fields["Depends"]), fields["Depends"]
    assert re.search(r"\blibc6 \(>= 2\.\d+\)", fields["Depends"]), fields["Depends"]
    assert {r.strip() for r in fields["Recommends"].split(",")} == {"age", "zstd"}
    for script in ("postinst", "prerm", "postrm", "conffiles"):
        assert re.search(rf"^\s+\d+ bytes,\s+\d+ lines\s+\*?\s+{script}\b", info, re.M), script


def test_file_list(deb: Path) -> None:
    listing = subprocess.run(
        ["dpkg-deb", "-c", str(deb)], check=True, capture_output=True, text=True
    ).stdout
    entries = {}
    for line in listing.splitlines():
        parts = line.split(None, 5)
        name = parts[5].split(" -> ")[0]
        entries[name] = (parts[0], parts[1], line)
    assert entries["./etc/etcd-backup-agent/config.toml"][:2] == ("-rw-------", "root/root")
    assert entries["./etc/etcd-backup-agent/"][0] == "drwx------"
    assert entries["./lib/systemd/system/etcd-backup-agent.service"][0] == "-rw-r--r--"
    for cmd in ("etcd-backup-agent", "etcd-backupctl"):
        perm, _, line = entries[f"./usr/bin/{cmd}"]
        assert perm.startswith("l"), line
        assert line.endswith(f"-> /{PREFIX}/bin/{cmd}"), line
        assert entries[f"./{PREFIX}/bin/{cmd}"][0] == "-rwxr-xr-x"
    assert f"./{PREFIX}/pyvenv.cfg" in entries
    names = "\n".join(entries)
    for absent in (
        "site-packages/pytest",
        "site-packages/mypy/",
        "site-packages/ruff",
        "site-packages/pip/",
        "__pycache__",
        ".pyc",
        "bin/activate",
    ):
        assert absent not in names, f"{absent} must not be packaged"
    for present in ("grpc/", "pyrage/", "zstandard/", "etcd3/", "boto3/", "etcd_backup_agent/"):
        assert re.search(rf"site-packages/{re.escape(present)}", names), present


def test_conffile_and_unit_are_the_repository_files(unpacked: Path) -> None:
    assert (unpacked / "DEBIAN" / "conffiles").read_text().split() == [
        "/etc/etcd-backup-agent/config.toml"
    ]
    assert (unpacked / "etc/etcd-backup-agent/config.toml").read_bytes() == (
        ROOT / "config" / "example.toml"
    ).read_bytes()
    assert (unpacked / "lib/systemd/system/etcd-backup-agent.service").read_bytes() == (
        ROOT / "systemd" / "etcd-backup-agent.service"
    ).read_bytes()


def test_maintainer_scripts_never_enable_or_start(unpacked: Path) -> None:
    for name in ("postinst", "prerm", "postrm"):
        script = unpacked / "DEBIAN" / name
        assert stat.S_IMODE(script.stat().st_mode) == 0o755
        subprocess.run(["sh", "-n", str(script)], check=True)
        for line in script.read_text().splitlines():
            cmd = line.strip()
            if cmd.startswith("systemctl"):
                assert re.fullmatch(r"systemctl --system daemon-reload\b.*", cmd), cmd
            if cmd.startswith("deb-systemd-invoke"):
                assert cmd.startswith("deb-systemd-invoke stop "), cmd
    postinst = (unpacked / "DEBIAN" / "postinst").read_text()
    assert "NOT enabled and NOT started" in postinst
    assert "recipients" in postinst


def test_no_file_names_the_build_directory(unpacked: Path) -> None:
    venv = unpacked / PREFIX
    assert (venv / "bin" / "etcd-backup-agent").read_text().startswith(f"#!/{PREFIX}/bin/python")
    cfg = (venv / "pyvenv.cfg").read_text()
    assert "build-deb." not in cfg
    assert re.search(r"^home = /usr/bin$", cfg, re.M), cfg
    hits = subprocess.run(
        ["grep", "-rlI", "-e", "build-deb\\.", str(venv / "bin"), str(venv / "pyvenv.cfg")],
        check=False,
        capture_output=True,
        text=True,
    )
    assert hits.stdout == "", hits.stdout


def test_unpacked_venv_runs_the_agent(unpacked: Path) -> None:
    script = unpacked / PREFIX / "bin" / "etcd-backup-agent"
    result = packaged_python(unpacked, str(script), "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"etcd-backup-agent {version()}"
    where = packaged_python(
        unpacked,
        "-c",
        "import sys, etcd_backup_agent, grpc, pyrage, zstandard, google_crc32c, etcd3, boto3;"
        "print(sys.prefix); print(etcd_backup_agent.__file__)",
    )
    assert where.returncode == 0, where.stderr
    prefix, module = where.stdout.split()
    assert Path(prefix) == unpacked / PREFIX
    assert Path(module).is_relative_to(unpacked / PREFIX / "lib")


def test_unpacked_agent_checks_the_shipped_config(unpacked: Path, tmp_path: Path) -> None:
    key = tmp_path / "key.txt"
    gen = packaged_python(unpacked, "-m", "etcd_backup_agent.cli", "keygen", "--out", str(key))
    assert gen.returncode == 0, gen.stderr
    recipient = re.findall(r"age1[02-9ac-hj-np-z]{58}", gen.stdout)[0]
    shipped = (unpacked / "etc/etcd-backup-agent/config.toml").read_text()
    config = tmp_path / "config.toml"
    config.write_text(
        re.sub(
            r'^recipients = \["age1\w+"\]$',
            f'recipients = ["{recipient}"]',
            shipped,
            count=1,
            flags=re.M,
        )
    )
    assert recipient in config.read_text()
    check = packaged_python(
        unpacked, "-m", "etcd_backup_agent.cli", "config", "check", "--config", str(config)
    )
    assert check.returncode == 0, check.stderr
    assert "OK" in check.stdout
    config.write_text(config.read_text().replace("[schedule]", "[schedul]"))
    bad = packaged_python(
        unpacked, "-m", "etcd_backup_agent.cli", "config", "check", "--config", str(config)
    )
    assert bad.returncode == 2
    assert "schedul" in bad.stderr


def test_lintian_reports_only_accepted_tags(deb: Path) -> None:
    lintian = shutil.which("lintian")
    if lintian is None:
        pytest.skip("lintian not installed (Debian package lintian)")
    result = subprocess.run(
        [lintian, "--tag-display-limit", "0", str(deb)],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    tags = set(re.findall(r"^[EWIXP]: etcd-backup-agent: (\S+)", result.stdout, re.M))
    assert tags, result.stdout + result.stderr
    assert tags <= ACCEPTED_LINTIAN_TAGS, sorted(tags - ACCEPTED_LINTIAN_TAGS)
