"""One cell of the matrix: one tau2 conversation, scored, turned into a :class:`ConversationRecord`.

Composition only: the environment, orchestrator and evaluator are tau2's; the agent and user are
tau2 subclasses looked up through tau2's registry and given their settings as constructor
arguments. Whatever goes wrong inside a conversation ends up as an exit reason on a record, never
as an exception that stops the run. The steps are separate functions: participants, orchestration
(errors -> exit reasons), scoring, fidelity, the record.
"""

from __future__ import annotations

import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from tau2.agent.base import BaseAgent
from tau2.environment.environment import Environment
from tau2.orchestrator.orchestrator import Orchestrator

from moodbench._util import defaults
from moodbench._util.defaults import UserFormat
from moodbench.emotions import Catalog
from moodbench.judges import fidelity_flags, judge_fidelity
from moodbench.llm import ContextWindowError, LLMCallError, ModelClient
from moodbench.results import Cell, ConversationRecord, ConversationStats, ExitReason, FidelityFlags, RoleStats, Steering, sha256
from moodbench.sim._agent import EmptyReplyError, MoodbenchAgent
from moodbench.sim._env_pool import SharedRecordChanged, between_tool_calls, check_lent, domain_tools, new_environment
from moodbench.sim._evaluate import JudgeRequired, evaluate
from moodbench.sim._facts import task_facts
from moodbench.sim._outcome import OutcomeInputs, classify
from moodbench.sim._plugins import AgentChoice, construct_agent, load_plugins, message_stats, resolve_agent
from moodbench.sim._tasks import scenario_of, task_needs_agent_tool
from moodbench.sim._tau2 import AssistantMessage, RewardInfo, SimulationRun, Task, TerminationReason, UserMessage, registry
from moodbench.sim._user import EmotionalUserSimulator

AGENT_NAME = "moodbench_agent"
USER_NAME = "moodbench_user"
# Errors that end a conversation but leave a transcript worth scoring (the agent's or customer's fault).
_SCORED_ANYWAY = (ExitReason.AGENT_ERROR, ExitReason.USER_ERROR, ExitReason.CONTEXT_WINDOW_EXCEEDED)
_NOT_SCORED = (ExitReason.LLM_ERROR, ExitReason.HARNESS_ERROR)


def register() -> None:
    """Make moodbench's agent and user known to tau2's registry (idempotent; called before use)."""
    if AGENT_NAME not in registry.get_agents():
        registry.register_agent(MoodbenchAgent, AGENT_NAME)
    if USER_NAME not in registry.get_users():
        registry.register_user(EmotionalUserSimulator, USER_NAME)


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
    user_format: UserFormat = "tau2"
    max_steps: int = defaults.MAX_STEPS
    max_errors: int = defaults.MAX_ERRORS
    base_seed: int = defaults.SEED
    shard: str | None = None
    judge_fidelity: bool = False
    freeze_gc: bool = False  # see sim._env_pool: the CLI opts in, a library call does not
    library_logs: bool | None = None  # tau2's and litellm's logs in worker processes (moodbench -v); None: quiet
    # steered variants: their customer's own (steered) server, and what the vector adds, per variant
    user_clients: dict[str, ModelClient] = field(default_factory=dict)
    steering: dict[str, Steering] = field(default_factory=dict)
    persona_blocks: dict[str, str | None] = field(default_factory=dict)
    # --agent / --plugin: names only (imported in whichever process runs the conversation), see sim._plugins
    agent: str | None = None
    plugins: tuple[str, ...] = ()

    def customer_client(self, variant: str) -> ModelClient:
        return self.user_clients.get(variant, self.user_client)

    def persona(self, variant: str) -> str | None:
        if variant not in self.persona_blocks:
            self.persona_blocks[variant] = self.catalog.persona_block(self.catalog.parse(variant))
        return self.persona_blocks[variant]


