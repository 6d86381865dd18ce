"""Choosing a conversation's exit reason: the documented priority table, as one pure function."""

from __future__ import annotations

from dataclasses import dataclass

from tau2.user.base import OUT_OF_SCOPE as OUT_OF_SCOPE_TOKEN
from tau2.user.base import TRANSFER as TRANSFER_TOKEN

from moodbench.results import ExitReason, is_success


@dataclass(frozen=True)
class OutcomeInputs:
    reward: float | None
    termination_reason: str | None
    last_user_text: str | None
    agent_tool_calls: int
    agent_invalid_calls: int
    task_needs_agent_tool: bool
    transferred: bool = False


def classify(o: OutcomeInputs) -> ExitReason:
    """Pick the exit reason; the order of the checks is the README's priority order."""
    if is_success(o.reward):
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
