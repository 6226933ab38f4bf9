"""The fields of an mvccpb.KeyValue (etcd's stored revision value), in any field order.

Shared by the snapshot status (which needs each revision's key) and the keyspace analysis
(which also needs where the value lies); the analysis has a faster path for the field order
etcd writes and falls back to this walk; its Kubernetes value reader uses ``read_varint``.
"""

from __future__ import annotations


def read_varint(buf: bytes, i: int) -> tuple[int, int]:
    """(value, next index); ValueError when truncated or longer than 10 bytes."""
    result = shift = 0
    n = len(buf)
    while True:
        if i >= n or shift > 63:
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7


def kv_parts_slow(v: bytes) -> tuple[bytes, int, int]:
    """(key, value offset, value size) of an mvccpb.KeyValue in any field order."""
    key = b""
    voff = vlen = 0
    i, n = 0, len(v)
    while i < n:
        tag, i = read_varint(v, i)
        wire = tag & 7
        if wire == 0:
            _, i = read_varint(v, i)
        elif wire == 2:
            size, i = read_varint(v, i)
            if i + size > n:
                raise ValueError("truncated KeyValue field")
            if tag >> 3 == 1:
                key = v[i : i + size]
            elif tag >> 3 == 5:
                voff, vlen = i, size
            i += size
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"unsupported wire type {wire} in a KeyValue")
    if i > n:
        raise ValueError("truncated KeyValue")
    return key, voff, vlen
