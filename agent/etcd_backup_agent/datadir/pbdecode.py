"""Minimal protobuf wire-format decoding: the few etcd messages the readers need.

Only what proto2/gogo messages in a data dir use: varints (wire type 0), fixed 64/32-bit
(1, 5) and length-delimited fields (2). Groups (3, 4) never occur there and are an error.
Every malformed input raises ``PbError`` naming the offset; nothing is guessed.
"""

from __future__ import annotations

from dataclasses import dataclass

VARINT = 0
FIXED64 = 1
BYTES = 2
FIXED32 = 5
_MAX_VARINT_BYTES = 10


class PbError(ValueError):
    """The bytes are not a well-formed protobuf message."""


@dataclass(frozen=True)
class Field:
    number: int
    wire: int
    value: int | bytes


def read_varint(buf: bytes, i: int) -> tuple[int, int]:
    """The varint at ``buf[i:]`` and the offset after it."""
    result = 0
    for n in range(_MAX_VARINT_BYTES):
        if i >= len(buf):
            raise PbError(f"varint truncated at offset {i}")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << (7 * n)
        if not b & 0x80:
            if result >> 64:
                raise PbError(f"varint overflows 64 bits before offset {i}")
            return result, i
    raise PbError(f"varint longer than {_MAX_VARINT_BYTES} bytes before offset {i}")


def fields(buf: bytes) -> list[Field]:
    """Every field of one message, in wire order."""
    out: list[Field] = []
    i = 0
    n = len(buf)
    while i < n:
        start = i
        tag, i = read_varint(buf, i)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise PbError(f"field number 0 at offset {start}")
        value: int | bytes
        if wire == VARINT:
            value, i = read_varint(buf, i)
        elif wire == BYTES:
            size, i = read_varint(buf, i)
            if i + size > n:
                raise PbError(f"field {number} at offset {start}: {size} bytes past the end")
            value = bytes(buf[i : i + size])
            i += size
        elif wire in (FIXED64, FIXED32):
            width = 8 if wire == FIXED64 else 4
            if i + width > n:
                raise PbError(f"field {number} at offset {start}: truncated fixed{width * 8}")
            value = int.from_bytes(buf[i : i + width], "little")
            i += width
        else:
            raise PbError(f"field {number} at offset {start}: unsupported wire type {wire}")
        out.append(Field(number, wire, value))
    return out


class Message:
    """A decoded message: typed access by field number; the last value wins, as in proto."""

    def __init__(self, buf: bytes, what: str) -> None:
        self.what = what
        try:
            self.fields = fields(buf)
        except PbError as exc:
            raise PbError(f"{what}: {exc}") from None

    def _values(self, number: int, wire: int) -> list[int | bytes]:
        out: list[int | bytes] = []
        for f in self.fields:
            if f.number != number:
                continue
            if f.wire != wire:
                raise PbError(f"{self.what}: field {number} has wire type {f.wire}, not {wire}")
            out.append(f.value)
        return out

    def uint(self, number: int, default: int = 0) -> int:
        values = self._values(number, VARINT)
        value = values[-1] if values else default
        assert isinstance(value, int)
        return value

    def int64(self, number: int, default: int = 0) -> int:
        """A signed int64 (two's complement varint)."""
        value = self.uint(number, default)
        return value - (1 << 64) if value >> 63 else value

    def uint32(self, number: int, default: int = 0) -> int:
        value = self.uint(number, default)
        if value >> 32:
            raise PbError(f"{self.what}: field {number} ({value}) does not fit in 32 bits")
        return value

    def bytes_(self, number: int) -> bytes | None:
        values = self._values(number, BYTES)
        if not values:
            return None
        value = values[-1]
        assert isinstance(value, bytes)
        return value

    def has(self, number: int) -> bool:
        return any(f.number == number for f in self.fields)

    def repeated_uint(self, number: int) -> list[int]:
        """A repeated varint field, packed or not."""
        out: list[int] = []
        for f in self.fields:
            if f.number != number:
                continue
            if f.wire == VARINT:
                assert isinstance(f.value, int)
                out.append(f.value)
            elif f.wire == BYTES:
                assert isinstance(f.value, bytes)
                i = 0
                while i < len(f.value):
                    v, i = read_varint(f.value, i)
                    out.append(v)
            else:
                raise PbError(f"{self.what}: field {number} has wire type {f.wire}")
        return out
