"""Flags that ``etcd-backup-agent`` and ``etcd-backupctl`` share, each defined once.

A command adds a group with one call (``restore_flags(parser, remote=True)``), and turns
the parsed flags into the op's request with the matching ``*_request`` function, so both
programs send the same request for the same flags. Defaults come from the values that
own them, never from a copy: the keyspace requests' for --top, --max-changes and
--max-bytes; the restore's flags are not sent unless given, so the restore's own
defaults apply (importing the restore here would slow every etcd-backupctl call).
``remote`` means etcd-backupctl: the daemon does the work, so paths it reads are made
absolute here and only stored backups can be named.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..config import DEFAULT_CONFIG_PATH
from ..keyspace.requests import (
    DEFAULT_EXTRACT_BYTES,
    MAX_EXTRACT_BYTES,
    DiffRequest,
    ExtractRequest,
    InspectRequest,
)
from ..restore.swap import LAYOUTS

BACKUP = "ID|latest"
_MIB = 1024 * 1024


def config_flag(
    p: argparse.ArgumentParser,
    *,
    default: Any = None,
    help: str = f"config file (default: {DEFAULT_CONFIG_PATH})",
) -> None:
    """``--config FILE`` (``-c``): the agent's config file."""
    p.add_argument("--config", "-c", metavar="FILE", default=default, help=help)


def backup_arg(
    p: argparse.ArgumentParser, *, optional: bool = False, default: str | None = None, **kw: Any
) -> None:
    """The positional ``ID|latest`` selecting a stored backup."""
    nargs = "?" if optional or default is not None else None
    p.add_argument("backup", nargs=nargs, default=default, metavar=BACKUP, **kw)


def identity_flag(
    p: argparse.ArgumentParser, *, required: bool = False, of: str = "", help: str = ""
) -> None:
    """``--identity FILE``: the age identity that decrypts a stored backup (``of`` which)."""
    what = f" for {of}" if of else ""
    text = help or f"age identity file{what}, or - to read it from stdin"
    p.add_argument("--identity", required=required, metavar="FILE", help=text)


def json_flag(p: argparse.ArgumentParser, help: str = "print the result as JSON") -> None:
    """``--json``: machine-readable output instead of the text report."""
    p.add_argument("--json", action="store_true", help=help)


def identity_request(value: str | None, *, remote: bool = False) -> dict[str, Any]:
    """The identity as the ops take it: a file path, or the key itself when ``-`` (stdin).

    Remote: the daemon runs elsewhere (its own cwd), so a file path is made absolute.
    """
    if value is None:
        return {}
    if value == "-":
        return {"identity": sys.stdin.read(65536)}
    return {"identity_file": str(Path(value).resolve()) if remote else value}


def prune_flags(p: argparse.ArgumentParser) -> None:
    """``--dry-run``: the retention plan without deleting."""
    p.add_argument("--dry-run", action="store_true", help="print the plan, delete nothing")


def bundle_extract_flags(p: argparse.ArgumentParser) -> None:
    """``ID|latest --identity FILE --to DIR``: the bundle's files, written by this process."""
    backup_arg(p)
    identity_flag(p, required=True)
    p.add_argument(
        "--to",
        required=True,
        type=Path,
        metavar="DIR",
        help="a new directory (must not exist or be empty)",
    )


# -- restore and drill ---------------------------------------------------------------------


def restore_flags(p: argparse.ArgumentParser, *, remote: bool) -> None:
    """The flags of a restore: what to restore, as which member, and the optional swap.

    Remote (etcd-backupctl): a stored backup only, and --identity and --data-dir are
    required by the parser; offline, --snapshot FILE is the alternative and the command
    checks which combination was given.
    """
    if remote:
        backup_arg(p)
        identity_flag(p, required=True)
        p.add_argument(
            "--data-dir",
            required=True,
            type=Path,
            metavar="DIR",
            help="the NEW data dir (must not exist or be empty)",
        )
    else:
        backup_arg(p, optional=True)
        p.add_argument("--snapshot", type=Path, metavar="FILE", help="restore this local snapshot")
        p.add_argument("--allow-no-trailer", action="store_true", help="with --snapshot")
        identity_flag(p, of="a stored backup")
        p.add_argument(
            "--data-dir",
            type=Path,
            metavar="DIR",
            help="the NEW data dir (must not exist or be empty)",
        )
    p.add_argument(
        "--wal-dir",
        type=Path,
        metavar="DIR",
        help="put the WAL here (a NEW dir), as etcd --wal-dir",
    )
    p.add_argument("--name", help="this member's name (etcd --name)")
    p.add_argument(
        "--initial-cluster",
        metavar="NAME=URL,...",
        help="every member's name and peer URLs (default: this member alone)",
    )
    p.add_argument(
        "--initial-advertise-peer-urls",
        metavar="URLS",
        help="this member's peer URLs (etcd --initial-advertise-peer-urls)",
    )
    p.add_argument(
        "--initial-cluster-token",
        metavar="TOKEN",
        help="the new cluster's token (etcd --initial-cluster-token)",
    )
    p.add_argument(
        "--bump-revision",
        type=int,
        metavar="N",
        help="raise the revision by N (etcdutl engine: >= 3.5.10)",
    )
    p.add_argument("--mark-compacted", action="store_true", help="with --bump-revision")
    p.add_argument("--apply", action="store_true", help="also swap the restored dir in")
    p.add_argument("--layout", choices=LAYOUTS, help="how etcd runs here")
    p.add_argument("--dry-run", action="store_true", help="print the swap plan, touch nothing")
    p.add_argument(
        "--swap-wait", type=float, metavar="SECONDS", help="how long to wait for the pods to stop"
    )
    p.add_argument(
        "--with-bundle",
        action="store_true",
        help="kubeadm swap: also put the backup's control-plane bundle back (files it "
        "replaces are copied aside first; nothing is deleted)",
    )


