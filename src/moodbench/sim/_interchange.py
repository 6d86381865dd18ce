"""tau2's Results JSON in and out: ``moodbench export`` (opens in ``tau2 view``) and ``moodbench import``.

Import turns the Results files a ``tau2 run`` wrote (or moodbench's own export) into a run directory, one
file per variant, so ``summary``, ``report`` and ``view`` work on them and tau2 users get paired,
task-clustered error bars: pairs form on (domain, task id, trial). Records are built the way the runner
builds them: the exit reason from tau2's termination reason and reward through the same classifier, the
simulator-fidelity flags recomputed from the messages, the prompts reconstructed where the file says
enough (tau2's own agent and user simulator). Everything is read and checked before anything is written,
and the run directory is written next to its final place and moved in, so a bad file leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from tau2.data_model.message import AssistantMessage, UserMessage  # data models only: no registry, no litellm
from tau2.data_model.simulation import Results, SimulationRun
from tau2.data_model.tasks import Task

from moodbench._util.errors import UsageError
from moodbench.judges import fidelity_flags
from moodbench.results import ConversationRecord, ConversationStats, ExitReason, Store, sha256, write_summary
from moodbench.sim._outcome import OutcomeInputs, classify
from moodbench.sim._prompt_texts import tau2_constant
from moodbench.sim._tasks import load_domain_tasks, scenario_of, task_needs_agent_tool

__all__ = ["ImportedRun", "export_tau2", "import_tau2", "parse_import_items"]

VARIANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@+-]*$")


def export_tau2(run_dir: Path, out_file: Path, variant: str | None = None) -> int:
    """Write the run's final conversations (optionally of one variant) as tau2 Results JSON."""
    from tau2.data_model.simulation import AgentInfo, Info, UserInfo
    from tau2.environment.environment import EnvironmentInfo

    db = Path(run_dir) / "results.sqlite"
    if not db.is_file():  # opening a Store would create an empty run directory and export nothing
        raise UsageError(f"{run_dir} is not a run directory (no results.sqlite)")
    with Store(db, readonly=True) as store:
        config = store.get_meta("config") or {}
        if variant is not None:
            present = sorted({r.variant for r in store.records()})
            if variant not in present:
                raise UsageError(f"no variant {variant!r} in {run_dir}; its variants: {', '.join(present) or '(none)'}")
        sims, domains, task_ids = [], set(), set()
        for record in store.records(with_payload=True):
            if (variant is not None and record.variant != variant) or record.simulation is None:
                continue
            sim = SimulationRun.model_validate(record.simulation)
            sim.trial = record.trial
            sims.append(sim)
            domains.add(record.domain)
            task_ids.add((record.domain, record.task_id))
    tasks = []
    for d in sorted(domains):
        tasks += [t for t in load_domain_tasks(d, config.get("task_split")) if (d, t.id) in task_ids]
    domain = sorted(domains)[0] if domains else (config.get("domains") or ["mock"])[0]
    info = Info(
        git_commit="moodbench",
        num_trials=int(config.get("trials", 1)),
        max_steps=int(config.get("max_steps", 100)),
        max_errors=int(config.get("max_errors", 10)),
        user_info=UserInfo(implementation="moodbench_user", llm=config.get("user_model") or config.get("agent_model"),
                           llm_args={"variant": variant or "all"}),
        agent_info=AgentInfo(implementation="moodbench_agent", llm=config.get("agent_model"), llm_args=config.get("agent_args") or {}),
        environment_info=EnvironmentInfo(domain_name=domain, policy="", tool_defs=None),
        seed=config.get("seed"),
    )
    results = Results(info=info, tasks=tasks, simulations=sims)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(results.model_dump_json(indent=2))
    json.loads(out_file.read_text())  # fail loudly here rather than in tau2 view
    return len(sims)


# --------------------------------------------------------------------------- import


