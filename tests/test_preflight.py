"""Preflight of ``moodbench run``: a setup that can only produce zeros is refused before the first conversation.

Scripted servers reproduce the failures (never calls tools under auto, writes calls as text, serves
another model, is down); the run must stop with exit code 3, store no conversation, and say why in
manifest.json and events.jsonl. A script whose agent does call tools passes and the run goes on.
CLI subprocesses check exit codes and messages; the rest calls the same functions in-process, over
real HTTP with a real store.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from scripted import CLI, start_scripted_server
from test_probe import agent_script, never_under_auto, text_calls

# The working mock example (see the project notes): the agent's first model call is turn 1.
EXAMPLE = {
    "roles": {
        "agent": {
            "turns": [
                {"content": "unused"},
                {"tool_calls": [{"name": "create_task", "arguments": {"user_id": "user_1", "title": "Important Meeting"}}]},
                {"content": "Done."},
            ],
            "after": {"content": "Anything else?"},
        },
        "user": {
            "turns": [
                {"content": "Please create a task called 'Important Meeting' for user_1."},
                {"content": "Thanks! ###STOP###"},
            ],
            "after": {"content": "###STOP###"},
        },
    }
}
USER_TURNS = EXAMPLE["roles"]["user"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ,
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        COLUMNS="200",
    )
    cmd = [
        *CLI,
        "run",
        "--domain",
        "mock",
        "--task-ids",
        "create_task_1",
        "--variants",
        "control",
        "--trials",
        "1",
        "--max-retries",
        "0",
        "--out",
        str(out),
        *args,
    ]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300, env=env, cwd=tempfile.gettempdir())


def _rows(out: Path) -> int:
    with sqlite3.connect(out / "results.sqlite") as conn:
        return conn.execute("SELECT COUNT(*) FROM simulations").fetchone()[0]


def _events(out: Path, name: str) -> list[dict[str, Any]]:
    lines = (out / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == name]


def test_run_refuses_agent_that_never_calls_under_auto(tmp_path: Path) -> None:
    script = agent_script("mock", never_under_auto)
    script["roles"]["user"] = USER_TURNS
    out = tmp_path / "run"
    with start_scripted_server(script, tmp_path) as srv:
        proc = _run(out, "--agent-model", "openai/scripted", "--agent-base-url", srv.base_url)
        requests = srv.requests()
    err = " ".join(proc.stderr.split())
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "preflight refused the setup" in err and "called no tool in 2 probe case(s)" in err
    assert "advice: run with --tool-choice required" in err
    # nothing ran: no customer request, no stored conversation; 3 probe cases under auto, then 3 under required
    assert {r["role"] for r in requests} == {"agent"}
    assert sorted(r["body"]["tool_choice"] for r in requests) == ["auto"] * 3 + ["required"] * 3
    assert _rows(out) == 0
    pre = json.loads((out / "manifest.json").read_text())["preflight"]
    assert pre["passed"] is False and pre["probe"]["verdict"] == "never-calls-tools-under-auto"
    assert pre["probe"]["modes"]["auto"]["missed_calls"] == 2 and pre["probe"]["modes"]["required"]["right_tool"] == 2
    assert pre["endpoints"][0]["role"] == "agent,user,judge" and pre["endpoints"][0]["served"] == ["scripted"]
    (event,) = _events(out, "preflight")
    assert event["passed"] is False and "--tool-choice required" in " ".join(event["advice"])


def test_run_with_tool_calling_agent_passes_preflight(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with start_scripted_server(EXAMPLE, tmp_path) as srv:
        proc = _run(out, "--agent-model", "openai/scripted", "--agent-base-url", srv.base_url)
        agent_requests = srv.requests("agent")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "preflight: 1 endpoint(s) ok; the agent called a tool in 2/2 probe case(s) under tool_choice=auto" in " ".join(
        proc.stderr.split()
    )
    assert _rows(out) == 1
    with sqlite3.connect(out / "results.sqlite") as conn:
        assert conn.execute("SELECT exit_reason FROM simulations").fetchone()[0] == "success"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["preflight"]["passed"] is True and manifest["preflight"]["probe"]["tool_cases_called"] == 2
    assert manifest["exit_code"] == 0
    probes = [
        r
        for r in agent_requests
        if r["body"]["messages"][-1]["content"]
        in ("Please create a task called 'Buy milk' for user_1.", "Please mark task task_1 as completed.", "Hi there!")
    ]
    assert len(probes) == 3
    assert _events(out, "preflight")[0]["passed"] is True


def test_run_refuses_dead_user_endpoint(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{_free_port()}/v1"
    out = tmp_path / "run"
    with start_scripted_server(EXAMPLE, tmp_path) as srv:
        proc = _run(
            out,
            "--agent-model",
            "openai/scripted",
            "--agent-base-url",
            srv.base_url,
            "--user-model",
            "openai/scripted",
            "--user-base-url",
            dead,
        )
        requests = srv.requests()
    err = " ".join(proc.stderr.split())
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert f"{dead} (user: openai/scripted) does not answer" in err
    assert requests == [] and _rows(out) == 0  # refused before any chat request
    pre = json.loads((out / "manifest.json").read_text())["preflight"]
    assert pre["passed"] is False and pre["probe"] is None
    assert [e["ok"] for e in pre["endpoints"]] == [True, False]


# --------------------------------------------------------------------------- in-process


@pytest.fixture(scope="module")
def pf():
    # run_preflight is the runner's own step (private to moodbench.experiment), called here in-process
    from moodbench.experiment import _preflight  # litellm import: once per worker

    return _preflight


def _config(tmp_path: Path, **flags: Any):
    from moodbench.experiment import build_config

    base = {"domains": "mock", "task_ids": "create_task_1", "variants": "control", "out": tmp_path / "run", "max_retries": 0}
    return build_config({}, {**base, **flags})


def _preflight(pf, config):
    from moodbench.experiment import model_specs
    from moodbench.results import EventLog, Store

    config.out.mkdir(parents=True, exist_ok=True)
    store, events = Store(config.out / "results.sqlite"), EventLog(config.out / "events.jsonl")
    try:
        try:
            return pf.run_preflight(config, model_specs(config)[0], store, events), store.get_meta("preflight")
        except pf.PreflightError as exc:
            return exc, store.get_meta("preflight")
    finally:
        events.close()
        store.close()


def test_text_calls_refused_without_recovery_and_accepted_with_it(pf, tmp_path: Path) -> None:
    with start_scripted_server(agent_script("mock", text_calls), tmp_path) as srv:
        off, off_meta = _preflight(pf, _config(tmp_path / "off", agent_model="openai/scripted", agent_base_url=srv.base_url))
        on, on_meta = _preflight(
            pf, _config(tmp_path / "on", agent_model="openai/scripted", agent_base_url=srv.base_url, recover_text_tool_calls=True)
        )
    assert isinstance(off, pf.PreflightError)
    assert "wrote its tool calls as text in 2/2 probe case(s) and text recovery is off" in str(off)
    assert any("--recover-text-tool-calls" in a for a in off.advice)
    assert off_meta["probe"]["verdict"] == "needs-text-recovery"
    assert not isinstance(on, Exception) and on["passed"] is True
    assert on_meta["probe"]["tool_cases_called"] == 2 and on_meta["probe"]["modes"]["auto"]["tool_cases_text"] == 2
    assert list(on_meta["probe"]["modes"]) == ["auto"]  # passing needs one mode only


def test_wrong_model_name_is_refused(pf, tmp_path: Path) -> None:
    with start_scripted_server({"models": ["Qwen/Qwen2.5-7B-Instruct"]}, tmp_path) as srv:
        err, meta = _preflight(pf, _config(tmp_path, agent_model="hosted_vllm/Qwen/Qwen2.5-7B", agent_base_url=srv.base_url))
        assert srv.requests() == []
    assert isinstance(err, pf.PreflightError)
    assert "serves 'Qwen/Qwen2.5-7B-Instruct', not 'Qwen/Qwen2.5-7B'" in str(err)
    assert meta["passed"] is False and meta["endpoints"][0]["served"] == ["Qwen/Qwen2.5-7B-Instruct"]


def test_required_policy_probes_with_respond_tool(pf, tmp_path: Path) -> None:
    # under --tool-choice required the agent is probed with respond_to_user, as in the run
    with start_scripted_server(agent_script("mock", never_under_auto), tmp_path) as srv:
        ok, meta = _preflight(
            pf, _config(tmp_path, agent_model="openai/scripted", agent_base_url=srv.base_url, tool_choice="required")
        )
        bodies = srv.bodies("agent")
    assert not isinstance(ok, Exception) and ok["passed"] is True
    assert meta["probe"]["tool_choice"] == "required" and meta["probe"]["modes"]["required"]["unwanted_calls"] == 0
    assert len(bodies) == 3 and all(b["tool_choice"] == "required" for b in bodies)
    assert all("respond_to_user" in {t["function"]["name"] for t in b["tools"]} for b in bodies)


def test_skip_preflight_runs_and_says_so_in_the_manifest(tmp_path: Path) -> None:
    from moodbench import run

    script = agent_script("mock", never_under_auto)
    script["roles"]["user"] = USER_TURNS
    with start_scripted_server(script, tmp_path) as srv:
        config = _config(tmp_path, agent_model="openai/scripted", agent_base_url=srv.base_url, skip_preflight=True)
        result = run(config)
        roles = {r["role"] for r in srv.requests()}
    assert result.exit_code == 0 and result.finished == 1 and roles == {"agent", "user"}
    assert json.loads((config.out / "manifest.json").read_text())["preflight"] == {"skipped": True}
    assert _events(config.out, "preflight") == []