def restore_request(ns: argparse.Namespace, *, remote: bool) -> dict[str, Any]:
    """The restore op's arguments from ``restore_flags``.

    A flag not given is not sent: the restore's own defaults apply, in one place, whether
    it runs in this process or in the daemon.
    """
    req: dict[str, Any] = {
        "mark_compacted": ns.mark_compacted,
        "apply": ns.apply,
        "dry_run": ns.dry_run,
    } | identity_request(ns.identity, remote=remote)
    for name in (
        "backup",
        "name",
        "initial_cluster",
        "initial_advertise_peer_urls",
        "initial_cluster_token",
        "layout",
        "bump_revision",
        "swap_wait",
    ):
        if getattr(ns, name) is not None:
            req[name] = getattr(ns, name)
    for name in ("data_dir", "wal_dir"):
        if getattr(ns, name) is not None:
            req[name] = str(getattr(ns, name).absolute())
    snapshot = getattr(ns, "snapshot", None)
    if snapshot is not None:
        req["snapshot"] = str(snapshot.absolute())
        req["allow_no_trailer"] = ns.allow_no_trailer
    if ns.with_bundle:
        req["with_bundle"] = True
    return req


def drill_flags(p: argparse.ArgumentParser) -> None:
    """``[ID|latest] [--identity FILE]``: the drill's backup, latest by default."""
    backup_arg(p, default="latest")
    identity_flag(p, help="age identity (default [drill] identity)")


# -- the keyspace ops: inspect, diff, extract ------------------------------------------------


def top_flag(p: argparse.ArgumentParser) -> None:
    """``--top N``: the rows of the inspect report."""
    p.add_argument(
        "--top",
        type=int,
        default=InspectRequest.top,
        metavar="N",
        help="rows to show (default: %(default)s)",
    )


def max_changes_flag(p: argparse.ArgumentParser) -> None:
    """``--max-changes N``: the changed keys diff lists."""
    p.add_argument(
        "--max-changes",
        type=int,
        default=DiffRequest.max_changes,
        metavar="N",
        help="changed keys to list (default: %(default)s)",
    )


def extract_flags(p: argparse.ArgumentParser) -> None:
    """What to extract (--key or --prefix, --revision) and how to write it."""
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--key", metavar="K", help="one etcd key, e.g. /registry/pods/ns/name")
    what.add_argument("--prefix", metavar="P", help="every key under this prefix")
    p.add_argument(
        "--revision", type=int, metavar="R", help="as of this etcd revision (not compacted)"
    )
    p.add_argument(
        "-o",
        "--output",
        choices=("json", "yaml", "raw"),
        default="json",
        help="json (default) or yaml for kubectl apply, raw as etcdctl get --print-value-only",
    )
    p.add_argument("--out", type=Path, metavar="DIR", help="one file per object under DIR")
    p.add_argument(
        "--keep-server-fields",
        action="store_true",
        help="keep resourceVersion, uid, managedFields, creationTimestamp, generation, selfLink",
    )
    p.add_argument(
        "--max-bytes",
        type=int,
        default=DEFAULT_EXTRACT_BYTES,
        metavar="N",
        help=f"stop after this many value bytes (default {DEFAULT_EXTRACT_BYTES // _MIB} MiB, "
        f"at most {MAX_EXTRACT_BYTES // _MIB} MiB)",
    )


def extract_request(ns: argparse.Namespace, backup: str) -> ExtractRequest:
    """The extract request of ``extract_flags`` (checked by the op, not here)."""
    return ExtractRequest(backup, ns.key, ns.prefix, ns.revision, ns.max_bytes)
