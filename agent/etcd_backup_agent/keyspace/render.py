"""Human-readable tables of an inspect report and a diff (from their JSON form, as the
socket client receives them)."""

from __future__ import annotations

from typing import Any

from ..units import human_size as human


def _table(rows: list[tuple[str, ...]], left: tuple[int, ...] = (0,)) -> list[str]:
    """Aligned columns: those in ``left`` are text, the others numbers (right-aligned)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
    return out


def format_report(r: dict[str, Any], top: int = 20) -> str:
    """The inspect report as an operator reads it: where the bytes are, what would be freed."""
    db = int(r["db_size"])
    live = int(r["bytes"])
    pct = f"{100 * live / db:.0f}%" if db else "-"
    compacted = r["compact_revision"]
    free = r.get("free_bytes")
    lines = [
        f"revision {r['revision']} "
        f"({f'compacted at {compacted}' if compacted else 'never compacted'}), "
        f"db size {human(db)}, "
        + (
            f"free pages {human(free)} (defrag gives back)"
            if free is not None
            # etcd's default: no persisted freelist, so the snapshot cannot tell
            else "free pages not recorded (etcd does not persist its freelist)"
        ),
        f"live data {human(live)} in {r['objects']} objects ({pct} of the db); "
        f"history {human(r['history_bytes'])} in older revisions and tombstones "
        f"(compaction frees)",
        f"{r['revisions']} revisions retained, {r['tombstones']} tombstones, "
        f"{r['deleted']} deleted keys still in history",
        "",
    ]
    rows: list[tuple[str, ...]] = [
        ("RESOURCE", "OBJECTS", "BYTES", "HISTORY", "TOMBSTONES", "ENCODINGS")
    ]
    resources = r["resources"]
    for res in resources[:top]:
        enc = ",".join(f"{k}:{v}" for k, v in sorted(res["encodings"].items()))
        rows.append(
            (
                res["resource"],
                str(res["objects"]),
                human(res["bytes"]),
                human(res["history_bytes"]),
                str(res["tombstones"]),
                enc or "-",
            )
        )
    lines += _table(rows, left=(0, 5))
    if len(resources) > top:
        rest = resources[top:]
        lines.append(
            f"... and {len(rest)} more resources: {sum(x['objects'] for x in rest)} objects, "
            f"{human(sum(x['bytes'] for x in rest))}"
        )
    shown = [res for res in resources[: min(top, 5)] if res["top_namespaces"]]
    if shown:
        lines += ["", "largest namespaces of the top resources:"]
        for res in shown:
            parts = [
                f"{ns['namespace']} {ns['objects']} obj {human(ns['bytes'])}"
                for ns in res["top_namespaces"][:5]
            ]
            lines.append(
                f"  {res['resource']} ({res['namespaces']} namespaces): {'; '.join(parts)}"
            )
    if r["largest"]:
        lines += ["", "largest objects (latest revision):"]
        obj_rows: list[tuple[str, ...]] = [("BYTES", "REVISIONS", "ENCODING", "KEY")]
        for o in r["largest"][:top]:
            obj_rows.append((human(o["bytes"]), str(o["revisions"]), o["encoding"], o["key"]))
        lines += ["  " + x for x in _table(obj_rows, left=(2, 3))]
    if r["encryption"]:
        lines += ["", "encrypted at rest (not decrypted; the apiserver's key is needed):"]
        for e in r["encryption"]:
            lines.append(
                f"  {e['provider']} {e['version']} key {e['key_name']!r}: {e['objects']} objects"
            )
    if r.get("undecodable"):
        lines.append(f"warning: {r['undecodable']} revisions could not be decoded")
    return "\n".join(lines)


def format_diff(d: dict[str, Any]) -> str:
    lines = [
        f"revision {d['a_revision']} -> {d['b_revision']}: {d['added']} added, "
        f"{d['removed']} removed, {d['changed']} changed, {d['unchanged']} unchanged"
    ]
    if d["groups"]:
        rows: list[tuple[str, ...]] = [("RESOURCE", "NAMESPACE", "ADDED", "REMOVED", "CHANGED")]
        for g in d["groups"]:
            rows.append(
                (
                    g["resource"],
                    g["namespace"] or "-",
                    str(g["added"]),
                    str(g["removed"]),
                    str(g["changed"]),
                )
            )
        lines += ["", *_table(rows, left=(0, 1))]
    if d["changes"]:
        lines += ["", "changes:"]
        sign = {"added": "+", "removed": "-", "changed": "~"}
        for c in d["changes"]:
            extra = ""
            if c["kind"] == "changed":
                what = "value changed" if c["value_changed"] else "same value, rewritten"
                extra = f"  (rev {c['a_revision']} -> {c['b_revision']}, {what})"
            lines.append(f"  {sign[c['kind']]} {c['key']}{extra}")
    if d["truncated"]:
        lines.append("(list truncated: raise --max-changes, or use --json)")
    return "\n".join(lines)
