"""Typed requests of the keyspace ops (inspect, diff, extract) and their socket schemas.

The socket carries JSON objects; these dataclasses are what the ops actually take, built
from the schema-checked arguments. Identities travel beside them (``identity_file`` or
``identity``, as for verify) and are never part of a request value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import UsageError

_IDENTITY = {"identity_file": ((str,), False), "identity": ((str,), False)}
SCHEMAS: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    "inspect": {"backup": ((str,), True), "top": ((int,), False), **_IDENTITY},
    "diff": {
        "a": ((str,), True),
        "b": ((str,), True),
        "max_changes": ((int,), False),
        **_IDENTITY,
    },
    "extract": {
        "backup": ((str,), True),
        "key": ((str,), False),
        "prefix": ((str,), False),
        "revision": ((int,), False),
        "max_bytes": ((int,), False),
        **_IDENTITY,
    },
}
MAX_TOP = 1000
MAX_CHANGES = 100_000
MAX_EXTRACT_BYTES = 256 * 1024 * 1024
DEFAULT_EXTRACT_BYTES = 64 * 1024 * 1024


def _bounded(args: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = args.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise UsageError(f"{name} must be an integer from {low} to {high}")
    return value


@dataclass(frozen=True)
class InspectRequest:
    backup: str
    top: int = 20

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> InspectRequest:
        return cls(str(args["backup"]), _bounded(args, "top", 20, 1, MAX_TOP))

    def to_args(self) -> dict[str, Any]:
        return {"backup": self.backup, "top": self.top}


@dataclass(frozen=True)
class DiffRequest:
    a: str
    b: str
    max_changes: int = 1000

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> DiffRequest:
        return cls(
            str(args["a"]), str(args["b"]), _bounded(args, "max_changes", 1000, 0, MAX_CHANGES)
        )

    def to_args(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "max_changes": self.max_changes}


@dataclass(frozen=True)
class ExtractRequest:
    backup: str
    key: str | None = None
    prefix: str | None = None
    revision: int | None = None
    max_bytes: int = DEFAULT_EXTRACT_BYTES

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> ExtractRequest:
        key, prefix = args.get("key"), args.get("prefix")
        if (key is None) == (prefix is None):
            raise UsageError("extract needs exactly one of key or prefix")
        rev = args.get("revision")
        if rev is not None and (not isinstance(rev, int) or isinstance(rev, bool) or rev < 1):
            raise UsageError("revision must be a positive integer")
        return cls(
            str(args["backup"]),
            None if key is None else str(key),
            None if prefix is None else str(prefix),
            rev,
            _bounded(args, "max_bytes", DEFAULT_EXTRACT_BYTES, 1, MAX_EXTRACT_BYTES),
        )

    def to_args(self) -> dict[str, Any]:
        out: dict[str, Any] = {"backup": self.backup, "max_bytes": self.max_bytes}
        if self.key is not None:
            out["key"] = self.key
        if self.prefix is not None:
            out["prefix"] = self.prefix
        if self.revision is not None:
            out["revision"] = self.revision
        return out
