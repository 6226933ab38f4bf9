"""``etcd-backup-agent restore | drill``: the offline restore-side commands.

They run the same Operations as the daemon's socket, in this process (no daemon needed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..control.client import Progress, show
from ..errors import EXIT_FAILURE, EXIT_OK
from ..operations import Operations
from . import load_settings

RESTORE_EPILOG = """examples:
  etcd-backup-agent restore latest --identity /root/age-key.txt \\
      --data-dir /var/lib/etcd-restored --name cp1 \\
      --initial-cluster cp1=https://10.0.0.1:2380 \\
      --initial-advertise-peer-urls https://10.0.0.1:2380
  etcd-backup-agent restore latest ... --apply --layout kubeadm --dry-run   (print the swap plan)

The target data dir must not exist or be empty; nothing existing is ever deleted.
exit codes: 0 restored, 1 failed (target untouched), 2 usage or config
"""


def identity_args(value: str | None) -> dict[str, Any]:
    if value is None:
        return {}
    if value == "-":
        return {"identity": sys.stdin.read(65536)}
    return {"identity_file": value}


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    r = sub.add_parser(
        "restore",
        parents=[common],
        help="restore a backup into a new etcd data dir (no daemon needed)",
        description="Fetch a backup, check it against its manifest, decrypt, verify, and run "
        "`etcdutl snapshot restore` into a NEW data dir; optionally swap it in.",
        epilog=RESTORE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("backup", metavar="ID|latest")
    r.add_argument("--identity", required=True, metavar="FILE", help="age identity file, or -")
    r.add_argument("--data-dir", required=True, type=Path, help="the NEW data dir")
    r.add_argument("--name", default="default", help="this member's name")
    r.add_argument("--initial-cluster", default="", help="NAME=PEER_URL,... of every member")
    r.add_argument("--initial-advertise-peer-urls", default="http://127.0.0.1:2380")
    r.add_argument("--initial-cluster-token", default="etcd-cluster")
    r.add_argument("--bump-revision", type=int, help="needs etcdutl >= 3.5.10")
    r.add_argument("--mark-compacted", action="store_true", help="with --bump-revision")
    r.add_argument("--apply", action="store_true", help="also swap the restored dir in")
    r.add_argument("--layout", choices=("kubeadm", "systemd"), help="how etcd runs here")
    r.add_argument("--dry-run", action="store_true", help="print the swap plan, touch nothing")
    r.add_argument("--swap-wait", type=float, default=30.0, help="seconds for pods to stop")
    r.add_argument(
        "--with-bundle",
        action="store_true",
        help="kubeadm swap: also put the backup's control-plane bundle back (files it "
        "replaces are copied aside first; nothing is deleted)",
    )
    r.add_argument("--json", action="store_true", help="print the report as JSON")
    r.set_defaults(handler=run_restore)

    d = sub.add_parser(
        "drill",
        parents=[common],
        help="restore drill: start a throwaway etcd from a backup and compare",
        description="Restore a backup into a temporary dir, start a throwaway etcd on "
        "loopback, compare revision and key count with the manifest, clean up.",
    )
    d.add_argument("backup", nargs="?", default="latest", metavar="ID|latest")
    d.add_argument("--identity", metavar="FILE", help="age identity (default [drill] identity)")
    d.add_argument("--json", action="store_true")
    d.set_defaults(handler=run_drill)


def print_result(op: str, result: Any, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")
    else:
        show(op, result)


def run_offline(args: argparse.Namespace, op: str, request: dict[str, Any]) -> Any:
    """Run ``op`` in this process (no daemon), with progress on stderr; print its result."""
    settings = load_settings(args)
    progress = Progress(sys.stderr, quiet=args.json)
    try:
        result = Operations(settings).dispatch(op, request, progress)
    finally:
        progress.clear()
    print_result(op, result, args.json)
    return result


def run_restore(args: argparse.Namespace) -> int:
    req: dict[str, Any] = {
        "backup": args.backup,
        "data_dir": str(args.data_dir.absolute()),
        "name": args.name,
        "initial_advertise_peer_urls": args.initial_advertise_peer_urls,
        "initial_cluster_token": args.initial_cluster_token,
        "mark_compacted": args.mark_compacted,
        "apply": args.apply,
        "dry_run": args.dry_run,
        "swap_wait": args.swap_wait,
    } | identity_args(args.identity)
    if args.with_bundle:
        req["with_bundle"] = True
    if args.initial_cluster:
        req["initial_cluster"] = args.initial_cluster
    if args.layout:
        req["layout"] = args.layout
    if args.bump_revision is not None:
        req["bump_revision"] = args.bump_revision
    run_offline(args, "restore", req)
    return EXIT_OK


def run_drill(args: argparse.Namespace) -> int:
    result = run_offline(args, "drill", {"backup": args.backup} | identity_args(args.identity))
    if result.get("result") != "success":
        sys.stderr.write(f"drill FAILED: {result.get('error')}\n")
        return EXIT_FAILURE
    return EXIT_OK
