"""Keyspace decoding and the bounded-memory analysis, on databases built by tests/boltwriter."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from etcd_backup_agent.config import Settings
from etcd_backup_agent.keyspace import hook
from etcd_backup_agent.keyspace.analyze import Options, analyze_file
from etcd_backup_agent.keyspace.k8s_keys import OTHER, normalize_prefixes, parse_key
from etcd_backup_agent.keyspace.k8s_values import (
    as_document,
    decode_envelope,
    encoding_of,
    encrypted_marker,
)
from etcd_backup_agent.keyspace.records import kv_parts, kv_parts_slow
from etcd_backup_agent.manifest import Manifest
from tests.k8s_fixture import _ld, _vi, proto_object

P = normalize_prefixes(("/registry/", "/openshift.io"))


@pytest.mark.parametrize(
    ("key", "resource", "namespace", "name"),
    [
        ("/registry/pods/default/web", "pods", "default", "web"),
        ("/registry/namespaces/default", "namespaces", None, "default"),
        ("/registry/services/specs/ns/svc", "services", "ns", "svc"),
        ("/registry/services/endpoints/ns/svc", "endpoints", "ns", "svc"),
        ("/registry/minions/node-1", "nodes", None, "node-1"),
        ("/registry/controllers/ns/rc", "replicationcontrollers", "ns", "rc"),
        ("/registry/example.com/widgets/ns/w", "widgets.example.com", "ns", "w"),
        ("/registry/example.com/clusterwidgets/w", "clusterwidgets.example.com", None, "w"),
        ("/openshift.io/routes/ns/r", "routes", "ns", "r"),
        ("/other/thing", OTHER, None, "/other/thing"),
    ],
)
def test_key_layout_and_its_exceptions(
    key: str, resource: str, namespace: str | None, name: str
) -> None:
    k = parse_key(key.encode(), P)
    assert (k.resource, k.namespace, k.name) == (resource, namespace, name)


def test_envelope_and_object_meta_from_the_wire_format() -> None:
    value = proto_object("v1", "Pod", "web", "prod", {"app": "web"}, b"\x01\x02", created=86400)
    obj = decode_envelope(value)
    assert (obj.api_version, obj.kind) == ("v1", "Pod")
    assert obj.metadata["name"] == "web" and obj.metadata["namespace"] == "prod"
    assert obj.metadata["labels"] == {"app": "web"}
    assert obj.metadata["creationTimestamp"] == "1970-01-02T00:00:00Z"
    doc, note = as_document(value, keep_server_fields=False)
    assert "uid" not in doc["metadata"] and "creationTimestamp" not in doc["metadata"]
    assert "protobuf" in note
    with pytest.raises(ValueError):
        decode_envelope(b"k8s\x00" + _ld(2, b"\xff"))  # raw field truncated inside


@pytest.mark.parametrize(
    ("value", "provider", "version", "key_name"),
    [
        (b"k8s:enc:aescbc:v1:key1:\x00\x01", "aescbc", "v1", "key1"),
        (b"k8s:enc:aesgcm:v1:k2:abc", "aesgcm", "v1", "k2"),
        (b"k8s:enc:secretbox:v1:sb:xyz", "secretbox", "v1", "sb"),
        (b"k8s:enc:kms:v1:vault:zzz", "kms", "v1", "vault"),
        (b"k8s:enc:kms:v2:cloudkms:zzz", "kms", "v2", "cloudkms"),
    ],
)
def test_encrypted_markers_are_named_never_decrypted(
    value: bytes, provider: str, version: str, key_name: str
) -> None:
    m = encrypted_marker(value)
    assert m is not None and (m.provider, m.version, m.key_name) == (provider, version, key_name)
    assert encoding_of(value) == "encrypted"
    _doc, note = as_document(value, keep_server_fields=False)
    assert "not decrypted" in note and provider in note


def test_json_documents_lose_only_server_fields() -> None:
    obj = {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w", "uid": "u", "resourceVersion": "5", "generation": 2},
        "spec": {"a": 1},
    }
    doc, note = as_document(json.dumps(obj).encode(), keep_server_fields=False)
    assert doc == {**obj, "metadata": {"name": "w"}} and note == ""
    kept, _ = as_document(json.dumps(obj).encode(), keep_server_fields=True)
    assert kept == obj


def _kv(key: bytes, value: bytes, lease: int = 0, order: str = "normal") -> bytes:
    fields = [_ld(1, key), _vi(2, 10), _vi(3, 300000), _vi(4, 2)]
    if value:
        fields.append(_ld(5, value))
    if lease:
        fields.append(_vi(6, lease))
    if order == "reversed":
        fields.reverse()
    return b"".join(fields)


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16383, 16384, 70000])
@pytest.mark.parametrize("lease", [0, 7, 1 << 40])
@pytest.mark.parametrize("order", ["normal", "reversed"])
def test_fast_keyvalue_reader_agrees_with_the_general_one(
    size: int, lease: int, order: str
) -> None:
    value = random.Random(size).randbytes(size)
    kv = _kv(b"/registry/pods/a/b", value, lease, order)
    key, off, n = kv_parts(kv)
    assert (key, kv[off : off + n]) == (b"/registry/pods/a/b", value)
    k2, off2, n2 = kv_parts_slow(kv)
    assert (k2, kv[off2 : off2 + n2]) == (key, value)


def _fill(db_path: Path, keys: int, revisions: int) -> dict[str, Any]:
    """A bolt db with a ``key`` bucket written like etcd's; the expected figures."""
    from tests.boltwriter import build_db

    rng = random.Random(3)
    items: list[tuple[bytes, bytes]] = []
    live: dict[bytes, bytes] = {}
    history = 0
    rev = 1
    for r in range(revisions):
        for i in range(keys):
            key = f"/registry/configmaps/ns{i % 7}/cm{i}".encode()
            if r and i % 5 == 0 and key in live:
                items.append((_revkey(rev, True), _ld(1, key)))
                history += len(key) + len(live.pop(key)) + len(key)
            else:
                value = rng.randbytes(rng.randint(1, 300))
                if key in live:
                    history += len(key) + len(live[key])
                items.append((_revkey(rev, False), _kv(key, value, lease=7 if i % 3 == 0 else 0)))
                live[key] = value
            rev += 1
    data, _ = build_db({b"key": dict(items), b"meta": {}})
    db_path.write_bytes(data)
    return {
        "objects": len(live),
        "bytes": sum(len(k) + len(v) for k, v in live.items()),
        "history": history,
    }


