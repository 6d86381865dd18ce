"""Simulator-fidelity flags on hand-built conversations whose problems are known by construction."""

from __future__ import annotations

import json
import subprocess

import pytest

from moodbench.judges import fidelity_flags
from moodbench.results import FidelityFlags
from moodbench.sim import scenario_of
from moodbench.sim._tau2 import AssistantMessage, SimulationRun, Task, ToolCall, ToolMessage, UserMessage, load_tasks
from scripted import CLI

RETAIL = {t.id: t for t in load_tasks("retail")}
MOCK = {t.id: t for t in load_tasks("mock")}
GREETING = "Hi! How can I help you today?"


def sim(*turns: tuple[str, str]) -> SimulationRun:
    msgs = []
    for k, (role, text) in enumerate(turns):
        if role == "agent":
            msgs.append(AssistantMessage(role="assistant", content=text, turn_idx=k))
        elif role == "user":
            msgs.append(UserMessage(role="user", content=text, turn_idx=k))
        elif role == "call":
            msgs.append(
                AssistantMessage(
                    role="assistant",
                    content=None,
                    turn_idx=k,
                    tool_calls=[ToolCall(id=f"c{k}", name=text, arguments={}, requestor="assistant")],
                )
            )
            msgs.append(ToolMessage(id=f"c{k}", role="tool", content="{}", requestor="assistant"))
    return SimulationRun(
        id="x", task_id="0", start_time="t", end_time="t", duration=1.0, termination_reason="user_stop", messages=msgs
    )


def flags_of(conversation: SimulationRun, task: Task, user_prompt: str | None = None) -> FidelityFlags:
    """The rules on the conversation's stored JSON, as a run applies them."""
    return fidelity_flags(conversation.model_dump(mode="json")["messages"], scenario_of(task), user_prompt=user_prompt)


HEALTHY = sim(
    ("agent", GREETING),
    (
        "user",
        "Hi, I received my order #W2378156 and want to exchange the mechanical keyboard for one with clicky switches, and the smart thermostat for one compatible with Google Home.",
    ),
    ("agent", "Sure. Could you give me your name and zip code?"),
    ("user", "Yusuf Rossi, 19122."),
    ("call", "exchange_delivered_order_items"),
    ("agent", "Done, the exchange is placed."),
    ("user", "Great, thanks. ###STOP###"),
)
ROLE_CONFUSED = sim(
    ("agent", GREETING),
    ("user", "Hello! How can I assist you today?"),
    ("agent", "I'd like to exchange an item."),
    ("user", "Sure, could you please provide your user id so I can look it up?"),
)
ECHO = sim(
    ("agent", GREETING),
    ("user", "I want to exchange the keyboard and thermostat from order #W2378156 for clicky switches and Google Home."),
    ("agent", "Could you please confirm your name and zip code so that I can find your account?"),
    ("user", "Could you please confirm your name and zip code so that I can find your account?"),
)
PREMATURE = sim(("agent", GREETING), ("user", "###STOP###"))


@pytest.mark.parametrize(
    "conversation, expected",
    [
        (HEALTHY, set()),
        (ROLE_CONFUSED, {"user_role_confusion", "user_goal_not_stated"}),
        (ECHO, {"user_echo", "user_role_confusion"}),  # parroting an agent question is both
        (PREMATURE, {"user_premature_stop", "user_goal_not_stated"}),
    ],
    ids=["healthy", "role-confusion", "echo", "premature-stop"],
)
def test_flags_match_hand_labels(conversation: SimulationRun, expected: set[str]) -> None:
    task = RETAIL["0"]
    flags = flags_of(conversation, task, user_prompt="irrelevant")
    assert set(flags.raised()) == expected
    assert flags.any is bool(expected)


