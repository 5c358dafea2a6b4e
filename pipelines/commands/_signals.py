"""Stopping a long command the way Ctrl-C does, whatever started it."""
from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Iterator


def interrupt(signum: int, frame: object) -> None:
    """A SIGTERM handler that raises KeyboardInterrupt, once: a second SIGTERM does not cut the stop short."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


@contextmanager
def stopped_like_ctrl_c() -> Iterator[None]:
    """Inside, SIGTERM and SIGINT both raise KeyboardInterrupt; the handlers before are put back after. SIGINT
    gets Python's own handler because a command started in the background by a non-interactive shell
    (`nohup ... &`) inherits SIGINT ignored, so `kill -INT` would do nothing."""
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before[0])
        signal.signal(signal.SIGINT, before[1])
