"""``etcd-backup-agent run``: the daemon (as started by systemd), or one cycle with --once."""

from __future__ import annotations

import argparse

from ..daemon import Daemon
from . import load_settings

EPILOG = """examples:
  etcd-backup-agent run --config /etc/etcd-backup-agent/config.toml
  etcd-backup-agent run --once     (one scheduling cycle: back up if due, then exit)

signals: SIGTERM/SIGINT stop (a running backup gets [daemon] shutdown_grace, then is
cancelled; a stop never takes more than 80 s); SIGHUP reloads the config as a whole (an
invalid file, or one changing a restart-only key, is logged and the old one kept)

one process per spool: a second `run`, `run --once` or `backup` on the same [spool] dir
is refused (exit 1); use `etcd-backupctl backup` beside the running daemon

exit codes: 0 stopped cleanly (with --once: stored, skipped or not due), 1 failed or the
spool is in use, 2 bad config or usage
"""


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "run",
        parents=[common],
        help="run the backup daemon",
        description="Take backups on the configured schedule, coordinated across the "
        "cluster's agents; serve /metrics and /healthz; notify systemd.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--once",
        action="store_true",
        help="run one scheduling cycle (back up now if due, ignoring jitter) and exit",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    return Daemon(settings, once=args.once).run()
