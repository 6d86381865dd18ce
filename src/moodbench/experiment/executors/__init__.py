"""Where conversations run: threads in this process (the default), worker processes, or Ray.

One Python process runs Python code on one core at a time, so a run whose conversations need more
CPU than one core gives (hundreds in flight against fast servers) is capped by the GIL however
many threads it starts. The executors here move the conversations to other processes, on this
machine (``process``) or on a Ray cluster (``ray``), and bring each finished one back to the
runner's main thread, which stays the only writer of the SQLite store. Resume and sharding are
decided by the runner before any cell is submitted, so they behave the same with every executor.

Every executor has the runner's worker interface: ``submit(cell)``; a ``results`` queue that
receives ``(cell, (record, prompts), None)`` or ``(cell, None, exception)`` per cell; ``close()``.
Workers rebuild the run's settings from a picklable description (:mod:`._portable`): model
clients are re-created from their specs with one endpoint-health tracker per worker, whose
"endpoint down" verdict is passed back with every result so the runner stops starting
conversations just as it does with threads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from moodbench.experiment._plan import Cell
from moodbench.llm import EndpointHealth

if TYPE_CHECKING:
    from moodbench.sim import ConversationSettings

EXECUTORS = ("thread", "process", "ray")


class ExecutorStartError(RuntimeError):
    """The executor could not start (Ray did not start or could not be reached); nothing was run.
    The message says what to check; the run ends with its summary and manifest written (exit 2)."""


class Executor(Protocol):
    results: Any  # a queue.SimpleQueue of (cell, result, exception)

    def submit(self, cell: Cell) -> None: ...

    def close(self) -> None: ...


def make_executor(kind: str, settings: ConversationSettings, *, concurrency: int, health: EndpointHealth,
                  ray_address: str | None = None, workers: int | None = None) -> Executor:
    """An executor of ``kind`` running up to ``concurrency`` conversations of ``settings`` at once."""
    if kind == "thread":
        from moodbench.experiment.executors._thread import ThreadExecutor
        from moodbench.sim import run_cell

        return ThreadExecutor(lambda cell: run_cell(cell, settings), concurrency)
    if kind == "process":
        from moodbench.experiment.executors._process import ProcessExecutor

        return ProcessExecutor(settings, concurrency=concurrency, health=health, workers=workers)
    if kind == "ray":
        from moodbench.experiment.executors._ray import RayExecutor

        return RayExecutor(settings, concurrency=concurrency, health=health, address=ray_address, workers=workers)
    raise ValueError(f"unknown executor {kind!r}; choose one of {', '.join(EXECUTORS)}")


__all__ = ["EXECUTORS", "Executor", "ExecutorStartError", "make_executor"]
