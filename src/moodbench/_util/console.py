"""The stderr console every part of moodbench prints progress and errors to.

Off a terminal (CI, logs, pipes) rich would wrap at 80 columns and split paths and messages, so
non-terminals get a wide console instead.
"""

from __future__ import annotations

import sys

from rich.console import Console


def stderr_console() -> Console:
    return Console(stderr=True, width=None if sys.stderr.isatty() else 200)
