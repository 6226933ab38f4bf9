"""``etcd-backup-agent backup``: take one verified, encrypted backup now."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..backup_report import stored_lines
from ..cli import options
from ..errors import EXIT_OK, UsageError
from ..service import Agent
from ..stop_signals import cancel_on_stop_signals
from . import load_settings

EPILOG = """examples:
  etcd-backup-agent backup --config /etc/etcd-backup-agent/config.toml
  etcd-backup-agent backup --json > manifest.json
  etcd-backup-agent backup --from-data-dir /var/lib/etcd     (etcd stopped)

signals: SIGINT/SIGTERM cancel the backup: the upload is aborted, the spool's partial files
removed and no manifest written (exit 1); a second signal interrupts at once

exit codes: 0 stored, 1 backup failed (nothing stored) or the spool is in use by
another agent process (the running daemon: use `etcd-backupctl backup`), 2 bad config or usage
"""


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "backup",
        parents=[common],
        help="take one backup now (no daemon needed)",
        description="Snapshot etcd, verify the snapshot, compress and encrypt it with age, "
        "store it, then write its manifest. Nothing is stored when any step fails.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    options.json_flag(p, help="print the manifest as JSON on stdout")
    p.add_argument(
        "--from-data-dir",
        metavar="DIR",
        type=Path,
        help="back up member/snap/db of a STOPPED etcd instead of streaming a snapshot",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="with --from-data-dir: copy even if a running etcd holds the database",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.force and args.from_data_dir is None:
        # an online backup has nothing to force: say so rather than ignore it
        raise UsageError("--force goes with --from-data-dir DIR (an offline backup)")
    settings = load_settings(args)
    agent = Agent(settings)
    try:
        agent.open("backup")  # never beside a daemon or another backup on this spool
        with cancel_on_stop_signals(agent.cancel):
            if args.from_data_dir is not None:
                manifest = agent.backup_from_data_dir(args.from_data_dir, force=args.force)
            else:
                manifest = agent.backup("command")
        store = agent.wiring.store.describe()
    finally:
        agent.close()
    if args.json:
        sys.stdout.write(json.dumps(manifest.to_dict(), indent=2) + "\n")
    else:
        for line in stored_lines(manifest, store):
            print(line)
    return EXIT_OK
