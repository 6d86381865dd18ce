"""Progress of a run: a rich bar with ETA on a terminal, one plain line per conversation elsewhere."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from moodbench.experiment._plan import Cell
from moodbench.results import ConversationRecord


class RunProgress:
    """Shows each finished conversation; silent without a console (library calls)."""

    def __init__(self, console: Console | None, total: int, done: int):
        self.console = console
        self.total = total
        self.count = done
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        if console is not None and console.is_terminal:
            self._bar = Progress(
                TextColumn("[bold]conversations"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[last]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=console,
            )
            self._task = self._bar.add_task("run", total=total, completed=done, last="")

    def __enter__(self) -> RunProgress:
        if self._bar:
            self._bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar:
            self._bar.stop()

    def advance(self, cell: Cell, record: ConversationRecord) -> None:
        self.count += 1
        reward = record.reward
        text = f"{cell.domain}/{cell.task_id} {cell.variant} t{cell.trial}: {record.exit_reason.value}" + (
            f" r={reward:.2f}" if reward is not None else ""
        )
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, advance=1, last=text)
        elif self.console is not None:
            self.console.print(
                f"[{self.count}/{self.total}] {text} ({record.wall_seconds or 0:.1f}s)", highlight=False, markup=False
            )
