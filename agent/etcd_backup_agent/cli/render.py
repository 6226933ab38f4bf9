"""What an operator reads: tables, the prune report, the progress bar, results of the ops.

Shared by ``etcd-backup-agent`` (results computed in-process) and ``etcd-backupctl``
(results from the socket): both print the same text for the same result.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from ..units import human_size

if TYPE_CHECKING:
    from ..manifest import Manifest
    from ..snapshot.status import SnapshotStatus


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


def table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    """Left-aligned columns two spaces apart; the first row is the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


@dataclass(frozen=True)
class BackupLine:
    """One row of `list`: from a manifest (in-process) or a socket reply's manifest dict."""

    id: str
    created_at: str
    revision: int
    db_size: int | None
    object_size: int | None
    total_keys: int | None
    verified: bool

    @classmethod
    def of(cls, m: Manifest) -> BackupLine:
        return cls(
            m.id, m.created_at, m.revision, m.db_size, m.object_size, m.total_keys, m.verified
        )

    @classmethod
    def from_reply(cls, d: Mapping[str, Any]) -> BackupLine:
        return cls(
            str(d["id"]),
            str(d["created_at"]),
            int(d["revision"]),
            d.get("db_size"),
            d.get("object_size"),
            d.get("total_keys"),
            bool(d.get("verified")),
        )


def backup_table(backups: Iterable[BackupLine]) -> list[str]:
    """The backups as `list` shows them, through either program."""
    rows = [("ID", "CREATED (UTC)", "REVISION", "DB SIZE", "STORED", "KEYS", "VERIFIED")]
    for b in backups:
        rows.append(
            (
                b.id,
                b.created_at,
                str(b.revision),
                human_size(b.db_size),
                human_size(b.object_size),
                "-" if b.total_keys is None else str(b.total_keys),
                "yes" if b.verified else "no",
            )
        )
    return table(rows)


def snapshot_status_table(status: SnapshotStatus) -> str:
    """`verify FILE`: the table `etcdutl snapshot status -w table` prints (SI sizes, as it)."""
    headers = ["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"]
    row = [
        f"{status.hash:x}",
        str(status.revision),
        str(status.total_key),
        _si_size(status.total_size),
    ]
    if status.rules == "3.6":
        headers.append("VERSION")
        row.append(status.version or "")
    widths = [max(len(h), len(c)) for h, c in zip(headers, row, strict=True)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    head = "|" + "|".join(f" {h:^{w}} " for h, w in zip(headers, widths, strict=True)) + "|"
    body = "|" + "|".join(f" {c:>{w}} " for c, w in zip(row, widths, strict=True)) + "|"
    return "\n".join([line, head, line, body, line])


def _si_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return str(size)  # pragma: no cover


def drill_failed(result: Mapping[str, Any]) -> str:
    """The one stderr line of a failed drill: at which step, and why."""
    step = f" at {result['step']}" if result.get("step") else ""
    return f"drill FAILED{step}: {result.get('error')}"


def drill_lines(result: Mapping[str, Any]) -> list[str]:
    """A drill's report as the operator reads it: the verdict, then each check that passed."""
    verdict = "passed" if result.get("result") == "success" else "FAILED"
    kind = (
        "full drill (served by a throwaway etcd)"
        if result.get("kind") == "full"
        else ("native drill")
    )
    lines = [
        f"drill {verdict}: backup {result.get('backup_id')} from the {result.get('source')}, "
        f"{kind}, {float(result.get('seconds') or 0):.1f} s"
    ]
    if result.get("revision") is not None:
        lines.append(f"  revision {result['revision']}, {result.get('live_keys', '-')} live keys")
    lines += [f"  ok: {check}" for check in result.get("checks") or []]
    return lines  # a failed drill's step and error go to stderr (drill_failed)


def show(op: str, result: Any) -> None:
    """Print a successful result of ``op`` as an operator reads it."""
    if op == "list":
        # the same columns as `etcd-backup-agent list`
        for line in backup_table(BackupLine.from_reply(m) for m in result.get("backups", [])):
            print(line)
        if not result.get("complete", True):
            print("warning: the store listing was incomplete")
        return
    if op == "restore" and isinstance(result, dict):
        from ..restore import report as restore_report

        typed = restore_report.result_from_dict(result)
        if typed is not None:
            print("\n".join(restore_report.format_result(typed)))
            return
    if op == "drill" and isinstance(result, dict) and "checks" in result:
        print("\n".join(drill_lines(result)))
        return
    if op == "prune" and isinstance(result, dict) and "decisions" in result:
        for line in prune_report(result):
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


def prune_report(data: dict[str, Any]) -> list[str]:
    """Text lines of ``retention.report_dict()``: one line per backup, leftovers, a summary."""
    lines = []
    failed = {f["id"]: f["reason"] for f in data["failed"]}
    for d in data["decisions"]:
        action = d["action"]
        flag = "" if d["verified"] else " (unverified)"
        if action == "keep":
            why = ", ".join(d["reasons"])
        elif action == "locked":
            why = ", ".join(d["reasons"]) or "object lock: the store refused the delete"
        else:
            why = failed.get(d["id"], "no rule keeps it")
        lines.append(f"{action.upper():<13} {d['id']}{flag}  {why}")
    if not data["decisions"]:
        lines.append(f"(no backups of cluster {data['cluster']!r} in {data['store']})")
    lines += [f"orphan (no manifest, not deleted): {key}" for key in data["orphans"]]
    lines += [f"unreadable manifest (not deleted): {line}" for line in data["unreadable"]]
    lines += [
        f"INCOMPLETE    {i['id']}  {i['reason']} (not a backup; not deleted)"
        for i in data.get("incomplete", [])
    ]
    s = data["summary"]
    verb = "would delete" if data["dry_run"] else "deleted"
    lines.append(
        f"{s['backups']} backup(s): {s['kept']} kept, {verb} {s['deleted']}, "
        f"{s['skipped_locked']} skipped (object lock), {s['failed']} failed; "
        f"{s['orphans']} orphan(s), {s['unreadable']} unreadable"
        + (f", {s['incomplete']} incomplete" if s.get("incomplete") else "")
        + (" [dry run]" if data["dry_run"] else "")
    )
    return lines
