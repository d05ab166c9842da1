"""SIGTERM handled like Ctrl-C, so that a run stopped by ``kill``, systemd, Docker or a batch
scheduler finalises its outputs the same way as an interrupted one."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Termination:
    """A SIGTERM handler that does what Ctrl-C does.

    It calls the SIGINT handler in force (the trainer's saves after the step under way), or
    raises ``KeyboardInterrupt`` where SIGINT is ignored; ``received`` says it happened.
    """

    def __init__(self) -> None:
        self.received = False

    def __call__(self, signum: int, frame: Any) -> None:
        self.received = True
        on_interrupt = signal.getsignal(signal.SIGINT)
        if not callable(on_interrupt):
            raise KeyboardInterrupt
        on_interrupt(signal.SIGINT, frame)


@contextmanager
def sigterm_as_interrupt() -> Iterator[Termination]:
    """Handle SIGTERM like Ctrl-C inside the block (main thread only: Python's rule)."""
    termination = Termination()
    if threading.current_thread() is not threading.main_thread():
        yield termination
        return
    previous = signal.signal(signal.SIGTERM, termination)
    try:
        yield termination
    finally:
        signal.signal(signal.SIGTERM, previous)
