"""RestoreOptions: one set of restore flags and defaults for both commands and the socket."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from etcd_backup_agent import cli
from etcd_backup_agent.cli import ctl, options
from etcd_backup_agent.control.protocol import parse_request
from etcd_backup_agent.errors import UsageError
from etcd_backup_agent.restore.member import K8S_BUMP
from etcd_backup_agent.restore.options import DEFAULTS, RestoreOptions

BASE = ["restore", "latest", "--identity", "/k", "--data-dir", "/var/lib/etcd-new"]


def _ctl_args(*extra: str) -> dict[str, Any]:
    """What etcd-backupctl sends for these flags."""
    return options.restore_request(ctl.build_parser().parse_args([*BASE, *extra]), remote=True)


def _agent(*extra: str) -> RestoreOptions:
    ns = cli.build_parser().parse_args([*BASE, *extra])
    return RestoreOptions.from_args(options.restore_request(ns, remote=False))


def _ctl(*extra: str) -> RestoreOptions:
    return RestoreOptions.from_args(_ctl_args(*extra))


def test_both_commands_build_the_same_options_with_the_same_defaults() -> None:
    want = RestoreOptions(backup="latest", data_dir=Path("/var/lib/etcd-new"))
    assert _agent() == _ctl() == want
    flags = ("--name", "cp1", "--initial-cluster", "cp1=http://a:2380,cp2=http://b:2380",
             "--initial-advertise-peer-urls", "http://a:2380", "--initial-cluster-token", "t",
             "--bump-revision", "5", "--mark-compacted", "--wal-dir", "/w", "--apply",
             "--layout", "kubeadm", "--swap-wait", "2.5", "--with-bundle")  # fmt: skip
    assert _agent(*flags) == _ctl(*flags)
    assert _agent(*flags).swap_wait == 2.5 and _agent(*flags).wal_dir == Path("/w")


def test_relative_paths_become_absolute_where_the_operator_typed_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    ns = cli.build_parser().parse_args(["restore", "--snapshot", "s.db", "--data-dir", "new"])
    opts = RestoreOptions.from_args(options.restore_request(ns, remote=False))
    assert opts.snapshot == tmp_path / "s.db" and opts.data_dir == tmp_path / "new"


def test_socket_arguments_round_trip_and_pass_the_schema() -> None:
    flags = ("--name", "cp1", "--initial-cluster", "cp1=http://127.0.0.1:2380",
             "--initial-advertise-peer-urls", "http://127.0.0.1:2380", "--bump-revision",
             "7", "--mark-compacted")  # fmt: skip
    opts, args = _ctl(*flags), _ctl_args(*flags)
    assert "snapshot" not in args and "allow_no_trailer" not in args  # offline only
    req = parse_request(json.dumps({"v": 1, "op": "restore", "args": args}).encode())
    assert RestoreOptions.from_args(req.args) == opts
    assert RestoreOptions.from_args({}) == DEFAULTS


def test_an_int_swap_wait_from_a_socket_client_is_a_float() -> None:
    assert RestoreOptions.from_args({"swap_wait": 3}).swap_wait == 3.0


@pytest.mark.parametrize(
    ("layout", "engine", "bump", "want"),
    [
        ("kubeadm", "native", None, K8S_BUMP),  # Kubernetes watch caches must re-list
        ("k3s", "native", None, K8S_BUMP),
        ("systemd", "native", None, None),
        ("kubeadm", "etcdutl", None, None),  # old etcdutl cannot bump: never implied
        ("kubeadm", "native", 0, None),  # 0 = no bump
        (None, "native", 9, 9),
    ],
)
def test_the_revision_bump_default(
    layout: str | None, engine: str, bump: int | None, want: int | None
) -> None:
    opts = RestoreOptions(
        data_dir=Path("/d"), layout=layout, bump_revision=bump, mark_compacted=bump == 9
    )
    spec = opts.member_spec(engine)
    assert spec.bump_revision == want
    assert spec.mark_compacted is (want is not None)


def test_check_refuses_what_no_restore_serves() -> None:
    with pytest.raises(UsageError, match="--apply needs --layout"):
        RestoreOptions(data_dir=Path("/d"), apply=True).check()
    with pytest.raises(UsageError, match="--data-dir is required"):
        RestoreOptions(backup="latest").check()
    with pytest.raises(UsageError, match="absolute"):
        RestoreOptions(data_dir=Path("rel")).check()
    RestoreOptions(backup="latest", layout="rke2", apply=True).check()  # no data dir needed
