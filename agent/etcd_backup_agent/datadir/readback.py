"""Read a restored data dir back and compare it with what the restore was asked to write.

The native drill's judge: it reads ``member/snap/db``, ``member/snap/*.snap`` and
``member/wal`` with this package's own readers and checks them against each other, against
the restore flags and against the source snapshot. It shares no code with the engine
that wrote the dir: member and cluster ids are derived again here from etcd's rules
(release-3.5 ``membership/member.go`` ``computeMemberId``: the first 8 bytes, big-endian,
of sha1(sorted peer URLs joined + cluster token); ``cluster.go`` ``genID``: the same of
sha1 of the member ids sorted ascending, each 8 bytes big-endian) and from what
``etcdutl snapshot restore`` (``saveWALAndSnap``, ``updateCIndex``) writes for them: one
AddNode entry per member at term 1 in id order, hard state {term 1, vote the first id,
commit n}, a snapshot at index n, and the db's consistent index n and term 1.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from .db_read import DbContents, DbReadError, read_db
from .snap_read import SnapError, read_snap, snap_names
from .wal_read import ENTRY_CONF_CHANGE, WalContents, WalError, read_wal

REWRITTEN = (b"members", b"members_removed", b"meta")
"""The buckets a restore rewrites; every other bucket must be the snapshot's, pair for pair."""


class ReadbackError(ValueError):
    """The restored data dir is not what the restore was asked to write."""


@dataclass(frozen=True)
class Want:
    """The restore flags: this member's name, every member (name, peer URLs), the token."""

    name: str
    members: tuple[tuple[str, tuple[str, ...]], ...]
    token: str
    revision: int
    rules: str = "3.5"  # the status rules the db's key count is computed under

    def ids(self) -> dict[int, tuple[str, tuple[str, ...]]]:
        return {member_id(urls, self.token): (n, urls) for n, urls in self.members}


@dataclass(frozen=True)
class Readback:
    checks: tuple[str, ...]
    member_ids: tuple[int, ...]
    cluster_id: int
    consistent_index: int
    wal_records: int
    db: DbContents


def member_id(peer_urls: tuple[str, ...], token: str) -> int:
    raw = "".join(sorted(peer_urls)).encode() + token.encode()
    return int.from_bytes(hashlib.sha1(raw).digest()[:8], "big")  # noqa: S324 (etcd's id)


def cluster_id(ids: list[int] | tuple[int, ...]) -> int:
    raw = b"".join(i.to_bytes(8, "big") for i in sorted(ids))
    return int.from_bytes(hashlib.sha1(raw).digest()[:8], "big")  # noqa: S324 (etcd's id)


def _fail(what: str) -> ReadbackError:
    return ReadbackError(what)


def check_db(db_path: Path, want: Want, source: DbContents, ids: list[int]) -> DbContents:
    try:
        db = read_db(db_path, want.rules)
    except DbReadError as exc:
        raise _fail(f"member/snap/db: {exc}") from None
    if db.problems:
        raise _fail(f"member/snap/db fails the integrity check: {db.problems[0]}")
    if db.status.revision != want.revision:
        raise _fail(f"member/snap/db is at revision {db.status.revision}, expected {want.revision}")
    for bucket in source.buckets:
        if bucket.name in REWRITTEN:
            continue
        got = db.bucket(bucket.name)
        if got is None or (got.pairs, got.crc) != (bucket.pairs, bucket.crc):
            have = "missing" if got is None else f"{got.pairs} pairs, crc {got.crc:#010x}"
            raise _fail(
                f"member/snap/db bucket {bucket.name.decode(errors='replace')!r} differs from "
                f"the snapshot ({have}; snapshot: {bucket.pairs} pairs, crc {bucket.crc:#010x})"
            )
    extra = {b.name for b in db.buckets} - {b.name for b in source.buckets} - set(REWRITTEN)
    if extra:
        raise _fail(f"member/snap/db has buckets the snapshot lacks: {sorted(extra)}")
    wanted = want.ids()
    got_members = {m.id: tuple(sorted(m.peer_urls)) for m in db.members}
    expect = {i: tuple(sorted(urls)) for i, (_, urls) in wanted.items()}
    if got_members != expect:
        raise _fail(
            "member/snap/db members bucket: "
            + ", ".join(f"{i:x}={list(u)}" for i, u in sorted(got_members.items()))
            + "; the flags give "
            + ", ".join(f"{i:x}={list(u)}" for i, u in sorted(expect.items()))
        )
    if db.removed:
        raise _fail(
            f"member/snap/db members_removed is not empty: {[f'{i:x}' for i in db.removed]}"
        )
    if db.consistent_index != len(ids) or db.term != 1:
        raise _fail(
            f"member/snap/db meta: consistent_index {db.consistent_index}, term {db.term}; "
            f"a restore of {len(ids)} member(s) sets {len(ids)} and 1"
        )
    return db


