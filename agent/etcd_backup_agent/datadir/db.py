"""The ``member/snap/db`` step of a native restore, as ``etcdutl snapshot restore`` does it.

etcdutl 3.5 copies the snapshot without its sha256 trailer, then opens the copy with etcd's
backend four times, each time in one bbolt write transaction committed on close:

1. ``saveDB`` -> ``TrimMembershipFromBackend``: every key of ``members`` and of
   ``members_removed`` is deleted (ForEach + Delete);
2. only with ``--bump-revision N --mark-compacted`` (3.5.10 on), ``modifyLatestRevision``:
   the latest revision of bucket ``key`` plus N is written as a key with an empty value, and
   ``meta/scheduledCompactRev`` is set to it; then ``ForceCommit`` and ``Close`` commit twice
   (the second commit is empty);
3. ``saveWALAndSnap`` -> ``AddMember`` for each member: ``members/<id hex>`` = member JSON;
4. ``updateCIndex``: ``meta/consistent_index`` and ``meta/term`` (8-byte big endian).

Each reopen recomputes bbolt's free list, so pages freed by one step are reused by the next:
doing the same commits in the same order is what makes ``totalSize`` (``meta.pgid``) equal.

etcdutl 3.6 (release-3.6 source; no 3.6 binary to test against) makes the same four commits
with the same keys (``UpdateConsistentIndexForce`` writes the same two keys) on bbolt 1.4.3,
whose split, spill and array-freelist allocation are unchanged for these edits; its rebalance
threshold became ``pageSize * FillPercent / 2``, equal to 1.3.6's ``pageSize / 4`` at the
default fill percent these edits use. A 3.6 snapshot's ``meta/storageVersion`` is left as is,
as etcdutl 3.6 leaves it.

etcdutl itself varies in one way: etcd's backend also commits pending writes every 100 ms,
so on a loaded machine a step may get an extra (usually empty) commit; such runs differ from
this one in txid and meta slot, and when the timer splits a step, in page ids.
Where bbolt itself is not deterministic (Go map order when several non-inline child buckets
are dirty in one commit) the page ids could differ; etcdutl's commits dirty at most one
non-inline bucket each for etcd's layout, so this does not arise. The file is sized to exactly
``pgid * pageSize``; bbolt grows files in larger steps, so ``size`` may differ from etcdutl's.
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .bolt_write import BoltWriteError, BoltWriter, Bucket, Tx

TRAILER_SIZE = 32
COPY_CHUNK = 64 * 1024 * 1024
DB_MODE = 0o600
"""etcd's backend creates ``member/snap/db`` with ``os.OpenFile(..., 0600)``."""

MEMBERS = b"members"
MEMBERS_REMOVED = b"members_removed"
META = b"meta"
KEY = b"key"
CONSISTENT_INDEX = b"consistent_index"
TERM = b"term"
SCHEDULED_COMPACT = b"scheduledCompactRev"


class DbWriteError(Exception):
    """The restored db could not be written (message for an operator)."""


@dataclass(frozen=True)
class DbRewrite:
    """What changes between the snapshot and the restored ``member/snap/db``."""

    members: Sequence[tuple[bytes, bytes]]
    """(key, value) pairs: the new content of bucket ``members``."""
    consistent_index: int
    """``meta/consistent_index`` (8-byte big endian)."""
    term: int
    """``meta/term`` (8-byte big endian)."""
    bump_revision: int = 0
    """0 = no bump; otherwise requires ``mark_compacted``, as etcdutl does."""
    mark_compacted: bool = False


@dataclass(frozen=True)
class DbResult:
    """The written db: its path, file size, latest revision and the revision bumped from."""

    path: Path
    size: int
    revision: int
    bumped_from: int | None


