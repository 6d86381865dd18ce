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
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from moodbench._util.exitcodes import ExitCode
from moodbench._util.secrets import scrub
from moodbench.experiment._plan import Cell
from moodbench.experiment._progress import RunProgress
from moodbench.experiment._signals import Interrupted, StopRequest
from moodbench.results import ConversationRecord, EventLog, ExitReason, Store, sha256, storable

if TYPE_CHECKING:
    from rich.console import Console

    from moodbench.experiment.executors import Executor
    from moodbench.llm import EndpointHealth
    from moodbench.sim import ConversationSettings

_WAKE = object()  # put on the results queue by a signal handler so the loop reacts at once


@dataclass
class LoopOutcome:
    exit_code: ExitCode
    message: str
    stored: int


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def run_loop(
    todo: list[Cell],
    settings: ConversationSettings,
    store: Store,
    events: EventLog,
    console: Console | None,
    *,
    concurrency: int,
    health: EndpointHealth,
    total: int,
    already: int,
    secrets: list[str],
    stop: StopRequest,
    grace_s: float,
    executor: str = "thread",
    ray_address: str | None = None,
    prestarted: Executor | None = None,
    workers_per_run: int | None = None,
) -> LoopOutcome:
    """Run ``todo`` and store every result.

    A stop request (first Ctrl-C or SIGTERM): start nothing new, let running conversations finish
    for up to ``grace_s`` and store them. A second signal or the end of the grace period abandons
    the running ones (they are simply not stored, so resume re-runs them). Every way out returns
    normally, so the caller writes the summary, manifest and events. ``prestarted``: an executor the
    caller already started (worker processes warming up during preflight); it is closed here.
    """
    from moodbench.experiment.executors import ExecutorStartError, make_executor

    pending = list(reversed(todo))
    running: dict[str, Cell] = {}
    stored = 0
    reasons: Counter[str] = Counter()
    try:
        workers = prestarted or make_executor(
            executor,
            settings,
            concurrency=max(1, min(concurrency, len(todo))),
            health=health,
            ray_address=ray_address,
            workers=workers_per_run,
        )
    except ExecutorStartError as not_started:  # nothing ran; the caller still writes the summary and closes the manifest
        events.emit("executor_failed", executor=executor, error=str(not_started))
        return LoopOutcome(ExitCode.USAGE, str(not_started), 0)
    stop.wake = lambda: workers.results.put(_WAKE)
    stop.in_loop = True
    stopping_since: float | None = None
    try:
        with RunProgress(console, total, already) as progress:
            while True:
                while pending and len(running) < concurrency and not stop.requested.is_set() and health.down is None:
                    cell = pending.pop()
                    running[cell.key] = cell
                    workers.submit(cell)
                if stop.requested.is_set() and stopping_since is None:
                    stopping_since = time.monotonic()
                    if console is not None and running:
                        console.print(
                            f"[yellow]Interrupted ({stop.name}): letting {len(running)} running conversation(s) finish for up to "
                            f"{grace_s:.0f}s (signal again to abandon them; they are re-run when you resume).[/]"
                        )
                    events.emit("interrupt", signal=stop.name, running=len(running), grace_s=grace_s)
                if not running:
                    break
                if stopping_since is not None and time.monotonic() - stopping_since > grace_s:
                    raise Interrupted(stop.signum)  # the grace period is over: abandon, as a second signal would
                try:
                    item = workers.results.get(timeout=0.5)  # blocks: no busy loop while models think
                except queue.Empty:
                    continue
                if item is _WAKE:
                    continue
                cell, result, exc = item
                running.pop(cell.key, None)
                if exc is not None:
                    record = ConversationRecord.crashed(
                        cell_key=cell.key,
                        domain=cell.domain,
                        task_id=cell.task_id,
                        variant=cell.variant,
                        trial=cell.trial,
                        error=scrub(_format(exc), secrets),
                        finished_at=_now(),
                        shard=settings.shard,
                    )
                    prompts: dict[str, str] | None = None
                    events.emit("cell_crashed", cell=cell.key, error=(record.error or "")[-500:])
                else:
                    record, prompts = result
                    # the last line before disk: a provider echoing a key, or a signed URL in a reply, cannot leak
                    dumped = record.model_dump(mode="json")
                    if (clean := scrub(dumped, secrets)) is not dumped:
                        record = ConversationRecord.model_validate(clean)
                    if prompts and (clean_prompts := scrub(prompts, secrets)) is not prompts:
                        prompts = clean_prompts
                        # a scrubbed prompt is stored under its own hash; the record must point at it
                        record.agent_prompt_sha256 = sha256(prompts["agent"])
                        record.user_prompt_sha256 = sha256(prompts["user"])
                record = storable(record)  # bounded and encodable, or a harness_error saying why
                record.attempt = store.attempts(cell.key) + 1
                ok = store.insert(record, prompts)
                stored += int(ok)
                reasons[record.exit_reason.value] += 1
                events.emit(
                    "cell_finished",
                    cell=cell.key,
                    exit_reason=record.exit_reason.value,
                    reward=record.reward,
                    seconds=record.wall_seconds,
                    stored=ok,
                    error=record.error,
                )
                progress.advance(cell, record)
    except KeyboardInterrupt as exc:  # a second signal, the grace period, or a library caller's Ctrl-C
        if stop.signum is None:
            stop.signum = getattr(exc, "signum", None) or signal.SIGINT
        health.cancel()  # running conversations fail their next call instead of going on unseen
        events.emit("abandoned", signal=stop.name, running=len(running))
        return LoopOutcome(
            stop.exit_code,
            f"{stop.name}: abandoned {len(running)} running conversation(s); re-run the same command to resume",
            stored,
        )
    finally:
        stop.in_loop = False
        stop.wake = None
        workers.close()
    failed = sum(n for r, n in reasons.items() if r in ExitReason.excluded_values())
    if health.down is not None:
        msg = (
            f"endpoint {health.down} failed {health.max_consecutive_failures} requests in a row "
            f"(last error: {health.last_error}); stopped starting conversations. Finished conversations are "
            "stored; fix the endpoint and re-run the same command to resume."
        )
        events.emit("endpoint_down", endpoint=health.down, error=health.last_error)
        return LoopOutcome(ExitCode.ENDPOINT_DOWN, scrub(msg, secrets), stored)
    if stop.requested.is_set():
        return LoopOutcome(stop.exit_code, f"{stop.name}: stopped; re-run the same command to resume", stored)
    if failed and console is not None:
        console.print(
            f"[yellow]warning:[/] {failed} conversation(s) ended with llm_error/harness_error; they are excluded "
            "from the averages and re-run when you run the same command again",
            highlight=False,
        )
    return LoopOutcome(ExitCode.OK, "", stored)


def _format(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-4000:]
