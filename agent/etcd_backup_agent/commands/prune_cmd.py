"""``etcd-backup-agent prune``: apply the retention policy to this cluster's backups."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from ..errors import EXIT_FAILURE, EXIT_OK
from ..retention import Decision, PruneReport, prune
from ..store import open_store
from . import load_settings


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "prune",
        parents=[common],
        help="delete backups the [retention] policy no longer keeps",
        description="Plan retention for this cluster and delete what no rule keeps. The newest "
        "verified backup and backups under object lock are always kept; an empty policy keeps "
        "everything; a store that cannot be listed completely is never pruned.",
        epilog="example: etcd-backup-agent prune --dry-run",
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan, delete nothing")
    p.add_argument("--json", action="store_true", help="print the plan and result as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    store = open_store(settings)
    try:
        report = prune(store, settings, datetime.now(UTC), dry_run=args.dry_run)
    finally:
        store.close()
    if args.json:
        sys.stdout.write(json.dumps(to_dict(report), indent=2) + "\n")
    else:
        print_text(report)
    return EXIT_FAILURE if report.result.failed else EXIT_OK


def _action(report: PruneReport, d: Decision) -> str:
    """One of keep, locked, failed, delete, would-delete; they add up to the summary."""
    result, bid = report.result, d.backup.id
    if d.held_by_lock or bid in result.locked:
        return "locked"
    if d.keep:
        return "keep"
    if any(fid == bid for fid, _ in result.failed):
        return "failed"
    return "would-delete" if result.dry_run else "delete"


def summary(report: PruneReport) -> dict[str, int]:
    return {
        "backups": len(report.decisions),
        "kept": report.kept,
        "deleted": len(report.result.deleted),
        "skipped_locked": report.skipped_locked,
        "failed": len(report.result.failed),
        "orphans": len(report.orphans),
        "unreadable": len(report.unreadable),
    }


def to_dict(report: PruneReport) -> dict[str, Any]:
    return {
        "cluster": report.cluster,
        "store": report.store,
        "dry_run": report.result.dry_run,
        "decisions": [
            {
                "id": d.backup.id,
                "created_at": d.backup.created_at,
                "verified": d.backup.verified,
                "action": _action(report, d),
                "reasons": list(d.reasons),
            }
            for d in report.decisions
        ],
        "deleted": report.result.deleted,
        "locked": report.result.locked,
        "failed": [{"id": bid, "reason": reason} for bid, reason in report.result.failed],
        "orphans": list(report.orphans),
        "unreadable": list(report.unreadable),
        "summary": summary(report),
    }


def print_text(report: PruneReport) -> None:
    failed = dict(report.result.failed)
    for d in report.decisions:
        action = _action(report, d)
        flag = "" if d.backup.verified else " (unverified)"
        if d.keep:
            why = ", ".join(d.reasons)
        elif action == "locked":
            why = "object lock: the store refused the delete"
        else:
            why = failed.get(d.backup.id, "no rule keeps it")
        action = action.upper()
        print(f"{action:<13} {d.backup.id}{flag}  {why}")
    if not report.decisions:
        print(f"(no backups of cluster {report.cluster!r} in {report.store})")
    for key in report.orphans:
        print(f"orphan (no manifest, not deleted): {key}")
    for line in report.unreadable:
        print(f"unreadable manifest (not deleted): {line}")
    s = summary(report)
    verb = "would delete" if report.result.dry_run else "deleted"
    print(
        f"{s['backups']} backup(s): {s['kept']} kept, {verb} {s['deleted']}, "
        f"{s['skipped_locked']} skipped (object lock), {s['failed']} failed; "
        f"{s['orphans']} orphan(s), {s['unreadable']} unreadable"
        + (" [dry run]" if report.result.dry_run else "")
    )
