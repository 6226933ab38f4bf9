"""The two facilities a restore request borrows from whoever runs it (the daemon's single
flight and its store, or the offline command's)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

from ..store.base import Store

# One heavy operation at a time: a context manager that raises Busy when it cannot enter.
Exclusive = Callable[[str], AbstractContextManager[None]]
# The store, opened for the request (and closed after it when the caller opened it).
OpenStore = Callable[[], AbstractContextManager[Store]]
