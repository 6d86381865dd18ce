"""The stderr console every part of moodbench prints progress and errors to.

Off a terminal (CI, logs, pipes) rich would wrap at 80 columns and split paths and messages, so
non-terminals get a wide console instead.
"""

from __future__ import annotations

import sys

from rich.console import Console


def stderr_console() -> Console:
    tty = sys.stderr.isatty()
    # off a terminal, messages are never wrapped (a path or a command split over two lines is
    # useless in a log); tables still fit in the 200 columns
    return Console(stderr=True, width=None if tty else 200, soft_wrap=not tty)


def say(console: Console | None, text: str) -> None:
    """Print a plain line (no markup, no highlighting, never wrapped) when there is a console; library
    calls without one stay silent."""
    if console is not None:
        console.print(text, markup=False, highlight=False, soft_wrap=True)
