"""Objects added, removed and changed between two snapshots, in bounded memory.

Each snapshot's revisions are sorted by key (records.py); the two streams of "latest
revision per live key" are then merge-joined. "Changed" means a different mod revision
or a different value hash (blake2b-64 of the value).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..snapshot.bolt import BoltFile
from .analyze import DEFAULT_BUDGET
from .k8s_keys import normalize_prefixes, parse_key
from .records import HASH_SIZE, TOMBSTONE, TRAILER, decode_record, sorted_revisions

ADDED, REMOVED, CHANGED = "added", "removed", "changed"
MAX_GROUPS = 10000
OVERFLOW_NS = "(other namespaces)"
_TAIL = TRAILER + HASH_SIZE


@dataclass(frozen=True)
class Change:
    kind: str
    key: str
    resource: str
    namespace: str | None
    a_revision: int | None
    b_revision: int | None
    value_changed: bool


@dataclass(frozen=True)
class DiffGroup:
    resource: str
    namespace: str | None
    added: int
    removed: int
    changed: int


@dataclass(frozen=True)
class DiffReport:
    a_revision: int
    b_revision: int
    added: int
    removed: int
    changed: int
    unchanged: int
    groups: tuple[DiffGroup, ...]
    changes: tuple[Change, ...]
    truncated: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _latest(
    groups: Iterator[list[bytes]], exclude: tuple[bytes, ...]
) -> Iterator[tuple[bytes, bytes]]:
    """(key part, latest record) of every key whose latest revision is not a tombstone,
    but for keys under ``exclude`` (prefixes without a NUL byte: the key part escapes NULs)."""
    for group in groups:
        last = group[-1]
        if not last[-_TAIL + 17] & TOMBSTONE:
            part = last[:-_TAIL]
            if not (exclude and part.startswith(exclude)):
                yield part, last


def diff_files(
    a: Path,
    b: Path,
    prefixes: tuple[str, ...] = ("/registry/",),
    work_dir: Path | None = None,
    budget: int = DEFAULT_BUDGET,
    max_changes: int = 1000,
    exclude: tuple[bytes, ...] = (),
) -> DiffReport:
    """Diff snapshot ``a`` (older) against ``b`` (newer), keys under ``exclude`` left out."""
    from .records import default_work_dir

    pfx = normalize_prefixes(prefixes)
    work = work_dir or default_work_dir()
    counts: dict[tuple[str, str | None], list[int]] = {}
    changes: list[Change] = []
    totals = {ADDED: 0, REMOVED: 0, CHANGED: 0}
    unchanged = 0
    truncated = False
    index = {ADDED: 0, REMOVED: 1, CHANGED: 2}

    def record(kind: str, rec: bytes, a_rev: int | None, b_rev: int | None, vc: bool) -> None:
        nonlocal truncated
        r = decode_record(rec, hashed=True)
        k = parse_key(r.key, pfx)
        totals[kind] += 1
        group = (k.resource, k.namespace)
        if group not in counts and len(counts) >= MAX_GROUPS:
            group = (k.resource, OVERFLOW_NS)
        counts.setdefault(group, [0, 0, 0])[index[kind]] += 1
        if len(changes) < max_changes:
            key = r.key.decode("utf-8", "replace")
            changes.append(Change(kind, key, k.resource, k.namespace, a_rev, b_rev, vc))
        else:
            truncated = True

    with contextlib.ExitStack() as stack:
        dba = stack.enter_context(BoltFile(a))
        dbb = stack.enter_context(BoltFile(b))
        ga, _, _, _ = stack.enter_context(sorted_revisions(dba, work, budget // 2, hashed=True))
        gb, _, _, _ = stack.enter_context(sorted_revisions(dbb, work, budget // 2, hashed=True))
        ita, itb = _latest(ga, exclude), _latest(gb, exclude)
        xa, xb = next(ita, None), next(itb, None)
        while xa is not None or xb is not None:
            if xb is None or (xa is not None and xa[0] < xb[0]):
                assert xa is not None
                record(REMOVED, xa[1], _main(xa[1]), None, True)
                xa = next(ita, None)
            elif xa is None or xb[0] < xa[0]:
                record(ADDED, xb[1], None, _main(xb[1]), True)
                xb = next(itb, None)
            else:
                ra, rb = xa[1], xb[1]
                value_changed = ra[-HASH_SIZE:] != rb[-HASH_SIZE:]
                if value_changed or _main(ra) != _main(rb):
                    record(CHANGED, rb, _main(ra), _main(rb), value_changed)
                else:
                    unchanged += 1
                xa, xb = next(ita, None), next(itb, None)
        from .analyze import _last_revision

        a_rev, b_rev = _last_revision(dba), _last_revision(dbb)
    groups = tuple(
        DiffGroup(res, ns, c[0], c[1], c[2])
        for (res, ns), c in sorted(counts.items(), key=lambda kv: (kv[0][0], kv[0][1] or ""))
    )
    return DiffReport(
        a_revision=a_rev,
        b_revision=b_rev,
        added=totals[ADDED],
        removed=totals[REMOVED],
        changed=totals[CHANGED],
        unchanged=unchanged,
        groups=groups,
        changes=tuple(changes),
        truncated=truncated,
    )


def _main(rec: bytes) -> int:
    return int.from_bytes(rec[-_TAIL : -_TAIL + 8], "big")
