"""The control socket protocol: one newline-delimited JSON request per connection.

Request:  ``{"v": 1, "op": "<op>", "args": {...}}``
Events:   ``{"event": "progress", "stage": s, "done": n, "total": n}``, ``{"event": "log", ...}``
Final:    ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": {"code": c, "message": m}}``
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..keyspace.requests import SCHEMAS as KEYSPACE_SCHEMAS
from ..restore.options import SCHEMA as RESTORE_SCHEMA

VERSION = 1

# socket-level error codes (operation errors use the AgentError codes of errors.py)
BAD_REQUEST = "bad_request"
UNSUPPORTED_VERSION = "unsupported_version"
UNKNOWN_OP = "unknown_op"
BAD_ARGS = "bad_args"
TOO_LARGE = "too_large"
PERMISSION_DENIED = "permission_denied"
BUSY = "busy"
TIMEOUT = "timeout"
INTERNAL = "internal"

# op -> arg -> (accepted types, required)
SCHEMAS: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    "status": {},
    "list": {},
    "backup": {},
    "verify": {
        "backup": ((str,), True),
        "identity_file": ((str,), False),
        "identity": ((str,), False),
    },
    "prune": {"dry_run": ((bool,), False)},
    "restore": RESTORE_SCHEMA,  # restore/options.py
    "drill": {
        "backup": ((str,), False),
        "identity_file": ((str,), False),
        "identity": ((str,), False),
    },
    "bundle_list": {"backup": ((str,), True)},
    "bundle_extract": {
        "backup": ((str,), True),
        "identity_file": ((str,), False),
        "identity": ((str,), False),
    },
}
SCHEMAS.update(KEYSPACE_SCHEMAS)  # inspect, diff, extract: keyspace/requests.py
MAX_STRING = 16384


class ProtocolError(Exception):
    """A request that cannot be served; ``code`` is one of the socket error codes."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


@dataclass(frozen=True)
class Request:
    op: str
    args: dict[str, Any]


def parse_request(line: bytes) -> Request:
    """Decode and schema-check one request line."""
    try:
        data = json.loads(line.decode("utf-8"))
    # ValueError also covers integers beyond Python's digit limit (and JSONDecodeError)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ProtocolError(BAD_REQUEST, "request is not a JSON object on one line") from None
    if not isinstance(data, dict):
        raise ProtocolError(BAD_REQUEST, "request is not a JSON object")
    unknown = set(data) - {"v", "op", "args"}
    if unknown:
        raise ProtocolError(BAD_REQUEST, f"unknown request fields: {sorted(unknown)}")
    v = data.get("v")
    if type(v) is not int or v != VERSION:
        raise ProtocolError(UNSUPPORTED_VERSION, f"protocol version {VERSION} expected")
    op = data.get("op")
    if not isinstance(op, str):
        raise ProtocolError(BAD_REQUEST, "'op' must be a string")
    schema = SCHEMAS.get(op)
    if schema is None:
        raise ProtocolError(UNKNOWN_OP, f"unknown op {op[:40]!r}; known: {', '.join(SCHEMAS)}")
    args = data.get("args", {})
    if not isinstance(args, dict):
        raise ProtocolError(BAD_ARGS, "'args' must be an object")
    for name, value in args.items():
        if name not in schema:
            raise ProtocolError(BAD_ARGS, f"{op}: unknown argument {str(name)[:40]!r}")
        types, _ = schema[name]
        if isinstance(value, bool) and bool not in types:
            raise ProtocolError(BAD_ARGS, f"{op}: {name} has the wrong type")
        if not isinstance(value, types):
            raise ProtocolError(BAD_ARGS, f"{op}: {name} has the wrong type")
        if isinstance(value, str) and (len(value) > MAX_STRING or "\0" in value):
            raise ProtocolError(BAD_ARGS, f"{op}: {name} is too long or holds NUL")
    for name, (_, required) in schema.items():
        if required and name not in args:
            raise ProtocolError(BAD_ARGS, f"{op}: missing argument {name}")
    return Request(op=op, args=args)


def encode(message: dict[str, Any]) -> bytes:
    """One message as a JSON line."""
    return (json.dumps(message, separators=(",", ":"), default=str) + "\n").encode()


def ok(result: Any) -> dict[str, Any]:
    return {"ok": True, "result": result}


def error(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "message": message}}


def request(op: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"v": VERSION, "op": op, "args": args or {}}
