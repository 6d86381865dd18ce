"""Scoring edge cases that come from tau2's domains rather than from the models."""

from __future__ import annotations

import sqlite3
import subprocess

from scripted import CLI


def test_assertion_on_missing_entity_is_a_failed_task_not_a_harness_error(tmp_path) -> None:
    # create_task_1_with_env_assertions checks task_2's status; tau2's assertion function raises
    # ValueError("Task task_2 not found") when the agent never created it. That is a failed task.
    from scripted import start_scripted_server

    script = {
        "roles": {
            "agent": {
                "turns": [{"content": "unused"}, {"content": "Sorry, I cannot help with that."}],
                "after": {"content": "Bye."},
            },
            "user": {
                "turns": [{"content": "Please create a task called 'Important Meeting' for user_1."}],
                "after": {"content": "###STOP###"},
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
                "create_task_1_with_env_assertions",
                "--variants",
                "control",
                "--agent-model",
                "openai/scripted",
                "--agent-base-url",
                srv.base_url,
                "--skip-preflight",
                "--out",
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert proc.returncode == 0, proc.stderr
    exit_reason, reward, error = (
        sqlite3.connect(out / "results.sqlite").execute("SELECT exit_reason, reward, error FROM simulations").fetchone()
    )
    assert exit_reason == "agent_no_tool_calls" and reward == 0.0
    assert "Task task_2 not found" in error
