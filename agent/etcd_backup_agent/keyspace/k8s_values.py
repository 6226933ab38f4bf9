"""Kubernetes values as stored in etcd: protobuf envelope, JSON, or encrypted at rest.

- ``k8s\\x00`` + runtime.Unknown {typeMeta=1 {apiVersion=1, kind=2}, raw=2,
  contentEncoding=3, contentType=4}; ``raw`` is the object, whose field 1 is its ObjectMeta.
- JSON (custom resources, CRDs): starts with ``{``.
- ``k8s:enc:<provider>:v1:<key name>:`` (aescbc, aesgcm, secretbox, kms v1) or
  ``k8s:enc:kms:v2:<key name>:``: encrypted at rest. Never decrypted here: the
  EncryptionConfiguration key lives with the apiserver, not with the backup.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..snapshot.kv_proto import read_varint

PROTO_MAGIC = b"k8s\x00"
ENC_MAGIC = b"k8s:enc:"

PROTOBUF = "protobuf"
JSON = "json"
ENCRYPTED = "encrypted"
OTHER = "other"
ENCODINGS = (PROTOBUF, JSON, ENCRYPTED, OTHER)

SERVER_FIELDS = (
    "resourceVersion",
    "uid",
    "managedFields",
    "creationTimestamp",
    "generation",
    "selfLink",
)
"""ObjectMeta fields the apiserver sets; stripped by extract unless asked to keep them."""


def encoding_of(value: bytes) -> str:
    """One of ENCODINGS, from the first bytes only (the analysis' hot path)."""
    if value[:4] == PROTO_MAGIC:
        return PROTOBUF
    if value[:8] == ENC_MAGIC:
        return ENCRYPTED
    if value.lstrip(b" \t\r\n")[:1] == b"{":
        return JSON
    return OTHER


def checked_encoding(value: bytes) -> str:
    """encoding_of, but a value that only starts like JSON and is no JSON object is OTHER.

    For single values shown to the operator (extract), where parsing costs nothing.
    """
    enc = encoding_of(value)
    if enc == JSON and _json_object(value) is None:
        return OTHER
    return enc


def _json_object(value: bytes) -> dict[str, Any] | None:
    try:
        obj = json.loads(value)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


@dataclass(frozen=True)
class EncryptedMarker:
    """What the ``k8s:enc:`` prefix says: provider, format version and key name."""

    provider: str
    version: str
    key_name: str
    header_size: int


def encrypted_marker(value: bytes) -> EncryptedMarker | None:
    """Parse ``k8s:enc:<provider>:<v1|v2>:<key name>:``; None when it is not one."""
    if not value.startswith(ENC_MAGIC):
        return None
    parts = value[len(ENC_MAGIC) : len(ENC_MAGIC) + 512].split(b":", 3)
    if len(parts) < 4:
        return None
    provider, version, name = (p.decode("utf-8", "replace") for p in parts[:3])
    size = len(ENC_MAGIC) + sum(len(p) + 1 for p in parts[:3])
    return EncryptedMarker(provider, version, name, size)


# --- a minimal protobuf wire reader ----------------------------------------------------


def fields(buf: bytes) -> list[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of every field; bytes for length-delimited ones."""
    out: list[tuple[int, int, int | bytes]] = []
    i, n = 0, len(buf)
    while i < n:
        tag, i = read_varint(buf, i)
        num, wire = tag >> 3, tag & 7
        if wire == 0:
            v, i = read_varint(buf, i)
            out.append((num, wire, v))
        elif wire == 2:
            size, i = read_varint(buf, i)
            if i + size > n:
                raise ValueError("truncated field")
            out.append((num, wire, buf[i : i + size]))
            i += size
        elif wire == 1:
            if i + 8 > n:
                raise ValueError("truncated field")
            out.append((num, wire, int.from_bytes(buf[i : i + 8], "little")))
            i += 8
        elif wire == 5:
            if i + 4 > n:
                raise ValueError("truncated field")
            out.append((num, wire, int.from_bytes(buf[i : i + 4], "little")))
            i += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return out


def _text(v: int | bytes) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _signed(v: int | bytes) -> int:
    n = v if isinstance(v, int) else 0
    return n - (1 << 64) if n >= 1 << 63 else n


def _time(v: int | bytes) -> str | None:
    if not isinstance(v, bytes):
        return None
    seconds = 0
    for num, _, val in fields(v):
        if num == 1:
            seconds = _signed(val)
    try:
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return None


def _map_entry(v: int | bytes) -> tuple[str, str]:
    key = val = ""
    if isinstance(v, bytes):
        for num, _, x in fields(v):
            if num == 1:
                key = _text(x)
            elif num == 2:
                val = _text(x)
    return key, val


_META_STRINGS = {1: "name", 2: "generateName", 3: "namespace", 4: "selfLink", 5: "uid"}


def decode_object_meta(buf: bytes) -> dict[str, Any]:
    """ObjectMeta (metav1 generated.proto) as the JSON object the apiserver would print."""
    meta: dict[str, Any] = {}
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    finalizers: list[str] = []
    owners: list[dict[str, Any]] = []
    managed = 0
    for num, _, v in fields(buf):
        if num in _META_STRINGS:
            meta[_META_STRINGS[num]] = _text(v)
        elif num == 6:
            meta["resourceVersion"] = _text(v)
        elif num == 7:
            meta["generation"] = _signed(v)
        elif num in (8, 9):
            stamp = _time(v)
            if stamp is not None:
                meta["creationTimestamp" if num == 8 else "deletionTimestamp"] = stamp
        elif num == 10:
            meta["deletionGracePeriodSeconds"] = _signed(v)
        elif num == 11:
            k, x = _map_entry(v)
            labels[k] = x
        elif num == 12:
            k, x = _map_entry(v)
            annotations[k] = x
        elif num == 13 and isinstance(v, bytes):
            owners.append(_owner(v))
        elif num == 14:
            finalizers.append(_text(v))
        elif num == 17:
            managed += 1
    if labels:
        meta["labels"] = labels
    if annotations:
        meta["annotations"] = annotations
    if owners:
        meta["ownerReferences"] = owners
    if finalizers:
        meta["finalizers"] = finalizers
    if managed:
        # entries are counted, not decoded: the apiserver rebuilds them on apply
        meta["managedFields"] = [{"note": "protobuf entry, not decoded"}] * managed
    return meta


def _owner(buf: bytes) -> dict[str, Any]:
    names = {5: "apiVersion", 1: "kind", 3: "name", 4: "uid"}
    out: dict[str, Any] = {}
    for num, _, v in fields(buf):
        if num in names:
            out[names[num]] = _text(v)
        elif num in (6, 7):
            out["controller" if num == 6 else "blockOwnerDeletion"] = bool(v)
    return out


@dataclass(frozen=True)
class ProtoObject:
    """A decoded envelope: ``raw`` is the whole object message, ``metadata`` its field 1."""

    api_version: str
    kind: str
    content_encoding: str
    content_type: str
    metadata: dict[str, Any]
    raw: bytes = field(repr=False)


def decode_envelope(value: bytes) -> ProtoObject:
    """Decode ``k8s\\x00`` + runtime.Unknown and the object's ObjectMeta; ValueError if bad."""
    if not value.startswith(PROTO_MAGIC):
        raise ValueError("not a Kubernetes protobuf value (no k8s\\x00 magic)")
    api_version = kind = encoding = ctype = ""
    raw = b""
    for num, _, v in fields(value[len(PROTO_MAGIC) :]):
        if num == 1 and isinstance(v, bytes):
            for n2, _, v2 in fields(v):
                if n2 == 1:
                    api_version = _text(v2)
                elif n2 == 2:
                    kind = _text(v2)
        elif num == 2 and isinstance(v, bytes):
            raw = v
        elif num == 3:
            encoding = _text(v)
        elif num == 4:
            ctype = _text(v)
    metadata: dict[str, Any] = {}
    if raw and not encoding:
        for num, wire, v in fields(raw):
            if num == 1 and wire == 2 and isinstance(v, bytes):
                metadata = decode_object_meta(v)
                break
    return ProtoObject(api_version, kind, encoding, ctype, metadata, raw)


def strip_server_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``obj`` without the SERVER_FIELDS of its metadata (and without status)."""
    out = dict(obj)
    meta = out.get("metadata")
    if isinstance(meta, dict):
        out["metadata"] = {k: v for k, v in meta.items() if k not in SERVER_FIELDS}
    return out


def as_document(value: bytes, keep_server_fields: bool) -> tuple[dict[str, Any], str]:
    """The object as a JSON-able document and a note for the operator ("" when none).

    JSON objects come back as they are (minus the server-set fields): ``kubectl apply``
    takes them. Protobuf objects give their type and ObjectMeta; the rest of the object
    is kept as base64 protobuf, because decoding every built-in type needs its schema.
    Encrypted objects give their marker only.
    """
    enc = encoding_of(value)
    if enc == JSON:
        obj = _json_object(value)
        if obj is not None:
            return (obj if keep_server_fields else strip_server_fields(obj)), ""
    if enc == PROTOBUF:
        try:
            proto = decode_envelope(value)
        except ValueError as exc:
            return _opaque(value, f"undecodable protobuf envelope: {exc}"), "undecodable"
        meta = proto.metadata
        if not keep_server_fields:
            meta = {k: v for k, v in meta.items() if k not in SERVER_FIELDS}
        doc: dict[str, Any] = {
            "apiVersion": proto.api_version,
            "kind": proto.kind,
            "metadata": meta,
            "x-etcd-backup-agent": {
                "encoding": PROTOBUF,
                "note": "protobuf object: type and metadata decoded; the full object is "
                "raw protobuf (base64) below; not appliable with kubectl as is",
                "raw": base64.b64encode(proto.raw).decode(),
            },
        }
        return doc, "protobuf: only the envelope and metadata are decoded"
    if enc == ENCRYPTED:
        marker = encrypted_marker(value)
        note = "encrypted at rest"
        if marker is not None:
            note += f" by provider {marker.provider} {marker.version}, key {marker.key_name!r}"
        note += "; not decrypted: the apiserver's encryption key is needed"
        return _opaque(value, note), note
    return _opaque(value, "not a Kubernetes object (neither JSON nor protobuf)"), "opaque"


def _opaque(value: bytes, note: str) -> dict[str, Any]:
    return {
        "x-etcd-backup-agent": {
            "encoding": checked_encoding(value),
            "note": note,
            "value_base64": base64.b64encode(value).decode(),
        }
    }
