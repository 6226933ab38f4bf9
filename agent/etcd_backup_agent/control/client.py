"""``etcd-backupctl``: the client of the agent's control socket.

Exit codes: 0 success, 1 the operation failed or the daemon is unreachable, 2 usage.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tomllib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from ..config import DEFAULT_CONFIG_PATH, ControlSettings
from ..errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, AgentError, ConfigError
from ..pipes import quiet_broken_pipe
from ..restore.options import DEFAULTS, RestoreOptions
from ..restore.swap import LAYOUTS
from ..retention import format_report
from . import keyspace_client
from . import protocol as proto

EPILOG = """examples:
  etcd-backupctl status
  etcd-backupctl list
  etcd-backupctl backup
  etcd-backupctl verify latest --identity /root/age-key.txt
  etcd-backupctl prune --dry-run
  etcd-backupctl restore latest --identity /root/age-key.txt --data-dir /var/lib/etcd-restored \\
      --name cp1 --initial-cluster cp1=https://10.0.0.1:2380 \\
      --initial-advertise-peer-urls https://10.0.0.1:2380
  etcd-backupctl drill latest
  etcd-backupctl inspect latest --identity /root/age-key.txt
  etcd-backupctl diff ID latest --identity /root/age-key.txt
  etcd-backupctl extract latest --identity /root/age-key.txt --key /registry/... -o yaml

exit codes: 0 ok, 1 failed or daemon unreachable, 2 usage
"""


class Unreachable(Exception):
    """The daemon's socket cannot be reached."""


def find_socket(args: argparse.Namespace) -> Path:
    """--socket, else [control] socket of --config, else the default config or socket.

    Only the ``[control] socket`` key is read: validating the whole config would need the
    files it names (credentials, identities), which a non-root operator cannot read.
    """
    if args.socket:
        return Path(args.socket)
    if args.config:
        return _socket_of(Path(args.config))
    try:
        return _socket_of(DEFAULT_CONFIG_PATH)
    except ConfigError:
        return ControlSettings.socket


def _socket_of(path: Path) -> Path:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else f"not valid TOML: {exc}"
        raise ConfigError(
            [f"{path}: cannot read: {reason} (give the socket with --socket PATH instead)"]
        ) from None
    control = data.get("control")
    value = control.get("socket") if isinstance(control, dict) else None
    if value is None:
        return ControlSettings.socket
    if not isinstance(value, str) or not value.startswith("/"):
        raise ConfigError([f"{path}: control.socket: expected an absolute path, got {value!r}"])
    return Path(value)