def _revkey(rev: int, tomb: bool) -> bytes:
    return rev.to_bytes(8, "big") + b"_" + (0).to_bytes(8, "big") + (b"t" if tomb else b"")


def test_spilling_gives_the_same_figures_as_sorting_in_memory(tmp_path: Path) -> None:
    db = tmp_path / "db"
    want = _fill(db, keys=4000, revisions=3)
    small = analyze_file(db, Options(memory_budget=1 << 20, work_dir=tmp_path / "w"))
    big = analyze_file(db, Options(memory_budget=1 << 30, work_dir=tmp_path / "w"))
    assert small.spilled_bytes > 0 and big.spilled_bytes == 0
    assert small.resources == big.resources and small.largest == big.largest
    assert (small.objects, small.bytes, small.history_bytes) == (
        want["objects"],
        want["bytes"],
        want["history"],
    )
    assert list((tmp_path / "w").iterdir()) == []  # spill files removed


def _manifest() -> Manifest:
    return Manifest(
        id="20260101T000000Z-r1-n",
        object="c/x",
        created_at="2026-01-01T00:00:00Z",
        cluster="c",
        node="n",
        revision=1,
        db_size=1,
        snapshot_sha256="0" * 64,
        object_size=0,
        object_sha256="",
    )


class _Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def info(self, event: str, **kw: Any) -> None:
        self.events.append((event, kw))

    def warning(self, event: str, **kw: Any) -> None:
        self.events.append((event, kw))


def test_a_failed_analysis_never_fails_the_backup(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-db"
    bad.write_bytes(b"garbage" * 100)
    log = _Log()
    m = _manifest()
    assert hook.with_keyspace(Settings(), bad, m, log) is m
    assert log.events and log.events[0][0].startswith("keyspace analysis failed")
    # and an old manifest without a summary still round-trips
    assert Manifest.from_json(m.to_json()) == m
    assert "keyspace" not in json.loads(m.to_json())


def test_socket_schemas_and_typed_requests() -> None:
    from etcd_backup_agent.control import protocol as proto
    from etcd_backup_agent.errors import UsageError
    from etcd_backup_agent.keyspace.requests import DiffRequest, ExtractRequest, InspectRequest

    def line(op: str, args: dict[str, Any]) -> bytes:
        return json.dumps({"v": 1, "op": op, "args": args}).encode()

    req = proto.parse_request(line("inspect", {"backup": "latest", "top": 5}))
    assert InspectRequest.from_args(req.args) == InspectRequest("latest", 5)
    for op, args in (
        ("inspect", {"backup": "latest", "top": "5"}),
        ("diff", {"a": "x"}),
        ("extract", {"backup": "x", "key": "k", "unknown": 1}),
        ("extract", {"backup": "x", "revision": True}),
    ):
        with pytest.raises(proto.ProtocolError) as exc:
            proto.parse_request(line(op, args))
        assert exc.value.code == proto.BAD_ARGS
    with pytest.raises(UsageError):
        InspectRequest.from_args({"backup": "x", "top": 0})
    with pytest.raises(UsageError):
        ExtractRequest.from_args({"backup": "x", "key": "a", "prefix": "b"})
    with pytest.raises(UsageError):
        ExtractRequest.from_args({"backup": "x"})
    d = DiffRequest.from_args({"a": "x", "b": "y"})
    assert DiffRequest.from_args(d.to_args()) == d
    e = ExtractRequest.from_args({"backup": "x", "prefix": "/registry/", "revision": 7})
    assert ExtractRequest.from_args(e.to_args()) == e


def test_extract_file_names_stay_under_the_output_dir() -> None:
    from etcd_backup_agent.keyspace.extract import file_name

    assert file_name(b"/registry/pods/ns/web", "json", "protobuf") == "registry/pods/ns/web.json"
    assert file_name(b"/registry/secrets/ns/s", "yaml", "encrypted") == "registry/secrets/ns/s.bin"
    for evil in (b"/registry/../../etc/passwd", b"/a//b", b"/./x", b"/a/\x00b"):
        name = file_name(evil, "raw", "other")
        assert ".." not in name.split("/") and "" not in name.split("/") and "\x00" not in name


def test_the_client_reads_a_large_reply_line_by_line() -> None:
    import socket
    import threading

    from etcd_backup_agent.control.client import _lines

    big = {"ok": True, "result": {"value_base64": "A" * (24 * 1024 * 1024)}}
    payload = b'{"event":"log","message":"x"}\n' + json.dumps(big).encode() + b"\n"
    a, b = socket.socketpair()

    def send() -> None:
        for i in range(0, len(payload), 70001):  # chunks that split lines anywhere
            a.sendall(payload[i : i + 70001])
        a.close()

    t = threading.Thread(target=send)
    t.start()
    try:
        got = list(_lines(b))
    finally:
        t.join()
        b.close()
    assert got == [{"event": "log", "message": "x"}, big]
