"""Ordered reads of one top-level bucket of a bolt file: every leaf, or one key.

The integrity of the file is verify's job; these readers only refuse to loop or to run
past a page (a damaged file raises PageError/BoltError, never hangs).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from ..snapshot.bolt import BRANCH, BUCKET_LEAF_FLAG, LEAF, BoltError, BoltFile, Page, PageError

MAX_DEPTH = 64


@dataclass(frozen=True)
class Bucket:
    """A bucket's root page id, or its inline page (``root == 0``)."""

    name: bytes
    root: int
    inline: bytes | None


def find_bucket(db: BoltFile, name: bytes) -> Bucket | None:
    """The top-level bucket ``name``; None when the file has none."""
    found = _seek(db, db.meta.root, None, name)
    if found is None:
        return None
    flags, value = found
    if not flags & BUCKET_LEAF_FLAG or len(value) < 16:
        raise BoltError(f"{name!r} is not a bucket")
    root = struct.unpack_from(f"{db.endian}Q", value, 0)[0]
    return Bucket(name, root, value[16:] if root == 0 else None)


def _root_page(db: BoltFile, root: int, inline: bytes | None) -> Page:
    return db.page_from_bytes(inline) if inline is not None else db.read_page(root)


def leaves(db: BoltFile, bucket: Bucket) -> Iterator[list[tuple[int, bytes, bytes]]]:
    """The (flags, key, value) items of each leaf of ``bucket``, in key order."""
    for page in leaf_pages(db, bucket):
        yield db.leaf_items(page)


def leaf_pages(db: BoltFile, bucket: Bucket) -> Iterator[Page]:
    """Each leaf page of ``bucket``, in key order."""
    if bucket.inline is not None:
        page = db.page_from_bytes(bucket.inline)
        if page.flags != LEAF:
            raise PageError(0, "inline bucket page is not a leaf")
        yield page
        return
    stack: list[tuple[int, int]] = [(bucket.root, 0)]
    while stack:
        pgid, depth = stack.pop()
        page = db.read_page(pgid)
        if page.flags == LEAF:
            yield page
        elif page.flags == BRANCH and depth < MAX_DEPTH:
            children = db.branch_items(page)
            stack.extend((child, depth + 1) for _, child in reversed(children))
        else:
            raise PageError(pgid, "unexpected page type in a bucket tree")


def get(db: BoltFile, bucket: Bucket, key: bytes) -> bytes | None:
    """The value stored under ``key`` in ``bucket``; None when absent."""
    found = _seek(db, bucket.root, bucket.inline, key)
    if found is None or found[0] & BUCKET_LEAF_FLAG:
        return None
    return found[1]


def _seek(db: BoltFile, root: int, inline: bytes | None, key: bytes) -> tuple[int, bytes] | None:
    page = _root_page(db, root, inline)
    for _ in range(MAX_DEPTH):
        if page.flags == LEAF:
            for flags, k, v in db.leaf_items(page):
                if k == key:
                    return flags, v
            return None
        if page.flags != BRANCH:
            raise PageError(page.id, "unexpected page type in a bucket tree")
        items = db.branch_items(page)
        child = items[0][1]
        for k, c in items:
            if k > key:
                break
            child = c
        page = db.read_page(child)
    raise PageError(page.id, "bucket tree nested too deeply")


def free_pages(db: BoltFile) -> int | None:
    """Pages on the persisted freelist (what defrag gives back); None when not persisted."""
    from ..snapshot.bolt import NO_FREELIST

    if db.meta.freelist == NO_FREELIST:
        return None
    try:
        return len(db.freelist_ids(db.read_page(db.meta.freelist)))
    except PageError:
        return None
