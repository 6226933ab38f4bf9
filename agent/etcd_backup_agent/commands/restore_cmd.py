"""``etcd-backup-agent restore | drill``: the offline restore-side commands.

They run the same Agent operations as the daemon's socket, in this process (no daemon needed).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .. import scratch
from ..cli import options
from ..cli.render import Progress, drill_failed, show
from ..control.dispatch import dispatch_offline
from ..errors import EXIT_FAILURE, EXIT_OK, UsageError
from ..restore.fetch import work_root
from ..restore.options import RestoreOptions
from . import load_settings

RESTORE_EPILOG = """examples:
  etcd-backup-agent restore latest --identity /root/age-key.txt \\
      --data-dir /var/lib/etcd-restored --name cp1 \\
      --initial-cluster cp1=https://10.0.0.1:2380 \\
      --initial-advertise-peer-urls https://10.0.0.1:2380
  etcd-backup-agent restore latest ... --apply --layout kubeadm --dry-run   (print the swap plan)
  etcd-backup-agent restore --snapshot /root/snap.db --data-dir /var/lib/etcd-new ...
      (a local plaintext snapshot, e.g. from `etcdctl snapshot save`; no identity needed)
  etcd-backup-agent restore latest --identity KEY --layout k3s --apply
      (k3s/RKE2: place the snapshot and print the `k3s server --cluster-reset` command)

The restore engine is [restore] engine: "native" (default, no etcd binaries needed) or
"etcdutl". With --layout kubeadm|k3s|rke2 the native engine bumps the revision by
1000000000 and marks it compacted unless --bump-revision is given (0 = no bump).
The target data dir must not exist or be empty; nothing existing is ever deleted.
exit codes: 0 restored, 1 failed (target untouched), 2 usage or config
"""


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    r = sub.add_parser(
        "restore",
        parents=[common],
        help="restore a backup into a new etcd data dir (no daemon needed)",
        description="Fetch a backup (or take a local --snapshot), check it, decrypt, verify, "
        "and write a NEW etcd data dir as `etcdutl snapshot restore` would (natively, or with "
        "etcdutl); optionally swap it in.",
        epilog=RESTORE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    options.restore_flags(r, remote=False)
    options.json_flag(r, help="print the report as JSON")
    r.set_defaults(handler=run_restore)

    d = sub.add_parser(
        "drill",
        parents=[common],
        help="restore drill: restore a backup, read it back, serve it with etcd if present",
        description="Restore a backup into a private temporary dir and read every file "
        "written back natively (db, WAL, snap file, members, revision and key count against "
        "the manifest): a native drill, no etcd binary needed. When [drill] etcd is found, "
        "also start a throwaway etcd on loopback and read the keys back: a full drill. "
        "Everything is removed afterwards.",
        epilog="examples:\n"
        "  etcd-backup-agent drill latest --identity /root/age-key.txt\n"
        "  etcd-backup-agent drill 20260101T000000Z-r1234-cp1 --json   ([drill] identity_file)\n"
        "exit codes: 0 the drill passed, 1 it failed, 2 usage or config (docs/drill.md)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    options.drill_flags(d)
    options.json_flag(d)
    d.set_defaults(handler=run_drill)


def print_result(op: str, result: Any, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")
    else:
        show(op, result)


def run_offline(args: argparse.Namespace, op: str, request: dict[str, Any]) -> Any:
    """Run ``op`` in this process (no daemon), with progress on stderr; print its result."""
    settings = load_settings(args)
    scratch.sweep(work_root(settings))  # what a killed restore, drill or verify left
    progress = Progress(sys.stderr, quiet=args.json)
    try:
        result = dispatch_offline(settings, op, request, progress)
    finally:
        progress.clear()
    print_result(op, result, args.json)
    return result


def run_restore(args: argparse.Namespace) -> int:
    if (args.backup is None) == (args.snapshot is None):
        raise UsageError("give a backup (ID or latest) or --snapshot FILE, not both")
    if args.backup is not None and args.identity is None:
        raise UsageError("restoring a backup needs --identity FILE (or -)")
    req = options.restore_request(args, remote=False)
    RestoreOptions.from_args(req).check()
    run_offline(args, "restore", req)
    return EXIT_OK


def run_drill(args: argparse.Namespace) -> int:
    result = run_offline(
        args, "drill", {"backup": args.backup} | options.identity_request(args.identity)
    )
    if result.get("result") != "success":
        sys.stderr.write(drill_failed(result) + "\n")
        return EXIT_FAILURE
    return EXIT_OK
