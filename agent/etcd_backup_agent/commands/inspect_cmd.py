"""``etcd-backup-agent inspect``: what is in a backup, per Kubernetes resource, no restore."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..cli import options
from ..cli.render import Progress
from ..config import DEFAULT_CONFIG_PATH, Settings
from ..control.dispatch import dispatch_offline
from ..errors import EXIT_OK, UsageError
from . import load_settings

EPILOG = """examples:
  etcd-backup-agent inspect --snapshot snapshot.db            (a file: no config needed)
  etcd-backup-agent inspect latest --identity /root/age-key.txt
  etcd-backup-agent inspect 20260101T000000Z-r1234-cp1 --identity key.txt --json --top 50

A stored backup is downloaded, checked against its manifest, decrypted and verified as
`verify --backup` does, analyzed, and removed; nothing is restored. Figures: BYTES is
key + value of the latest revisions, HISTORY is what compaction would free (older
revisions and tombstones), free pages are what defrag would give back.
exit codes: 0 ok, 1 failed, 2 usage or config
"""


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "inspect",
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="what is in a backup: objects and bytes per Kubernetes resource (no restore)",
        description="Analyze a snapshot's keyspace: objects, bytes, history and tombstones "
        "per resource (and per namespace for the top ones), the largest objects, db size "
        "against live data, and which objects are encrypted at rest.",
        epilog=EPILOG,
    )
    options.backup_arg(p, optional=True, help="a stored backup")
    p.add_argument("--snapshot", metavar="FILE", type=Path, help="a snapshot or db file instead")
    options.identity_flag(p, of="a stored backup")
    options.json_flag(p, help="print the full report as JSON")
    options.top_flag(p)
    p.set_defaults(handler=run_inspect)


def settings_for(args: argparse.Namespace, need_config: bool) -> Settings:
    """The config; a --snapshot FILE needs none (defaults, or --config when given)."""
    if need_config or args.config or DEFAULT_CONFIG_PATH.is_file():
        try:
            return load_settings(args)
        except Exception:
            if need_config or args.config:
                raise
    return Settings()


def run_op(args: argparse.Namespace, settings: Settings, op: str, req: dict[str, Any]) -> Any:
    """Run a keyspace op on stored backups in this process, with progress on stderr."""
    progress = Progress(sys.stderr, quiet=bool(getattr(args, "json", False)))
    try:
        return dispatch_offline(
            settings, op, req | options.identity_request(args.identity), progress
        )
    finally:
        progress.clear()


def run_inspect(args: argparse.Namespace) -> int:
    from ..keyspace import ops as ks
    from ..keyspace.render import format_report

    if args.top < 1:
        raise UsageError("--top must be at least 1")
    if (args.backup is None) == (args.snapshot is None):
        raise UsageError("inspect needs a backup ID (or latest) or --snapshot FILE, not both")
    if args.snapshot is not None:
        if not args.snapshot.is_file():
            raise UsageError(f"--snapshot {args.snapshot}: no such file")
        settings = settings_for(args, need_config=False)
        result = ks.inspect_path(settings, args.snapshot, args.top).to_dict()
    else:
        if not args.identity:
            raise UsageError("a stored backup needs --identity FILE (the age identity, or -)")
        settings = settings_for(args, need_config=True)
        result = run_op(args, settings, "inspect", {"backup": args.backup, "top": args.top})
    if args.json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        print(format_report(result, args.top))
    return EXIT_OK
