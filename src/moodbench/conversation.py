"""One cell of the matrix: one tau2 conversation, scored, turned into a storable record.

Composition only: the environment, orchestrator and evaluator are tau2's; the agent and user are
tau2 subclasses looked up through tau2's registry and given their settings as constructor
arguments. Whatever goes wrong inside a conversation ends up as an exit reason on a record, never
as an exception that stops the run.
"""

from __future__ import annotations

import time
import traceback
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from moodbench._tau2 import (
    AssistantMessage,
    SimulationRun,
    Task,
    TerminationReason,
    UserMessage,
    registry,
)
from moodbench.agent import EmptyReplyError, MoodbenchAgent
from moodbench.environments import domain_tools, new_environment, release_environment
from moodbench.llm import ContextWindowError, LLMCallError, ModelClient
from moodbench.outcomes import ExitReason, OutcomeInputs, classify
from moodbench.store import sha256
from moodbench.user import EmotionalUserSimulator
from moodbench.variants import Catalog
from tau2.orchestrator.orchestrator import Orchestrator

AGENT_NAME = "moodbench_agent"
USER_NAME = "moodbench_user"


def _register() -> None:
    """Make moodbench's agent and user known to tau2's registry (once per process)."""
    if AGENT_NAME not in registry.get_agents():
        registry.register_agent(MoodbenchAgent, AGENT_NAME)
    if USER_NAME not in registry.get_users():
        registry.register_user(EmotionalUserSimulator, USER_NAME)


_register()


@dataclass(frozen=True, order=True)
class Cell:
    domain: str
    task_id: str
    variant: str
    trial: int

    @property
    def key(self) -> str:
        return f"{self.domain}|{self.task_id}|{self.variant}|{self.trial}"

    def seed(self, base: int) -> int:
        """Same seed for every variant of a task and trial, so variants form matched pairs."""
        return base + zlib.crc32(f"{self.domain}|{self.task_id}|{self.trial}".encode()) % 1_000_000


@dataclass
class ConversationSettings:
    """What every conversation of a run shares. Built once by the runner, read-only afterwards."""

    catalog: Catalog
    tasks: dict[tuple[str, str], Task]
    agent_client: ModelClient
    user_client: ModelClient
    judge_client: ModelClient | None
    tool_choice: str = "auto"
    recover_text_tool_calls: bool = False
    user_format: str = "tau2"
    max_steps: int = 100
    max_errors: int = 10
    base_seed: int = 300
    shard: str | None = None
    judge_fidelity: bool = False
    persona_blocks: dict[str, str | None] = field(default_factory=dict)

    def persona(self, variant: str) -> str | None:
        if variant not in self.persona_blocks:
            self.persona_blocks[variant] = self.catalog.persona_block(self.catalog.parse(variant))
        return self.persona_blocks[variant]


def task_needs_agent_tool(task: Task) -> bool:
    crit = task.evaluation_criteria
    return bool(crit and crit.actions and any(a.requestor == "assistant" for a in crit.actions))


