"""Reading one tau2 Results file for ``moodbench import``: tolerant parsing against the installed tau2's models,
the conversation records built the way the runner builds them, and tau2's own metrics of the raw file.

Split from ``_interchange.py`` (which re-exports :func:`task_facts` and :func:`tau2_file_metrics`) so reading
and checking a file, which writes nothing, stays apart from building and moving the run directory.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from math import comb
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from tau2.data_model.message import AssistantMessage, UserMessage  # data models only: no registry, no litellm
from tau2.data_model.simulation import SimulationRun
from tau2.data_model.tasks import Task

from moodbench._util.errors import UsageError
from moodbench.judges import fidelity_flags
from moodbench.results import (
    Cell,
    ConversationRecord,
    ConversationStats,
    ExitReason,
    TaskFacts,
    is_success,
    sha256,
)
from moodbench.sim._import_bounds import check_results_bounds
from moodbench.sim._outcome import OutcomeInputs, classify
from moodbench.sim._prompt_texts import tau2_constant
from moodbench.sim._tasks import load_domain_tasks, scenario_of, task_needs_agent_tool

NOT_RUN = "infrastructure_error"  # tau2's termination reason for a simulation that never ran to an end
SOLO_USERS = ("dummy_user",)  # tau2's user in solo mode: it never speaks


@dataclass(frozen=True)
class _Source:
    """How a file was made, read tolerantly from tau2's ``info`` (or what a file without one carries)."""

    domain: str
    agent_model: str | None
    user_model: str | None
    agent_impl: str | None
    user_impl: str | None
    git_commit: str | None
    num_trials: int | None
    max_steps: int | None
    max_errors: int | None
    seed: int | None
    policy: str
    guidelines: str | None
    has_info: bool

    @property
    def solo(self) -> bool:
        """tau2's solo mode: the agent works alone, a dummy user never speaks."""
        return (self.user_impl or "") in SOLO_USERS or "solo" in (self.agent_impl or "")


@dataclass
class _Sim:
    sim: SimulationRun
    termination: str | None  # as the file wrote it (the installed tau2 may not know it)
    reward: float | None  # as the file wrote it


@dataclass
class _File:
    path: Path
    variant: str
    sha256: str
    source: _Source
    records: list[tuple[ConversationRecord, dict[str, str]]]
    tau2_metrics: dict[str, Any]
    notes: list[str]


def _str(x: Any) -> str | None:
    return x if isinstance(x, str) and x else None


def _int(x: Any) -> int | None:
    return x if isinstance(x, int) and not isinstance(x, bool) else None


def _dict(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}


def _source(path: Path, data: dict[str, Any]) -> tuple[_Source, list[str]]:
    info = data.get("info")
    if isinstance(info, dict):
        env, agent, user = (_dict(info.get(k)) for k in ("environment_info", "agent_info", "user_info"))
        domain = _str(env.get("domain_name"))
        if domain is None:
            raise UsageError(
                f"{path}: its info.environment_info names no domain_name, so its tasks cannot be known; "
                "moodbench cannot import it"
            )
        return _Source(
            domain,
            _str(agent.get("llm")),
            _str(user.get("llm")),
            _str(agent.get("implementation")),
            _str(user.get("implementation")),
            _str(info.get("git_commit")),
            _int(info.get("num_trials")),
            _int(info.get("max_steps")),
            _int(info.get("max_errors")),
            _int(info.get("seed")),
            _str(env.get("policy")) or "",
            _str(user.get("global_simulation_guidelines")),
            True,
        ), []
    domain = _str(data.get("domain"))
    if domain is None:
        raise UsageError(
            f"{path} has no tau2 `info` block and names no `domain`, so the tau2 domain of its tasks cannot be "
            "known; moodbench cannot import it"
        )
    agent_model = _str(data.get("model"))
    return (
        _Source(domain, agent_model, None, _str(data.get("agent")), None, None, None, None, None, None, "", None, False),
        [
            f"{path.name}: no tau2 `info` block: domain {domain!r} and agent {agent_model or 'unknown'} from its top-level "
            "fields; the customer model and tau2 version are unknown"
        ],
    )