def test_leaked_instructions_are_flagged() -> None:
    task = RETAIL["0"]
    prompt = "You are Yusuf Rossi in zip code 19122. You do not remember your email address and you want to exchange items."
    leaking = sim(
        ("agent", GREETING),
        (
            "user",
            "You are Yusuf Rossi in zip code 19122. You do not remember your email address and you want to exchange the keyboard of order #W2378156 for clicky switches and Google Home thermostat.",
        ),
    )
    assert flags_of(leaking, task, user_prompt=prompt).user_leaks_instructions is True
    assert flags_of(HEALTHY, task, user_prompt=prompt).user_leaks_instructions is False


def test_stop_after_agent_wrote_is_not_premature() -> None:
    quick = sim(("agent", GREETING), ("call", "exchange_delivered_order_items"), ("user", "Thanks ###STOP###"))
    assert flags_of(quick, RETAIL["0"]).user_premature_stop is False


def test_stop_on_read_only_task_is_not_premature() -> None:
    # create_task_1_nl_eval has no gold actions: hanging up early cannot skip a needed write
    assert flags_of(PREMATURE, MOCK["create_task_1_nl_eval"]).user_premature_stop is False


def test_echoing_customer_is_flagged_in_summary(tmp_path) -> None:
    from scripted import start_scripted_server

    script = {
        "roles": {
            "agent": {
                "turns": [
                    {"content": "unused"},
                    {"content": "Could you please tell me the title of the task you would like me to create today?"},
                ],
                "after": {"content": "Could you please tell me the title of the task you would like me to create today?"},
            },
            "user": {
                "turns": [{"content": "Create a task called 'Important Meeting' for user_1 please."}],
                "after": {"echo_last": True},
            },
        }
    }
    with start_scripted_server(script, tmp_path) as srv:
        out = tmp_path / "run"
        proc = subprocess.run(
            [
                *CLI,
                "run",
                "--domain",
                "mock",
                "--task-ids",
                "create_task_1",
                "--variants",
                "control",
                "--agent-model",
                "openai/scripted",
                "--agent-base-url",
                srv.base_url,
                "--max-steps",
                "8",
                "--skip-preflight",
                "--out",
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    fid = summary["variants"]["control"]["fidelity"]
    assert fid["flagged"] == 1 and fid["user_echo"] == 1


def test_fidelity_judge_verdict_is_stored(tmp_path) -> None:
    from scripted import start_scripted_server

    verdict = {"stayed_in_role": True, "pursued_goal": True, "emotion_intensity": 2, "reason": "clearly irritated"}
    script = {
        "roles": {
            "agent": {
                "turns": [
                    {"content": "unused"},
                    {"tool_calls": [{"name": "create_task", "arguments": {"user_id": "user_1", "title": "Important Meeting"}}]},
                ],
                "after": {"content": "Done."},
            },
            "user": {
                "turns": [{"content": "This is ridiculous, just create 'Important Meeting' for user_1!"}],
                "after": {"content": "Fine. ###STOP###"},
            },
            "judge": {"turns": [{"content": "// verdict\n" + json.dumps(verdict)}], "after": "repeat_last"},
        }
    }
    with start_scripted_server(script, tmp_path) as srv:
        out = tmp_path / "run"
        proc = subprocess.run(
            [
                *CLI,
                "run",
                "--domain",
                "mock",
                "--task-ids",
                "create_task_1",
                "--variants",
                "frustration",
                "--agent-model",
                "openai/scripted",
                "--agent-base-url",
                srv.base_url,
                "--judge-fidelity",
                "--skip-preflight",
                "--out",
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        judged = srv.requests(role="judge")
    assert len(judged) == 1
    import sqlite3

    flags = json.loads(sqlite3.connect(out / "results.sqlite").execute("SELECT flags FROM simulations").fetchone()[0])
    j = flags["judge"]
    assert j["parsed"] is True and j["emotion_intensity"] == 2 and j["stayed_in_role"] is True
    assert "frustration" in j["prompt"] and "This is ridiculous" in j["prompt"]
    assert j["prompt"] == judged[0]["body"]["messages"][0]["content"]
