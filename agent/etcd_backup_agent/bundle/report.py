"""The bundle replies as text (shared by ``etcd-backup-agent bundle`` and ``etcd-backupctl``)."""

from __future__ import annotations

from typing import Any

from ..units import human_size


def format_result(op: str, result: dict[str, Any]) -> list[str]:
    if op == "bundle_extract":
        lines = [
            f"extracted the bundle of {result['backup']} into {result['to']}: "
            f"{result['files']} entries"
            + (" (owners kept)" if result.get("owners") else " (owners not kept: not root)")
        ]
        lines += [f"  {p}" for p in result.get("written", [])]
        lines += [f"warning (at backup time): {w}" for w in result.get("warnings", [])]
        return lines
    rec = result.get("bundle")
    if rec is None:
        return [f"backup {result['backup']} has no control-plane bundle ([bundle] was off)"]
    lines = [f"backup {result['backup']}: bundle {rec['status']} (layout {rec['layout']})"]
    if rec["status"] != "ok":
        lines.append(f"  error: {rec['error']}")
    else:
        lines.append(
            f"  object {rec['object']}: {human_size(rec['object_size'])} "
            f"({rec['object_size']} bytes), sha256 {rec['object_sha256']}"
        )
        rows = [("MODE", "UID:GID", "SIZE", "SHA256", "PATH")]
        for f in rec["files"]:
            name = f["path"] + ("/" if f["type"] == "dir" else "")
            if f["type"] == "symlink":
                name += f" -> {f['link']}"
            digest = f["sha256"][:16] if f["sha256"] else "-"
            rows.append((f["mode"], f"{f['uid']}:{f['gid']}", str(f["size"]), digest, name))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines += [
            "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in rows
        ]
    lines += [f"warning: {w}" for w in rec.get("warnings", [])]
    return lines
