"""What happened in one conversation: the one typed record moodbench stores and reads back.

The runner builds a :class:`ConversationRecord` per finished cell, the store derives its columns
from the record's fields, and summary, analysis, report, export and merge read records back. Every
rule about a record (which exit reasons are excluded from averages and re-run on resume, what
counts as a success) lives here, once.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from moodbench._util.bounds import INT64_MAX, INT64_MIN, BoundError, check_int, check_tree, clean_strings
from moodbench.results._facts import TaskFacts

if TYPE_CHECKING:  # the model layer imports litellm; records must load without it
    from moodbench.llm import Completion

#: tau2's own rule (``tau2.metrics.agent_metrics.is_successful``): a success is a reward within 1e-6 of 1
#: (rewards are products of 0/1 parts, so a float a hair off 1 is still 1).
SUCCESS_TOLERANCE = 1e-6

#: The customer's end-of-conversation tokens (tau2's ``STOP``, ``TRANSFER``, ``OUT_OF_SCOPE``);
#: ``tests/test_record.py`` checks them against tau2's own constants.
STOP_TOKENS = ("###STOP###", "###TRANSFER###", "###OUT-OF-SCOPE###")


def is_success(reward: float | None) -> bool:
    return reward is not None and abs(reward - 1.0) <= SUCCESS_TOLERANCE


class ExitReason(StrEnum):
    """One label per conversation, from a documented taxonomy (priority order in ``sim``'s classifier).

    A reward of 0 hides very different stories (the endpoint died, the model never called a tool,
    the customer hung up); the label says which one, so counts per variant can be compared.
    """

    SUCCESS = "success"
    TASK_FAILED = "task_failed"
    AGENT_NO_TOOL_CALLS = "agent_no_tool_calls"
    INVALID_TOOL_CALL = "invalid_tool_call"
    MAX_STEPS = "max_steps"
    TOO_MANY_ERRORS = "too_many_errors"
    USER_OUT_OF_SCOPE = "user_out_of_scope"
    USER_TRANSFER = "user_transfer"
    AGENT_ERROR = "agent_error"
    USER_ERROR = "user_error"
    CONTEXT_WINDOW_EXCEEDED = "context_window_exceeded"
    LLM_ERROR = "llm_error"
    HARNESS_ERROR = "harness_error"
    #: Only in imported tau2 files: tau2 recorded that the simulation never ran to an end (termination
    #: ``infrastructure_error``, or a sample skipped after an error). Such a record has no reward, so it is
    #: left out of every average (``ConversationRecord.excluded``) as tau2's metrics leave it out; it is not
    #: ``excluded`` here because nothing can re-run it.
    INFRASTRUCTURE_ERROR = "infrastructure_error"

    @property
    def excluded(self) -> bool:
        """Says nothing about the agent (the endpoint or the harness failed): left out of every
        average and effect, and re-run when the same command runs again."""
        return self in (ExitReason.LLM_ERROR, ExitReason.HARNESS_ERROR)

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self]

    @classmethod
    def excluded_values(cls) -> tuple[str, ...]:
        return tuple(r.value for r in cls if r.excluded)


_DESCRIPTIONS: dict[ExitReason, str] = {
    ExitReason.SUCCESS: "reward 1 from tau2's evaluator",
    ExitReason.TASK_FAILED: "the conversation ended normally and the evaluator said no",
    ExitReason.AGENT_NO_TOOL_CALLS: "failed; the agent never called a tool although the task's gold actions need one",
    ExitReason.INVALID_TOOL_CALL: "failed; the agent produced tool calls with unparseable arguments or unknown tool names",
    ExitReason.MAX_STEPS: "the conversation ran out of steps (--max-steps)",
    ExitReason.TOO_MANY_ERRORS: "too many tool calls returned errors (tau2's max_errors)",
    ExitReason.USER_OUT_OF_SCOPE: "failed; the simulated customer ended with ###OUT-OF-SCOPE###",
    ExitReason.USER_TRANSFER: "failed; the conversation ended in a transfer to a human agent",
    ExitReason.AGENT_ERROR: "the agent broke the protocol (e.g. empty replies after retries)",
    ExitReason.USER_ERROR: "the simulated customer broke the protocol (e.g. empty replies after retries)",
    ExitReason.CONTEXT_WINDOW_EXCEEDED: "the conversation outgrew the model's context window",
    ExitReason.LLM_ERROR: "the endpoint failed after retries; excluded from averages and re-run on resume",
    ExitReason.HARNESS_ERROR: "an unexpected error inside moodbench or tau2 (traceback stored); excluded and re-run on resume",
    ExitReason.INFRASTRUCTURE_ERROR: "imported: tau2 recorded that the simulation never ran to an end (infrastructure error or "
    "skipped sample); no reward, left out of averages and pass^k as tau2 does; cannot be re-run",
}
DESCRIPTIONS: dict[str, str] = {r.value: d for r, d in _DESCRIPTIONS.items()}


class RoleStats(BaseModel):
    """Model calls of one role (agent or customer) in one conversation."""

    model_config = ConfigDict(extra="ignore")

    llm_calls: int = 0
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    think_stripped: int = 0
    tool_calls: int = 0
    recovered_text_calls: int = 0
    invalid_json_calls: int = 0
    unknown_tool_calls: int = 0
    empty_replies: int = 0
    truncated_replies: int = 0

    def add(self, c: Completion, known_tools: set[str] | None = None) -> None:
        """Count one completion (``known_tools``: names that exist, to count invented ones)."""
        self.llm_calls += 1
        self.attempts += c.attempts
        self.prompt_tokens += c.prompt_tokens
        self.completion_tokens += c.completion_tokens
        self.cost_usd += c.cost_usd
        self.latency_s += c.latency_s
        self.think_stripped += int(c.think_stripped)
        self.tool_calls += len(c.tool_calls)
        self.recovered_text_calls += c.recovered_text_calls
        self.invalid_json_calls += sum(1 for t in c.tool_calls if not t.valid_json)
        if known_tools is not None:
            self.unknown_tool_calls += sum(1 for t in c.tool_calls if t.name not in known_tools)
        self.empty_replies += int(c.is_empty)
        self.truncated_replies += int(c.finish_reason == "length")


class ConversationStats(BaseModel):
    model_config = ConfigDict(extra="ignore")

    agent: RoleStats = Field(default_factory=RoleStats)
    user: RoleStats = Field(default_factory=RoleStats)
    respond_tool_uses: int = 0  # --tool-choice required: replies spoken through respond_to_user
    turns: int | None = None  # customer turns with text
    messages: int | None = None
    judge: dict[str, Any] | None = None  # the NL-assertion judge's prompt and answer, when asked


FLAG_NAMES = ("user_role_confusion", "user_echo", "user_premature_stop", "user_goal_not_stated", "user_leaks_instructions")


class FidelityFlags(BaseModel):
    """Rule-based simulator-fidelity flags (see ``moodbench.judges``) with their evidence."""

    model_config = ConfigDict(extra="ignore")

    user_role_confusion: bool = False
    user_echo: bool = False
    user_premature_stop: bool = False
    user_goal_not_stated: bool = False
    user_leaks_instructions: bool = False
    any: bool = False
    evidence: dict[str, Any] = Field(default_factory=dict)
    judge: dict[str, Any] | None = None  # --judge-fidelity: the judge's prompt, answer and verdict

    def raised(self) -> list[str]:
        return [f for f in FLAG_NAMES if getattr(self, f)]


class Steering(BaseModel):
    """What was added to the customer model's activations, when the variant is steered."""

    model_config = ConfigDict(extra="ignore")

    emotion: str
    vector_sha256: str
    scale: float
    layers: tuple[int, int] | None = None
    method: str | None = None
    vector: str | None = None  # the file it was loaded from (for humans; the sha256 identifies it)

    @property
    def layers_text(self) -> str:
        """The layer range as people write it (``8-23``), or ``?`` when a record predates it."""
        return f"{self.layers[0]}-{self.layers[1]}" if self.layers else "?"


class AgentImpl(BaseModel):
    """Which agent class played the agent (``--agent``): moodbench's own or a user's tau2 agent class."""

    model_config = ConfigDict(extra="ignore")

    name: str  # as the run named it: a tau2 registry name or package.module:Class
    cls: str  # module:QualName of the class
    version: str | None = None  # "distribution version" when an installed distribution provides it
    sha256: str | None = None  # of the class's module file: identifies unreleased code


class ConversationRecord(BaseModel):
    """One stored conversation: the matrix cell, its outcome, its transcript and its accounting.

    Field order is the store's column order. ``simulation`` is tau2's ``SimulationRun`` JSON (the
    transcript); it is the bulky part and is left out (``None``) when rows are read for summaries.
    """

    model_config = ConfigDict(extra="ignore", validate_assignment=False)

    id: int | None = None  # the store's row id (set when read back)
    cell_key: str
    domain: str
    task_id: str
    variant: str
    trial: int
    seed: int | None = None
    attempt: int = 1
    reward: float | None = None
    exit_reason: ExitReason
    termination_reason: str | None = None
    reward_info: dict[str, Any] | None = None
    simulation: dict[str, Any] | None = None
    agent_prompt_sha256: str | None = None
    user_prompt_sha256: str | None = None
    agent_model: str | None = None
    user_model: str | None = None
    agent_prompt_tokens: int = 0
    agent_completion_tokens: int = 0
    user_prompt_tokens: int = 0
    user_completion_tokens: int = 0
    cost_usd: float = 0.0
    wall_seconds: float | None = None
    started_at: str | None = None
    finished_at: str | None = None
    stats: ConversationStats = Field(default_factory=ConversationStats)
    flags: FidelityFlags = Field(default_factory=FidelityFlags)
    error: str | None = None
    shard: str | None = None
    steering: Steering | None = None
    agent_impl: AgentImpl | None = None  # None: recorded before --agent existed (moodbench's own agent)
    task_facts: TaskFacts | None = None  # gold actions, scenario facts, write calls (results._facts)

    @model_validator(mode="after")
    def _finite_numbers(self) -> ConversationRecord:
        """A NaN or infinite reward (a broken evaluator, a crafted tau2 file) says nothing about the agent
        and would poison every mean: the conversation is excluded (``harness_error``, re-run on resume)
        with the reason stated. Non-finite costs and durations are dropped the same way. Runs on every
        record built or read back, so analysis and report never meet such a number."""
        if self.reward is not None and not math.isfinite(self.reward):
            why = f"the evaluator's reward was {self.reward} (not a finite number); excluded from every average"
            self.reward = None
            self.exit_reason = ExitReason.HARNESS_ERROR
            self.error = f"{why}; {self.error}" if self.error else why
        if not math.isfinite(self.cost_usd):
            self.cost_usd = 0.0
        if self.wall_seconds is not None and not math.isfinite(self.wall_seconds):
            self.wall_seconds = None
        return self

    # -- what a record means ----------------------------------------------------------------
    @property
    def excluded(self) -> bool:
        """Left out of every average and effect: the endpoint or harness failed, or nothing was scored."""
        return self.exit_reason.excluded or self.reward is None

    @property
    def success(self) -> bool:
        return is_success(self.reward)

    @property
    def flagged(self) -> bool:
        return self.flags.any

    @property
    def pair_key(self) -> tuple[str, str, int]:
        """The same (domain, task, trial) under two variants is one matched pair (same seed)."""
        return (self.domain, self.task_id, self.trial)

    @property
    def task_key(self) -> tuple[str, str]:
        return (self.domain, self.task_id)

    @property
    def tokens(self) -> int:
        return self.agent_prompt_tokens + self.agent_completion_tokens + self.user_prompt_tokens + self.user_completion_tokens

    # -- the transcript ---------------------------------------------------------------------
    @cached_property
    def messages(self) -> list[dict[str, Any]]:
        return list((self.simulation or {}).get("messages") or [])

    @cached_property
    def user_texts(self) -> list[str]:
        """What the simulated customer said, stop tokens removed (empty turns dropped)."""
        out = []
        for m in self.messages:
            if m.get("role") == "user" and isinstance(m.get("content"), str):
                text = strip_stop_tokens(m["content"])
                if text:
                    out.append(text)
        return out

    @cached_property
    def agent_texts(self) -> list[str]:
        return [
            m["content"].strip()
            for m in self.messages
            if m.get("role") == "assistant" and isinstance(m.get("content"), str) and m["content"].strip()
        ]

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def crashed(
        cls,
        *,
        cell_key: str,
        domain: str,
        task_id: str,
        variant: str,
        trial: int,
        error: str,
        finished_at: str,
        shard: str | None = None,
    ) -> ConversationRecord:
        """A ``harness_error`` record for a conversation that raised past the simulation's own
        handlers, so the failure shows in the summary (and is re-run on resume) instead of
        vanishing into a log."""
        return cls(
            cell_key=cell_key,
            domain=domain,
            task_id=task_id,
            variant=variant,
            trial=trial,
            exit_reason=ExitReason.HARNESS_ERROR,
            wall_seconds=0.0,
            error=error,
            finished_at=finished_at,
            shard=shard,
        )


# Integer fields a store keeps as SQLite INTEGERs (64-bit); checked before an INSERT could overflow.
_INT_FIELDS = (
    "trial",
    "seed",
    "attempt",
    "agent_prompt_tokens",
    "agent_completion_tokens",
    "user_prompt_tokens",
    "user_completion_tokens",
)
# JSON fields nest no deeper than this (a tau2 transcript nests about 8 levels; pydantic gives up at 255).
MAX_RECORD_DEPTH = 128


def storable(record: ConversationRecord) -> ConversationRecord:
    """``record`` made safe to store, or a ``harness_error`` record saying why it could not be.

    The last check before the store: lone surrogates in any text are replaced (they cannot be written
    as UTF-8 and would make every report of the run fail), and a value the store cannot hold (an
    integer past 64 bits, JSON nested past :data:`MAX_RECORD_DEPTH`) ends this conversation as
    ``harness_error`` with the reason, instead of ending the run with a traceback.
    """
    try:
        for name in _INT_FIELDS:
            check_int(getattr(record, name), name, low=INT64_MIN, high=INT64_MAX)
        for name in ("reward_info", "simulation"):  # what tau2 and the models filled in (the rest is ours)
            check_tree(getattr(record, name), name, max_depth=MAX_RECORD_DEPTH, max_nodes=None)
        try:
            record.model_dump_json()  # one pass in pydantic's core: refuses lone surrogates (and anything unstorable)
        except ValueError as exc:
            if "surrogate" not in str(exc):
                raise
            record = ConversationRecord.model_validate(clean_strings(record.model_dump(mode="json")))
            record.model_dump_json()
    except (BoundError, ValueError, TypeError, RecursionError) as exc:
        return ConversationRecord.crashed(
            cell_key=record.cell_key,
            domain=record.domain,
            task_id=record.task_id,
            variant=record.variant,
            trial=record.trial if INT64_MIN <= record.trial <= INT64_MAX else 0,
            error=f"the conversation could not be stored as it came back: {str(exc)[:500]}",
            finished_at=record.finished_at or datetime.now(UTC).isoformat(timespec="seconds"),
            shard=record.shard,
        )
    return record


def strip_stop_tokens(text: str) -> str:
    for token in STOP_TOKENS:
        text = text.replace(token, "")
    return text.strip()
