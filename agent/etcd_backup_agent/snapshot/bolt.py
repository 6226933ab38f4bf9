"""Read-only bbolt (format version 2) page reader using positioned reads.

The file is never read or mapped whole: every page is fetched with ``os.pread``, so memory
stays bounded by the largest single page span (capped by ``MAX_PAGE_SPAN``).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from functools import lru_cache
from types import TracebackType

MAGIC = 0xED0CDAED
VERSION = 2
PAGE_HEADER_SIZE = 16
ELEMENT_SIZE = 16
META_SIZE = 64
NO_FREELIST = 0xFFFFFFFFFFFFFFFF

BRANCH = 0x01
LEAF = 0x02
META = 0x04
FREELIST = 0x10
BUCKET_LEAF_FLAG = 0x01

MAX_PAGE_SPAN = 64 * 1024 * 1024
"""The largest page (with its overflow) this reader will load, in bytes."""

WINDOW = 512 * 1024
"""Read-ahead window for ascending page access, in bytes."""

_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_MASK64 = 0xFFFFFFFFFFFFFFFF


class BoltError(Exception):
    """The file cannot be read as a bolt database (the message is for an operator)."""


class PageError(Exception):
    """One page is unusable; ``page_id`` names it."""

    def __init__(self, page_id: int, message: str) -> None:
        self.page_id = page_id
        self.message = message
        super().__init__(f"page {page_id}: {message}")


def fnv1a64(data: bytes) -> int:
    """FNV-1a 64-bit hash, as bolt uses for meta checksums."""
    h = _FNV_OFFSET
    for b in data:
        h = ((h ^ b) * _FNV_PRIME) & _MASK64
    return h


def page_type_name(flags: int) -> str:
    """Bolt's name of a page type, or ``unknown<xx>``."""
    names = {BRANCH: "branch", LEAF: "leaf", META: "meta", FREELIST: "freelist"}
    return names.get(flags, f"unknown<{flags:02x}>")


@dataclass(frozen=True)
class Meta:
    """One meta page as read; ``problem`` is None when it is valid."""

    page_id: int
    page_size: int
    flags: int
    root: int
    sequence: int
    freelist: int
    pgid: int
    txid: int
    problem: str | None


@dataclass(slots=True)
class Page:
    """A page and its overflow: ``buf`` starts at the page header."""

    id: int
    flags: int
    count: int
    overflow: int
    buf: bytes


@lru_cache(maxsize=512)
def _elements_struct(endian: str, count: int) -> struct.Struct:
    return struct.Struct(f"{endian}{count * 4}I")


@lru_cache(maxsize=512)
def _branch_struct(endian: str, count: int) -> struct.Struct:
    return struct.Struct(f"{endian}{'IIQ' * count}")


def parse_meta(raw: bytes, page_id: int, endian: str) -> Meta:
    """Decode and validate the meta stored in ``raw`` (page header + meta)."""
    if len(raw) < PAGE_HEADER_SIZE + META_SIZE:
        return Meta(page_id, 0, 0, 0, 0, 0, 0, 0, "meta page is truncated")
    fields = struct.unpack_from(f"{endian}IIIIQQQQQQ", raw, PAGE_HEADER_SIZE)
    magic, version, page_size, flags, root, seq, freelist, pgid, txid, checksum = fields
    problem: str | None = None
    if magic != MAGIC:
        problem = "bad magic (not a bolt file)"
    elif version != VERSION:
        problem = f"unsupported bolt format version {version}"
    elif fnv1a64(raw[PAGE_HEADER_SIZE : PAGE_HEADER_SIZE + 56]) != checksum:
        problem = "meta checksum mismatch"
    elif page_size < 512 or page_size & (page_size - 1):
        problem = f"invalid page size {page_size}"
    return Meta(page_id, page_size, flags, root, seq, freelist, pgid, txid, problem)


def _detect_endian(raw: bytes) -> str:
    magic_le = struct.unpack_from("<I", raw, PAGE_HEADER_SIZE)[0]
    if magic_le == MAGIC:
        return "<"
    if struct.unpack_from(">I", raw, PAGE_HEADER_SIZE)[0] == MAGIC:
        return ">"
    return "<"


