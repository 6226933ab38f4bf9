"""Operator mistakes found by the acceptance run: a clear error and exit code, never a traceback.

Each case was a Python traceback on main (etcd-backup-agent 0.1.0 installed with pip).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from etcd_backup_agent.cli.ctl import main as ctl_main
from etcd_backup_agent.commands.extract_cmd import write_result
from etcd_backup_agent.errors import AgentError
from etcd_backup_agent.keyspace.extract import ExtractResult
from tests.agent_helpers import run_agent
from tests.snapfixtures import etcd_buckets, write


@pytest.fixture
def snapshot(tmp_path: Path) -> Path:
    """A small etcd-shaped bolt file with two Kubernetes objects."""
    path = tmp_path / "good.db"
    write(
        path,
        etcd_buckets(
            [
                ("put", b"/registry/configmaps/prod/a", b'{"kind":"ConfigMap"}'),
                ("put", b"/registry/configmaps/prod/b", b'{"kind":"ConfigMap"}'),
            ]
        ),
    )
    return path


@pytest.fixture
def not_a_snapshot(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text('[cluster]\nname = "prod"\n' * 200)
    return path


def _assert_clear(proc_err: str, *names: Path) -> None:
    assert "Traceback" not in proc_err
    assert "not a readable etcd snapshot" in proc_err
    for name in names:
        assert str(name) in proc_err


@pytest.mark.parametrize("command", ["inspect", "extract"])
def test_a_file_that_is_not_a_snapshot(command: str, not_a_snapshot: Path, tmp_path: Path) -> None:
    extra = ["--key", "/registry/configmaps/prod/a"] if command == "extract" else []
    proc = run_agent(command, "--snapshot", not_a_snapshot, *extra, "--config", "/nonexistent")
    # --config is not needed for a file; a missing one is still a usage error
    assert proc.returncode == 2, proc.stderr
    proc = run_agent(command, "--snapshot", not_a_snapshot, *extra)
    assert proc.returncode == 1, proc.stderr
    _assert_clear(proc.stderr, not_a_snapshot)


def test_a_truncated_snapshot(snapshot: Path, tmp_path: Path) -> None:
    data = snapshot.read_bytes()
    cut = tmp_path / "cut.db"
    cut.write_bytes(data[: len(data) // 2])
    proc = run_agent("inspect", "--snapshot", cut)
    assert proc.returncode == 1, proc.stderr
    _assert_clear(proc.stderr, cut)


def test_diff_names_the_bad_file(snapshot: Path, not_a_snapshot: Path) -> None:
    good = run_agent("diff", "--snapshot", snapshot, "--snapshot", snapshot)
    assert good.returncode == 0, good.stderr
    proc = run_agent("diff", "--snapshot", snapshot, "--snapshot", not_a_snapshot)
    assert proc.returncode == 1, proc.stderr
    _assert_clear(proc.stderr, not_a_snapshot)


def test_extract_out_is_a_file(snapshot: Path, tmp_path: Path) -> None:
    target = tmp_path / "existing-file"
    target.write_text("keep me\n")
    proc = run_agent("extract", "--snapshot", snapshot, "--prefix", "/registry/", "--out", target)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "is not a directory" in proc.stderr
    assert target.read_text() == "keep me\n"
    ok = run_agent(
        "extract", "--snapshot", snapshot, "--prefix", "/registry/", "--out", tmp_path / "x"
    )
    assert ok.returncode == 0, ok.stderr


def test_backupctl_extract_out_is_a_file_fails_before_the_socket(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "existing-file"
    target.write_text("")
    code = ctl_main(
        [
            "--socket",
            str(tmp_path / "none.sock"),
            "extract",
            "latest",
            "--identity",
            str(tmp_path / "key.txt"),
            "--key",
            "/registry/x",
            "--out",
            str(target),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "is not a directory" in err and "Traceback" not in err


def test_an_unwritable_out_dir_is_an_agent_error(snapshot: Path, tmp_path: Path) -> None:
    from etcd_backup_agent.config import Settings
    from etcd_backup_agent.keyspace import ops
    from etcd_backup_agent.keyspace.requests import ExtractRequest

    req = ExtractRequest.from_args({"backup": "", "prefix": "/registry/", "max_bytes": 1 << 20})
    result = ops.extract_path(Settings(), snapshot, req)
    assert isinstance(result, ExtractResult) and result.objects
    blocker = tmp_path / "out"
    blocker.mkdir()
    (blocker / "registry").write_text("a file where a directory must go")
    with pytest.raises(AgentError, match="cannot write the objects"):
        write_result(result, "json", blocker, keep=False)


def test_backup_force_without_from_data_dir_is_usage(tmp_path: Path) -> None:
    # before: accepted and ignored, an online backup was taken as if --force meant something
    proc = run_agent("backup", "--force", "--config", tmp_path / "none.toml")
    assert proc.returncode == 2, proc.stderr
    assert "--force goes with --from-data-dir" in proc.stderr


def test_verify_file_json_flag_is_not_ignored(snapshot: Path) -> None:
    # before: --json (documented for --backup) printed the table for a FILE
    table = run_agent("verify", snapshot, "--allow-no-trailer")
    assert table.returncode == 0, table.stderr
    proc = run_agent("verify", snapshot, "--allow-no-trailer", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == json.loads(
        run_agent("verify", snapshot, "--allow-no-trailer", "-w", "json").stdout
    )


def test_backupctl_list_shows_the_columns_of_the_offline_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from etcd_backup_agent.cli.render import show

    offline = run_agent(
        "list", "--config", _config(tmp_path), env=None
    )  # an empty store still prints the header
    assert offline.returncode == 0, offline.stderr
    header = offline.stdout.splitlines()[0].split()
    backup = {
        "id": "20260101T000000Z-r5-n",
        "created_at": "2026-01-01T00:00:00Z",
        "revision": 5,
        "db_size": 36864,
        "object_size": 1529,
        "total_keys": 28,
        "verified": True,
    }
    show("list", {"backups": [backup], "complete": True})
    lines = capsys.readouterr().out.splitlines()
    # before: DB SIZE in raw bytes and no STORED column
    assert lines[0].split() == header
    assert "36.0 KiB" in lines[1] and "1.5 KiB" in lines[1]


def _config(tmp_path: Path) -> Path:
    from tests.agent_helpers import write_config

    return write_config(
        tmp_path / "c.toml",
        endpoint="http://127.0.0.1:1",
        recipient="age1djcukg6z93s7n7cz44zwrty8kt365senermqw9c6e3ysx662vpqsmk5qj3",
        root=tmp_path,
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["etcd_backup_agent.cli", "inspect", "--snapshot", "{db}"],
        ["etcd_backup_agent.cli", "verify", "{db}", "--allow-no-trailer"],
    ],
)
def test_a_closed_stdout_is_not_a_traceback(snapshot: Path, argv: list[str]) -> None:
    # `etcd-backup-agent inspect ... | head -1` printed a BrokenPipeError traceback
    import subprocess
    import sys

    from tests.agent_helpers import agent_env

    module, *rest = argv
    code = f"import sys; from {module} import main; sys.exit(main())"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *(a.format(db=snapshot) for a in rest)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=agent_env(),
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the command writes a byte
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_inspect_report_reads_as_english(snapshot: Path) -> None:
    # before: "(compacted at never)" and "free pages - (defrag gives back)"
    proc = run_agent("inspect", "--snapshot", snapshot)
    assert proc.returncode == 0, proc.stderr
    first = proc.stdout.splitlines()[0]
    assert "(never compacted)" in first
    assert "free pages not recorded" in first


@pytest.mark.integration
def test_a_sealed_object_given_as_snapshot_gets_a_hint(
    snapshot: Path, age_identity: tuple[Path, str], tmp_path: Path
) -> None:
    import subprocess

    _, recipient = age_identity
    sealed = tmp_path / "x.db.age"
    subprocess.run(
        ["age", "-e", "-r", recipient, "-o", str(sealed), str(snapshot)], check=True, timeout=60
    )
    proc = run_agent("inspect", "--snapshot", sealed)
    assert proc.returncode == 1, proc.stderr
    _assert_clear(proc.stderr, sealed)
    assert "age-encrypted backup object" in proc.stderr and "--identity" in proc.stderr


def test_backupctl_status_reads_as_english(capsys: pytest.CaptureFixture[str]) -> None:
    from etcd_backup_agent.cli.render import show

    status = {
        "cluster": "prod",
        "node": "cp-1",
        "version": "0.1.0",
        "last": {"result": "success", "at": "2026-01-01T00:00:00Z"},
        "coordination": {"mode": "etcd-lock", "holder": None},
        "leader": True,
        "store": {"describe": "local:/x", "up": True},
        "spool": {"bytes": 3 * 1024 * 1024, "pending_uploads": 1},
    }
    show("status", status)
    out = capsys.readouterr().out
    # before: "local member is leader: True" and "3145728 bytes"
    assert "local member is leader: yes" in out
    assert "spool:        3.0 MiB, 1 backup(s) waiting for upload" in out
    show("status", status | {"leader": None})
    assert "local member is leader: unknown" in capsys.readouterr().out
