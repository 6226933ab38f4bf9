"""structlog setup: JSON lines off a TTY, readable console output on a TTY; secrets redacted.

Every event names its component (``get("pipeline")``), so one daemon's interleaved lines can
be told apart.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, cast

import structlog

_SECRET_FIELD = re.compile(r"(password|secret|token|identity|credential|private)", re.IGNORECASE)
_AGE_SECRET = re.compile(r"AGE-SECRET-KEY-1[0-9A-Z]+")
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _secret_key(key: object) -> bool:
    return (
        isinstance(key, str)
        and bool(_SECRET_FIELD.search(key))
        and not key.endswith(("_file", "_path"))
    )


def _scrub(value: Any, depth: int = 0) -> Any:
    """``value`` with secret-looking fields and age identities redacted, at any depth."""
    if isinstance(value, str):
        return _AGE_SECRET.sub("[redacted]", value) if "AGE-SECRET-KEY-" in value else value
    if depth > 20:  # deeper than any field we log: drop it rather than recurse without end
        return "[redacted: too deep]"
    if isinstance(value, dict):
        return {
            k: "[redacted]" if _secret_key(k) else _scrub(v, depth + 1) for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(v, depth + 1) for v in value]
    return value


def _redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Drop values of secret-looking fields and any age identity text, wherever it appears."""
    for key, value in list(event_dict.items()):
        event_dict[key] = "[redacted]" if _secret_key(key) else _scrub(value)
    return event_dict


class _Stderr:
    """sys.stderr looked up at each write, so a replaced or closed stream is never kept."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def configure(level: str = "info", fmt: str = "auto", stream: Any = None) -> None:
    """Configure structlog for the process; logs go to stderr."""
    out = stream if stream is not None else _Stderr()
    use_console = fmt == "console" or (fmt == "auto" and hasattr(out, "isatty") and out.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if use_console
        else structlog.processors.JSONRenderer(sort_keys=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=cast(Any, out)),
        cache_logger_on_first_use=False,
    )


def get(component: str = "agent") -> Any:
    """A logger whose every event carries ``component`` ("daemon", "pipeline", "store"...).

    The component is bound as a field rather than passed as a logger name: the print
    logger factory drops names, while a field shows in both the JSON and console output.
    """
    return structlog.get_logger(component=component)
