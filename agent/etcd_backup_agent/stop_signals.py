"""SIGINT/SIGTERM for one-shot commands: cancel the work, let it unwind, then exit.

Python's default SIGINT raises KeyboardInterrupt wherever the main thread happens to be,
for example inside a gRPC stream or a thread join, where unwinding can hang or leave a
part file behind. A one-shot command instead sets the work's cancel event and lets it
unwind through its own cleanup (abort the upload, remove the part, no manifest). A second
signal raises KeyboardInterrupt, for an operator who does not want to wait.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def cancel_on_stop_signals(cancel: threading.Event) -> Iterator[threading.Event]:
    """Within the block, the first SIGINT/SIGTERM sets ``cancel``; a second interrupts.

    Only the main thread can install handlers; elsewhere (tests calling commands from a
    worker thread) the block runs with the handlers it has."""
    if threading.current_thread() is not threading.main_thread():
        yield cancel
        return

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS}
    try:
        yield cancel
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
