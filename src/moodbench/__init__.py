"""moodbench: how much worse do tool-calling customer-service agents get with emotional customers?

The public API is small on purpose: build a :class:`RunConfig`, call :func:`run_experiment`,
then read the run directory (SQLite store, summary, report). Everything else is internal.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
