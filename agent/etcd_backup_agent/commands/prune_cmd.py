"""``etcd-backup-agent prune``: apply the retention policy to this cluster's backups."""

from __future__ import annotations

import argparse
import json
import sys

from ..cli import options
from ..cli.render import prune_report
from ..errors import EXIT_FAILURE, EXIT_OK
from ..requests import PruneRequest
from ..retention import report_dict
from ..service import Agent
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
    options.prune_flags(p)
    options.json_flag(p, help="print the plan and result as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    agent = Agent(settings)
    try:
        report = agent.prune(PruneRequest(dry_run=args.dry_run))
    finally:
        agent.close()
    if args.json:
        sys.stdout.write(json.dumps(report_dict(report), indent=2) + "\n")
    else:
        for line in prune_report(report_dict(report)):
            print(line)
    return EXIT_FAILURE if report.result.failed else EXIT_OK
