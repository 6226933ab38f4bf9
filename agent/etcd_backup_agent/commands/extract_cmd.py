"""``etcd-backup-agent extract``: get objects back from a backup without restoring it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..cli import options
from ..errors import EXIT_FAILURE, EXIT_OK, AgentError, UsageError
from .inspect_cmd import run_op, settings_for

EPILOG = """examples:
  etcd-backup-agent extract latest --identity key.txt --key /registry/configmaps/default/app
  etcd-backup-agent extract latest --identity key.txt --prefix /registry/example.com/ \\
      -o yaml --out restored/
  etcd-backup-agent extract --snapshot snapshot.db --key /registry/pods/default/web -o raw

Output: JSON-stored objects (custom resources) as JSON or YAML that `kubectl apply` takes,
without the server-set fields (resourceVersion, uid, managedFields, creationTimestamp,
generation, selfLink) unless --keep-server-fields. Protobuf objects (built-in types): type
and metadata decoded, the rest kept as base64 protobuf. Objects encrypted at rest: raw
bytes, never decrypted (a note on stderr says so). -o raw prints exactly what
`etcdctl get --print-value-only` prints (each value, then a newline); files in --out hold
the exact stored bytes. --revision R reads the objects as of an older revision that the
snapshot still retains (not compacted).
exit codes: 0 extracted, 1 nothing matched or failed, 2 usage or config
"""


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "extract",
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="write objects of a backup as JSON/YAML/raw (no restore)",
        description="Extract one key or every key under a prefix from a backup or a "
        "snapshot file, as of its revision or an older retained one.",
        epilog=EPILOG,
    )
    options.backup_arg(p, optional=True, help="a stored backup")
    p.add_argument("--snapshot", metavar="FILE", type=Path, help="a snapshot or db file instead")
    options.identity_flag(p, of="a stored backup")
    options.extract_flags(p)
    p.set_defaults(handler=run_extract, json=False)


def run_extract(args: argparse.Namespace) -> int:
    from ..keyspace import ops as ks
    from ..keyspace.extract import ExtractResult
    from ..keyspace.requests import ExtractRequest

    if (args.backup is None) == (args.snapshot is None):
        raise UsageError("extract needs a backup ID (or latest) or --snapshot FILE, not both")
    check_out(args.out)
    req = ExtractRequest.from_args(options.extract_request(args, args.backup or "").to_args())
    if args.snapshot is not None:
        if not args.snapshot.is_file():
            raise UsageError(f"--snapshot {args.snapshot}: no such file")
        settings = settings_for(args, need_config=False)
        result = ks.extract_path(settings, args.snapshot, req)
    else:
        if not args.identity:
            raise UsageError("a stored backup needs --identity FILE (the age identity, or -)")
        settings = settings_for(args, need_config=True)
        result = ExtractResult.from_dict(run_op(args, settings, "extract", req.to_args()))
    return write_result(result, args.output, args.out, args.keep_server_fields)


def check_out(out: Path | None) -> None:
    """Refuse an --out that cannot become a directory before anything is downloaded."""
    if out is not None and out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a directory")


def write_result(result: object, fmt: str, out: Path | None, keep: bool) -> int:
    """Write the objects (stdout or one file each) and the notes (stderr)."""
    from ..keyspace.extract import ExtractResult, render_stdout, write_files

    assert isinstance(result, ExtractResult)
    for key in result.deleted:
        sys.stderr.write(f"note: {key} was deleted as of revision {result.revision}\n")
    if not result.objects:
        sys.stderr.write(f"error: no object matched at revision {result.revision}\n")
        return EXIT_FAILURE
    for o in result.objects:
        if o.encoding == "encrypted" or (o.encoding == "protobuf" and fmt != "raw"):
            sys.stderr.write(f"note: {o.key.decode('utf-8', 'replace')}: {o.note()}\n")
    if out is not None:
        try:
            paths = write_files(result.objects, out, fmt, keep)
        except OSError as exc:
            raise AgentError(f"--out {out}: cannot write the objects: {exc}") from exc
        sys.stderr.write(f"wrote {len(paths)} object(s) under {out}\n")
    else:
        sys.stdout.buffer.write(render_stdout(result.objects, fmt, keep))
        sys.stdout.flush()
    if result.truncated:
        sys.stderr.write("warning: stopped at --max-bytes; more objects matched\n")
        return EXIT_FAILURE
    return EXIT_OK
