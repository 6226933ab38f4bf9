"""SIGINT and SIGTERM as a cancellation, for the one-shot commands.

The daemon reads its own flags (daemon.py); a one-shot backup sets the pipeline's cancel
event instead, so a stop ends the backup at its next check, cleanly (the multipart upload
aborted, the spool file removed), never with a KeyboardInterrupt at an arbitrary point.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

STOPS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def cancel_on_signals(cancel: threading.Event) -> Iterator[None]:
    """Within the block, SIGINT/SIGTERM set ``cancel``; the old handlers come back after."""

    def handler(signum: int, frame: FrameType | None) -> None:
        cancel.set()

    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers (tests call commands on threads)
        return
    old = {sig: signal.signal(sig, handler) for sig in STOPS}
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)