def check_wal(wal_dir: Path, want: Want, ids: list[int], cid: int) -> WalContents:
    try:
        wal = read_wal(wal_dir)
    except WalError as exc:
        raise _fail(f"WAL: {exc}") from None
    wanted = want.ids()
    own = next(i for i, (n, _) in wanted.items() if n == want.name)
    if (wal.metadata.node_id, wal.metadata.cluster_id) != (own, cid):
        raise _fail(
            f"WAL metadata: node {wal.metadata.node_id:x}, cluster {wal.metadata.cluster_id:x}; "
            f"expected node {own:x} ({want.name}), cluster {cid:x}"
        )
    if len(wal.entries) != len(ids):
        raise _fail(f"WAL holds {len(wal.entries)} entries, expected one per member ({len(ids)})")
    for n, (entry, mid) in enumerate(zip(wal.entries, ids, strict=True), start=1):
        cc = entry.conf_change
        if entry.type != ENTRY_CONF_CHANGE or cc is None:
            raise _fail(f"WAL entry {entry.index}: type {entry.type}, not a ConfChange")
        if (entry.term, entry.index, cc.type_name, cc.node_id) != (1, n, "AddNode", mid):
            raise _fail(
                f"WAL entry {entry.index} (term {entry.term}): {cc.type_name} {cc.node_id:x}; "
                f"expected AddNode {mid:x} at term 1, index {n}"
            )
        ctx = cc.member()
        name, urls = wanted[mid]
        if ctx.id != mid or ctx.name != name or sorted(ctx.peer_urls) != sorted(urls):
            raise _fail(
                f"WAL entry {n}: member context {ctx.id:x} {ctx.name!r} {list(ctx.peer_urls)}; "
                f"expected {mid:x} {name!r} {list(urls)}"
            )
    hs = wal.hard_state
    if hs is None or (hs.term, hs.vote, hs.commit) != (1, ids[0], len(ids)):
        raise _fail(f"WAL hard state {hs}; expected term 1, vote {ids[0]:x}, commit {len(ids)}")
    last = wal.snapshots[-1] if wal.snapshots else None
    if last is None or (last.index, last.term) != (len(ids), 1) or last.voters != tuple(ids):
        raise _fail(f"WAL snapshot record {last}; expected index {len(ids)}, term 1, voters {ids}")
    return wal


def check_snap(snap_dir: Path, want: Want, ids: list[int]) -> None:
    try:
        names = snap_names(snap_dir)
        if len(names) != 1:
            raise _fail(f"member/snap holds {len(names)} .snap files, expected 1")
        snap = read_snap(snap_dir / names[0])
    except SnapError as exc:
        raise _fail(f"snap file: {exc}") from None
    if (snap.index, snap.term) != (len(ids), 1) or snap.voters != tuple(ids) or snap.learners:
        raise _fail(
            f"snap file {snap.name}: index {snap.index}, term {snap.term}, voters "
            f"{[f'{i:x}' for i in snap.voters]}; expected index {len(ids)}, term 1, voters "
            f"{[f'{i:x}' for i in ids]}"
        )
    wanted = want.ids()
    got = {m.id: tuple(sorted(m.peer_urls)) for m in snap.members}
    expect = {i: tuple(sorted(u)) for i, (_, u) in wanted.items()}
    if got != expect or snap.removed:
        raise _fail(f"snap file {snap.name}: v2 store members {got}, expected {expect}")


def read_back(
    data_dir: str | os.PathLike[str],
    want: Want,
    source: DbContents,
    wal_dir: str | os.PathLike[str] | None = None,
) -> Readback:
    """Check a restored data dir; raise ReadbackError naming the first difference."""
    root = Path(data_dir)
    wanted = want.ids()
    if len(wanted) != len(want.members):
        raise _fail("two members of --initial-cluster have the same id (same peer URLs)")
    if want.name not in {n for n, _ in want.members}:
        raise _fail(f"--name {want.name!r} is not in --initial-cluster")
    ids = sorted(wanted)
    cid = cluster_id(ids)
    db = check_db(root / "member" / "snap" / "db", want, source, ids)
    checks = [
        f"db: integrity sound, revision {db.status.revision}, every bucket but "
        f"{'/'.join(b.decode() for b in REWRITTEN)} equal to the snapshot's, "
        f"{len(ids)} member(s), consistent index {db.consistent_index}"
    ]
    wal = check_wal(Path(wal_dir) if wal_dir else root / "member" / "wal", want, ids, cid)
    checks.append(
        f"WAL: {len(wal.records)} records, CRC chain intact, node {wal.metadata.node_id:x}, "
        f"cluster {cid:x}, {len(wal.entries)} AddNode entries"
    )
    check_snap(root / "member" / "snap", want, ids)
    checks.append(f"snap file: crc ok, index {len(ids)} == WAL commit == db consistent index")
    return Readback(tuple(checks), tuple(ids), cid, len(ids), len(wal.records), db)
