"""``etcd-backup-agent config check``: validate a config file."""

from __future__ import annotations

import argparse
import sys

from ..errors import EXIT_OK
from . import load_settings


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser("config", help="inspect the configuration")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", parser_class=type(p))
    check = csub.add_parser(
        "check",
        parents=[common],
        help="validate a config file (exit 0 valid, 2 invalid)",
        description="Validate the config: every problem names the file, the key and what is "
        "expected. Unknown keys are errors.",
        epilog="example:\n"
        "  etcd-backup-agent config check --config /etc/etcd-backup-agent/config.toml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.set_defaults(handler=run_check)

    def usage(_args: argparse.Namespace) -> int:
        p.print_help(sys.stderr)
        return 2

    p.set_defaults(handler=usage)


def run_check(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    print(
        f"{settings.source}: OK (cluster {settings.cluster!r}, node {settings.node!r}, "
        f"store {settings.store.type}, {len(settings.encryption.recipients)} recipient(s))"
    )
    return EXIT_OK
