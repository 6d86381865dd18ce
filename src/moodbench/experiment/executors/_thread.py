"""Conversations in threads of this process: ``moodbench run --executor thread`` (the default).

Not a ThreadPoolExecutor: its threads are joined at interpreter exit, so after an abandoning
interrupt the process would still wait for every in-flight model request. Daemon threads die with
the process; they never touch the store, so nothing is torn.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from moodbench.experiment._plan import Cell


class ThreadExecutor:
    """Daemon threads that run conversations and post ``(cell, result, exception)`` to a queue."""

    def __init__(self, fn: Callable[[Cell], Any], size: int):
        self._fn = fn
        self._jobs: queue.SimpleQueue[Cell | None] = queue.SimpleQueue()
        # SimpleQueue.put is reentrant: a signal handler may use it to wake the main thread.
        self.results: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._loop, name=f"moodbench-{i}", daemon=True) for i in range(size)]
        for t in self._threads:
            t.start()

    def submit(self, cell: Cell) -> None:
        self._jobs.put(cell)

    def _loop(self) -> None:
        while True:
            cell = self._jobs.get()
            if cell is None:
                return
            try:
                self.results.put((cell, self._fn(cell), None))
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                self.results.put((cell, None, exc))

    def close(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)
