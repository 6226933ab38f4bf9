"""``etcd-backup-agent bundle list|extract``: the control-plane files stored with a backup."""

from __future__ import annotations

import argparse
import sys

from ..cli import options
from ..errors import EXIT_OK
from .restore_cmd import run_offline

EPILOG = """examples:
  etcd-backup-agent bundle list latest
  etcd-backup-agent bundle extract latest --identity /root/age-key.txt --to /root/cp-restore

list prints the file list recorded in the manifest (names, modes, sizes, sha256; never
contents). extract downloads the bundle object, checks its sha256 against the manifest,
decrypts it, checks every file against the manifest and writes them under DIR (which must
not exist or be empty) with their modes and mtimes, and their owners when run as root.
Stock tools read the same object: age -d -i KEY OBJ | zstd -d | tar -t
exit codes: 0 done, 1 failed (nothing written outside DIR), 2 usage or config
"""


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "bundle",
        help="list or extract the control-plane bundle (PKI, encryption config) of a backup",
        description="The control-plane files sealed beside each snapshot (docs/bundle.md).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="bundle_action", metavar="ACTION", required=True)
    ls = actions.add_parser(
        "list",
        parents=[common],
        help="the bundle's file list",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    options.backup_arg(ls)
    options.json_flag(ls, help="print the record as JSON")
    ls.set_defaults(handler=run_list)
    ex = actions.add_parser(
        "extract",
        parents=[common],
        help="write the bundle under DIR",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    options.bundle_extract_flags(ex)
    options.json_flag(ex)
    ex.set_defaults(handler=run_extract)


def run_list(args: argparse.Namespace) -> int:
    run_offline(args, "bundle_list", {"backup": args.backup})
    return EXIT_OK


def run_extract(args: argparse.Namespace) -> int:
    from ..bundle.extract import check_target
    from ..bundle.ops import write_fetched
    from ..cli.render import Progress
    from ..control.dispatch import dispatch_offline
    from . import load_settings
    from .restore_cmd import print_result

    to = args.to.absolute()
    check_target(to)  # before the download, not after
    settings = load_settings(args)
    progress = Progress(sys.stderr, quiet=args.json)
    request = {"backup": args.backup} | options.identity_request(args.identity)
    try:
        fetched = dispatch_offline(settings, "bundle_extract", request, progress)
    finally:
        progress.clear()
    print_result("bundle_extract", write_fetched(fetched, to), args.json)
    return EXIT_OK