class BoltFile:
    """A bolt database opened read-only; pages are fetched on demand with pread."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._fd = os.open(self.path, os.O_RDONLY)
        try:
            self.file_size = os.fstat(self._fd).st_size
            self._open()
        except BaseException:
            os.close(self._fd)
            raise

    def _open(self) -> None:
        if self.file_size < PAGE_HEADER_SIZE + META_SIZE:
            raise BoltError(f"not a bolt file: only {self.file_size} bytes")
        head = os.pread(self._fd, PAGE_HEADER_SIZE + META_SIZE, 0)
        self.endian = _detect_endian(head)
        meta0 = parse_meta(head, 0, self.endian)
        page_size = meta0.page_size if meta0.problem is None else 0
        meta1: Meta | None = None
        if page_size:
            meta1 = self._meta_at(page_size)
        else:
            for shift in range(10, 17):
                meta1 = self._meta_at(1 << shift)
                if meta1.problem is None:
                    page_size = meta1.page_size
                    break
        if not page_size or meta1 is None:
            raise BoltError("not a bolt file: no valid meta page (bad magic or checksum)")
        self.page_size = page_size
        self.metas = (meta0, meta1)
        valid = [m for m in self.metas if m.problem is None]
        self.meta = max(valid, key=lambda m: m.txid)
        self._win = b""
        self._win_off = 0
        self._last = -2
        self._hdr = struct.Struct(f"{self.endian}QHHI")

    def _meta_at(self, page_size: int) -> Meta:
        raw = os.pread(self._fd, PAGE_HEADER_SIZE + META_SIZE, page_size)
        meta = parse_meta(raw, 1, self.endian)
        if meta.problem is None and meta.page_size != page_size:
            return Meta(1, meta.page_size, 0, 0, 0, 0, 0, 0, "page size differs from meta 0")
        return meta

    @property
    def data_size(self) -> int:
        """Bytes of pages the meta says exist (``pgid * page_size``): etcdutl's totalSize."""
        return self.meta.pgid * self.page_size

    def read_page(self, pgid: int) -> Page:
        """Read page ``pgid`` with its overflow; raise PageError if it is unreadable.

        Reads ahead a bounded window when pages are requested in ascending order, which is
        how bolt usually lays a tree out; random access falls back to one read per page.
        """
        ps = self.page_size
        if pgid >= self.meta.pgid:
            raise PageError(pgid, f"out of bounds: {self.meta.pgid}")
        off = pgid * ps
        rel = off - self._win_off
        if rel >= 0 and rel + ps <= len(self._win):
            first = self._win[rel : rel + ps]
        elif pgid == self._last + 1:
            self._win = os.pread(self._fd, WINDOW, off)
            self._win_off = off
            first = self._win[:ps]
        else:
            first = os.pread(self._fd, ps, off)
        self._last = pgid
        if len(first) < ps:
            raise PageError(pgid, "beyond the end of the file (truncated)")
        pid, flags, count, overflow = self._hdr.unpack_from(first, 0)
        if pid != pgid:
            raise PageError(pgid, f"header carries page id {pid}")
        if overflow:
            span = (overflow + 1) * ps
            if pgid + overflow >= self.meta.pgid:
                raise PageError(pgid, f"out of bounds: overflow {overflow} past {self.meta.pgid}")
            if span > MAX_PAGE_SPAN:
                raise PageError(pgid, f"overflow of {overflow} pages is implausibly large")
            rest = os.pread(self._fd, span - ps, off + ps)
            if len(rest) < span - ps:
                raise PageError(pgid, "overflow beyond the end of the file (truncated)")
            first += rest
            self._last = pgid + overflow
        return Page(pid, flags, count, overflow, first)

    def page_from_bytes(self, buf: bytes) -> Page:
        """Parse an inline page (a bucket value after its 16-byte header)."""
        if len(buf) < PAGE_HEADER_SIZE:
            raise PageError(0, "inline bucket page is truncated")
        pid, flags, count, overflow = self._hdr.unpack_from(buf, 0)
        return Page(pid, flags, count, overflow, buf)

    def leaf_elements(self, page: Page) -> tuple[int, ...]:
        """The raw leaf element table: flags, pos, ksize, vsize repeated ``count`` times."""
        n = page.count
        if PAGE_HEADER_SIZE + n * ELEMENT_SIZE > len(page.buf):
            raise PageError(page.id, f"{n} elements do not fit in the page")
        return _elements_struct(self.endian, n).unpack_from(page.buf, PAGE_HEADER_SIZE)

    def leaf_items(self, page: Page) -> list[tuple[int, bytes, bytes]]:
        """(flags, key, value) of each leaf element, bounds-checked."""
        t = self.leaf_elements(page)
        buf = page.buf
        size = len(buf)
        out: list[tuple[int, bytes, bytes]] = []
        for i in range(page.count):
            flags, pos, ks, vs = t[4 * i : 4 * i + 4]
            start = PAGE_HEADER_SIZE + ELEMENT_SIZE * i + pos
            mid = start + ks
            end = mid + vs
            if end > size:
                raise PageError(page.id, f"element {i} points past the end of the page")
            out.append((flags, buf[start:mid], buf[mid:end]))
        return out

    def branch_items(self, page: Page) -> list[tuple[bytes, int]]:
        """(key, child page id) of each branch element, bounds-checked."""
        n = page.count
        buf = page.buf
        size = len(buf)
        if PAGE_HEADER_SIZE + n * ELEMENT_SIZE > size:
            raise PageError(page.id, f"{n} elements do not fit in the page")
        t = _branch_struct(self.endian, n).unpack_from(buf, PAGE_HEADER_SIZE)
        out: list[tuple[bytes, int]] = []
        for i in range(n):
            pos, ks, child = t[3 * i : 3 * i + 3]
            start = PAGE_HEADER_SIZE + ELEMENT_SIZE * i + pos
            if start + ks > size:
                raise PageError(page.id, f"element {i} points past the end of the page")
            out.append((buf[start : start + ks], child))
        return out

    def freelist_ids(self, page: Page) -> list[int]:
        """Page ids listed in a freelist page (handles the 0xFFFF count form)."""
        buf = page.buf
        count, start = page.count, PAGE_HEADER_SIZE
        if count == 0xFFFF:
            if len(buf) < PAGE_HEADER_SIZE + 8:
                raise PageError(page.id, "freelist page is truncated")
            count = struct.unpack_from(f"{self.endian}Q", buf, PAGE_HEADER_SIZE)[0]
            start += 8
        if start + 8 * count > len(buf):
            raise PageError(page.id, f"freelist of {count} ids does not fit in its pages")
        return list(struct.unpack_from(f"{self.endian}{count}Q", buf, start))

    def close(self) -> None:
        """Close the file descriptor."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> BoltFile:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
