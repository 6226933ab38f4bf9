"""A command piped into ``head`` ends quietly, as stock tools do, instead of a traceback."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import ParamSpec

P = ParamSpec("P")

# What a shell reports for a process killed by SIGPIPE (128 + 13); stock tools exit so.
EXIT_BROKEN_PIPE = 141


def quiet_broken_pipe(main: Callable[P, int]) -> Callable[P, int]:
    """Wrap a console entry point: a closed stdout is the reader's choice, not an error."""

    @functools.wraps(main)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> int:
        try:
            code = main(*args, **kwargs)
            sys.stdout.flush()
            return code
        except BrokenPipeError:
            # Python flushes stdout again at exit: point it at /dev/null so that flush
            # cannot raise a second time.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            return EXIT_BROKEN_PIPE

    return wrapper
