"""Build tau2 Results files the way ``tau2 run`` writes them (tau2's own pydantic models), for import tests.

Each conversation: tau2's greeting, the customer's request (with an optional emotional opening), the agent's
tool call and its result, the agent's confirmation and the customer's closing line. ``reward`` decides
tau2's stored reward; ``skipped`` marks a sample tau2 skipped after an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moodbench.sim import load_domain_tasks


@dataclass(frozen=True)
class Conv:
    task: str
    trial: int
    reward: float | None
    opening: str = ""
    closing: str = "Thank you, that is all. ###STOP###"
    first: str = "Please create a new task called 'Important Meeting' for user_1."
    skipped: bool = False


def tasks(ids: list[str]) -> list[Any]:
    """Copies of the mock domain's create_task_1 under new ids (a Results file carries its tasks)."""
    template = load_domain_tasks("mock")[0]
    return [template.model_copy(update={"id": i}, deep=True) for i in ids]


def _messages(c: Conv) -> list[Any]:
    from tau2.data_model.message import AssistantMessage, ToolCall, ToolMessage, UserMessage

    call = ToolCall(
        id=f"call-{c.task}-{c.trial}",
        name="create_task",
        arguments={"user_id": "user_1", "title": "Important Meeting"},
        requestor="assistant",
    )
    return [
        AssistantMessage(role="assistant", content="Hi! How can I help you today?"),
        UserMessage(role="user", content=(c.opening + " " + c.first).strip()),
        AssistantMessage(role="assistant", content=None, tool_calls=[call]),
        ToolMessage(
            id=call.id,
            role="tool",
            content=json.dumps({"task_id": "task_9", "title": "Important Meeting"}),
            requestor="assistant",
        ),
        AssistantMessage(role="assistant", content="Done, the task has been created."),
        UserMessage(role="user", content=c.closing),
    ]


def results_json(
    convs: list[Conv],
    task_ids: list[str],
    *,
    agent: str = "openai/agent-x",
    user: str = "openai/user-y",
    num_trials: int = 3,
    policy: str = "Mock policy: help users manage tasks.",
) -> str:
    from tau2.data_model.simulation import AgentInfo, Info, Results, RewardInfo, SimulationRun, TerminationReason, UserInfo
    from tau2.environment.environment import EnvironmentInfo

    sims = []
    for c in convs:
        sims.append(
            SimulationRun(
                id=f"{c.task}-{c.trial}",
                task_id=c.task,
                start_time="2026-01-01T00:00:00",
                end_time="2026-01-01T00:00:05",
                duration=5.0,
                termination_reason=TerminationReason.USER_STOP,
                reward_info=None if c.reward is None else RewardInfo(reward=c.reward, reward_basis=["DB"]),
                messages=_messages(c),
                trial=c.trial,
                seed=300 + c.trial,
                skipped=c.skipped,
                agent_cost=0.001,
                user_cost=0.0005,
            )
        )
    info = Info(
        git_commit="abc123",
        num_trials=num_trials,
        max_steps=100,
        max_errors=10,
        user_info=UserInfo(implementation="user_simulator", llm=user, global_simulation_guidelines="Simulate a customer."),
        agent_info=AgentInfo(implementation="llm_agent", llm=agent),
        environment_info=EnvironmentInfo(domain_name="mock", policy=policy),
        seed=300,
    )
    return Results(info=info, tasks=tasks(task_ids), simulations=sims).model_dump_json(indent=1)


def write(path: Path, convs: list[Conv], task_ids: list[str], **kw: Any) -> Path:
    path.write_text(results_json(convs, task_ids, **kw))
    return path