def _tasks(path: Path, data: dict[str, Any], domain: str) -> tuple[dict[str, Task], list[str]]:
    raw = data.get("tasks")
    if raw is None:
        tasks = load_domain_tasks(domain)
        return {t.id: t for t in tasks}, [f"{path.name}: carries no tasks; matched against the installed tau2's {domain!r} tasks"]
    if not isinstance(raw, list):
        raise UsageError(f"{path}: `tasks` is a {type(raw).__name__}, not a list of tau2 tasks; moodbench cannot import it")
    out: dict[str, Task] = {}
    for i, t in enumerate(raw):
        try:
            task = Task.model_validate(t)
        except ValidationError as exc:
            raise UsageError(
                f"{path}: task {i} is not a tau2 task this tau2 can read ({_first_error(exc)}); moodbench cannot import it"
            ) from None
        out[task.id] = task
    return out, []


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(x) for x in err.get("loc", ()))
    return f"{where}: {err.get('msg')}; {exc.error_count()} error(s)"


def _sim(path: Path, i: int, raw: Any) -> _Sim:
    """One simulation, checked with the installed tau2's model but tolerant of what newer tau2 releases write."""
    if not isinstance(raw, dict):
        raise UsageError(f"{path}: simulation {i} is a {type(raw).__name__}, not a tau2 simulation; moodbench cannot import it")
    if raw.get("task_id") in (None, ""):
        raise UsageError(
            f"{path}: simulation {i} ({raw.get('id', 'no id')}) has no task_id, so it cannot be matched to a task "
            "or paired with another variant; files of the tau2 version that stored only id, messages and reward "
            "cannot be imported"
        )
    d = dict(raw)
    d["task_id"] = str(d["task_id"])
    term = d.get("termination_reason")
    if term not in _known_terminations():
        d["termination_reason"] = "agent_error"  # only to pass the installed model; the file's own value is kept below
    for key, default in (("start_time", ""), ("end_time", ""), ("duration", 0.0)):
        if d.get(key) is None:
            d[key] = default
    for key in ("agent_cost", "user_cost"):
        if not isinstance(d.get(key), (int, float)):
            d[key] = None
    try:
        sim = SimulationRun.model_validate(d)
    except ValidationError as exc:
        raise UsageError(
            f"{path}: simulation {i} ({d.get('id')}) does not read as a tau2 simulation ({_first_error(exc)}); "
            "moodbench cannot import this file"
        ) from None
    reward_info = raw.get("reward_info")
    reward = reward_info.get("reward") if isinstance(reward_info, dict) else None
    return _Sim(sim, term if isinstance(term, str) else None, float(reward) if isinstance(reward, (int, float)) else None)


_KNOWN: set[str] = set()


def _known_terminations() -> set[str]:
    if not _KNOWN:
        from tau2.data_model.simulation import TerminationReason

        _KNOWN.update(t.value for t in TerminationReason)
    return _KNOWN


def _prompts(src: _Source, task: Task) -> dict[str, str]:
    """tau2's own system prompts, rebuilt from what the file stores (only for tau2's standard agent and user)."""
    out: dict[str, str] = {}
    if src.policy and src.agent_impl == "llm_agent":
        prompt, instruction = (tau2_constant("tau2.agent.llm_agent", n) for n in ("SYSTEM_PROMPT", "AGENT_INSTRUCTION"))
        out["agent"] = prompt.format(domain_policy=src.policy, agent_instruction=instruction)
    if src.guidelines and src.user_impl == "user_simulator":
        user_prompt = tau2_constant("tau2.user.user_simulator", "SYSTEM_PROMPT")
        out["user"] = user_prompt.format(global_user_sim_guidelines=src.guidelines, instructions=task.user_scenario)
    return out


_FACT = re.compile(r"[#A-Za-z0-9][A-Za-z0-9_.@+-]*[0-9][A-Za-z0-9_.@+-]*")


def task_facts(task: Task) -> list[str]:
    """Identifiers in the task's customer scenario (user ids, order and reservation ids, phone numbers, emails):
    a conversation of this task mentions at least one of them. Longest first, ``#`` dropped."""
    text = json.dumps(task.user_scenario.model_dump(mode="json"), ensure_ascii=False)
    facts = set()
    for m in _FACT.findall(text):
        m = m.strip(".-+").lstrip("#")
        if len(m) >= 6 and re.search(r"[A-Za-z_-]", m) and re.search(r"[0-9]", m):
            facts.add(m)
    return sorted(facts, key=lambda f: (-len(f), f))


def _facts_found(facts: list[str], messages: list[dict[str, Any]]) -> dict[str, Any]:
    parts = []
    for m in messages:
        if isinstance(m.get("content"), str):
            parts.append(m["content"])
        for tc in m.get("tool_calls") or []:
            parts.append(json.dumps(tc.get("arguments"), ensure_ascii=False))
    text = "\n".join(parts).lower()
    found = [f for f in facts if f.lower() in text]
    return {"n": len(facts), "found": len(found), "checked": facts[:5]}


