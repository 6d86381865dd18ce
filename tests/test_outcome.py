"""The exit-reason classifier is a priority table: each row of the README's table, and its order."""

from __future__ import annotations

import pytest

from moodbench.results import ExitReason
from moodbench.sim import OutcomeInputs, classify


def inputs(**kw: object) -> OutcomeInputs:
    base: dict[str, object] = {
        "reward": 0.0,
        "termination_reason": "user_stop",
        "last_user_text": "Thanks. ###STOP###",
        "agent_tool_calls": 2,
        "agent_invalid_calls": 0,
        "task_needs_agent_tool": True,
        "transferred": False,
    }
    return OutcomeInputs(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"reward": 1.0}, ExitReason.SUCCESS),
        ({"reward": 1.0 - 1e-12}, ExitReason.SUCCESS),  # a product of float parts a hair below 1 is still 1
        ({"reward": 1.0, "termination_reason": "max_steps"}, ExitReason.SUCCESS),  # success outranks everything
        ({"termination_reason": "max_steps"}, ExitReason.MAX_STEPS),
        ({"termination_reason": "too_many_errors"}, ExitReason.TOO_MANY_ERRORS),
        ({"termination_reason": "agent_error"}, ExitReason.AGENT_ERROR),
        ({"termination_reason": "user_error"}, ExitReason.USER_ERROR),
        ({"agent_invalid_calls": 1}, ExitReason.INVALID_TOOL_CALL),
        ({"agent_invalid_calls": 1, "agent_tool_calls": 0}, ExitReason.INVALID_TOOL_CALL),  # invalid outranks none
        ({"agent_tool_calls": 0}, ExitReason.AGENT_NO_TOOL_CALLS),
        ({"agent_tool_calls": 0, "task_needs_agent_tool": False}, ExitReason.TASK_FAILED),  # no call needed
        ({"transferred": True}, ExitReason.USER_TRANSFER),
        ({"last_user_text": "###TRANSFER###"}, ExitReason.USER_TRANSFER),
        ({"agent_tool_calls": 0, "transferred": True}, ExitReason.AGENT_NO_TOOL_CALLS),  # never called outranks transfer
        ({"last_user_text": "Not for you. ###OUT-OF-SCOPE###"}, ExitReason.USER_OUT_OF_SCOPE),
        ({"transferred": True, "last_user_text": "###OUT-OF-SCOPE###"}, ExitReason.USER_TRANSFER),
        ({}, ExitReason.TASK_FAILED),
        ({"reward": None, "termination_reason": None, "last_user_text": None}, ExitReason.TASK_FAILED),
    ],
)
def test_priority_table(changes: dict[str, object], expected: ExitReason) -> None:
    assert classify(inputs(**changes)) is expected


def test_only_endpoint_and_harness_failures_are_excluded_and_rerun() -> None:
    assert {r for r in ExitReason if r.excluded} == {ExitReason.LLM_ERROR, ExitReason.HARNESS_ERROR}
    assert all(r.description for r in ExitReason)  # every reason is documented
