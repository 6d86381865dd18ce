"""One real tau2 conversation with the embedded local model as agent and simulated customer.

This is the claim of the demo, checked: `moodbench run --agent-model local/NAME` starts llama.cpp
itself, the agent makes real tool calls, the customer's replies come from the model, and tau2's
evaluator scores the result. Few steps, small replies: a 0.5B model on 2 CPU cores.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from moodbench.serve.install import find_llama_server
from moodbench.serve.models import ModelResolutionError, resolve_model
from scripted import CLI

MODEL = "qwen2.5-0.5b"


@pytest.mark.localmodel
@pytest.mark.slow
@pytest.mark.timeout(1500)  # the run below may take up to 1200 s on a small CPU (pyproject default 300 s)
def test_local_model_conversation_is_stored_with_tool_calls_user_reply_and_reward(tmp_path: Path) -> None:
    if find_llama_server() is None:
        pytest.skip("llama-server not installed: run scripts/install-local-backend.sh")
    try:
        resolve_model(MODEL, allow_download=False, allow_pip=False)
    except ModelResolutionError:
        pytest.skip(f"model {MODEL} not in the cache: run scripts/install-local-backend.sh (fetches it)")
    out = tmp_path / "run"
    # tool_choice=required: the server's front forces a grammar-constrained call, so the agent's first
    # turn is a real tool call whatever this small model would do under auto.
    proc = subprocess.run(
        [
            *CLI,
            "run",
            "--agent-model",
            f"local/{MODEL}",
            "--domain",
            "mock",
            "--task-ids",
            "create_task_1",
            "--variants",
            "frustration",
            "--tool-choice",
            "required",
            "--max-steps",
            "8",
            "--max-tokens",
            "96",
            "--agent-args",
            '{"temperature": 0}',
            "--skip-preflight",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    con = sqlite3.connect(out / "results.sqlite")
    reward, reward_info, simulation, stats = con.execute(
        "SELECT reward, reward_info, simulation, stats FROM simulations"
    ).fetchone()
    sim, stats = json.loads(simulation), json.loads(stats)
    agent_calls = [tc for m in sim["messages"] if m["role"] == "assistant" for tc in (m.get("tool_calls") or [])]
    assert agent_calls and stats["agent"]["tool_calls"] >= 1
    user_replies = [m for m in sim["messages"] if m["role"] == "user" and m.get("content")]
    assert user_replies and all((m.get("raw_data") or {}).get("endpoint") for m in user_replies)  # from the model
    assert stats["user"]["llm_calls"] == len(user_replies) and stats["user"]["completion_tokens"] > 0
    assert reward in (0.0, 1.0) and json.loads(reward_info)["reward"] == reward
    assert (out / "llamacpp-qwen2.5-0.5b.log").exists()
