"""``etcd-backupctl``: the command line of the agent's control socket.

Exit codes: 0 success, 1 the operation failed or the daemon is unreachable, 2 usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..control import protocol as proto
from ..control.client import Unreachable, call, find_socket
from ..errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, AgentError, ConfigError
from ..pipes import quiet_broken_pipe
from . import keyspace_ctl, options
from .render import Progress, drill_failed, show

EPILOG = """examples:
  etcd-backupctl status
  etcd-backupctl list
  etcd-backupctl backup
  etcd-backupctl verify latest --identity /root/age-key.txt
  etcd-backupctl prune --dry-run
  etcd-backupctl restore latest --identity /root/age-key.txt --data-dir /var/lib/etcd-restored \\
      --name cp1 --initial-cluster cp1=https://10.0.0.1:2380 \\
      --initial-advertise-peer-urls https://10.0.0.1:2380
  etcd-backupctl drill latest
  etcd-backupctl inspect latest --identity /root/age-key.txt
  etcd-backupctl diff ID latest --identity /root/age-key.txt
  etcd-backupctl extract latest --identity /root/age-key.txt --key /registry/... -o yaml

exit codes: 0 ok, 1 failed or daemon unreachable, 2 usage
"""


def _common(default: Any) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--socket", metavar="PATH", default=default, help="the control socket")
    options.config_flag(common, default=default, help="read [control] socket from FILE")
    common.add_argument(
        "--json", action="store_true", default=default, help="print the raw JSON reply"
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    # options may come before or after the command: the subcommands' copies must not reset
    # what was given before the command, hence SUPPRESS there
    top = _common(None)
    common = _common(argparse.SUPPRESS)
    p = argparse.ArgumentParser(
        prog="etcd-backupctl",
        description="Talk to the running etcd-backup-agent through its local socket.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[top],
    )
    sub = p.add_subparsers(dest="op", metavar="COMMAND")
    sub.add_parser("status", parents=[common], help="the daemon's status")
    sub.add_parser("list", parents=[common], help="stored backups, newest first")
    sub.add_parser("backup", parents=[common], help="take a backup now")
    v = sub.add_parser("verify", parents=[common], help="download, decrypt and verify a backup")
    options.backup_arg(v)
    options.identity_flag(v, required=True)
    pr = sub.add_parser("prune", parents=[common], help="apply the retention policy")
    options.prune_flags(pr)
    r = sub.add_parser("restore", parents=[common], help="restore a backup into a new data dir")
    options.restore_flags(r, remote=True)
    d = sub.add_parser(
        "drill",
        parents=[common],
        help="restore drill: restore, read back; serve with etcd if present",
    )
    options.drill_flags(d)
    b = sub.add_parser("bundle", help="list or extract a backup's control-plane bundle")
    actions = b.add_subparsers(dest="bundle_action", metavar="ACTION", required=True)
    bl = actions.add_parser("list", parents=[common], help="the bundle's file list")
    options.backup_arg(bl)
    be = actions.add_parser("extract", parents=[common], help="write the bundle under DIR")
    options.bundle_extract_flags(be)
    keyspace_ctl.add_parsers(sub, common)
    return p


def request_args(ns: argparse.Namespace) -> dict[str, Any]:
    """The protocol arguments of a parsed command line."""
    if ns.op in keyspace_ctl.OPS:
        return keyspace_ctl.request_args(ns) | options.identity_request(ns.identity, remote=True)
    if ns.op == "prune":
        return {"dry_run": ns.dry_run}
    if ns.op == "restore":
        return options.restore_request(ns, remote=True)
    if ns.op == "bundle_extract":
        from ..bundle.extract import check_target

        check_target(Path(ns.to).absolute())  # before the download, not after
    if ns.op in ("verify", "drill", "bundle_list", "bundle_extract"):
        return {"backup": ns.backup} | options.identity_request(
            getattr(ns, "identity", None), remote=True
        )
    return {}


# The etcd-backup-agent command doing the same work without the daemon.
OFFLINE_EQUIVALENT = {
    "status": "list",
    "list": "list",
    "backup": "backup",
    "verify": "verify --backup",
    "prune": "prune",
    "restore": "restore",
    "drill": "drill",
    "bundle_list": "bundle list",
    "bundle_extract": "bundle extract",
    "inspect": "inspect",
    "diff": "diff",
    "extract": "extract",
}


@quiet_broken_pipe
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        ns = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code not in (0, None) else EXIT_OK
    if not ns.op:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if ns.op == "bundle":
        ns.op = f"bundle_{ns.bundle_action}"
    try:
        path = find_socket(ns)
    except ConfigError as exc:
        for problem in exc.problems:
            sys.stderr.write(f"config error: {problem}\n")
        return EXIT_USAGE
    try:
        args = request_args(ns)
    except AgentError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exc.exit_code
    ns.json = bool(ns.json)
    progress = Progress(sys.stderr, quiet=ns.json)
    try:
        reply = call(path, ns.op, args, on_event=progress)
    except Unreachable:
        cfg = f" --config {ns.config}" if ns.config else ""
        offline = OFFLINE_EQUIVALENT.get(ns.op, ns.op)
        sys.stderr.write(
            f"error: the agent is not running (no socket at {path}).\n"
            f"Without the daemon, run the same work offline: "
            f"`etcd-backup-agent {offline}{cfg} ...` (see etcd-backup-agent {offline.split()[0]}"
            f" --help); start the daemon with `systemctl start etcd-backup-agent`.\n"
        )
        return EXIT_FAILURE
    except (OSError, AgentError, ValueError) as exc:
        progress.clear()
        sys.stderr.write(f"error: talking to {path}: {exc}\n")
        return EXIT_FAILURE
    progress.clear()
    if ns.op == "bundle_extract" and reply.get("ok"):
        # the daemon sends the checked tar: this process writes it, as the caller's user
        from ..bundle.ops import write_fetched

        try:
            reply["result"] = write_fetched(reply.get("result") or {}, Path(ns.to).absolute())
        except AgentError as exc:
            sys.stderr.write(f"error: {exc}\n")
            return exc.exit_code
    if ns.json:
        sys.stdout.write(json.dumps(reply, indent=2) + "\n")
    if not reply.get("ok"):
        err = reply.get("error") or {}
        if not ns.json:
            sys.stderr.write(f"error ({err.get('code')}): {err.get('message')}\n")
        return EXIT_USAGE if err.get("code") in ("usage", proto.BAD_ARGS) else EXIT_FAILURE
    result = reply.get("result")
    if ns.op in keyspace_ctl.OPS and not ns.json:
        try:
            return keyspace_ctl.show(ns, result)
        except AgentError as exc:
            sys.stderr.write(f"error: {exc}\n")
            return exc.exit_code
    if not ns.json:
        show(ns.op, result)
    if ns.op == "drill" and isinstance(result, dict) and result.get("result") != "success":
        if not ns.json:
            sys.stderr.write(drill_failed(result) + "\n")
        return EXIT_FAILURE
    return EXIT_OK
