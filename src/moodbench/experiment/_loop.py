"""The conversation loop: submit cells to an executor, store each result as it arrives.

The calling thread is the only writer (store, events); workers only run conversations. New
conversations are started only while the endpoints are healthy and no stop was requested, so a dead
server or an interrupt costs the conversations in flight, never the finished ones. Each finished
conversation is one SQLite transaction, so a SIGKILL at any moment loses at most the conversations
in flight; the next run of the same command re-runs exactly those (and any excluded ones).
"""

from __future__ import annotations

import queue
import signal
import threading
import traceback
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from moodbench._util.secrets import scrub
from moodbench.experiment._exit import ExitCode
from moodbench.experiment._plan import Cell
from moodbench.experiment._progress import RunProgress
from moodbench.results import ConversationRecord, EventLog, ExitReason, Store

if TYPE_CHECKING:
    from rich.console import Console

    from moodbench.llm import EndpointHealth
    from moodbench.sim import ConversationSettings

_WAKE = object()  # put on the results queue by a signal handler so the loop reacts at once


@dataclass
class LoopOutcome:
    exit_code: ExitCode
    message: str
    stored: int


class _Stop:
    """An interrupt request: the first asks running conversations to finish, a second abandons them."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.signal: int | None = None


@contextmanager
def _interrupts(stop: _Stop, results: Any, enabled: bool) -> Iterator[None]:
    """SIGINT handling for the CLI: the first Ctrl-C sets ``stop``, the second raises KeyboardInterrupt.

    Off for library calls (a process-wide handler is the application's to install); there a
    KeyboardInterrupt abandons the running conversations at once.
    """
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum: int, frame: Any) -> None:
        if stop.requested.is_set():
            raise KeyboardInterrupt
        stop.signal = signum
        stop.requested.set()
        results.put(_WAKE)

    previous = signal.signal(signal.SIGINT, on_signal)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def run_loop(todo: list[Cell], settings: ConversationSettings, store: Store, events: EventLog, console: Console | None,
             *, concurrency: int, health: EndpointHealth, total: int, already: int, secrets: list[str],
             executor: str = "thread", ray_address: str | None = None, handle_signals: bool = False) -> LoopOutcome:
    """Run ``todo`` and store every result.

    Interrupt once: start nothing new, let running conversations finish and store them, exit 130.
    Interrupt twice: abandon the running ones (they are simply not stored, so resume re-runs them).
    """
    from moodbench.experiment.executors import make_executor

    pending = list(reversed(todo))
    running: dict[str, Cell] = {}
    stop = _Stop()
    stored = 0
    reasons: Counter[str] = Counter()
    workers = make_executor(executor, settings, concurrency=max(1, min(concurrency, len(todo))), health=health,
                            ray_address=ray_address)
    announced = False
    try:
        with _interrupts(stop, workers.results, handle_signals), RunProgress(console, total, already) as progress:
            while True:
                while pending and len(running) < concurrency and not stop.requested.is_set() and health.down is None:
                    cell = pending.pop()
                    running[cell.key] = cell
                    workers.submit(cell)
                if stop.requested.is_set() and not announced:
                    announced = True
                    if console is not None:
                        console.print(f"[yellow]Interrupted: letting {len(running)} running conversation(s) finish "
                                      "(interrupt again to abandon them; they will be re-run when you resume).[/]")
                    events.emit("interrupt", running=len(running))
                if not running:
                    break
                try:
                    item = workers.results.get(timeout=1.0)  # blocks: no busy loop while models think
                except queue.Empty:
                    continue
                if item is _WAKE:
                    continue
                cell, result, exc = item
                running.pop(cell.key, None)
                if exc is not None:
                    record = ConversationRecord.crashed(
                        cell_key=cell.key, domain=cell.domain, task_id=cell.task_id, variant=cell.variant, trial=cell.trial,
                        error=scrub(_format(exc), secrets), finished_at=_now(), shard=settings.shard)
                    prompts: dict[str, str] | None = None
                    events.emit("cell_crashed", cell=cell.key, error=(record.error or "")[-500:])
                else:
                    record, prompts = result
                    if secrets:  # the last line before disk: a provider echoing a key cannot leak it
                        record = ConversationRecord.model_validate(scrub(record.model_dump(mode="json"), secrets))
                        prompts = scrub(prompts, secrets)
                record.attempt = store.attempts(cell.key) + 1
                ok = store.insert(record, prompts)
                stored += int(ok)
                reasons[record.exit_reason.value] += 1
                events.emit("cell_finished", cell=cell.key, exit_reason=record.exit_reason.value, reward=record.reward,
                            seconds=record.wall_seconds, stored=ok, error=record.error)
                progress.advance(cell, record)
    except KeyboardInterrupt:
        health.cancel()  # running conversations fail their next call instead of going on unseen
        events.emit("abandoned", running=len(running))
        return LoopOutcome(ExitCode.INTERRUPTED,
                           f"abandoned {len(running)} running conversation(s); re-run the same command to resume", stored)
    finally:
        workers.close()
    failed = sum(n for r, n in reasons.items() if r in ExitReason.excluded_values())
    if health.down is not None:
        msg = (f"endpoint {health.down} failed {health.max_consecutive_failures} requests in a row "
               f"(last error: {health.last_error}); stopped starting conversations. Finished conversations are "
               "stored; fix the endpoint and re-run the same command to resume.")
        events.emit("endpoint_down", endpoint=health.down, error=health.last_error)
        return LoopOutcome(ExitCode.ENDPOINT_DOWN, scrub(msg, secrets), stored)
    if stop.requested.is_set():
        return LoopOutcome(ExitCode.INTERRUPTED, "interrupted; re-run the same command to resume", stored)
    if failed and console is not None:
        console.print(f"[yellow]warning:[/] {failed} conversation(s) ended with llm_error/harness_error; they are excluded "
                      "from the averages and re-run when you run the same command again", highlight=False)
    return LoopOutcome(ExitCode.OK, "", stored)


def _format(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-4000:]
