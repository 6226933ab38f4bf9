"""``etcd-backupctl inspect|diff|extract``: the keyspace ops through the daemon's socket.

The daemon fetches, checks and decrypts the backup (with the identity sent as for
verify) and replies with the report, or with the extracted values (base64); this client
renders them and writes extract's files itself, so the daemon never writes where a
client points it.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..keyspace.requests import DiffRequest, InspectRequest
from . import options

OPS = ("inspect", "diff", "extract")


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    i = sub.add_parser("inspect", parents=[common], help="objects and bytes per resource")
    options.backup_arg(i)
    options.identity_flag(i, required=True)
    options.top_flag(i)
    d = sub.add_parser("diff", parents=[common], help="changes between two backups")
    d.add_argument("a", metavar="A", help="the older backup (ID or latest)")
    d.add_argument("b", metavar="B", help="the newer backup (ID or latest)")
    options.identity_flag(d, required=True)
    options.max_changes_flag(d)
    e = sub.add_parser("extract", parents=[common], help="objects of a backup as JSON/YAML/raw")
    options.backup_arg(e)
    options.identity_flag(e, required=True)
    options.extract_flags(e)


def request_args(ns: argparse.Namespace) -> dict[str, Any]:
    """The op's arguments (the identity is added by the caller)."""
    if ns.op == "inspect":
        return InspectRequest(ns.backup, ns.top).to_args()
    if ns.op == "diff":
        return DiffRequest(ns.a, ns.b, ns.max_changes).to_args()
    from ..commands.extract_cmd import check_out

    check_out(ns.out)
    return options.extract_request(ns, ns.backup).to_args()


def show(ns: argparse.Namespace, result: Any) -> int:
    """Print (or write) a successful reply; the exit code."""
    from ..keyspace.render import format_diff, format_report

    if ns.op == "inspect":
        print(format_report(result, ns.top))
        return 0
    if ns.op == "diff":
        print(format_diff(result))
        return 0
    return write_extract(ns, result)


def write_extract(ns: argparse.Namespace, result: Any) -> int:
    from ..commands.extract_cmd import write_result
    from ..keyspace.extract import ExtractResult

    try:
        parsed = ExtractResult.from_dict(result)
    except (KeyError, TypeError, ValueError) as exc:
        sys.stderr.write(f"error: unexpected extract reply: {exc}\n")
        return 1
    return write_result(parsed, ns.output, ns.out, ns.keep_server_fields)