def build_participants(cell: Cell, s: ConversationSettings):
    """Environment, agent and user for one conversation, all through tau2's registry."""
    task = s.tasks[(cell.domain, cell.task_id)]
    # tau2's constructor, fed a per-process template DB (pooled: run_cell hands it back), tool
    # schemas built once per domain; see moodbench.environments
    environment = new_environment(cell.domain, pooled=True)
    tools, user_tools = domain_tools(cell.domain)
    agent = registry.get_agent_constructor(AGENT_NAME)(
        tools=tools,
        domain_policy=environment.get_policy(),
        client=s.agent_client,
        tool_choice=s.tool_choice,
        recover_text_tool_calls=s.recover_text_tool_calls,
    )
    user = registry.get_user_constructor(USER_NAME)(
        tools=user_tools or None,
        instructions=str(task.user_scenario),
        persona_block=s.persona(cell.variant),
        client=s.user_client,
        user_format=s.user_format,
    )
    return task, environment, agent, user


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def run_cell(cell: Cell, s: ConversationSettings) -> tuple[dict[str, Any], dict[str, str]]:
    """Run and score one conversation. Returns ``(record, prompts)`` for :meth:`Store.insert`."""
    started_at, t0 = _now(), time.perf_counter()
    seed = cell.seed(s.base_seed)
    task, environment, agent, user = build_participants(cell, s)
    prompts = {"agent": agent.system_prompt, "user": user.system_prompt}
    orchestrator = Orchestrator(domain=cell.domain, agent=agent, user=user, environment=environment, task=task,
                                max_steps=s.max_steps, max_errors=s.max_errors, seed=seed)
    error: str | None = None
    forced: ExitReason | None = None
    judge_record = None
    try:
        simulation = orchestrator.run()
    except (LLMCallError, ContextWindowError, EmptyReplyError) as exc:
        forced = (ExitReason.LLM_ERROR if isinstance(exc, LLMCallError)
                  else ExitReason.CONTEXT_WINDOW_EXCEEDED if isinstance(exc, ContextWindowError)
                  else ExitReason.AGENT_ERROR if exc.role == "agent" else ExitReason.USER_ERROR)
        error = f"{type(exc).__name__}: {exc}"
        simulation = _partial(orchestrator, cell, seed, started_at, t0,
                              TerminationReason.USER_ERROR if forced == ExitReason.USER_ERROR else TerminationReason.AGENT_ERROR)
    except Exception:  # noqa: BLE001 - a bug must cost one cell, not the run
        forced, error = ExitReason.HARNESS_ERROR, agent.client.redact(traceback.format_exc())[-4000:]
        simulation = _partial(orchestrator, cell, seed, started_at, t0, TerminationReason.AGENT_ERROR)

    reward_info = None
    if forced is None or forced in (ExitReason.AGENT_ERROR, ExitReason.USER_ERROR, ExitReason.CONTEXT_WINDOW_EXCEEDED):
        try:
            reward_info, judge_record = _evaluate(cell, task, simulation, s, environment)
            simulation.reward_info = reward_info
        except LLMCallError as exc:
            forced, error = ExitReason.LLM_ERROR, f"judge: {exc}"
        except (ValueError, KeyError) as exc:
            if not _raised_by_domain(exc):
                forced, error = ExitReason.HARNESS_ERROR, traceback.format_exc()[-4000:]
            else:
                # A domain's assertion function raises when the agent's final state lacks what it
                # checks (e.g. "Task task_2 not found"): the state fails the check, so the task failed.
                from moodbench._tau2 import RewardInfo

                error = f"evaluation: tau2 assertion raised {type(exc).__name__}: {exc}"
                reward_info = RewardInfo(reward=0.0, reward_basis=task.evaluation_criteria.reward_basis if task.evaluation_criteria else None,
                                         info={"note": error})
                simulation.reward_info = reward_info
        except Exception:  # noqa: BLE001
            forced, error = ExitReason.HARNESS_ERROR, traceback.format_exc()[-4000:]
    reward = reward_info.reward if reward_info is not None and forced not in (ExitReason.LLM_ERROR, ExitReason.HARNESS_ERROR) else None

    messages = simulation.messages
    last_user = next((m.content for m in reversed(messages) if isinstance(m, UserMessage) and m.content), None)
    transferred = any(isinstance(m, AssistantMessage) and m.tool_calls and any(tc.name == "transfer_to_human_agents" for tc in m.tool_calls)
                      for m in messages)
    exit_reason = forced if forced in (ExitReason.LLM_ERROR, ExitReason.HARNESS_ERROR, ExitReason.CONTEXT_WINDOW_EXCEEDED) else classify(OutcomeInputs(
        reward=reward,
        termination_reason=forced.value if forced else _value(simulation.termination_reason),
        last_user_text=last_user,
        agent_tool_calls=agent.stats.tool_calls,
        agent_invalid_calls=agent.stats.invalid_json_calls + agent.stats.unknown_tool_calls,
        task_needs_agent_tool=task_needs_agent_tool(task),
        transferred=transferred,
    ))
    stats = {
        "agent": agent.stats.to_dict(),
        "user": user.stats.to_dict(),
        "respond_tool_uses": agent.respond_tool_uses,
        "turns": sum(1 for m in messages if isinstance(m, UserMessage) and m.content),
        "messages": len(messages),
        "judge": judge_record,
    }
    from moodbench.fidelity import fidelity_flags

    flags = fidelity_flags(simulation, task, user_prompt=prompts["user"])
    if s.judge_fidelity and s.judge_client is not None and forced not in (ExitReason.LLM_ERROR, ExitReason.HARNESS_ERROR):
        from moodbench.fidelity_judge import judge_fidelity

        try:
            flags["judge"] = judge_fidelity(s.judge_client, simulation, str(task.user_scenario), cell.variant if cell.variant != "control" else "")
        except LLMCallError as exc:
            flags["judge"] = {"error": str(exc)}
    record = {
        "cell_key": cell.key,
        "domain": cell.domain,
        "task_id": cell.task_id,
        "variant": cell.variant,
        "trial": cell.trial,
        "seed": seed,
        "reward": reward,
        "exit_reason": exit_reason.value,
        "termination_reason": _value(simulation.termination_reason),
        "reward_info": reward_info.model_dump(mode="json") if reward_info is not None else None,
        "simulation": simulation.model_dump(mode="json"),
        "agent_prompt_sha256": sha256(prompts["agent"]),
        "user_prompt_sha256": sha256(prompts["user"]),
        "agent_model": s.agent_client.spec.model,
        "user_model": s.user_client.spec.model,
        "agent_prompt_tokens": agent.stats.prompt_tokens,
        "agent_completion_tokens": agent.stats.completion_tokens,
        "user_prompt_tokens": user.stats.prompt_tokens,
        "user_completion_tokens": user.stats.completion_tokens,
        "cost_usd": agent.stats.cost_usd + user.stats.cost_usd,
        "wall_seconds": round(time.perf_counter() - t0, 4),
        "started_at": started_at,
        "finished_at": _now(),
        "stats": stats,
        "flags": flags,
        "error": error,
        "shard": s.shard,
    }
    release_environment(cell.domain, environment)  # scored and recorded: its database is reused
    return record, prompts


def _raised_by_domain(exc: BaseException) -> bool:
    """True when the innermost frame of ``exc`` is tau2 domain code (tools, assertions), not ours."""
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
    return bool(last) and "/tau2/domains/" in last.replace("\\", "/")


def _value(x: Any) -> str | None:
    return getattr(x, "value", x)


def _evaluate(cell: Cell, task: Task, simulation: SimulationRun, s: ConversationSettings, environment=None):
    from moodbench.evaluation import evaluate

    # the conversation's own environment holds the state tau2's evaluator would rebuild by replay
    return evaluate(cell.domain, task, simulation, s.judge_client, environment)


def _partial(orch: Orchestrator, cell: Cell, seed: int, started_at: str, t0: float, reason: TerminationReason) -> SimulationRun:
    """The conversation so far, kept when it ends on an error (tau2 only builds one on success)."""
    try:
        messages = orch.get_trajectory()
    except Exception:  # noqa: BLE001
        messages = list(orch.trajectory)
    return SimulationRun(id=f"{cell.key}#{seed}", task_id=cell.task_id, start_time=started_at, end_time=_now(),
                         duration=time.perf_counter() - t0, termination_reason=reason, reward_info=None,
                         messages=messages, seed=seed)
