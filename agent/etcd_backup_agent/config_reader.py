"""Typed reads from a parsed TOML document, collecting problems instead of raising.

Every problem is ``FILE: table.key: expectation``; a key read is remembered, so the keys
left over in a table are reported as unknown (or as refused inline secrets).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

from .durations import parse_duration

T = TypeVar("T")
_SECRET_KEYS = {
    "aws_secret_access_key",
    "aws_access_key_id",
    "secret_access_key",
    "access_key_id",
    "secret_key",
    "access_key",
    "password",
    "aws_session_token",
    "session_token",
    "identity",
}

INT64_MAX = 2**63 - 1
# longer durations overflow datetime arithmetic in scheduling and retention
MAX_DURATION = 100 * 365 * 86400.0


class Section:
    """Typed reads from one TOML table, collecting problems instead of raising."""

    def __init__(self, reader: Reader, path: str, table: dict[str, Any]) -> None:
        self.reader = reader
        self.path = path
        self.table = table
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def problem(self, name: str, message: str) -> None:
        self.reader.problem(self.key(name), message)

    def _get(self, name: str, default: T, check: Callable[[Any], T | None], expected: str) -> T:
        self.seen.add(name)
        self.reader.accepted.add(self.key(name))
        if name not in self.table:
            return default
        raw = self.table[name]
        value = check(raw)
        if value is None:
            self.problem(name, f"expected {expected}, got {_describe(raw)}")
            return default
        return value

    def string(self, name: str, default: T, choices: tuple[str, ...] = ()) -> str | T:
        def check(v: Any) -> str | None:
            return v if isinstance(v, str) else None

        expected = "one of " + ", ".join(repr(c) for c in choices) if choices else "a string"
        value: str | T = self._get(name, cast(Any, default), check, "a string")
        if choices and isinstance(value, str) and value not in choices:
            self.problem(name, f"expected {expected}, got {value!r}")
            return default
        return value

    def boolean(self, name: str, default: bool) -> bool:
        return self._get(
            name, default, lambda v: v if isinstance(v, bool) else None, "true or false"
        )

    def integer(self, name: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
        def check(v: Any) -> int | None:
            return v if isinstance(v, int) and not isinstance(v, bool) else None

        value = self._get(name, default, check, "an integer")
        # TOML integers are 64-bit; beyond that a value is a typo, not a setting
        if value < minimum or value > (INT64_MAX if maximum is None else maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            bound += "" if maximum is not None or value < minimum else " (at most 2**63-1)"
            self.problem(name, f"expected an integer {bound}, got {value}")
            return default
        return value

    def size(self, name: str, default: int) -> int:
        """A byte size: an integer, or a string such as "512MiB", "2GB"."""

        def check(v: Any) -> int | None:
            if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= INT64_MAX:
                return v
            if isinstance(v, str):
                size = _parse_size(v)
                return size if size is not None and size <= INT64_MAX else None
            return None

        return self._get(name, default, check, 'a byte size such as 1073741824 or "1GiB"')

    def duration(self, name: str, default: float, allow_zero: bool = True) -> float:
        def check(v: Any) -> float | None:
            if not isinstance(v, str):
                return None
            try:
                seconds = parse_duration(v)
            except ValueError:
                return None
            if (seconds == 0 and not allow_zero) or seconds > MAX_DURATION:
                return None
            return seconds

        expected = 'a duration string such as "90s", "15m", "1h", "7d" (at most 100 years)'
        if not allow_zero:
            expected += " (greater than zero)"
        return self._get(name, default, check, expected)

    def str_list(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        def check(v: Any) -> tuple[str, ...] | None:
            if isinstance(v, list) and all(isinstance(x, str) for x in v):
                return tuple(v)
            return None

        return self._get(name, default, check, "a list of strings")

    def path_(self, name: str, default: Path | None, must_read: bool = False) -> Path | None:
        raw = self._get(name, None, lambda v: v if isinstance(v, str) and v else None, "a path")
        if raw is None:
            return default
        path = Path(raw)
        if not path.is_absolute() and self.reader.file is not None:
            path = self.reader.file.parent / path
        if must_read:
            if not path.is_file():
                self.problem(name, f"file {str(path)!r} does not exist")
            elif not os.access(path, os.R_OK):
                self.problem(name, f"file {str(path)!r} is not readable")
        return path

    def sub(self, name: str) -> Section:
        self.seen.add(name)
        raw = self.table.get(name, {})
        if not isinstance(raw, dict):
            self.problem(name, f"expected a table [{self.key(name)}], got {_describe(raw)}")
            raw = {}
        return Section(self.reader, self.key(name), raw)

    def has(self, name: str) -> bool:
        return name in self.table

    def finish(self) -> None:
        for name in self.table:
            if name in self.seen:
                continue
            if name.lower() in _SECRET_KEYS:
                self.problem(
                    name,
                    "secrets are never accepted inline in the config; put it in a file readable "
                    "only by root and name that file (e.g. password_file, credentials_file, "
                    "identity_file)",
                )
            else:
                self.problem(name, "unknown key (check the spelling; see config/example.toml)")


class Reader:
    def __init__(self, file: Path | None) -> None:
        self.file = file
        self.problems: list[str] = []
        self.accepted: set[str] = set()  # dotted keys of every value read

    def problem(self, key: str, message: str) -> None:
        where = str(self.file) if self.file is not None else "<config>"
        self.problems.append(f"{where}: {key}: {message}")


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)


def _parse_size(text: str) -> int | None:
    m = _SIZE.match(text)
    if not m:
        return None
    number = float(m.group(1))
    unit = (m.group(2) or "b").lower().rstrip("b") or "b"
    factors = {"b": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}
    factors |= {"ki": 1024, "mi": 1024**2, "gi": 1024**3, "ti": 1024**4}
    if unit not in factors:
        return None
    return int(number * factors[unit])