def _record(src: _Source, s: _Sim, task: Task, variant: str, trial: int) -> tuple[ConversationRecord, dict[str, str]]:
    sim = s.sim
    dumped = sim.model_dump(mode="json")
    dumped["trial"] = trial
    dumped["termination_reason"] = s.termination
    messages = dumped.get("messages") or []
    reward = s.reward
    prompts = _prompts(src, task)
    error = None
    if sim.skipped or s.termination == NOT_RUN:
        exit_reason, reward = ExitReason.INFRASTRUCTURE_ERROR, None
        error = (
            "tau2 skipped this sample after an error (skip_failed_samples)"
            if sim.skipped
            else "tau2 recorded an infrastructure error: the simulation never ran to an end"
        )
    else:
        if reward is None:
            reward = 0.0
            error = (
                "the file stores no reward for this simulation: counted as a failure (reward 0), as tau2's pass^k and "
                "the leaderboard count it"
            )
        last_user = next((m.content for m in reversed(sim.messages) if isinstance(m, UserMessage) and m.content), None)
        calls = [tc for m in sim.messages if isinstance(m, AssistantMessage) for tc in (m.tool_calls or [])]
        exit_reason = classify(
            OutcomeInputs(
                reward=reward,
                termination_reason=s.termination,
                last_user_text=last_user,
                agent_tool_calls=len(calls),
                agent_invalid_calls=0,
                task_needs_agent_tool=task_needs_agent_tool(task),
                transferred=any(tc.name == "transfer_to_human_agents" for tc in calls),
            )
        )
    cost = (sim.agent_cost or 0.0) + (sim.user_cost or 0.0)
    flags = fidelity_flags(messages, scenario_of(task), user_prompt=prompts.get("user"), solo=src.solo)
    flags.evidence["task_facts"] = _facts_found(task_facts(task), messages)
    record = ConversationRecord(
        cell_key=Cell(src.domain, sim.task_id, variant, trial).key,
        domain=src.domain,
        task_id=sim.task_id,
        variant=variant,
        trial=trial,
        seed=sim.seed,
        reward=reward,
        exit_reason=exit_reason,
        termination_reason=s.termination,
        reward_info=sim.reward_info.model_dump(mode="json") if sim.reward_info is not None else None,
        simulation=dumped,
        agent_prompt_sha256=sha256(prompts["agent"]) if "agent" in prompts else None,
        user_prompt_sha256=sha256(prompts["user"]) if "user" in prompts else None,
        agent_model=src.agent_model,
        user_model=src.user_model,
        cost_usd=cost,
        wall_seconds=sim.duration,
        started_at=sim.start_time or None,
        finished_at=sim.end_time or None,
        stats=ConversationStats(
            turns=sum(1 for m in sim.messages if isinstance(m, UserMessage) and m.content), messages=len(sim.messages)
        ),
        flags=flags,
        error=error,
        task_facts=_task_facts(task, sim, src.domain),
    )
    return record, prompts


TAU2_RULE = (
    "tau2's metrics (upstream tau2 agent_metrics): infrastructure errors and skipped samples left out; success "
    "|reward - 1| <= 1e-6, a missing reward a failure; avg_reward the mean of the stored rewards (a missing one skipped); "
    "pass^k per task C(c,k)/C(n,k), mean over tasks, k up to num_trials lowered to the smallest trial count of any task"
)


def tau2_file_metrics(sims: Sequence[tuple[str, str | None, float | None, bool]], num_trials: int | None) -> dict[str, Any]:
    """What tau2's own metrics report for one Results file, from its raw (task id, termination, reward, skipped) rows.

    This follows tau2's rule (:data:`TAU2_RULE`) on the raw file, so ``summary`` can show whether moodbench's
    numbers for the same simulations reproduce it (they differ exactly where a reward is missing: tau2's mean
    skips it, moodbench counts it as 0 like tau2's pass^k does).
    """
    evaluated = [(t, r) for t, term, r, skipped in sims if term != NOT_RUN and not skipped]
    rewards = [r for _, r in evaluated if r is not None]
    by_task: dict[str, list[bool]] = defaultdict(list)
    for t, r in evaluated:
        by_task[t].append(r is not None and is_success(r))
    k_max = min((len(v) for v in by_task.values()), default=0)
    if num_trials:
        k_max = min(k_max, num_trials)
    return {
        "rule": TAU2_RULE,
        "simulations": len(evaluated),
        "tasks": len(by_task),
        "not_run": len(sims) - len(evaluated),
        "no_reward": len(evaluated) - len(rewards),
        "avg_reward": sum(rewards) / len(rewards) if rewards else None,
        "pass_hat_k": {
            str(k): sum(comb(sum(v), k) / comb(len(v), k) for v in by_task.values()) / len(by_task) for k in range(1, k_max + 1)
        },
    }


