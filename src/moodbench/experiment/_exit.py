"""Exit codes of ``moodbench run`` (and of :func:`moodbench.run`'s result), one home for each."""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    USAGE = 2  # bad input: nothing was run
    PREFLIGHT = 3  # preflight refused the setup (or an endpoint is down / serves another model)
    ENDPOINT_DOWN = 4  # an endpoint stopped answering; finished conversations are stored
    INTERRUPTED = 130  # Ctrl-C; re-run the same command to resume
    TERMINATED = 143  # SIGTERM (a scheduler stopped the job); re-run to resume
