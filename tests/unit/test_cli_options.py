"""etcd-backup-agent and etcd-backupctl take the same flags the same way (cli/options.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from etcd_backup_agent.cli import build_parser, ctl
from etcd_backup_agent.cli.options import restore_request

# etcd-backup-agent command -> the etcd-backupctl command doing the same work
PAIRS = {
    ("restore",): ("restore",),
    ("drill",): ("drill",),
    ("prune",): ("prune",),
    ("inspect",): ("inspect",),
    ("diff",): ("diff",),
    ("extract",): ("extract",),
    ("bundle", "list"): ("bundle", "list"),
    ("bundle", "extract"): ("bundle", "extract"),
}
# flags that mean something else in each program, by design
OWN = {"--json", "--config", "-h"}


def _sub(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> argparse.ArgumentParser:
    for name in path:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


def _flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {
        a.option_strings[-1] if a.option_strings else a.dest: a
        for a in parser._actions
        if not set(a.option_strings) & OWN
    }


@pytest.mark.parametrize(("agent_cmd", "ctl_cmd"), list(PAIRS.items()))
def test_a_flag_of_both_programs_has_one_meaning(
    agent_cmd: tuple[str, ...], ctl_cmd: tuple[str, ...]
) -> None:
    offline = _flags(_sub(build_parser(), agent_cmd))
    remote = _flags(_sub(ctl.build_parser(), ctl_cmd))
    shared = offline.keys() & remote.keys()
    assert len(shared) >= 1, (agent_cmd, sorted(offline), sorted(remote))
    for name in shared:
        a, b = offline[name], remote[name]
        # required-ness may differ (the client only names stored backups), nothing else
        for attr in ("help", "default", "metavar", "choices", "type", "nargs", "const"):
            if name in ("backup", "--identity", "--data-dir") and attr in ("nargs", "help"):
                continue
            assert getattr(a, attr) == getattr(b, attr), (agent_cmd, name, attr)


def test_every_flag_of_the_client_exists_offline() -> None:
    """What etcd-backupctl can ask the daemon, etcd-backup-agent can do without it."""
    for agent_cmd, ctl_cmd in PAIRS.items():
        offline = _flags(_sub(build_parser(), agent_cmd))
        remote = _flags(_sub(ctl.build_parser(), ctl_cmd))
        missing = remote.keys() - offline.keys() - {"--socket", "a", "b"}
        assert not missing, (ctl_cmd, missing)


RESTORE = [
    "restore",
    "latest",
    "--identity",
    "key.txt",
    "--data-dir",
    "new",
    "--name",
    "cp1",
    "--initial-cluster",
    "cp1=https://10.0.0.1:2380",
    "--layout",
    "kubeadm",
    "--dry-run",
]


def test_both_programs_send_the_same_restore_request() -> None:
    offline = restore_request(build_parser().parse_args(RESTORE), remote=False)
    remote = ctl.request_args(ctl.build_parser().parse_args(RESTORE))
    # the daemon has its own working directory: the client sends an absolute identity path
    assert offline.pop("identity_file") == "key.txt"
    assert remote.pop("identity_file") == str(Path("key.txt").resolve())
    assert offline == remote
    assert remote["data_dir"] == str(Path("new").absolute())
    assert remote["name"] == "cp1" and remote["layout"] == "kubeadm" and remote["dry_run"]


def test_a_restore_flag_not_given_is_not_sent() -> None:
    """The restore's own defaults then apply: the command line keeps no copy of them."""
    req = restore_request(
        build_parser().parse_args(["restore", "--snapshot", "s.db", "--data-dir", "d"]),
        remote=False,
    )
    assert set(req) == {
        "snapshot",
        "allow_no_trailer",
        "data_dir",
        "mark_compacted",
        "apply",
        "dry_run",
    }
