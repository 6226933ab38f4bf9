"""Integrity check equal to bolt's ``tx.Check()``, done in one ordered walk of the tree.

The walk visits every bucket in key order, so a ``LeafSink`` (the status computation) can
consume the leaves of top-level buckets in the same pass.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from operator import lt
from typing import Protocol

from .bolt import (
    BRANCH,
    BUCKET_LEAF_FLAG,
    FREELIST,
    LEAF,
    NO_FREELIST,
    PAGE_HEADER_SIZE,
    BoltError,
    BoltFile,
    Page,
    PageError,
    page_type_name,
)

MAX_PROBLEMS = 1000
MAX_BUCKET_DEPTH = 64
_REACHABLE = 1
_FREED = 2
_UNREACHABLE_IS_FREE = bytes([_FREED]) + bytes(range(1, 256))


@dataclass(frozen=True)
class Problem:
    """One integrity problem; ``page_id`` is None for file-level problems."""

    page_id: int | None
    message: str

    def __str__(self) -> str:
        if self.page_id is None:
            return self.message
        return f"page {self.page_id}: {self.message}"


class LeafSink(Protocol):
    """Receives top-level bucket names and their leaf pages, in key order."""

    def bucket(self, name: bytes) -> None: ...

    def leaf(self, leaf: Leaf) -> None: ...


@dataclass(slots=True)
class Leaf:
    """A decoded leaf page: element table, element bounds and keys."""

    page_id: int
    buf: bytes
    table: tuple[int, ...]
    starts: list[int]
    ends: list[int]
    keys: list[bytes]
    contiguous: bool
    has_buckets: bool

    def value(self, i: int) -> bytes:
        """The value of element ``i``."""
        return self.buf[self.starts[i] + self.table[4 * i + 2] : self.ends[i]]

    def flags(self, i: int) -> int:
        """The flags of element ``i``."""
        return self.table[4 * i]


class Scanner:
    """Walks a bolt file once: collects problems and feeds a sink."""

    def __init__(self, db: BoltFile, sink: LeafSink | None = None) -> None:
        self.db = db
        self.sink = sink
        self.problems: list[Problem] = []
        self._dropped = 0
        self._state = bytearray(0)

    def report(self, page_id: int | None, message: str) -> None:
        """Record a problem, keeping at most MAX_PROBLEMS."""
        if len(self.problems) >= MAX_PROBLEMS:
            self._dropped += 1
            return
        self.problems.append(Problem(page_id, message))

    def run(self) -> list[Problem]:
        """Check the whole file; return the problems (empty when sound)."""
        db = self.db
        for meta in db.metas:
            if meta.problem is not None:
                self.report(meta.page_id, f"meta page invalid: {meta.problem}")
        pgid = db.meta.pgid
        needed = pgid * db.page_size
        if pgid < 2:
            self.report(None, f"meta says the database has {pgid} pages; at least 2 needed")
            return self.problems
        if needed > db.file_size:
            self.report(
                None,
                f"truncated: the database needs {needed} bytes but the file has {db.file_size}",
            )
            return self.problems
        self._state = bytearray(pgid)
        self._state[0] = self._state[1] = _REACHABLE
        self._load_freelist()
        self._walk_bucket(db.meta.root, None, 0)
        if db.meta.freelist == NO_FREELIST:
            self._state = self._state.translate(_UNREACHABLE_IS_FREE)
        self._unreachable()
        if self._dropped:
            self.problems.append(Problem(None, f"... and {self._dropped} more problems"))
        return self.problems

    def _load_freelist(self) -> None:
        db, state = self.db, self._state
        fl = db.meta.freelist
        if fl == NO_FREELIST:
            return
        try:
            page = db.read_page(fl)
        except PageError as exc:
            self.report(exc.page_id, f"freelist unreadable: {exc.message}")
            return
        if page.flags != FREELIST:
            self.report(fl, f"invalid type: {page_type_name(page.flags)} (expected freelist)")
            return
        for i in range(page.overflow + 1):
            state[fl + i] |= _REACHABLE
        try:
            ids = db.freelist_ids(page)
        except PageError as exc:
            self.report(exc.page_id, exc.message)
            return
        n = len(state)
        for pid in ids:
            if pid >= n:
                self.report(pid, f"freed page out of bounds: {n}")
            elif state[pid] & _FREED:
                self.report(pid, "already freed")
            else:
                state[pid] |= _FREED

    def _unreachable(self) -> None:
        state = self._state
        i = state.find(0)
        while i >= 0:
            self.report(i, "unreachable unfreed")
            i = state.find(0, i + 1)

    def _visit(self, pgid: int) -> Page | None:
        """Read a bucket page, mark it reachable; None when it must not be descended."""
        try:
            page = self.db.read_page(pgid)
        except PageError as exc:
            self.report(exc.page_id, exc.message)
            return None
        state = self._state
        if not page.overflow and not state[pgid]:
            state[pgid] = _REACHABLE
            if page.flags in (LEAF, BRANCH):
                return page
            self.report(pgid, f"invalid type: {page_type_name(page.flags)}")
            return None
        seen = False
        for i in range(page.overflow + 1):
            if state[pgid + i] & _REACHABLE:
                self.report(pgid + i, "multiple references")
                seen = True
            state[pgid + i] |= _REACHABLE
        if seen:
            return None
        if state[pgid] & _FREED:
            self.report(pgid, "reachable freed")
        elif page.flags not in (BRANCH, LEAF):
            self.report(pgid, f"invalid type: {page_type_name(page.flags)}")
            return None
        return page

    def _walk_bucket(self, root: int, inline: bytes | None, level: int) -> None:
        if level > MAX_BUCKET_DEPTH:
            self.report(root or None, "buckets nested too deeply")
            return
        if inline is not None:
            try:
                ipage = self.db.page_from_bytes(inline)
            except PageError as exc:
                self.report(None, f"inline bucket: {exc.message}")
                return
            if ipage.flags != LEAF:
                self.report(None, f"inline bucket page has type {page_type_name(ipage.flags)}")
                return
            self._leaf(ipage, level, None, None, inline=True)
            return
        stack: list[tuple[int, bytes | None, bytes | None]] = [(root, None, None)]
        while stack:
            pgid, lo, hi = stack.pop()
            page = self._visit(pgid)
            if page is None:
                continue
            if page.flags == LEAF:
                self._leaf(page, level, lo, hi, inline=False)
                continue
            try:
                items = self.db.branch_items(page)
            except PageError as exc:
                self.report(exc.page_id, exc.message)
                continue
            self._check_order(pgid, [k for k, _ in items], lo, hi)
            for i in range(len(items) - 1, -1, -1):
                key, child = items[i]
                child_hi = items[i + 1][0] if i + 1 < len(items) else hi
                stack.append((child, key, child_hi))

    def _check_order(
        self, pgid: int, keys: list[bytes], lo: bytes | None, hi: bytes | None
    ) -> None:
        if not keys:
            return
        if not all(map(lt, keys, keys[1:])):
            bad = next(i for i in range(1, len(keys)) if not keys[i - 1] < keys[i])
            self.report(
                pgid,
                f"keys out of order: key[{bad}]={keys[bad].hex()} is not after "
                f"key[{bad - 1}]={keys[bad - 1].hex()}",
            )
        if lo is not None and keys[0] < lo:
            self.report(pgid, f"first key {keys[0].hex()} is before its parent's key {lo.hex()}")
        if hi is not None and keys[-1] >= hi:
            self.report(
                pgid, f"last key {keys[-1].hex()} is not before the next parent key {hi.hex()}"
            )

    def _leaf(
        self, page: Page, level: int, lo: bytes | None, hi: bytes | None, inline: bool
    ) -> None:
        pid = 0 if inline else page.id
        leaf = decode_leaf(self.db, page)
        if isinstance(leaf, PageError):
            self.report(None if inline else pid, leaf.message)
            return
        self._check_order(pid, leaf.keys, lo, hi)
        if level == 1 and self.sink is not None:
            self.sink.leaf(leaf)
        if not leaf.has_buckets and level != 0:
            return
        for i in range(len(leaf.keys)):
            if not leaf.table[4 * i] & BUCKET_LEAF_FLAG:
                if level == 0:
                    self.report(pid, f"root holds a plain key {leaf.keys[i].hex()}")
                continue
            value = leaf.value(i)
            if len(value) < 16:
                self.report(pid, f"bucket {leaf.keys[i]!r} has a truncated header")
                continue
            child_root = struct.unpack_from(f"{self.db.endian}Q", value, 0)[0]
            if level == 0 and self.sink is not None:
                self.sink.bucket(leaf.keys[i])
            if child_root == 0:
                self._walk_bucket(0, value[16:], level + 1)
            elif not inline:
                self._walk_bucket(child_root, None, level + 1)


def decode_leaf(db: BoltFile, page: Page) -> Leaf | PageError:
    """Decode a leaf page's element table and keys, or say why it cannot be."""
    buf = page.buf
    try:
        t = db.leaf_elements(page)
    except PageError as exc:
        return exc
    keys: list[bytes] = []
    starts: list[int] = []
    ends: list[int] = []
    contiguous = True
    prev = -1
    for j in range(0, len(t), 4):
        s = PAGE_HEADER_SIZE + 4 * j + t[j + 1]
        m = s + t[j + 2]
        e = m + t[j + 3]
        if s != prev and j:
            contiguous = False
        keys.append(buf[s:m])
        starts.append(s)
        ends.append(e)
        prev = e
    if ends and max(ends) > len(buf):
        return PageError(page.id, "an element points past the end of the page")
    return Leaf(page.id, buf, t, starts, ends, keys, contiguous, any(t[0::4]))


def check_db(path: str | os.PathLike[str]) -> list[Problem]:
    """Run the integrity check on a file; never raises for bad content."""
    try:
        with BoltFile(path) as db:
            return Scanner(db).run()
    except BoltError as exc:
        return [Problem(None, str(exc))]
    except OSError as exc:
        return [Problem(None, f"cannot read {os.fspath(path)}: {exc.strerror or exc}")]