def call(
    path: Path,
    op: str,
    args: dict[str, Any],
    on_event: Callable[[dict[str, Any]], None] | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Send one request and return the final reply; events go to ``on_event``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(10)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise Unreachable(str(exc)) from None
        sock.settimeout(timeout)
        sock.sendall(proto.encode(proto.request(op, args)))
        for message in _lines(sock):
            if "event" in message:
                if on_event is not None:
                    on_event(message)
                continue
            return message
        raise AgentError("the daemon closed the connection without a reply")
    finally:
        sock.close()


def _lines(sock: socket.socket) -> Iterator[dict[str, Any]]:
    # linear in the reply size: an extract reply can hold tens of MB on one line
    buf = bytearray()
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            return
        searched = len(buf)  # buf never holds a newline between reads
        buf += chunk
        end = buf.find(b"\n", searched)
        while end >= 0:
            line = bytes(buf[:end])
            del buf[: end + 1]
            if line.strip():
                yield json.loads(line)
            end = buf.find(b"\n")


class Progress:
    """A one-line progress bar on a TTY; log events as lines."""

    def __init__(self, out: TextIO, quiet: bool) -> None:
        self.out = out
        self.tty = out.isatty() and not quiet
        self.quiet = quiet
        self.active = False

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("event") == "progress" and self.tty:
            done, total = int(event.get("done", 0)), int(event.get("total", 0))
            frac = min(done / total, 1.0) if total else 0.0
            bar = "#" * int(frac * 30)
            self.out.write(f"\r{event.get('stage', ''):<10} [{bar:<30}] {frac * 100:5.1f}%")
            self.out.flush()
            self.active = True
        elif event.get("event") == "log" and not self.quiet:
            self.clear()
            self.out.write(f"{event.get('message', '')}\n")

    def clear(self) -> None:
        if self.active:
            self.out.write("\r" + " " * 60 + "\r")
            self.active = False


def _yes_no(value: object) -> str:
    """A flag as an operator reads it (the reply may lack it: unknown)."""
    return "unknown" if value is None else ("yes" if value else "no")


def _table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def show(op: str, result: Any) -> None:
    if op == "list":
        from ..units import human_size

        # the same columns as `etcd-backup-agent list`
        rows = [("ID", "CREATED (UTC)", "REVISION", "DB SIZE", "STORED", "KEYS", "VERIFIED")]
        for m in result.get("backups", []):
            rows.append(
                (
                    str(m["id"]),
                    str(m["created_at"]),
                    str(m["revision"]),
                    human_size(m.get("db_size")),
                    human_size(m.get("object_size")),
                    str(m.get("total_keys", "-")),
                    "yes" if m.get("verified") else "no",
                )
            )
        _table(rows)
        if not result.get("complete", True):
            print("warning: the store listing was incomplete")
        return
    if op == "restore" and isinstance(result, dict):
        from ..restore import report as restore_report

        typed = restore_report.result_from_dict(result)
        if typed is not None:
            print("\n".join(restore_report.format_result(typed)))
            return
    if op == "prune" and isinstance(result, dict) and "decisions" in result:
        for line in format_report(result):
            print(line)
        return
    if op == "backup" and isinstance(result, dict) and "object_size" in result:
        from ..backup_report import stored_lines
        from ..manifest import Manifest

        for line in stored_lines(Manifest.from_dict(result), str(result.get("store", ""))):
            print(line)
        return
    if op == "status" and isinstance(result, dict) and "last" in result:
        _show_status(result)
        return
    if op.startswith("bundle_") and isinstance(result, dict):
        from ..bundle.report import format_result

        print("\n".join(format_result(op, result)))
        return
    if isinstance(result, dict):
        for k, v in result.items():
            print(f"{k}: {json.dumps(v) if isinstance(v, dict | list) else v}")
    else:
        print(json.dumps(result, indent=2))


def _show_status(st: dict[str, Any]) -> None:
    from ..status import AgentStatus, render

    print("\n".join(render(AgentStatus.from_wire(st))))


def _common(default: Any) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--socket", metavar="PATH", default=default, help="the control socket")
    common.add_argument(
        "--config", "-c", metavar="FILE", default=default, help="read [control] socket from FILE"
    )
    common.add_argument(
        "--json", action="store_true", default=default, help="print the raw JSON reply"
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    # options may come before or after the command: the subcommands' copies must not reset
    # what was given before the command, hence SUPPRESS there
    top = _common(None)
    common = _common(argparse.SUPPRESS)
    p = argparse.ArgumentParser(
        prog="etcd-backupctl",
        description="Talk to the running etcd-backup-agent through its local socket.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[top],
    )
    sub = p.add_subparsers(dest="op", metavar="COMMAND")
    sub.add_parser("status", parents=[common], help="the daemon's status")
    sub.add_parser("list", parents=[common], help="stored backups, newest first")
    sub.add_parser("backup", parents=[common], help="take a backup now")
    v = sub.add_parser("verify", parents=[common], help="download, decrypt and verify a backup")
    v.add_argument("backup", metavar="ID|latest")
    v.add_argument("--identity", required=True, metavar="FILE", help="age identity file, or -")
    pr = sub.add_parser("prune", parents=[common], help="apply the retention policy")
    pr.add_argument("--dry-run", action="store_true")
    r = sub.add_parser("restore", parents=[common], help="restore a backup into a new data dir")
    r.add_argument("backup", metavar="ID|latest")
    r.add_argument("--identity", required=True, metavar="FILE", help="age identity file, or -")
    r.add_argument("--data-dir", required=True, help="NEW data dir (must not exist or be empty)")
    r.add_argument("--wal-dir", help="put the WAL in this NEW dir (etcd --wal-dir)")
    r.add_argument("--name", default=DEFAULTS.name)
    r.add_argument("--initial-cluster", default=DEFAULTS.initial_cluster)
    r.add_argument("--initial-advertise-peer-urls", default=DEFAULTS.initial_advertise_peer_urls)
    r.add_argument("--initial-cluster-token", default=DEFAULTS.initial_cluster_token)
    r.add_argument("--bump-revision", type=int)
    r.add_argument("--mark-compacted", action="store_true")
    r.add_argument("--apply", action="store_true", help="also perform the guided swap")
    r.add_argument("--layout", choices=LAYOUTS)
    r.add_argument("--dry-run", action="store_true", help="print the swap plan only")
    r.add_argument(
        "--swap-wait", type=float, default=DEFAULTS.swap_wait, help="seconds for pods to stop"
    )
    r.add_argument("--with-bundle", action="store_true", help="kubeadm: put the bundle back too")
    d = sub.add_parser(
        "drill",
        parents=[common],
        help="restore drill: restore, read back; serve with etcd if present",
    )
    d.add_argument("backup", nargs="?", default="latest", metavar="ID|latest")
    d.add_argument("--identity", metavar="FILE", help="age identity (default [drill] identity)")
    b = sub.add_parser("bundle", help="list or extract a backup's control-plane bundle")
    actions = b.add_subparsers(dest="bundle_action", metavar="ACTION", required=True)
    bl = actions.add_parser("list", parents=[common], help="the bundle's file list")
    bl.add_argument("backup", metavar="ID|latest")
    be = actions.add_parser("extract", parents=[common], help="write the bundle under DIR")
    be.add_argument("backup", metavar="ID|latest")
    be.add_argument("--identity", required=True, metavar="FILE", help="age identity file, or -")
    be.add_argument("--to", required=True, metavar="DIR", help="a new dir on the agent's node")
    keyspace_client.add_parsers(sub, common)
    return p


def _identity(value: str, args: dict[str, Any]) -> None:
    if value == "-":
        args["identity"] = sys.stdin.read(65536)
    else:
        args["identity_file"] = str(Path(value).resolve())


def request_args(ns: argparse.Namespace) -> dict[str, Any]:
    """The protocol arguments of a parsed command line."""
    args: dict[str, Any] = {}
    if ns.op in keyspace_client.OPS:
        args = keyspace_client.request_args(ns)
        _identity(ns.identity, args)
        return args
    if ns.op == "prune":
        args["dry_run"] = ns.dry_run
    elif ns.op in ("bundle_list", "bundle_extract"):
        args["backup"] = ns.backup
        if ns.op == "bundle_extract":
            from ..bundle.extract import check_target

            check_target(Path(ns.to).absolute())  # before the download, not after
            _identity(ns.identity, args)
    elif ns.op in ("verify", "restore", "drill"):
        args["backup"] = ns.backup
        if ns.identity:
            _identity(ns.identity, args)
    if ns.op == "restore":
        args |= RestoreOptions.from_namespace(ns).to_args()
    return args


# The etcd-backup-agent command doing the same work without the daemon.
OFFLINE_EQUIVALENT = {
    "status": "list",
    "list": "list",
    "backup": "backup",
    "verify": "verify --backup",
    "prune": "prune",
    "restore": "restore",
    "drill": "drill",
    "bundle_list": "bundle list",
    "bundle_extract": "bundle extract",
    "inspect": "inspect",
    "diff": "diff",
    "extract": "extract",
}


@quiet_broken_pipe
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        ns = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code not in (0, None) else EXIT_OK
    if not ns.op:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if ns.op == "bundle":
        ns.op = f"bundle_{ns.bundle_action}"
    try:
        path = find_socket(ns)
    except ConfigError as exc:
        for problem in exc.problems:
            sys.stderr.write(f"config error: {problem}\n")
        return EXIT_USAGE
    try:
        args = request_args(ns)
    except AgentError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exc.exit_code
    ns.json = bool(ns.json)
    progress = Progress(sys.stderr, quiet=ns.json)
    try:
        reply = call(path, ns.op, args, on_event=progress)
    except Unreachable:
        cfg = f" --config {ns.config}" if ns.config else ""
        offline = OFFLINE_EQUIVALENT.get(ns.op, ns.op)
        sys.stderr.write(
            f"error: the agent is not running (no socket at {path}).\n"
            f"Without the daemon, run the same work offline: "
            f"`etcd-backup-agent {offline}{cfg} ...` (see etcd-backup-agent {offline.split()[0]}"
            f" --help); start the daemon with `systemctl start etcd-backup-agent`.\n"
        )
        return EXIT_FAILURE
    except (OSError, AgentError, ValueError) as exc:
        progress.clear()
        sys.stderr.write(f"error: talking to {path}: {exc}\n")
        return EXIT_FAILURE
    progress.clear()
    if ns.op == "bundle_extract" and reply.get("ok"):
        # the daemon sends the checked tar: this process writes it, as the caller's user
        from ..bundle.ops import write_fetched

        try:
            reply["result"] = write_fetched(reply.get("result") or {}, Path(ns.to).absolute())
        except AgentError as exc:
            sys.stderr.write(f"error: {exc}\n")
            return exc.exit_code
    if ns.json:
        sys.stdout.write(json.dumps(reply, indent=2) + "\n")
    if not reply.get("ok"):
        err = reply.get("error") or {}
        if not ns.json:
            sys.stderr.write(f"error ({err.get('code')}): {err.get('message')}\n")
        return EXIT_USAGE if err.get("code") in ("usage", proto.BAD_ARGS) else EXIT_FAILURE
    result = reply.get("result")
    if ns.op in keyspace_client.OPS and not ns.json:
        try:
            return keyspace_client.show(ns, result)
        except AgentError as exc:
            sys.stderr.write(f"error: {exc}\n")
            return exc.exit_code
    if not ns.json:
        show(ns.op, result)
    if ns.op == "drill" and isinstance(result, dict) and result.get("result") != "success":
        if not ns.json:
            step = f" at {result['step']}" if result.get("step") else ""
            sys.stderr.write(f"drill FAILED{step}: {result.get('error')}\n")
        return EXIT_FAILURE
    return EXIT_OK
