"""Running an experiment: ``moodbench.run(config)``, the function behind ``moodbench run``.

Order matters and is the same for the CLI and the library: check what the user can fix (key
variables, output directory, tasks, variants) before anything starts; start local model servers;
record the configuration (refusing a different experiment in the same directory); preflight the
endpoints; run the missing cells; write the summary and close the manifest. The heavy imports
(tau2, litellm) happen inside, so input errors are reported at once.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moodbench._util.errors import UsageError
from moodbench._util.exitcodes import ExitCode
from moodbench._util.files import write_problem
from moodbench._util.secrets import secret_values, url_secrets
from moodbench.experiment._config import ConfigError, RunConfig, config_diff
from moodbench.experiment._local_servers import SteeredCustomer, local_endpoints
from moodbench.experiment._plan import Plan, make_plan
from moodbench.experiment._rundir import RunLock, prepare_run_dir
from moodbench.experiment._signals import StopRequest, exit_code_of, signal_handlers
from moodbench.results import EventLog, Store, read_manifest, write_manifest, write_summary

if TYPE_CHECKING:
    from rich.console import Console

    from moodbench.llm import ModelSpec


@dataclass
class RunResult:
    """What :func:`run` did: its exit code (as the CLI's), the run directory, and counts."""

    exit_code: ExitCode
    run_dir: Path
    finished: int  # conversations stored by this call
    skipped: int  # cells already stored before this call (resumed)
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_code == ExitCode.OK


def run_secrets(*configs: RunConfig) -> list[str]:
    """Everything to keep out of the run directory: key values from the environment and
    credentials written into base URLs (``http://user:KEY@host/v1``), longest first."""
    found = set(secret_values(tuple(n for c in configs for n in (c.api_key_env, c.user_api_key_env, c.judge_api_key_env) if n)))
    for c in configs:
        for url in [*c.agent_base_url, *(c.user_base_url or []), *(c.judge_base_url or [])]:
            found.update(url_secrets(url))
    return sorted(found, key=len, reverse=True)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def check_environment(config: RunConfig) -> None:
    """Fail before any model call on what the user can fix without a run directory: the key variable."""
    for flag, name in (
        ("--api-key-env", config.api_key_env),
        ("--user-api-key-env", config.user_api_key_env),
        ("--judge-api-key-env", config.judge_api_key_env),
    ):
        if name and not os.environ.get(name):
            raise ConfigError(f"environment variable {name} (named by {flag}) is not set; export it first")


def model_specs(config: RunConfig, *, overrides: dict[str, Any] | None = None) -> tuple[ModelSpec, ModelSpec, ModelSpec]:
    """The agent's, customer's and judge's :class:`ModelSpec` (customer and judge default to the agent's).

    ``overrides``: model-layer settings the config does not expose (``transport``, backoff timing),
    for tests, benchmarks and debugging.
    """
    from moodbench.llm import ModelSpec

    common: dict[str, Any] = dict(
        max_tokens=config.max_tokens,
        timeout_s=config.timeout_s,
        max_retries=config.max_retries,
        max_response_bytes=config.max_response_bytes,
        max_in_flight_per_endpoint=config.max_concurrency_per_endpoint,
        **(overrides or {}),
    )
    # each role gets only the key named for its endpoint (RunConfig.key_env): never the agent's key on another server
    agent = ModelSpec(
        model=config.agent_model,
        base_urls=tuple(config.agent_base_url),
        args=dict(config.agent_args),
        api_key_env=config.key_env("agent"),
        **common,
    )
    um, uu = config.resolved_user_model()
    user_args = config.user_args or (config.agent_args if config.user_model is None else {})
    user = ModelSpec(model=um, base_urls=tuple(uu), args=dict(user_args), api_key_env=config.key_env("user"), **common)
    jm, ju = config.resolved_judge_model()
    judge = ModelSpec(
        model=jm,
        base_urls=tuple(ju),
        args={"temperature": 0.0, **config.judge_args},
        api_key_env=config.key_env("judge"),
        **common,
    )
    return agent, user, judge


def record_config(config: RunConfig, plan: Plan, store: Store, force_config: bool) -> None:
    """Record the config on first use; refuse a different experiment in the same directory."""
    identity = config.identity()
    stored = store.get_meta("config")
    if stored is not None:
        diff = config_diff({k: v for k, v in stored.items() if k in identity}, identity)
        if diff and not force_config:
            raise ConfigError(
                f"{config.out} holds a run with a different configuration:\n"
                + "\n".join(diff)
                + "\nUse another --out, or --force-config to continue this run with the new settings."
            )
    store.set_meta("config", identity)
    store.set_meta("plan", plan.meta())


def _all_stored(config: RunConfig, plan: Plan) -> bool:
    """Every planned cell is already finished in ``config.out`` (and the stored experiment is this one)."""
    db = Path(config.out) / "results.sqlite"
    if not db.is_file():
        return False
    with Store(db, readonly=True) as store:
        stored = store.get_meta("config")
        if stored is None or {k: v for k, v in stored.items() if k in config.identity()} != config.identity():
            return False  # a changed config: let the normal path refuse it (or --force-config go on)
        finished = store.finished_keys()
    return all(c.key in finished for c in plan.cells)


def record_steering(steered: dict[str, SteeredCustomer], store: Store, force_config: bool, run_dir: Path) -> None:
    """Record what each steered variant adds to the customer (vector sha256, scale, layers); refuse a
    resume whose vector or calibrated scale changed, since its conversations would measure another dose."""
    now = {v: sc.steering.model_dump(mode="json", exclude={"vector"}) for v, sc in steered.items()}
    before = store.get_meta("steering") or {}
    changed = [f"  {v}: {json.dumps(before[v])} -> {json.dumps(now[v])}" for v in now if v in before and before[v] != now[v]]
    if changed and not force_config:
        raise ConfigError(
            f"{run_dir} was run with other steering for these variants (a rebuilt vector or a new "
            "calibration):\n" + "\n".join(changed) + "\nUse another --out, or --force-config to continue anyway."
        )
    if now or before:
        store.set_meta("steering", {**before, **now})


def record_agent(plan: Plan, store: Store, force_config: bool, run_dir: Path) -> None:
    """Record the agent class the run uses (class, version, sha256 of its module file); refuse a resume whose
    agent code changed, since its conversations would measure another agent in the same run."""
    if plan.agent_impl is None or plan.config.agent is None:  # moodbench's own agent: upgrading moodbench is allowed
        return
    now = plan.agent_impl.model_dump(mode="json")
    before = store.get_meta("agent")
    if before is not None and before != now and not force_config:
        changed = [f"  {k}: {json.dumps(before.get(k))} -> {json.dumps(now.get(k))}" for k in now if before.get(k) != now.get(k)]
        raise ConfigError(
            f"{run_dir} was run with another version of the agent class:\n"
            + "\n".join(changed)
            + "\nUse another --out, or --force-config to continue anyway (records keep each version)."
        )
    store.set_meta("agent", now)


def run(
    config: RunConfig,
    *,
    console: Console | None = None,
    force_config: bool = False,
    handle_signals: bool = False,
    freeze_gc: bool = False,
    spec_overrides: dict[str, Any] | None = None,
    library_logs: bool | None = None,
) -> RunResult:
    """Run (or resume) every missing cell of ``config`` into ``config.out``, exactly as ``moodbench run`` does.

    Preflight runs unless ``config.skip_preflight``; ``local/NAME`` models get a llama.cpp server for
    the length of the run. Nothing process-wide happens unless asked: ``console`` (progress and
    messages; None: silent), ``handle_signals`` (install the two-step SIGINT/SIGTERM handlers),
    ``freeze_gc`` (``gc.freeze`` long-lived objects, a CPU saving at high concurrency).
    ``spec_overrides``: :class:`moodbench.llm.ModelSpec` fields the config does not expose
    (``transport="litellm"``, ``backoff_base_s``...), for tests, benchmarks and debugging.
    ``library_logs``: show (True) or hide (False) tau2's and litellm's own logs in this process and every worker
    (``moodbench -v``); None leaves this process as it is and workers quiet.

    Raises :class:`ConfigError` (bad input or an unusable run directory; nothing was run, nothing
    of the user's was changed) and :class:`moodbench.experiment.PreflightError` (the setup cannot work;
    nothing was run).
    """
    check_environment(config)
    if library_logs is not None:
        from moodbench._util.liblogs import library_logs as show_library_logs

        keys = [n for n in (config.api_key_env, config.user_api_key_env, config.judge_api_key_env) if n]
        show_library_logs(library_logs, secret_env=keys)  # shown, tau2's lines are masked (the run's keys too)
    from moodbench.experiment.executors import prestart, resolve_executor

    # worker processes' forkserver imports tau2 while this process does the same for the plan
    prestart(resolve_executor(config.executor, min(config.concurrency, _most_cells(config))))
    plan = make_plan(config)  # every input error surfaces before a directory or a server is made
    try:
        created = prepare_run_dir(config.out)
    except OSError as exc:  # a name too long for the file system, a path through a file...
        raise ConfigError(f"cannot use --out {config.out}: {write_problem(exc) or exc}; choose another --out") from None
    stop = StopRequest()
    try:
        with RunLock(config.out) as lock, signal_handlers(stop, handle_signals):
            try:
                if _all_stored(config, plan):  # a finished run re-run: no server to start, only the summary to refresh
                    return _run_ready(
                        config,
                        plan,
                        identity_config=config,
                        console=console,
                        force_config=force_config,
                        freeze_gc=freeze_gc,
                        spec_overrides=spec_overrides,
                        library_logs=library_logs,
                        stop=stop,
                    )
                with local_endpoints(config, console, plan) as ready:
                    return _run_ready(
                        ready.config,
                        plan,
                        identity_config=config,
                        console=console,
                        force_config=force_config,
                        freeze_gc=freeze_gc,
                        spec_overrides=spec_overrides,
                        library_logs=library_logs,
                        stop=stop,
                        steered=ready.steered,
                    )
            except UsageError:
                if created:  # under the lock: a run refused at the lock never removes what another run holds
                    lock.remove_dir_if_empty()
                raise
    except (OSError, sqlite3.Error) as exc:  # the disk filled up, the directory became read-only...
        problem = write_problem(exc)
        if problem is None:
            raise
        raise ConfigError(
            f"cannot write the run directory {config.out}: {problem}. Every conversation finished before this "
            "is stored; fix that and re-run the same command to resume"
        ) from None
    except KeyboardInterrupt as exc:  # while local servers started, before the run directory was opened
        return RunResult(exit_code_of(exc), Path(config.out), 0, 0, "interrupted before the run started")


def _finish(run_dir: Path, manifest: Any, events: EventLog, exit_code: ExitCode, stored: int, message: str) -> None:
    """What every way out of a run writes: summary.json, the manifest's end, the last event."""
    write_summary(run_dir)
    manifest(finished_at=_now(), exit_code=int(exit_code))
    events.emit("run_finished", exit_code=int(exit_code), finished=stored, message=message)


def _most_cells(config: RunConfig) -> int:
    """An upper bound of the plan's cells, known before tau2 is imported (for the executor's head start)."""
    tasks = len(config.task_ids) if config.task_ids else (config.num_tasks or 10**6)
    return len(config.domains) * tasks * len(config.variants) * config.trials


def _prestart_workers(config: RunConfig, settings: Any, todo: list[Any], health: Any) -> Any:
    """A ``process`` executor started before preflight, so its workers are ready when preflight ends
    (None for other executors, which start in the conversation loop as before)."""
    from moodbench.experiment.executors import make_executor, resolve_executor

    concurrency = max(1, min(config.concurrency, len(todo)))
    if not todo or resolve_executor(config.executor, concurrency) != "process":
        return None
    return make_executor("process", settings, concurrency=concurrency, health=health, workers=config.workers)


def _run_ready(
    config: RunConfig,
    plan: Plan,
    *,
    identity_config: RunConfig,
    console: Console | None,
    force_config: bool,
    freeze_gc: bool,
    spec_overrides: dict[str, Any] | None,
    stop: StopRequest,
    library_logs: bool | None = None,
    steered: dict[str, SteeredCustomer] | None = None,
) -> RunResult:
    from moodbench.experiment._loop import run_loop
    from moodbench.experiment._preflight import run_preflight
    from moodbench.llm import EndpointHealth, ModelClient
    from moodbench.sim import ConversationSettings

    run_dir = Path(config.out)
    secrets = run_secrets(identity_config, config)
    read_manifest(run_dir)  # an unreadable manifest.json is refused before anything is written
    store = Store(run_dir / "results.sqlite")
    events = EventLog(run_dir / "events.jsonl", secrets)

    def manifest(**updates: Any) -> None:
        write_manifest(
            run_dir,
            {
                "config": identity_config.identity(),
                "execution": identity_config.execution(),
                "argv": list(sys.argv[1:]),
                **updates,
            },
            secrets,
        )

    try:
        record_config(identity_config, plan, store, force_config)
        record_steering(steered or {}, store, force_config, run_dir)
        record_agent(plan, store, force_config, run_dir)
        finished = store.finished_keys()
        todo = [c for c in plan.cells if c.key not in finished]
        from moodbench.results._manifest import git_commit, versions

        manifest(
            versions=versions(), git_commit=git_commit(), started_at=_now(), cells_planned=len(plan.cells), cells_todo=len(todo)
        )
        events.emit("run_started", cells=len(plan.cells), todo=len(todo), resumed=len(plan.cells) - len(todo))
        agent_spec, user_spec, judge_spec = model_specs(config, overrides=spec_overrides)
        health = EndpointHealth(config.max_consecutive_failures)
        steered_clients = {
            v: ModelClient(
                replace(user_spec, model=f"openai/{sc.model_name}", base_urls=(sc.base_url,), api_key_env=None), health
            )  # moodbench's own local server: no key
            for v, sc in (steered or {}).items()
        }
        settings = ConversationSettings(
            catalog=plan.catalog,
            tasks=plan.tasks,
            agent_client=ModelClient(agent_spec, health),
            user_client=ModelClient(user_spec, health),
            judge_client=ModelClient(judge_spec, health),
            tool_choice=config.tool_choice,
            recover_text_tool_calls=bool(config.recover_text_tool_calls),
            user_format=config.user_format,
            max_steps=config.max_steps,
            max_errors=config.max_errors,
            base_seed=config.seed,
            shard=config.shard,
            judge_fidelity=config.judge_fidelity,
            freeze_gc=freeze_gc,
            library_logs=library_logs,
            user_clients=steered_clients,
            steering={v: sc.steering for v, sc in (steered or {}).items()},
            agent=config.agent,
            plugins=tuple(config.plugins),
        )
        for v in plan.variants:  # parse once in this thread; workers only read
            settings.persona(v)
        prestarted = _prestart_workers(config, settings, todo, health)
        if todo:
            from moodbench.experiment.executors import resolve_executor

            manifest(executor_used=resolve_executor(config.executor, max(1, min(config.concurrency, len(todo)))))
        try:
            if todo and not config.skip_preflight:
                try:
                    run_preflight(config, agent_spec, store, events, console=console, secrets=secrets)
                finally:  # a refusal is recorded too: the manifest says why nothing ran
                    manifest(preflight=store.get_meta("preflight"))
            elif todo:
                manifest(preflight={"skipped": True})
        except BaseException:
            if prestarted is not None:
                health.cancel()
                prestarted.close()
            raise
        already = len(plan.cells) - len(todo)
        if console is not None:
            console.print(f"moodbench: {len(todo)} conversation(s) to run, {already} already stored in {run_dir}")

        def run_cells(cells: list[Any]) -> Any:
            nonlocal prestarted
            started, prestarted = prestarted, None  # the loop closes the executor it is given
            return run_loop(
                cells,
                settings,
                store,
                events,
                console,
                concurrency=config.concurrency,
                health=health,
                total=len(plan.cells),
                already=len(plan.cells) - len(cells) if config.sequential else already,
                secrets=secrets,
                executor=config.executor,
                ray_address=config.ray_address,
                workers_per_run=config.workers,
                stop=stop,
                grace_s=config.stop_grace_s,
                prestarted=started,
            )

        if config.sequential:
            from moodbench.experiment._stages import run_stages

            try:
                outcome = run_stages(plan, store, events, run_cells, manifest, (console.print if console else lambda _m: None))
            finally:  # unused when every stage was done, or the stored plan refused (exit 2): its workers end cleanly
                if prestarted is not None:
                    prestarted.close()
        else:
            outcome = run_cells(todo) if todo else None
        exit_code = outcome.exit_code if outcome else ExitCode.OK
        message = outcome.message if outcome else ""
        stored = outcome.stored if outcome else 0
        _finish(run_dir, manifest, events, exit_code, stored, message)
        return RunResult(exit_code, run_dir, stored, already, message)
    except KeyboardInterrupt as exc:
        # A signal outside the conversation loop (preflight, summary): every stored conversation is
        # its own committed transaction; the summary and manifest still say what is there.
        code = exit_code_of(exc)
        events.emit("interrupt", phase="outside the conversation loop", signal=getattr(exc, "args", [""])[0])
        _finish(run_dir, manifest, events, code, 0, "interrupted; re-run the same command to resume")
        return RunResult(code, run_dir, 0, 0, "interrupted; re-run the same command to resume")
    finally:
        events.close()
        store.close()
