"""Stopping a run on request: Ctrl-C (SIGINT) and schedulers' SIGTERM, the same two-step way.

The first signal stops new conversations and lets the running ones finish for up to a grace
period; a second signal, or the end of the grace period, abandons them (they are not stored, so
resume re-runs them). Either way the summary, events and manifest are written before the process
exits with 130 (SIGINT) or 143 (SIGTERM). Slurm, Kubernetes, SkyPilot and systemd send SIGTERM and
follow with SIGKILL after their own grace (30 s by default in Slurm and Kubernetes), hence the
default of 25 s here.

Handlers are installed only when the caller asks (the CLI does); a library call keeps the
application's handlers.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from moodbench._util.exitcodes import ExitCode, Interrupted, exit_code_of

__all__ = ["SIGNALS", "Interrupted", "StopRequest", "exit_code_of", "signal_handlers"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """What the conversation loop polls: has a stop been asked for, by which signal, since when."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.signum: int | None = None
        self.in_loop = False  # inside the loop the first signal is graceful; elsewhere it ends the run at once
        self.wake: Callable[[], None] | None = None  # the loop's queue wake-up, so it reacts at once

    def ask(self, signum: int) -> None:
        self.signum = self.signum or signum
        self.requested.set()
        if self.wake is not None:
            self.wake()

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.TERMINATED if self.signum == signal.SIGTERM else ExitCode.INTERRUPTED

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "interrupt"


@contextmanager
def signal_handlers(stop: StopRequest, enabled: bool) -> Iterator[StopRequest]:
    """Install the two-step SIGINT/SIGTERM handlers for the block (main thread only)."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.requested.is_set() or not stop.in_loop:
            stop.signum = stop.signum or signum
            raise Interrupted(signum)
        stop.ask(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in SIGNALS}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
