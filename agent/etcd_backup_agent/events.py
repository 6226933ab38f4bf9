"""Progress and log events of a running request (backup, restore, verify, drill, keyspace,
bundle).

An ``Emit`` receives JSON-able events: the control socket streams them to its client, the
offline commands draw them on stderr (cli/render.py: Progress).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Emit = Callable[[dict[str, Any]], None]


def no_emit(event: dict[str, Any]) -> None:
    """Drop an event."""
    return None


def progress(emit: Emit, stage: str, done: int, total: int) -> None:
    emit({"event": "progress", "stage": stage, "done": done, "total": total})


def note(emit: Emit, message: str, level: str = "info") -> None:
    emit({"event": "log", "level": level, "message": message})
