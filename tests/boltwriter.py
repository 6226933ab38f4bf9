"""A minimal bbolt file writer for tests: buckets of key/values, nested and inline buckets.

Written from the on-disk format only (page header, meta, leaf/branch elements); it makes small
valid files and lets tests place faults precisely.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field

MAGIC = 0xED0CDAED
NO_FREELIST = 0xFFFFFFFFFFFFFFFF


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


@dataclass
class Inline:
    """A nested bucket stored inline in its parent's leaf."""

    items: dict[bytes, bytes]


Tree = dict[bytes, "bytes | Tree | Inline"]


@dataclass
class Writer:
    page_size: int = 4096
    per_leaf: int = 64
    scatter: bool = False
    pages: dict[int, bytes] = field(default_factory=dict)
    next_id: int = 2
    layout: dict[int, str] = field(default_factory=dict)

    def leaf_body(self, items: list[tuple[int, bytes, bytes]]) -> tuple[int, bytes]:
        """(count, body after the page header) of a leaf page.

        With ``scatter`` the key/value data is stored in reverse element order, a legal layout
        that bolt itself does not produce.
        """
        n = len(items)
        order = list(range(n))[::-1] if self.scatter else list(range(n))
        offsets: dict[int, int] = {}
        data = b""
        for i in order:
            offsets[i] = len(data)
            data += items[i][1] + items[i][2]
        elems = b""
        for i, (flags, k, v) in enumerate(items):
            elems += struct.pack("<IIII", flags, 16 * (n - i) + offsets[i], len(k), len(v))
        return n, elems + data

    def write_bucket(self, tree: Tree) -> int:
        """Write a (non-inline) bucket; return its root page id."""
        items: list[tuple[int, bytes, bytes]] = []
        for key in sorted(tree):
            value = tree[key]
            if isinstance(value, bytes):
                items.append((0, key, value))
            elif isinstance(value, Inline):
                n, body = self.leaf_body([(0, k, v) for k, v in sorted(value.items.items())])
                page = struct.pack("<QHHI", 0, 0x02, n, 0) + body
                items.append((1, key, struct.pack("<QQ", 0, 0) + page))
            else:
                items.append((1, key, struct.pack("<QQ", self.write_bucket(value), 0)))
        chunks = [items[i : i + self.per_leaf] for i in range(0, len(items), self.per_leaf)]
        chunks = chunks or [[]]
        leaves = []
        for chunk in chunks:
            n, body = self.leaf_body(chunk)
            leaves.append((chunk[0][1] if chunk else b"", self._alloc_page(0x02, n, body)))
        if len(leaves) == 1:
            return leaves[0][1]
        n = len(leaves)
        elems = b""
        data = b""
        for i, (k, pid) in enumerate(leaves):
            elems += struct.pack("<IIQ", 16 * (n - i) + len(data), len(k), pid)
            data += k
        return self._alloc_page(0x01, n, elems + data)

    def _alloc_page(self, flags: int, count: int, body: bytes) -> int:
        pid = self.next_id
        npages = max(1, -(-(len(body) + 16) // self.page_size))
        self.next_id += npages
        self.layout[pid] = {1: "branch", 2: "leaf", 0x10: "freelist"}[flags]
        page = struct.pack("<QHHI", pid, flags, count, npages - 1) + body
        self.pages[pid] = page.ljust(npages * self.page_size, b"\0")
        return pid

    def meta(self, pid: int, root: int, freelist: int, pgid: int, txid: int) -> bytes:
        body = struct.pack("<IIIIQQQQQ", MAGIC, 2, self.page_size, 0, root, 0, freelist, pgid, txid)
        body += struct.pack("<Q", fnv1a64(body))
        page = struct.pack("<QHHI", pid, 0x04, 0, 0) + body
        return page.ljust(self.page_size, b"\0")


def build_db(
    buckets: dict[bytes, Tree],
    *,
    page_size: int = 4096,
    per_leaf: int = 64,
    freelist: list[int] | None = None,
    extra_free_pages: int = 0,
    trailer: bool = True,
    scatter: bool = False,
    stray_pages: int = 0,
    big_count: bool = False,
) -> tuple[bytes, dict[int, str]]:
    """A bolt file holding ``buckets``; returns (bytes, page id -> kind).

    ``freelist``: None writes no freelist (like etcd, NoFreelistSync); otherwise page 2 is a
    freelist page listing these ids plus the ``extra_free_pages`` blank pages appended.
    ``stray_pages`` blank pages are appended and listed nowhere; ``big_count`` writes the
    freelist in its 0xFFFF-count form even when it is short.
    """
    w = Writer(page_size=page_size, per_leaf=per_leaf, scatter=scatter)
    root = w.write_bucket(dict(buckets.items()))
    free_ids = list(freelist or [])
    for _ in range(extra_free_pages):
        free_ids.append(w.next_id)
        w.pages[w.next_id] = b"\0" * page_size
        w.layout[w.next_id] = "free"
        w.next_id += 1
    for _ in range(stray_pages):
        w.pages[w.next_id] = b"\0" * page_size
        w.layout[w.next_id] = "stray"
        w.next_id += 1
    if freelist is not None:
        fl = w.next_id
        body = struct.pack(f"<{len(free_ids)}Q", *sorted(free_ids))
        count = len(free_ids)
        if count >= 0xFFFF or big_count:
            body = struct.pack("<Q", count) + body
            count = 0xFFFF
        w._alloc_page(0x10, count, body)
    else:
        fl = NO_FREELIST
    pgid = w.next_id
    out = bytearray(pgid * page_size)
    out[0:page_size] = w.meta(0, root, fl, pgid, 2)
    out[page_size : 2 * page_size] = w.meta(1, root, fl, pgid, 1)
    for pid, page in w.pages.items():
        out[pid * page_size : pid * page_size + len(page)] = page
    data = bytes(out)
    if trailer:
        data += hashlib.sha256(data).digest()
    return data, w.layout
