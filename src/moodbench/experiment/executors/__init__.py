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

from moodbench._util.cores import usable_cores
from moodbench.experiment._plan import Cell
from moodbench.llm import EndpointHealth

if TYPE_CHECKING:
    from moodbench.sim import ConversationSettings

EXECUTORS = ("auto", "thread", "process", "ray")

# ``auto`` picks processes from this many conversations in flight. Measured on 2 cores against a 200 ms
# server (benchmarks/throughput.py, README "Scale"): threads lose a third of the rate at 64 in flight
# to the GIL, while worker processes (pre-started during preflight) cost one extra import of tau2 in
# the forkserver, which overlaps the main process's own; below 16 in flight one core keeps up.
AUTO_PROCESS_MIN_CONCURRENCY = 16


def resolve_executor(kind: str, concurrency: int) -> str:
    """The executor ``kind`` names; ``auto``: ``process`` for >= 16 conversations in flight on >= 2 cores, else ``thread``."""
    if kind != "auto":
        return kind
    return "process" if concurrency >= AUTO_PROCESS_MIN_CONCURRENCY and usable_cores() >= 2 else "thread"


def prestart(kind: str) -> None:
    """Start what a ``process`` executor will fork its workers from, now, so its imports overlap the caller's.

    The forkserver imports tau2 and moodbench once (seconds); started before the run loads its tasks,
    both imports run side by side instead of one after the other. A no-op for other executors.
    """
    if kind == "process":
        from moodbench.experiment.executors._process import start_forkserver

        start_forkserver()


class ExecutorStartError(RuntimeError):
    """The executor could not start (Ray did not start or could not be reached); nothing was run.
    The message says what to check; the run ends with its summary and manifest written (exit 2)."""


class Executor(Protocol):
    results: Any  # a queue.SimpleQueue of (cell, result, exception)

    def submit(self, cell: Cell) -> None: ...

    def close(self) -> None: ...


def make_executor(
    kind: str,
    settings: ConversationSettings,
    *,
    concurrency: int,
    health: EndpointHealth,
    ray_address: str | None = None,
    workers: int | None = None,
) -> Executor:
    """An executor of ``kind`` running up to ``concurrency`` conversations of ``settings`` at once."""
    kind = resolve_executor(kind, concurrency)
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


__all__ = [
    "AUTO_PROCESS_MIN_CONCURRENCY",
    "EXECUTORS",
    "Executor",
    "ExecutorStartError",
    "make_executor",
    "prestart",
    "resolve_executor",
    "usable_cores",
]