def write_db(
    snapshot: Path,
    out: Path,
    rewrite: DbRewrite,
    *,
    has_trailer: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> DbResult:
    """Copy ``snapshot`` (minus its trailer) to a new file ``out`` and rewrite it for a new
    cluster as etcdutl 3.5 does. ``out`` must not exist; it is removed again on failure.

    The trailer's sha256 is not checked here: the caller verifies the snapshot first.
    ``progress(done, total)`` is called as bytes are copied.
    """
    if rewrite.bump_revision < 0:
        raise ValueError("bump_revision must be >= 0")
    if (rewrite.bump_revision > 0) != rewrite.mark_compacted:
        raise ValueError("bump_revision > 0 and mark_compacted go together (as in etcdutl)")
    size = os.stat(snapshot).st_size
    total = size - TRAILER_SIZE if has_trailer else size
    if total <= 0:
        raise DbWriteError(f"{snapshot}: too short to be an etcd snapshot ({size} bytes)")
    if has_trailer and size % 512 != TRAILER_SIZE:
        # etcdutl's own test: a bolt file is whole pages, a trailer adds exactly 32 bytes.
        raise DbWriteError(f"{snapshot}: has no sha256 trailer (size {size} is not pages + 32)")
    _copy(snapshot, out, total, progress)
    try:
        with BoltWriter(out) as db:
            bumped_from, revision = _rewrite(db, rewrite)
            db.sync()
            size_out = os.fstat(db.fd).st_size
        _fsync_dir(out.parent)
    except BaseException:
        _unlink_quietly(out)
        raise
    return DbResult(out, size_out, revision, bumped_from)


def _rewrite(db: BoltWriter, rw: DbRewrite) -> tuple[int | None, int]:
    tx = db.begin()
    for name in (MEMBERS, MEMBERS_REMOVED):
        bucket = tx.bucket(name)
        if bucket is not None:
            bucket.clear()
    tx.commit()

    latest = _latest_revision(db)
    bumped_from: int | None = None
    if rw.bump_revision > 0:
        bumped_from = latest
        latest += rw.bump_revision
        tx = db.begin()
        rev = _rev_bytes(latest)
        _need(tx, KEY).put(rev, b"")
        _need(tx, META).put(SCHEDULED_COMPACT, rev)
        tx.commit()
        db.begin().commit()

    tx = db.begin()
    members = _need(tx, MEMBERS)
    present = set(members.keys())
    for key, value in rw.members:
        if key not in present:
            members.put(key, value)
            present.add(key)
    tx.commit()

    tx = db.begin()
    if rw.consistent_index > 0:
        meta = _need(tx, META)
        meta.put(CONSISTENT_INDEX, struct.pack(">Q", rw.consistent_index))
        if rw.term > 0:
            meta.put(TERM, struct.pack(">Q", rw.term))
    tx.commit()
    return bumped_from, latest


def _need(tx: Tx, name: bytes) -> Bucket:
    bucket = tx.bucket(name)
    if bucket is None:
        raise DbWriteError(f"the snapshot has no bucket {name.decode()!r}: not an etcd database")
    return bucket


def _rev_bytes(main: int, sub: int = 0) -> bytes:
    return struct.pack(">Q", main) + b"_" + struct.pack(">Q", sub)


def _latest_revision(db: BoltWriter) -> int:
    """The main revision of the last key of bucket ``key`` (0 when there is none)."""
    tx = db.begin()
    bucket = tx.bucket(KEY)
    if bucket is None:
        return 0
    last = bucket.last_key()
    if last is None or len(last) < 8:
        return 0
    return int(struct.unpack_from(">Q", last, 0)[0])


def _copy(src: Path, dst: Path, total: int, progress: Callable[[int, int], None] | None) -> None:
    fin = os.open(src, os.O_RDONLY)
    try:
        fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, DB_MODE)
    except BaseException:
        os.close(fin)
        raise
    try:
        os.fchmod(fout, DB_MODE)
        done = 0
        use_range = hasattr(os, "copy_file_range")
        while done < total:
            want = min(COPY_CHUNK, total - done)
            n = 0
            if use_range:
                try:
                    n = os.copy_file_range(fin, fout, want, done, done)
                except OSError as exc:
                    if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                        raise
                    use_range = False
            if not use_range:
                buf = os.pread(fin, min(want, 1024 * 1024), done)
                n = os.pwrite(fout, buf, done) if buf else 0
            if n <= 0:
                raise DbWriteError(f"{src}: ended after {done} of {total} bytes while copying")
            done += n
            if progress is not None:
                progress(done, total)
    except BaseException:
        os.close(fout)
        os.close(fin)
        _unlink_quietly(dst)
        raise
    os.close(fout)
    os.close(fin)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


__all__ = ["BoltWriteError", "DbResult", "DbRewrite", "DbWriteError", "write_db"]
