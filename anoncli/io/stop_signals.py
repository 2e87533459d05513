"""SIGTERM and SIGHUP (what `timeout`, systemd, Slurm, `docker stop` and a closed terminal send)
handled like Ctrl-C, so that the same cleanup runs (issue 21)."""
from __future__ import annotations

import signal
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def stop_signals_interrupt():
    """Inside the block, SIGTERM and SIGHUP raise ``KeyboardInterrupt`` in the main thread; the
    previous handlers come back after it."""
    previous = {s: signal.signal(s, _interrupt) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
