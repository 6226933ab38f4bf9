"""The ``etcd-backup-agent`` command line: the daemon and one-shot subcommands.

Each subcommand lives in ``commands/<name>.py`` and exposes ``register(subparsers)``;
the handler gets the parsed namespace and returns an exit code. Errors derived from
AgentError become one line on stderr and their exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .. import __version__
from .. import log as logsetup
from ..errors import EXIT_FAILURE, EXIT_USAGE, AgentError, ConfigError
from ..pipes import quiet_broken_pipe
from . import options

COMMAND_MODULES = (
    "config_cmd",
    "backup_cmd",
    "list_cmd",
    "prune_cmd",
    "restore_cmd",
    "run_cmd",
    "verify_cmd",
    "store_cmd",
    "keygen_cmd",
    "bundle_cmd",
    "inspect_cmd",
    "diff_cmd",
    "extract_cmd",
)

EPILOG = """examples:
  etcd-backup-agent config check --config /etc/etcd-backup-agent/config.toml
  etcd-backup-agent keygen --out backup-key.txt   (off the node; put the public key in config)
  etcd-backup-agent backup --json
  etcd-backup-agent list
  etcd-backup-agent prune --dry-run
  etcd-backup-agent verify snapshot.db -w json
  etcd-backup-agent verify --backup latest --identity backup-key.txt
  etcd-backup-agent restore latest --identity backup-key.txt --data-dir /var/lib/etcd-new ...
  etcd-backup-agent drill latest --identity backup-key.txt
  etcd-backup-agent bundle extract latest --identity backup-key.txt --to /root/cp-files
  etcd-backup-agent inspect latest --identity backup-key.txt   (what is in it, per resource)
  etcd-backup-agent diff ID latest --identity backup-key.txt
  etcd-backup-agent extract latest --identity backup-key.txt --key /registry/... -o yaml
  etcd-backup-agent store check
  etcd-backup-agent run            (the daemon, as started by systemd)

Every command takes --config FILE (default /etc/etcd-backup-agent/config.toml) and has
--help with examples. Exit codes: 0 success, 1 failed, 2 bad config or usage.
Docs: docs/ in the source tree; the daemon's client is etcd-backupctl.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    options.config_flag(common)
    common.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), help="override [log] level"
    )
    common.add_argument(
        "--log-format", choices=("auto", "json", "console"), help="override [log] format"
    )
    parser = _Parser(
        prog="etcd-backup-agent",
        description="Verified, encrypted etcd snapshots to S3 or a local directory.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"etcd-backup-agent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"..commands.{name}", __package__)
        module.register(sub, common)
    return parser


@quiet_broken_pipe
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    logsetup.configure(level=args.log_level or "info", fmt=args.log_format or "auto")
    try:
        code: int = args.handler(args)
        return code
    except ConfigError as exc:
        for problem in exc.problems:
            sys.stderr.write(f"config error: {problem}\n")
        return exc.exit_code
    except AgentError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return EXIT_FAILURE
