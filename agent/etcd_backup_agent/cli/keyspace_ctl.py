"""``etcd-backupctl inspect|diff|extract``: the keyspace ops through the daemon's socket.

The daemon fetches, checks and decrypts the backup (with the identity sent as for
verify) and replies with the report, or with the extracted values (base64); this client
renders them and writes extract's files itself, so the daemon never writes where a
client points it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

OPS = ("inspect", "diff", "extract")


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    i = sub.add_parser("inspect", parents=[common], help="objects and bytes per resource")
    i.add_argument("backup", metavar="ID|latest")
    i.add_argument("--identity", required=True, metavar="FILE", help="age identity file, or -")
    i.add_argument("--top", type=int, default=20, metavar="N", help="rows to show (default 20)")
    d = sub.add_parser("diff", parents=[common], help="changes between two backups")
    d.add_argument("a", metavar="A", help="the older backup (ID or latest)")
    d.add_argument("b", metavar="B", help="the newer backup (ID or latest)")
    d.add_argument("--identity", required=True, metavar="FILE", help="age identity file, or -")
    d.add_argument(
        "--max-changes", type=int, default=1000, metavar="N", help="changed keys to list"
    )
    e = sub.add_parser("extract", parents=[common], help="objects of a backup as JSON/YAML/raw")
    e.add_argument("backup", metavar="ID|latest")
    e.add_argument("--identity", required=True, metavar="FILE", help="age identity file, or -")
    what = e.add_mutually_exclusive_group(required=True)
    what.add_argument("--key", metavar="K", help="one etcd key, e.g. /registry/pods/ns/name")
    what.add_argument("--prefix", metavar="P", help="every key under this prefix")
    e.add_argument("--revision", type=int, metavar="R", help="as of this (retained) revision")
    e.add_argument(
        "-o",
        "--output",
        choices=("json", "yaml", "raw"),
        default="json",
        help="json/yaml for kubectl apply, raw as etcdctl get --print-value-only",
    )
    e.add_argument("--out", type=Path, metavar="DIR", help="one file per object under DIR")
    e.add_argument(
        "--keep-server-fields", action="store_true", help="keep resourceVersion, uid, ..."
    )
    e.add_argument(
        "--max-bytes",
        type=int,
        default=64 * 1024 * 1024,
        metavar="N",
        help="at most this many value bytes (default 64 MiB, at most 256 MiB)",
    )


def request_args(ns: argparse.Namespace) -> dict[str, Any]:
    if ns.op == "inspect":
        return {"backup": ns.backup, "top": ns.top}
    if ns.op == "diff":
        return {"a": ns.a, "b": ns.b, "max_changes": ns.max_changes}
    from ..commands.extract_cmd import check_out

    check_out(ns.out)
    out: dict[str, Any] = {"backup": ns.backup, "max_bytes": ns.max_bytes}
    if ns.key is not None:
        out["key"] = ns.key
    if ns.prefix is not None:
        out["prefix"] = ns.prefix
    if ns.revision is not None:
        out["revision"] = ns.revision
    return out


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