@dataclass
class _Participants:
    task: Task
    environment: Environment
    agent: BaseAgent  # moodbench's MoodbenchAgent, or the user's tau2 agent class (--agent)
    user: EmotionalUserSimulator
    choice: AgentChoice
    tool_names: set[str] = field(default_factory=set)

    @property
    def prompts(self) -> dict[str, str]:
        agent_prompt = getattr(self.agent, "system_prompt", None)
        if not isinstance(agent_prompt, str):  # a class without tau2's system_prompt: name it instead
            agent_prompt = f"(agent class {self.choice.impl.cls} exposes no system_prompt)"
        return {"agent": agent_prompt, "user": self.user.system_prompt}

    def agent_stats(self, simulation: SimulationRun) -> RoleStats:
        """moodbench's agent counts its calls as it makes them; another class's are read from its messages."""
        if isinstance(self.agent, MoodbenchAgent):
            return self.agent.stats
        return message_stats(simulation.messages, self.tool_names)


def _participants(cell: Cell, s: ConversationSettings) -> _Participants:
    """Environment, agent and user for one conversation, all through tau2's registry."""
    register()
    load_plugins(s.plugins)  # their domains must exist in this process's registry (workers too)
    task = s.tasks[(cell.domain, cell.task_id)]
    # tau2's constructor, fed a copy-on-access database sharing a per-process template, tool
    # schemas built once per domain; see sim._env_pool
    environment = new_environment(cell.domain, freeze_gc=s.freeze_gc)
    tools, user_tools = domain_tools(cell.domain)
    choice = resolve_agent(s.agent, s.plugins)
    agent: BaseAgent
    if choice.builtin:
        agent = registry.get_agent_constructor(AGENT_NAME)(
            tools=tools,
            domain_policy=environment.get_policy(),
            client=s.agent_client,
            tool_choice=s.tool_choice,
            recover_text_tool_calls=s.recover_text_tool_calls,
            between_tool_calls=partial(between_tool_calls, environment),
        )
    else:
        agent = construct_agent(
            choice,
            tools,
            environment.get_policy(),
            s.agent_client,
            tool_choice=s.tool_choice,
            recover_text_tool_calls=s.recover_text_tool_calls,
        )
    user = registry.get_user_constructor(USER_NAME)(
        tools=user_tools or None,
        instructions=str(task.user_scenario),
        persona_block=s.persona(cell.variant),
        client=s.customer_client(cell.variant),
        user_format=s.user_format,
        between_tool_calls=partial(between_tool_calls, environment),
    )
    return _Participants(task, environment, agent, user, choice, {t.name for t in tools})


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class _Ending:
    """How the orchestration ended when it did not end normally."""

    forced: ExitReason | None = None
    error: str | None = None