def _task_facts(task: Task, sim: SimulationRun, domain: str) -> TaskFacts | None:
    """The failure anatomy's task facts (sim._facts); none for a domain this tau2 does not know."""
    from moodbench.sim._facts import _typing_environment, task_facts

    env = _typing_environment(domain)
    return task_facts(task, sim.messages, env) if env is not None else None


def _read(path: Path, variant: str) -> _File:
    if not path.is_file():
        raise UsageError(f"{path}: no such file; give the Results JSON that `tau2 run` wrote (data/simulations/*.json)")
    raw_bytes = path.read_bytes()
    try:
        data = json.loads(raw_bytes)
    except (ValueError, RecursionError) as exc:
        raise UsageError(
            f"{path} is not JSON ({exc}); give the Results file that `tau2 run` or `moodbench export` wrote"
        ) from None
    check_results_bounds(data, path)
    if not isinstance(data, dict) or not isinstance(data.get("simulations"), list):
        keys = ", ".join(sorted(data)[:8]) if isinstance(data, dict) else type(data).__name__
        raise UsageError(
            f"{path} is not a tau2 Results file (it needs a `simulations` list, with `info` and `tasks`; it has: "
            f"{keys}); give the Results JSON that `tau2 run` wrote (not its *_results.json metrics summary)"
        )
    src, notes = _source(path, data)
    tasks, more = _tasks(path, data, src.domain)
    notes += more
    sims = [_sim(path, i, raw) for i, raw in enumerate(data["simulations"])]
    if not sims:
        raise UsageError(f"{path}: the file holds no simulations; nothing to import")
    unknown = sorted({s.termination for s in sims if s.termination and s.termination not in _known_terminations()} - {NOT_RUN})
    if unknown:
        notes.append(f"{path.name}: termination reason(s) newer than this tau2 kept as written: {', '.join(unknown)}")
    seen: set[tuple[str, int]] = set()
    next_trial: dict[str, int] = defaultdict(int)
    per_task: Counter[str] = Counter()
    records = []
    for i, s in enumerate(sims):
        sim = s.sim
        task = tasks.get(sim.task_id)
        if task is None:
            where = "the file's" if src.has_info and data.get("tasks") is not None else f"the installed tau2's {src.domain!r}"
            raise UsageError(
                f"{path}: simulation {i} ({sim.id}) is of task {sim.task_id!r}, which is not among {where} "
                f"{len(tasks)} task(s); its conversations cannot be scored or paired, so the file cannot be imported"
            )
        trial = sim.trial
        if trial is None:  # older tau2 files: number the trials of each task in file order
            trial = next_trial[sim.task_id]
            if trial == 0:
                notes.append(f"{path.name}: simulations carry no trial number; numbered per task in file order")
        next_trial[sim.task_id] = max(next_trial[sim.task_id], trial + 1)
        if (sim.task_id, trial) in seen and not sim.skipped:
            raise UsageError(
                f"{path}: task {sim.task_id!r} trial {trial} appears twice (simulation {i}, {sim.id}); a Results file "
                "holds one simulation per task and trial, so its pairs would be ambiguous: split the file so that each "
                "copy is in its own file and import them as two variants"
            )
        if not sim.skipped:
            seen.add((sim.task_id, trial))
        per_task[sim.task_id] += 1
        records.append(_record(src, s, task, variant, trial))
    found = max(per_task.values())
    if src.num_trials is not None and src.num_trials != found:
        notes.append(
            f"{path.name}: its info says num_trials {src.num_trials}; it holds at most {found} simulation(s) per task, "
            f"so {found} trial(s) are counted"
        )
    metrics = tau2_file_metrics([(s.sim.task_id, s.termination, s.reward, bool(s.sim.skipped)) for s in sims], src.num_trials)
    return _File(path, variant, hashlib.sha256(raw_bytes).hexdigest(), src, records, metrics, sorted(set(notes)))
