"""``etcd-backup-agent diff A B``: objects added, removed and changed between two backups."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..cli import options
from ..errors import EXIT_OK, UsageError
from .inspect_cmd import run_op, settings_for

EPILOG = """examples:
  etcd-backup-agent diff --snapshot monday.db --snapshot tuesday.db
  etcd-backup-agent diff 20260101T000000Z-r1234-cp1 latest --identity /root/age-key.txt

"changed" means a different mod revision or a different value. Both backups are
downloaded, checked, decrypted and verified (as verify --backup), compared, and removed.
exit codes: 0 compared (whatever the differences), 1 failed, 2 usage or config
"""


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "diff",
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="objects added, removed and changed between two backups (no restore)",
        description="Compare the latest revision of every key in two backups (older first) "
        "and report the changes per resource and namespace.",
        epilog=EPILOG,
    )
    p.add_argument(
        "backups", nargs="*", metavar=options.BACKUP, help="two stored backups, older first"
    )
    p.add_argument(
        "--snapshot", action="append", type=Path, metavar="FILE", help="a file (give it twice)"
    )
    options.identity_flag(p, of="stored backups")
    options.json_flag(p)
    options.max_changes_flag(p)
    p.set_defaults(handler=run_diff)


def run_diff(args: argparse.Namespace) -> int:
    from ..keyspace import ops as ks
    from ..keyspace.render import format_diff

    files = args.snapshot or []
    if args.max_changes < 0:
        raise UsageError("--max-changes must be 0 or more")
    if files and args.backups:
        raise UsageError("give two backup IDs or two --snapshot files, not a mix")
    if files:
        if len(files) != 2:
            raise UsageError("diff needs exactly two --snapshot files (older first)")
        for f in files:
            if not f.is_file():
                raise UsageError(f"--snapshot {f}: no such file")
        settings = settings_for(args, need_config=False)
        result = ks.diff_paths(settings, files[0], files[1], args.max_changes).to_dict()
    else:
        if len(args.backups) != 2:
            raise UsageError("diff needs two backups: A B (IDs or latest, older first)")
        if not args.identity:
            raise UsageError("stored backups need --identity FILE (the age identity, or -)")
        settings = settings_for(args, need_config=True)
        req = {"a": args.backups[0], "b": args.backups[1], "max_changes": args.max_changes}
        result = run_op(args, settings, "diff", req)
    if args.json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        print(format_diff(result))
    return EXIT_OK