def _orchestrate(
    cell: Cell, p: _Participants, s: ConversationSettings, seed: int, started_at: str, t0: float
) -> tuple[SimulationRun, _Ending]:
    """Run tau2's orchestrator; map every way it can fail onto an exit reason."""
    orchestrator = Orchestrator(
        domain=cell.domain,
        agent=p.agent,
        user=p.user,
        environment=p.environment,
        task=p.task,
        max_steps=s.max_steps,
        max_errors=s.max_errors,
        seed=seed,
    )
    try:
        return orchestrator.run(), _Ending()
    except LLMCallError as exc:
        ending = _Ending(ExitReason.LLM_ERROR, f"{type(exc).__name__}: {exc}")
    except ContextWindowError as exc:
        ending = _Ending(ExitReason.CONTEXT_WINDOW_EXCEEDED, f"{type(exc).__name__}: {exc}")
    except EmptyReplyError as exc:
        ending = _Ending(ExitReason.AGENT_ERROR if exc.role == "agent" else ExitReason.USER_ERROR, f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # noqa: BLE001 - a bug must cost one cell, not the run
        ending = _foreign_agent_error(p, s, exc) or _Ending(
            ExitReason.HARNESS_ERROR, s.agent_client.redact(traceback.format_exc())[-4000:]
        )
    reason = TerminationReason.USER_ERROR if ending.forced == ExitReason.USER_ERROR else TerminationReason.AGENT_ERROR
    return _partial(orchestrator, cell, seed, started_at, t0, reason), ending


def _foreign_agent_error(p: _Participants, s: ConversationSettings, exc: Exception) -> _Ending | None:
    """An exception raised while a user's agent class was running: a model call that failed there (litellm,
    openai, httpx) is ``llm_error`` (excluded, re-run on resume); an error raised by the user's own code
    (the nearest frame of the class's modules or tau2's and moodbench's is theirs) is the agent's failure
    (``agent_error``, scored). None: anything else (a harness error, as with moodbench's own agent)."""
    if p.choice.builtin:
        return None
    mro = {getattr(sys.modules.get(c.__module__), "__file__", None) for c in type(p.agent).__mro__} - {None}
    frames = [f.filename for f in traceback.extract_tb(exc.__traceback__)]
    if not mro & set(frames):
        return None  # the agent was not running
    head = f"agent class {p.choice.impl.cls} raised {type(exc).__name__}: {str(exc)[:500]}\n"
    detail = s.agent_client.redact(head + traceback.format_exc()[-3400:])
    if (type(exc).__module__ or "").split(".")[0] in ("litellm", "openai", "httpx"):
        return _Ending(ExitReason.LLM_ERROR, detail)
    ours = {"tau2", "moodbench"}
    users = {
        f
        for c in type(p.agent).__mro__
        if c.__module__.split(".")[0] not in ours | {"builtins", "abc", "typing"}
        for f in [getattr(sys.modules.get(c.__module__), "__file__", None)]
        if f
    }
    for filename in reversed(frames):
        if filename in users:
            return _Ending(ExitReason.AGENT_ERROR, detail)
        if any(f"/{pkg}/" in filename.replace("\\", "/") for pkg in ours):
            return None
    return None


def _partial(orch: Orchestrator, cell: Cell, seed: int, started_at: str, t0: float, reason: TerminationReason) -> SimulationRun:
    """The conversation so far, kept when it ends on an error (tau2 only builds one on success)."""
    try:
        messages = orch.get_trajectory()
    except Exception:  # noqa: BLE001
        messages = list(orch.trajectory)
    return SimulationRun(
        id=f"{cell.key}#{seed}",
        task_id=cell.task_id,
        start_time=started_at,
        end_time=_now(),
        duration=time.perf_counter() - t0,
        termination_reason=reason,
        reward_info=None,
        messages=messages,
        seed=seed,
    )


def _raised_by_domain(exc: BaseException) -> bool:
    """True when the innermost frame of ``exc`` is tau2 domain code (tools, assertions), not ours."""
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
    return bool(last) and "/tau2/domains/" in str(last).replace("\\", "/")


def _score(
    cell: Cell, p: _Participants, simulation: SimulationRun, s: ConversationSettings, ending: _Ending
) -> tuple[RewardInfo | None, dict[str, Any] | None]:
    """tau2's reward for the conversation (``None`` when it cannot be scored); updates ``ending``."""
    if ending.forced is not None and ending.forced not in _SCORED_ANYWAY:
        return None, None
    try:
        reward_info, judge_record = evaluate(cell.domain, p.task, simulation, s.judge_client, p.environment)
    except LLMCallError as exc:
        ending.forced, ending.error = ExitReason.LLM_ERROR, f"judge: {exc}"
        return None, None
    except JudgeRequired as exc:
        ending.forced, ending.error = ExitReason.HARNESS_ERROR, str(exc)
        return None, None
    except (ValueError, KeyError) as exc:
        if not _raised_by_domain(exc):
            ending.forced, ending.error = ExitReason.HARNESS_ERROR, traceback.format_exc()[-4000:]
            return None, None
        # A domain's assertion function raises when the agent's final state lacks what it checks
        # (e.g. "Task task_2 not found"): the state fails the check, so the task failed.
        ending.error = f"evaluation: tau2 assertion raised {type(exc).__name__}: {exc}"
        crit = p.task.evaluation_criteria
        reward_info = RewardInfo(reward=0.0, reward_basis=crit.reward_basis if crit else None, info={"note": ending.error})
        judge_record = None
    except Exception:  # noqa: BLE001
        ending.forced, ending.error = ExitReason.HARNESS_ERROR, traceback.format_exc()[-4000:]
        return None, None
    simulation.reward_info = reward_info
    return reward_info, judge_record


def _value(x: Any) -> str | None:
    return getattr(x, "value", x)


def _exit_reason(
    p: _Participants, simulation: SimulationRun, reward: float | None, ending: _Ending, agent: RoleStats
) -> ExitReason:
    if ending.forced is not None and ending.forced in (*_NOT_SCORED, ExitReason.CONTEXT_WINDOW_EXCEEDED):
        return ending.forced
    messages = simulation.messages
    last_user = next((m.content for m in reversed(messages) if isinstance(m, UserMessage) and m.content), None)
    transferred = any(
        isinstance(m, AssistantMessage) and m.tool_calls and any(tc.name == "transfer_to_human_agents" for tc in m.tool_calls)
        for m in messages
    )
    return classify(
        OutcomeInputs(
            reward=reward,
            termination_reason=ending.forced.value if ending.forced else _value(simulation.termination_reason),
            last_user_text=last_user,
            agent_tool_calls=agent.tool_calls,
            agent_invalid_calls=agent.invalid_json_calls + agent.unknown_tool_calls,
            task_needs_agent_tool=task_needs_agent_tool(p.task),
            transferred=transferred,
        )
    )


def _fidelity(
    cell: Cell, p: _Participants, messages: list[dict[str, Any]], s: ConversationSettings, ending: _Ending, user_prompt: str
) -> FidelityFlags:
    flags = fidelity_flags(messages, scenario_of(p.task), user_prompt=user_prompt)
    if s.judge_fidelity and s.judge_client is not None and ending.forced not in _NOT_SCORED:
        try:
            flags.judge = judge_fidelity(
                s.judge_client, messages, str(p.task.user_scenario), cell.variant if cell.variant != "control" else ""
            )
        except LLMCallError as exc:
            flags.judge = {"error": str(exc)}
    return flags


def prepare_process(s: ConversationSettings) -> None:
    """Build in this process what every conversation of the run shares: its plugins and each domain's template.

    ``run_cell`` builds them on first use anyway; a worker pool calls this once before it forks its other workers,
    so they start with the templates in place (no build per worker) and share those pages with it."""
    load_plugins(s.plugins)
    for domain in sorted({d for d, _ in s.tasks}):
        new_environment(domain, freeze_gc=s.freeze_gc)


def run_cell(cell: Cell, s: ConversationSettings) -> tuple[ConversationRecord, dict[str, str]]:
    """Run and score one conversation. Returns ``(record, prompts)`` for the store."""
    started_at, t0 = _now(), time.perf_counter()
    seed = cell.seed(s.base_seed)
    p = _participants(cell, s)
    prompts = p.prompts
    simulation, ending = _orchestrate(cell, p, s, seed, started_at, t0)
    try:
        check_lent(p.environment)
    except SharedRecordChanged as exc:
        ending.forced, ending.error = ExitReason.HARNESS_ERROR, str(exc)
    reward_info, judge_record = _score(cell, p, simulation, s, ending)
    reward = reward_info.reward if reward_info is not None and ending.forced not in _NOT_SCORED else None
    agent, user = p.agent_stats(simulation), p.user.stats
    exit_reason = _exit_reason(p, simulation, reward, ending, agent)
    dumped = simulation.model_dump(mode="json")
    record = ConversationRecord(
        cell_key=cell.key,
        domain=cell.domain,
        task_id=cell.task_id,
        variant=cell.variant,
        trial=cell.trial,
        seed=seed,
        reward=reward,
        exit_reason=exit_reason,
        termination_reason=_value(simulation.termination_reason),
        reward_info=reward_info.model_dump(mode="json") if reward_info is not None else None,
        simulation=dumped,
        agent_prompt_sha256=sha256(prompts["agent"]),
        user_prompt_sha256=sha256(prompts["user"]),
        agent_model=s.agent_client.spec.model,
        user_model=s.customer_client(cell.variant).spec.model,
        agent_prompt_tokens=agent.prompt_tokens,
        agent_completion_tokens=agent.completion_tokens,
        user_prompt_tokens=user.prompt_tokens,
        user_completion_tokens=user.completion_tokens,
        cost_usd=agent.cost_usd + user.cost_usd,
        wall_seconds=round(time.perf_counter() - t0, 4),
        started_at=started_at,
        finished_at=_now(),
        stats=ConversationStats(
            agent=agent,
            user=user,
            respond_tool_uses=getattr(p.agent, "respond_tool_uses", 0),
            turns=sum(1 for m in simulation.messages if isinstance(m, UserMessage) and m.content),
            messages=len(simulation.messages),
            judge=judge_record,
        ),
        flags=_fidelity(cell, p, dumped.get("messages") or [], s, ending, prompts["user"]),
        error=ending.error,
        shard=s.shard,
        steering=s.steering.get(cell.variant),
        agent_impl=p.choice.impl,
        task_facts=task_facts(p.task, simulation.messages, p.environment),
    )
    return record, prompts