def parse_import_items(args: Sequence[str]) -> list[tuple[Path, str]]:
    """``FILE=VARIANT`` arguments -> (path, variant); the last ``=`` splits (paths may contain one)."""
    items = []
    for arg in args:
        path, sep, variant = arg.rpartition("=")
        if not sep or not path or not variant:
            raise UsageError(f"{arg!r} is not FILE=VARIANT; write e.g. results/control.json=control results/frustrated.json=frustration")
        if not VARIANT_NAME.match(variant):
            raise UsageError(f"{arg!r}: variant name {variant!r} may use letters, digits and _ . : @ + - (e.g. frustration:severe)")
        items.append((Path(path), variant))
    return items


@dataclass
class ImportedRun:
    """What :func:`import_tau2` wrote: per variant, the simulations imported and their domains."""

    run_dir: Path
    counts: dict[str, int]
    domains: list[str]
    trials: int
    prompts: int
    notes: list[str] = field(default_factory=list)


@dataclass
class _File:
    path: Path
    variant: str
    sha256: str
    results: Results
    records: list[tuple[ConversationRecord, dict[str, str]]]
    notes: list[str]


def _load_results(path: Path) -> tuple[Results, str]:
    if not path.is_file():
        raise UsageError(f"{path}: no such file; give the Results JSON that `tau2 run` wrote (data/simulations/*.json)")
    raw = path.read_bytes()
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise UsageError(f"{path} is not JSON ({exc}); give the Results file that `tau2 run` or `moodbench export` wrote") from None
    if not isinstance(data, dict) or not {"info", "tasks", "simulations"} <= set(data):
        keys = ", ".join(sorted(data)[:8]) if isinstance(data, dict) else type(data).__name__
        raise UsageError(f"{path} is not a tau2 Results file (it needs the keys info, tasks, simulations; it has: {keys}); give the "
                         "Results JSON that `tau2 run` wrote (not its *_results.json metrics summary)")
    try:
        return Results.model_validate(data), hashlib.sha256(raw).hexdigest()
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err.get("loc", ()))
        raise UsageError(f"{path} is not a valid tau2 Results file: {where}: {err.get('msg')} ({exc.error_count()} error(s)); "
                         "it may come from an incompatible tau2 version: re-save it with this tau2 (Results.load / save)") from None


def _prompts(results: Results, task: Task) -> dict[str, str]:
    """tau2's own system prompts, rebuilt from what the file stores (only for tau2's standard agent and user)."""
    out: dict[str, str] = {}
    info = results.info
    policy = info.environment_info.policy if info.environment_info else ""
    if policy and info.agent_info.implementation == "llm_agent":
        prompt, instruction = (tau2_constant("tau2.agent.llm_agent", n) for n in ("SYSTEM_PROMPT", "AGENT_INSTRUCTION"))
        out["agent"] = prompt.format(domain_policy=policy, agent_instruction=instruction)
    guidelines = info.user_info.global_simulation_guidelines
    if guidelines and info.user_info.implementation == "user_simulator":
        out["user"] = tau2_constant("tau2.user.user_simulator", "SYSTEM_PROMPT").format(global_user_sim_guidelines=guidelines, instructions=task.user_scenario)
    return out


