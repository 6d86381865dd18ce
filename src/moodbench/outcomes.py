"""Exit reasons: one label per simulation, from a documented taxonomy.

A reward of 0 hides very different stories (the endpoint died, the model never called a tool, the
customer hung up). The label says which one, in a fixed priority order, so counts per variant can
be compared. ``llm_error`` is not an outcome of the agent: it is excluded from reward averages and
re-run on resume.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class ExitReason(str, Enum):
    SUCCESS = "success"  # reward 1
    TASK_FAILED = "task_failed"  # the conversation ended normally, the evaluator said no
    AGENT_NO_TOOL_CALLS = "agent_no_tool_calls"  # failed, and the agent never called a tool although the task needs one
    INVALID_TOOL_CALL = "invalid_tool_call"  # failed, and the agent produced unparseable or unknown tool calls
    MAX_STEPS = "max_steps"  # ran out of steps
    TOO_MANY_ERRORS = "too_many_errors"  # too many tool errors
    USER_OUT_OF_SCOPE = "user_out_of_scope"  # failed; the customer ended with ###OUT-OF-SCOPE###
    USER_TRANSFER = "user_transfer"  # failed; the conversation ended in a transfer to a human
    AGENT_ERROR = "agent_error"  # the agent broke the protocol (e.g. empty replies after retries)
    USER_ERROR = "user_error"  # the simulated customer broke the protocol
    CONTEXT_WINDOW_EXCEEDED = "context_window_exceeded"
    LLM_ERROR = "llm_error"  # the endpoint failed after retries: excluded, re-run on resume
    HARNESS_ERROR = "harness_error"  # a bug in moodbench or tau2 (traceback stored); excluded, re-run on resume


EXCLUDED = {ExitReason.LLM_ERROR.value, ExitReason.HARNESS_ERROR.value}

DESCRIPTIONS: dict[str, str] = {
    "success": "reward 1 from tau2's evaluator",
    "task_failed": "the conversation ended normally and the evaluator said no",
    "agent_no_tool_calls": "failed; the agent never called a tool although the task's gold actions need one",
    "invalid_tool_call": "failed; the agent produced tool calls with unparseable arguments or unknown tool names",
    "max_steps": "the conversation ran out of steps (--max-steps)",
    "too_many_errors": "too many tool calls returned errors (tau2's max_errors)",
    "user_out_of_scope": "failed; the simulated customer ended with ###OUT-OF-SCOPE###",
    "user_transfer": "failed; the conversation ended in a transfer to a human agent",
    "agent_error": "the agent broke the protocol (e.g. empty replies after retries)",
    "user_error": "the simulated customer broke the protocol (e.g. empty replies after retries)",
    "context_window_exceeded": "the conversation outgrew the model's context window",
    "llm_error": "the endpoint failed after retries; excluded from averages and re-run on resume",
    "harness_error": "an unexpected error inside moodbench or tau2 (traceback stored); excluded and re-run on resume",
}


@dataclass
class OutcomeInputs:
    reward: float | None
    termination_reason: str | None
    last_user_text: str | None
    agent_tool_calls: int
    agent_invalid_calls: int
    task_needs_agent_tool: bool
    transferred: bool = False


def classify(o: OutcomeInputs) -> ExitReason:
    """Pick the exit reason; the order is the documented priority."""
    # Imported here, not at module level: summary.py and the report import this module for
    # EXCLUDED/DESCRIPTIONS only and must not pay tau2's import time (seconds).
    from moodbench._tau2 import OUT_OF_SCOPE_TOKEN, TRANSFER_TOKEN

    if o.reward is not None and o.reward >= 1.0 - 1e-9:
        return ExitReason.SUCCESS
    term = o.termination_reason or ""
    if term == "max_steps":
        return ExitReason.MAX_STEPS
    if term == "too_many_errors":
        return ExitReason.TOO_MANY_ERRORS
    if term == "agent_error":
        return ExitReason.AGENT_ERROR
    if term == "user_error":
        return ExitReason.USER_ERROR
    if o.agent_invalid_calls > 0:
        return ExitReason.INVALID_TOOL_CALL
    if o.agent_tool_calls == 0 and o.task_needs_agent_tool:
        return ExitReason.AGENT_NO_TOOL_CALLS
    text = o.last_user_text or ""
    if o.transferred or TRANSFER_TOKEN in text:
        return ExitReason.USER_TRANSFER
    if OUT_OF_SCOPE_TOKEN in text:
        return ExitReason.USER_OUT_OF_SCOPE
    return ExitReason.TASK_FAILED
