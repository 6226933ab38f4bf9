"""``etcd-backup-agent list``: the backups in the store, newest first."""

from __future__ import annotations

import argparse
import json
import sys

from ..catalog import Incomplete, list_backups
from ..cli import options
from ..cli.render import BackupLine, backup_table
from ..errors import EXIT_OK
from ..store import open_store
from . import load_settings


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "list",
        parents=[common],
        help="list stored backups, newest first",
        description="List the backups of this cluster (those with a manifest), newest first.",
        epilog="example: etcd-backup-agent list --json | jq '.[0].id'",
    )
    options.json_flag(p, help="print manifests as a JSON array")
    p.add_argument(
        "--orphans",
        action="store_true",
        help="also list objects without a manifest (leftovers of failed runs) and, in --json, "
        "manifests whose object is missing (incomplete)",
    )
    p.set_defaults(handler=run)


def _warn_incomplete(incomplete: tuple[Incomplete, ...]) -> None:
    for i in incomplete:
        sys.stderr.write(
            f"warning: INCOMPLETE {i.manifest.id}: {i.reason}; not a backup "
            "(never restored, counted or pruned; delete its manifest once understood)\n"
        )


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    store = open_store(settings)
    try:
        catalog = list_backups(store, settings.cluster)
    finally:
        store.close()
    if args.json:
        out: object = [m.to_dict() for m in catalog.backups]
        if args.orphans:
            out = {
                "backups": out,
                "orphans": list(catalog.orphans),
                "incomplete": [
                    {"id": i.manifest.id, "object": i.manifest.object, "reason": i.reason}
                    for i in catalog.incomplete
                ],
            }
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
        _warn_incomplete(catalog.incomplete)
        return EXIT_OK
    for line in backup_table(BackupLine.of(m) for m in catalog.backups):
        print(line)
    if not catalog.backups:
        print(f"(no backups of cluster {settings.cluster!r} in {store.describe()})")
    if args.orphans:
        for key in catalog.orphans:
            print(f"orphan (no manifest): {key}")
    _warn_incomplete(catalog.incomplete)
    for entry in catalog.unreadable:
        sys.stderr.write(f"warning: unreadable manifest: {entry}\n")
    if not catalog.complete:
        sys.stderr.write("warning: the store listing was incomplete\n")
    return EXIT_OK
