"""Ready-made scripts for the scripted server, shared by tests and benchmarks.

The mock-domain example is the smallest real experiment: ``create_task_1`` ends in success (the
agent makes the gold call) and ``update_task_1`` in task_failed (the same call is wrong there).
Under tau2 the agent's first model call is turn 1 (tau2 sends a fixed greeting first).
"""

from __future__ import annotations

import copy
from typing import Any

MOCK_EXAMPLE_AGENT: dict[str, Any] = {
    "turns": [
        {"content": "unused (tau2 sends a fixed greeting)"},
        {"tool_calls": [{"name": "create_task", "arguments": {"user_id": "user_1", "title": "Important Meeting"}}]},
        {"content": "Done."},
    ],
    "after": {"content": "Anything else?"},
}
MOCK_EXAMPLE_USER: dict[str, Any] = {
    "turns": [{"content": "Please create a task called 'Important Meeting' for user_1."}, {"content": "Thanks! ###STOP###"}],
    "after": {"content": "###STOP###"},
}
MOCK_EXAMPLE_OUTCOMES = {"create_task_1": "success", "update_task_1": "task_failed"}


def mock_example_script(**extra: Any) -> dict[str, Any]:
    """A fresh copy of the example script; ``extra`` adds top-level keys (faults, latency_ms, ...)."""
    return {
        "roles": {"agent": copy.deepcopy(MOCK_EXAMPLE_AGENT), "user": copy.deepcopy(MOCK_EXAMPLE_USER)},
        **copy.deepcopy(extra),
    }
