"""The copy-on-write bolt writer on files built by tests/boltwriter.py.

Every result is read back with the read-only reader (``snapshot/bolt.py``, a separate code
path) and checked with the native ``tx.Check`` equivalent; the etcd-level oracle (etcdutl,
etcd) judges the writer in tests/integration/test_native_db.py.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etcd_backup_agent.datadir.bolt_write import BoltWriteError, BoltWriter
from etcd_backup_agent.snapshot.bolt import BUCKET_LEAF_FLAG, LEAF, NO_FREELIST, BoltFile, Page
from etcd_backup_agent.snapshot.check import check_db
from tests.boltwriter import Inline, Tree, build_db

Model = dict[bytes, "bytes | Model"]


def read_tree(path: Path) -> Model:
    """Every bucket and key of a bolt file, through the read-only reader."""
    with BoltFile(path) as db:

        def walk(page: Page) -> Model:
            out: Model = {}
            if page.flags & LEAF:
                for flags, key, value in db.leaf_items(page):
                    if flags & BUCKET_LEAF_FLAG:
                        root = struct.unpack_from("<Q", value, 0)[0]
                        child = db.page_from_bytes(value[16:]) if root == 0 else db.read_page(root)
                        out[key] = walk(child)
                    else:
                        out[key] = value
            else:
                for _, child_id in db.branch_items(page):
                    out.update(walk(db.read_page(child_id)))
            return out

        return walk(db.read_page(db.meta.root))


def make(path: Path, buckets: dict[bytes, Tree], **kwargs: object) -> Path:
    data, _ = build_db(buckets, trailer=False, **kwargs)  # type: ignore[arg-type]
    path.write_bytes(data)
    return path


def as_model(tree: dict[bytes, Tree] | Tree) -> Model:
    out: Model = {}
    for k, v in tree.items():
        if isinstance(v, bytes):
            out[k] = v
        elif isinstance(v, Inline):
            out[k] = dict(v.items)
        else:
            out[k] = as_model(v)
    return out


def bucket_kind(path: Path, name: bytes) -> str:
    """ "inline", "leaf" or "branch": how bucket ``name`` is stored."""
    with BoltFile(path) as db:
        root = db.read_page(db.meta.root)
        assert root.flags & LEAF
        for _, key, value in db.leaf_items(root):
            if key == name:
                child = struct.unpack_from("<Q", value, 0)[0]
                if child == 0:
                    return "inline"
                return "leaf" if db.read_page(child).flags & LEAF else "branch"
    raise KeyError(name)


def sound(path: Path) -> None:
    assert check_db(path) == []
    with BoltFile(path) as db:
        assert db.meta.freelist == NO_FREELIST


def test_put_delete_roundtrip_and_meta(tmp_path: Path) -> None:
    src = {b"a": {b"k1": b"v1", b"k2": b"v2"}, b"b": Inline({b"x": b"1"})}
    path = make(tmp_path / "db", src)
    with BoltFile(path) as db:
        txid, pgid = db.meta.txid, db.meta.pgid
    with BoltWriter(path) as w:
        tx = w.begin()
        a, b = tx.bucket(b"a"), tx.bucket(b"b")
        assert a is not None and b is not None
        a.put(b"k3", b"v3")
        a.delete(b"k1")
        a.delete(b"missing")
        b.put(b"y", b"2")
        info = tx.commit()
    sound(path)
    assert read_tree(path) == {b"a": {b"k2": b"v2", b"k3": b"v3"}, b"b": {b"x": b"1", b"y": b"2"}}
    with BoltFile(path) as db:
        assert db.meta.txid == txid + 1 == info.txid
        assert db.meta.page_id == (txid + 1) % 2
        assert db.meta.pgid == info.pgid >= pgid
    assert bucket_kind(path, b"b") == "inline"


def test_only_changed_pages_are_written(tmp_path: Path) -> None:
    big = {f"k{i:05d}".encode(): b"v" * 30 for i in range(2000)}
    path = make(tmp_path / "db", {b"big": big, b"other": {b"o": b"1"}}, per_leaf=40)
    before = path.read_bytes()
    with BoltWriter(path) as w:
        tx = w.begin()
        bucket = tx.bucket(b"big")
        assert bucket is not None
        bucket.put(b"k01000", b"changed")
        info = tx.commit()
    after = path.read_bytes()
    before = before.ljust(len(after), b"\0")
    ps = 4096
    changed = {
        i // ps for i in range(0, len(before), ps) if before[i : i + ps] != after[i : i + ps]
    }
    # The meta page, the leaf, the branch above it and the root bucket's leaf.
    assert changed == {info.txid % 2, *info.written}
    assert len(info.written) == 3
    assert read_tree(path)[b"big"] == {**big, b"k01000": b"changed"}  # type: ignore[dict-item]
    sound(path)


def test_inline_bucket_grows_into_pages_and_splits(tmp_path: Path) -> None:
    path = make(tmp_path / "db", {b"m": Inline({b"a": b"1"}), b"z": {b"q": b"2"}})
    assert bucket_kind(path, b"m") == "inline"
    expected = {b"a": b"1"}
    with BoltWriter(path) as w:
        tx = w.begin()
        m = tx.bucket(b"m")
        assert m is not None
        for i in range(30):
            m.put(f"key{i:03d}".encode(), b"x" * 40)
            expected[f"key{i:03d}".encode()] = b"x" * 40
        tx.commit()
    sound(path)
    assert bucket_kind(path, b"m") == "leaf"
    with BoltWriter(path) as w:
        tx = w.begin()
        m = tx.bucket(b"m")
        assert m is not None
        for i in range(400):
            m.put(f"more{i:04d}".encode(), b"y" * 60)
            expected[f"more{i:04d}".encode()] = b"y" * 60
        tx.commit()
    sound(path)
    assert bucket_kind(path, b"m") == "branch"
    assert read_tree(path) == {b"m": expected, b"z": {b"q": b"2"}}


def test_bucket_shrinks_back_inline_and_pages_are_reused(tmp_path: Path) -> None:
    many = {f"k{i:04d}".encode(): b"v" * 50 for i in range(300)}
    path = make(tmp_path / "db", {b"m": many, b"n": {b"x": b"1"}}, per_leaf=30)
    assert bucket_kind(path, b"m") == "branch"
    with BoltWriter(path) as w:
        tx = w.begin()
        m = tx.bucket(b"m")
        assert m is not None
        m.clear()
        m.put(b"only", b"one")
        first = tx.commit()
        # The pages the first commit freed are reused by the next one, not the high-water mark.
        tx = w.begin()
        n = tx.bucket(b"n")
        assert n is not None
        n.put(b"y", b"2")
        second = tx.commit()
    assert first.freed > 10
    assert second.pgid == first.pgid
    assert all(p < first.pgid for p in second.written)
    assert bucket_kind(path, b"m") == "inline"
    assert read_tree(path) == {b"m": {b"only": b"one"}, b"n": {b"x": b"1", b"y": b"2"}}
    sound(path)


def test_overflow_values(tmp_path: Path) -> None:
    path = make(tmp_path / "db", {b"b": {b"small": b"s"}, b"c": {b"x": b"y"}})
    big = bytes(range(256)) * 100
    with BoltWriter(path) as w:
        tx = w.begin()
        b = tx.bucket(b"b")
        assert b is not None
        b.put(b"big", big)
        tx.commit()
    sound(path)
    with BoltFile(path) as db:
        assert any(db.read_page(p).overflow for p in range(2, db.meta.pgid) if _is_page(db, p))
    assert read_tree(path)[b"b"] == {b"small": b"s", b"big": big}
    with BoltWriter(path) as w:
        tx = w.begin()
        b = tx.bucket(b"b")
        assert b is not None
        b.put(b"big", b"short now")
        tx.commit()
    sound(path)
    assert read_tree(path)[b"b"] == {b"small": b"s", b"big": b"short now"}


def _is_page(db: BoltFile, pgid: int) -> bool:
    try:
        db.read_page(pgid)
    except Exception:
        return False
    return True


def test_create_and_delete_buckets(tmp_path: Path) -> None:
    nested: Tree = {b"child": {b"deep": {b"k": b"v" * 2000}, b"x": b"1"}}
    path = make(tmp_path / "db", {b"keep": {b"a": b"1"}, b"drop": nested})
    with BoltWriter(path) as w:
        tx = w.begin()
        made = tx.root.create_bucket(b"new")
        made.put(b"hello", b"world")
        inner = made.create_bucket(b"inner")
        inner.put(b"i", b"j")
        tx.root.delete_bucket(b"drop")
        with pytest.raises(BoltWriteError, match="already exists"):
            tx.root.create_bucket(b"keep")
        with pytest.raises(BoltWriteError, match="not found"):
            tx.root.delete_bucket(b"absent")
        info = tx.commit()
    assert info.freed >= 3
    sound(path)
    assert read_tree(path) == {
        b"keep": {b"a": b"1"},
        b"new": {b"hello": b"world", b"inner": {b"i": b"j"}},
    }


def test_source_with_a_freelist_page(tmp_path: Path) -> None:
    path = make(tmp_path / "db", {b"a": {b"k": b"v"}}, freelist=[], extra_free_pages=3)
    with BoltFile(path) as db:
        assert db.meta.freelist != NO_FREELIST
        old_pgid = db.meta.pgid
    with BoltWriter(path) as w:
        assert w.free.count(1) == 3
        tx = w.begin()
        a = tx.bucket(b"a")
        assert a is not None
        a.put(b"k2", b"v2")
        info = tx.commit()
    assert info.pgid == old_pgid
    sound(path)
    assert read_tree(path) == {b"a": {b"k": b"v", b"k2": b"v2"}}


def test_refusals(tmp_path: Path) -> None:
    path = make(tmp_path / "db", {b"a": {b"k": b"v", b"sub": {b"x": b"y"}}})
    before = path.read_bytes()
    with BoltWriter(path) as w:
        tx = w.begin()
        a = tx.bucket(b"a")
        assert a is not None
        with pytest.raises(BoltWriteError, match="is a bucket"):
            a.put(b"sub", b"v")
        with pytest.raises(BoltWriteError, match="is a bucket"):
            a.delete(b"sub")
        with pytest.raises(BoltWriteError, match="not a bucket"):
            a.delete_bucket(b"k")
        with pytest.raises(BoltWriteError, match="key required"):
            a.put(b"", b"v")
    assert path.read_bytes() == before


# --- property: random edits over several commits ----------------------------------------

NAMES = [b"alpha", b"beta", b"gamma", b"delta"]
KEYS = st.binary(min_size=1, max_size=12)
VALUES = st.one_of(
    st.binary(max_size=40),
    st.integers(min_value=100, max_value=9000).map(lambda n: bytes([n % 251]) * n),
)
OPS = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(NAMES), KEYS, VALUES),
    st.tuples(st.just("del"), st.sampled_from(NAMES), KEYS, st.just(b"")),
    st.tuples(st.just("clear"), st.sampled_from(NAMES), st.just(b""), st.just(b"")),
    st.tuples(st.just("create"), st.sampled_from(NAMES), st.just(b""), st.just(b"")),
    st.tuples(st.just("drop"), st.sampled_from(NAMES), st.just(b""), st.just(b"")),
    st.tuples(st.just("commit"), st.just(b""), st.just(b""), st.just(b"")),
)


def _initial(draw_sizes: list[int]) -> dict[bytes, Tree]:
    out: dict[bytes, Tree] = {}
    for name, size in zip(NAMES[:3], draw_sizes, strict=False):
        items = {
            f"{name.decode()}{i:04d}".encode(): bytes([i % 256]) * (i % 97) for i in range(size)
        }
        out[name] = Inline(items) if size < 3 else items  # type: ignore[assignment]
    return out


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=400), min_size=3, max_size=3),
    ops=st.lists(OPS, max_size=60),
    per_leaf=st.sampled_from([8, 64]),
)
def test_random_edits_read_back_equal(
    tmp_path: Path, sizes: list[int], ops: list[tuple[str, bytes, bytes, bytes]], per_leaf: int
) -> None:
    initial = _initial(sizes)
    path = make(tmp_path / "prop.db", initial, per_leaf=per_leaf)
    model: dict[bytes, dict[bytes, bytes]] = {
        k: dict(v.items) if isinstance(v, Inline) else dict(v)  # type: ignore[arg-type]
        for k, v in initial.items()
    }
    with BoltWriter(path) as w:
        tx = w.begin()
        for op, name, key, value in [*ops, ("commit", b"", b"", b"")]:
            if op == "commit":
                tx.commit()
                assert check_db(path) == []
                assert read_tree(path) == model
                tx = w.begin()
                continue
            if op == "create":
                if name not in model:
                    tx.root.create_bucket(name)
                    model[name] = {}
                continue
            if op == "drop":
                if name in model:
                    tx.root.delete_bucket(name)
                    del model[name]
                continue
            bucket = tx.bucket(name)
            if bucket is None:
                assert name not in model
                continue
            if op == "put":
                bucket.put(key, value)
                model[name][key] = value
            elif op == "del":
                bucket.delete(key)
                model[name].pop(key, None)
            else:
                bucket.clear()
                model[name].clear()
            assert bucket.get(key) == model[name].get(key) if key else True
