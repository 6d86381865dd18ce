"""Errors of the steering tools, split by who has to act.

:class:`SteeringInputError` is bad input (unknown emotion or model, an emotion without pairs, a missing
binary): the CLI exits 2 and prints the message, which names the problem and the fix.
:class:`SteeringRunError` is a tool that failed while running (the generator crashed, a server did not
start): the CLI exits 1 and the message carries the log's tail.
"""

from __future__ import annotations

from moodbench._util.errors import UsageError

__all__ = ["SteeringError", "SteeringInputError", "SteeringRunError"]


class SteeringError(RuntimeError):
    """Base class of the steering errors."""


class SteeringInputError(SteeringError, UsageError):
    """Bad input: the message says what is wrong and how to fix it."""


class SteeringRunError(SteeringError):
    """A steering tool failed while running; the message includes the relevant log tail."""
