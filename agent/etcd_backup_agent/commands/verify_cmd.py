"""``etcd-backup-agent verify FILE``: native ``etcdutl snapshot status`` plus integrity check."""

from __future__ import annotations

import argparse
import json
import sys

from ..cli import options
from ..cli.render import snapshot_status_table
from ..errors import EXIT_FAILURE, EXIT_OK, UsageError
from ..snapshot.verify import verify_snapshot
from .restore_cmd import run_offline

EPILOG = """examples:
  etcd-backup-agent verify snapshot.db -w json          (a file; no config, no etcd binaries)
  etcd-backup-agent verify --backup latest --identity /root/age-key.txt --config FILE

With --backup, the stored object is downloaded, its sha256 checked against the manifest,
decrypted and decompressed to a temporary file, and verified natively; nothing is kept.
exit codes: 0 sound, 1 not sound (reasons on stderr), 2 usage or config
"""


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "verify",
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="verify a snapshot file or a stored backup natively (exit 0 sound, 1 not)",
        description="Check the sha256 trailer and bolt integrity (like tx.Check) and print "
        "what `etcdutl snapshot status` prints: hash, revision, total keys, total size "
        "(and storage version under 3.6 rules). Needs no config file and no etcd binaries.",
        epilog=EPILOG,
    )
    p.add_argument("file", nargs="?", metavar="FILE", help="snapshot file (etcdctl snapshot save)")
    p.add_argument(
        "-w",
        "--write-out",
        choices=("table", "json"),
        default="table",
        help="output format (json: exactly etcdutl's keys)",
    )
    p.add_argument(
        "--rules",
        choices=("auto", "3.5", "3.6"),
        default="auto",
        help="etcdutl rules for totalKey/version (auto: 3.6 if storageVersion exists)",
    )
    p.add_argument(
        "--allow-no-trailer",
        action="store_true",
        help="accept a raw member/snap/db copy without the 32-byte sha256 trailer",
    )
    p.add_argument(
        "--backup", metavar=options.BACKUP, help="verify a stored backup instead of a file"
    )
    options.identity_flag(p, of="--backup")
    options.json_flag(p, help="with --backup: print the result as JSON")
    p.set_defaults(handler=run_verify)


def run_verify(args: argparse.Namespace) -> int:
    # -w json and --json both ask for JSON, whichever mode: neither is silently ignored
    if args.write_out == "json" or args.json:
        args.write_out, args.json = "json", True
    if args.backup is not None:
        if args.file:
            raise UsageError("give either a snapshot FILE or --backup ID, not both")
        return _verify_stored(args)
    if not args.file:
        raise UsageError("verify needs a snapshot FILE, or --backup ID --identity KEY")
    report = verify_snapshot(args.file, rules=args.rules, require_trailer=not args.allow_no_trailer)
    if not report.sound or report.status is None:
        for problem in report.problems:
            sys.stderr.write(f"{problem}\n")
        if any(p.startswith("no sha256 trailer") for p in report.problems):
            sys.stderr.write(
                "hint: `etcdctl snapshot save` files end with a sha256 trailer; a raw "
                "member/snap/db copy does not: check it with --allow-no-trailer\n"
            )
        return EXIT_FAILURE
    if args.write_out == "json":
        # compact, like etcdutl: byte-identical to `etcdutl snapshot status -w json`
        print(json.dumps(report.status.to_json_dict(), separators=(",", ":")))
    else:
        print(snapshot_status_table(report.status))
    return EXIT_OK


def _verify_stored(args: argparse.Namespace) -> int:
    if not args.identity:
        raise UsageError("--backup needs --identity FILE (the age identity, or - for stdin)")
    run_offline(args, "verify", {"backup": args.backup} | options.identity_request(args.identity))
    return EXIT_OK