def _record(results: Results, sim: SimulationRun, task: Task, variant: str, trial: int, domain: str) -> tuple[ConversationRecord, dict[str, str]]:
    dumped = sim.model_dump(mode="json")
    dumped["trial"] = trial
    messages = dumped.get("messages") or []
    reward = sim.reward_info.reward if sim.reward_info is not None else None
    termination = getattr(sim.termination_reason, "value", sim.termination_reason)
    prompts = _prompts(results, task)
    error = None
    if sim.skipped:
        exit_reason, error = ExitReason.HARNESS_ERROR, "tau2 skipped this sample after an error (skip_failed_samples)"
    else:
        last_user = next((m.content for m in reversed(sim.messages) if isinstance(m, UserMessage) and m.content), None)
        calls = [tc for m in sim.messages if isinstance(m, AssistantMessage) for tc in (m.tool_calls or [])]
        exit_reason = classify(OutcomeInputs(
            reward=reward, termination_reason=termination, last_user_text=last_user, agent_tool_calls=len(calls),
            agent_invalid_calls=0, task_needs_agent_tool=task_needs_agent_tool(task),
            transferred=any(tc.name == "transfer_to_human_agents" for tc in calls)))
        if reward is None and not exit_reason.excluded and exit_reason not in (ExitReason.AGENT_ERROR, ExitReason.USER_ERROR):
            exit_reason, error = ExitReason.HARNESS_ERROR, "the Results file stores no reward for this simulation"
    cost = (sim.agent_cost or 0.0) + (sim.user_cost or 0.0)
    record = ConversationRecord(
        cell_key=f"{domain}|{sim.task_id}|{variant}|{trial}", domain=domain, task_id=sim.task_id, variant=variant, trial=trial,
        seed=sim.seed, reward=reward, exit_reason=exit_reason, termination_reason=termination,
        reward_info=sim.reward_info.model_dump(mode="json") if sim.reward_info is not None else None, simulation=dumped,
        agent_prompt_sha256=sha256(prompts["agent"]) if "agent" in prompts else None,
        user_prompt_sha256=sha256(prompts["user"]) if "user" in prompts else None,
        agent_model=results.info.agent_info.llm, user_model=results.info.user_info.llm, cost_usd=cost,
        wall_seconds=sim.duration, started_at=sim.start_time, finished_at=sim.end_time,
        stats=ConversationStats(turns=sum(1 for m in sim.messages if isinstance(m, UserMessage) and m.content), messages=len(sim.messages)),
        flags=fidelity_flags(messages, scenario_of(task), user_prompt=prompts.get("user")),
        error=error,
    )
    return record, prompts


def _read(path: Path, variant: str) -> _File:
    results, digest = _load_results(path)
    domain = results.info.environment_info.domain_name
    tasks = {t.id: t for t in results.tasks}
    notes: list[str] = []
    seen: set[tuple[str, int]] = set()
    next_trial: dict[str, int] = defaultdict(int)
    records = []
    for i, sim in enumerate(results.simulations):
        task = tasks.get(sim.task_id)
        if task is None:
            raise UsageError(f"{path}: simulation {i} ({sim.id}) is of task {sim.task_id!r}, which is not among the file's "
                             f"{len(tasks)} task(s); the file was cut or edited: re-export it from tau2 with its tasks")
        trial = sim.trial
        if trial is None:  # older tau2 files: number the trials of each task in file order
            trial = next_trial[sim.task_id]
            if trial == 0:
                notes.append(f"{path.name}: simulations carry no trial number; numbered per task in file order")
        next_trial[sim.task_id] = max(next_trial[sim.task_id], trial + 1)
        if (sim.task_id, trial) in seen and not sim.skipped:
            raise UsageError(f"{path}: task {sim.task_id!r} trial {trial} appears twice; a Results file holds one simulation per "
                             "task and trial (import reruns as another variant, or keep one)")
        if not sim.skipped:
            seen.add((sim.task_id, trial))
        records.append(_record(results, sim, task, variant, trial, domain))
    if not records:
        raise UsageError(f"{path}: the file holds no simulations; nothing to import")
    return _File(path, variant, digest, results, records, sorted(set(notes)))


def _existing(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any], set[str]]:
    """(config, plan, variants) of an existing run directory; empty for a new one."""
    if not run_dir.exists():
        return {}, {}, set()
    if not run_dir.is_dir():
        raise UsageError(f"--out {run_dir} is a file; give a directory for the run")
    if not (run_dir / "results.sqlite").is_file():
        if any(run_dir.iterdir()):
            raise UsageError(f"--out {run_dir} exists and is not a run directory (no results.sqlite); give a new or empty directory")
        return {}, {}, set()
    with Store(run_dir / "results.sqlite") as store:
        config, plan = store.get_meta("config") or {}, store.get_meta("plan") or {}
        variants = {r.variant for r in store.records()} | set(plan.get("variants") or [])
    return config, plan, variants


