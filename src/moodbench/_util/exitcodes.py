"""The exit codes of every ``moodbench`` command (and of :func:`moodbench.run`'s result), one home for each.

Which failure gets which code is decided once, in :func:`moodbench.cli._exit.exit_code_for`; the
README's exit-code table lists them per command.
"""

import signal
from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # a tool failed while running, or a check's verdict is not ok (probe, steer, serve, install-backend)
    USAGE = 2  # bad input (any UsageError): nothing was run
    PREFLIGHT = 3  # preflight refused the setup (or an endpoint is down / serves another model)
    ENDPOINT_DOWN = 4  # an endpoint stopped answering; finished conversations are stored
    INTERRUPTED = 130  # Ctrl-C; re-run the same command to resume
    TERMINATED = 143  # SIGTERM (a scheduler stopped the job); re-run to resume


class Interrupted(KeyboardInterrupt):
    """A stop asked for by a signal (Ctrl-C's SIGINT, a scheduler's SIGTERM) where waiting for a graceful
    stop makes no sense: the command ends now, and :func:`exit_code_of` tells 130 from 143."""

    def __init__(self, signum: int | None = None):
        super().__init__(signal.Signals(signum).name if signum else "interrupted")
        self.signum = signum


def exit_code_of(exc: BaseException) -> ExitCode:
    """130 for Ctrl-C (a plain KeyboardInterrupt or SIGINT), 143 for an :class:`Interrupted` from SIGTERM."""
    signum = getattr(exc, "signum", None)
    return ExitCode.TERMINATED if signum == signal.SIGTERM else ExitCode.INTERRUPTED