def _meta(config: dict[str, Any], plan: dict[str, Any], files: list[_File]) -> tuple[dict[str, Any], dict[str, Any]]:
    variants = list(plan.get("variants") or config.get("variants") or [])
    domains = list(plan.get("domains") or config.get("domains") or [])
    planned: dict[str, dict[str, int]] = {d: dict(v) for d, v in (plan.get("planned") or {}).items()}
    trials = int(config.get("trials") or 1) if config else 1
    imports = list(config.get("imports") or [])
    for f in files:
        variants.append(f.variant)
        for r, _ in f.records:
            if r.domain not in domains:
                domains.append(r.domain)
            planned.setdefault(r.domain, {}).setdefault(f.variant, 0)
            planned[r.domain][f.variant] += 1
        trials = max(trials, int(f.results.info.num_trials or 1), 1 + max(r.trial for r, _ in f.records))
        imports.append({"file": str(f.path), "variant": f.variant, "sha256": f.sha256, "simulations": len(f.records),
                        "agent_model": f.results.info.agent_info.llm, "user_model": f.results.info.user_info.llm,
                        "domain": f.results.info.environment_info.domain_name, "tau2_git_commit": f.results.info.git_commit})
    first = files[0].results.info
    new_config = {
        "source": config.get("source", "tau2 import"),
        "agent_model": config.get("agent_model", first.agent_info.llm),
        "user_model": config.get("user_model", first.user_info.llm),
        "max_steps": config.get("max_steps", first.max_steps), "max_errors": config.get("max_errors", first.max_errors),
        "seed": config.get("seed", first.seed),
        **{k: v for k, v in config.items() if k not in ("variants", "domains", "trials", "imports")},
        "variants": variants, "domains": domains, "trials": trials, "imports": imports,
    }
    cells = sum(len(f.records) for f in files)
    new_plan = {**plan, "planned": planned, "variants": variants, "domains": domains,
                "cells": int(plan.get("cells", 0)) + cells, "all_cells": int(plan.get("all_cells", 0)) + cells}
    return new_config, new_plan


def import_tau2(run_dir: Path, items: Sequence[tuple[Path, str]]) -> ImportedRun:
    """Import tau2 Results files, one per variant, into ``run_dir`` (new, empty, or an existing run).

    Raises :class:`UsageError` (exit 2) naming the file and the fix for a file that is not tau2 Results, a
    simulation whose task is missing from the file, a variant named twice or already in ``run_dir``. All
    files are read and checked first; the directory is then written beside its target and moved into place.
    """
    run_dir = Path(run_dir)
    if not items:
        raise UsageError("nothing to import: give FILE=VARIANT, e.g. results/control.json=control results/angry.json=anger")
    variants = [v for _, v in items]
    twice = sorted({v for v in variants if variants.count(v) > 1})
    if twice:
        raise UsageError(f"variant(s) {', '.join(twice)} named more than once; each file is one variant (FILE=VARIANT)")
    config, plan, present = _existing(run_dir)
    clash = [(p, v) for p, v in items if v in present]
    if clash:
        p, v = clash[0]
        raise UsageError(f"{p}: variant {v!r} is already in {run_dir}; import it under another name ({p}={v}-2) or into a new --out")
    files = [_read(Path(p), v) for p, v in items]
    new_config, new_plan = _meta(config, plan, files)

    run_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.import-", dir=run_dir.parent))
    stage = tmp / "run"
    try:
        if (run_dir / "results.sqlite").is_file():
            shutil.copytree(run_dir, stage)
        else:
            stage.mkdir()
        prompts_seen: set[str] = set()
        with Store(stage / "results.sqlite") as store:
            store.set_meta("config", new_config)
            store.set_meta("plan", new_plan)
            for f in files:
                for record, prompts in f.records:
                    store.insert(record, prompts)
                    prompts_seen.update(sha256(t) for t in prompts.values())
        write_summary(stage)
        if run_dir.exists():
            old = tmp / "old"
            os.replace(run_dir, old)
            try:
                os.replace(stage, run_dir)
            except OSError:
                os.replace(old, run_dir)  # put the original back before reporting the failure
                raise
        else:
            os.replace(stage, run_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    counts = {f.variant: len(f.records) for f in files}
    return ImportedRun(run_dir=run_dir, counts=counts, domains=list(new_plan["domains"]), trials=int(new_config["trials"]),
                       prompts=len(prompts_seen), notes=[n for f in files for n in f.notes])
