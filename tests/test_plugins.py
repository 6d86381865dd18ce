"""Your agent, your domain: ``--agent`` and ``--plugin`` through the real CLI against the scripted server.

The examples that ship in ``examples/`` are what runs: the ``helpdesk`` domain (a plugin module that
registers a tau2 domain and task set) and the ``calm_agent`` agents (tau2 agent classes, one calling its
model itself through tau2's ``generate``, one through moodbench's model layer). Bad plugins are real
modules written to a temporary folder, each refused with exit 2 and a message that names it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pytest

from scripted import REPO_ROOT, SRC_DIR, cli_env, start_scripted_server

EXAMPLES = REPO_ROOT / "examples"
AGENTS, DOMAINS = EXAMPLES / "agents", EXAMPLES / "domains"
DEESCALATE_MARK = "acknowledge the feeling in one short sentence"  # in calm_agent's instruction, nowhere else

# The agent unlocks e1 and says so: locked_out_1 succeeds (its gold action), broken_screen_1 fails (it wanted a ticket).
HELPDESK_SCRIPT: dict[str, Any] = {
    "roles": {
        "agent": {
            "turns": [
                {"content": "unused (tau2 sends a fixed greeting)"},
                {"tool_calls": [{"name": "reset_password", "arguments": {"employee_id": "e1"}}]},
                {"content": "Your account is unlocked."},
            ],
            "after": {"content": "Anything else?"},
        },
        "user": {
            "turns": [{"content": "I'm locked out of my account, my id is e1."}, {"content": "Thanks! ###STOP###"}],
            "after": {"content": "###STOP###"},
        },
    }
}
OUTCOMES = {"locked_out_1": "success", "broken_screen_1": "task_failed"}


def moodbench(*args: Any, path: list[Path] = (), timeout: float = 300) -> subprocess.CompletedProcess[str]:  # type: ignore[assignment]
    """The real CLI with ``path`` (plugin folders) on PYTHONPATH after this checkout's sources."""
    env = cli_env({"PYTHONPATH": os.pathsep.join(str(p) for p in (SRC_DIR, *path))})
    return subprocess.run(
        [sys.executable, "-m", "moodbench.cli", *[str(a) for a in args]],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=tempfile.gettempdir(),
    )


def words(text: str) -> str:
    return " ".join(text.split())


def explain(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-5000:]}"


def rows(run_dir: Path) -> list[dict[str, Any]]:
    con = sqlite3.connect(run_dir / "results.sqlite")
    con.row_factory = sqlite3.Row
    try:
        out = [dict(r) for r in con.execute("SELECT * FROM simulations ORDER BY id")]
    finally:
        con.close()
    for r in out:
        for col in ("agent_impl", "stats", "simulation"):
            r[col] = json.loads(r[col]) if r.get(col) else None
    return out


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def agent_systems(srv: Any) -> list[str]:
    return [m["content"] for b in srv.bodies("agent") for m in b["messages"] if m["role"] == "system"]


def test_example_agent_by_registered_name_on_the_example_domain(tmp_path: Path) -> None:
    """A plugin's domain and a plugin's agent (by its registry name): run, record, resume, summary, export, import."""
    out = tmp_path / "run"
    with start_scripted_server(HELPDESK_SCRIPT, tmp_path) as srv:
        args = [
            "run",
            "--plugin",
            "helpdesk",
            "--plugin",
            "calm_agent",
            "--agent",
            "deescalating_agent",
            "--domain",
            "helpdesk",
            "--variants",
            "control,frustration",
            "--agent-model",
            "openai/scripted",
            "--agent-base-url",
            srv.base_url,
            "--skip-preflight",
            "--out",
            out,
        ]
        first = moodbench(*args, path=[AGENTS, DOMAINS])
        assert first.returncode == 0, explain(first)
        systems = agent_systems(srv)
        assert systems and all(DEESCALATE_MARK in s for s in systems), "the user's agent class did not make the agent calls"
        assert all("IT helpdesk" in s for s in systems), "the plugin domain's policy did not reach the agent"
        customers = [m["content"] for b in srv.bodies("user") for m in b["messages"] if m["role"] == "system"]
        assert any("locked out of your work account" in c for c in customers)

        got = rows(out)
        assert len(got) == 4
        assert {(r["task_id"], r["exit_reason"]) for r in got} == set(OUTCOMES.items())
        for r in got:
            assert r["agent_impl"] == {
                "name": "deescalating_agent",
                "cls": "calm_agent:DeescalatingAgent",
                "version": "calm_agent 0.1.0",
                "sha256": sha256_file(AGENTS / "calm_agent.py"),
            }
            assert r["stats"]["agent"]["tool_calls"] == 1 and r["stats"]["agent"]["llm_calls"] == 2  # read from its messages

        again = moodbench(*args, path=[AGENTS, DOMAINS])  # resume: nothing left to run
        assert again.returncode == 0 and "0 conversation(s) to run, 4 already stored" in words(again.stderr), explain(again)
        summary = moodbench("summary", out, "--json", path=[AGENTS, DOMAINS])
        assert summary.returncode == 0 and json.loads(summary.stdout)["variants"]["control"]["done"] == 2, explain(summary)
    report = moodbench("report", out, "--json")  # reading a run needs no plugin
    assert report.returncode == 0 and json.loads(report.stdout)["baseline"] == "control", explain(report)

    # export needs the plugin that registers the run's domain, and says so
    exported = tmp_path / "helpdesk.json"
    missing = moodbench("export", out, "--format", "tau2", "--out", exported)
    assert missing.returncode == 2 and "--plugin" in words(missing.stderr), explain(missing)
    done = moodbench(
        "export", out, "--plugin", "helpdesk", "--format", "tau2", "--variant", "frustration", "--out", exported, path=[DOMAINS]
    )
    assert done.returncode == 0, explain(done)
    results = json.loads(exported.read_text())
    assert results["info"]["agent_info"]["implementation"] == "deescalating_agent"
    assert {t["id"] for t in results["tasks"]} == set(OUTCOMES)
    # and a tau2 file of a plugin domain imports (the tasks travel inside the file)
    imported = moodbench("import", "--format", "tau2", "--out", tmp_path / "imported", f"{exported}=frustration")
    assert imported.returncode == 0, explain(imported)
    assert {(r["task_id"], r["exit_reason"]) for r in rows(tmp_path / "imported")} == set(OUTCOMES.items())


def test_agent_class_path_in_worker_processes_through_a_config_file(tmp_path: Path) -> None:
    """``agent``/``plugins`` as config keys; workers import the plugin and the class by name; the class takes ``client``."""
    config = tmp_path / "run.toml"
    with start_scripted_server(HELPDESK_SCRIPT, tmp_path) as srv:
        config.write_text(
            textwrap.dedent(f"""
            plugins = ["helpdesk"]
            agent = "calm_agent:DeescalatingModelLayerAgent"
            domains = ["helpdesk"]
            variants = ["control", "anger"]
            agent_model = "openai/scripted"
            agent_base_url = ["{srv.base_url}"]
            executor = "process"
            concurrency = 2
            skip_preflight = true
            out = "{tmp_path / "run"}"
        """)
        )
        res = moodbench("run", "--config", config, path=[AGENTS, DOMAINS])
        assert res.returncode == 0, explain(res)
        assert agent_systems(srv) and all(DEESCALATE_MARK in s for s in agent_systems(srv))
    got = rows(tmp_path / "run")
    assert {(r["task_id"], r["exit_reason"]) for r in got} == set(OUTCOMES.items()) and len(got) == 4
    for r in got:
        assert r["agent_impl"]["cls"] == "calm_agent:DeescalatingModelLayerAgent"
        assert r["stats"]["agent"]["latency_s"] > 0  # counted by moodbench's model layer, call by call


def _write(folder: Path, name: str, source: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(textwrap.dedent(source))
    return folder


BAD_AGENTS = """
    from tau2.agent.llm_agent import LLMAgent


    class NotAnAgent:
        def __init__(self, tools, domain_policy):
            pass


    class RaisingAgent(LLMAgent):
        def __init__(self, tools, domain_policy, llm=None, llm_args=None):
            raise ValueError("no vector store configured")


    class NeedsMore(LLMAgent):
        def __init__(self, tools, domain_policy, memory_path, llm=None, llm_args=None):
            super().__init__(tools, domain_policy, llm, llm_args)


    class CrashingAgent(LLMAgent):
        def generate_next_message(self, message, state):
            return {}["missing planner step"], state
"""


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (["--plugin", "no_such_plugin_mod"], ["plugin 'no_such_plugin_mod'", "no module named 'no_such_plugin_mod'"]),
        (
            ["--plugin", "broken_plugin"],
            ["plugin 'broken_plugin'", "raised RuntimeError: registry unreachable", "broken_plugin.py:2"],
        ),
        (["--plugin", "plugins/x.py"], ["is not a Python module name", "not a file path"]),
        (["--agent", "bad_agents:NotAnAgent"], ["agent 'bad_agents:NotAnAgent'", "is not a tau2 agent", "BaseAgent"]),
        (
            ["--agent", "bad_agents:RaisingAgent"],
            ["agent 'bad_agents:RaisingAgent'", "constructor raised ValueError", "no vector store configured"],
        ),
        (["--agent", "bad_agents:NeedsMore"], ["memory_path", "cannot fill"]),
        (["--agent", "bad_agents:Nope"], ["module 'bad_agents' has no 'Nope'"]),
        (["--agent", "no_such_agent_name"], ["agent 'no_such_agent_name' is not registered in tau2's registry", "llm_agent"]),
        (["--agent", "llm_agent_solo"], ["solo or ground-truth agent"]),
        (["--domain", "helpdesk"], ["unknown domain 'helpdesk'", "--plugin"]),
        (["--agent", "llm_agent", "--tool-choice", "required"], ["--tool-choice required", "takes no tool_choice"]),
    ],
)
def test_bad_plugins_exit_2_naming_the_plugin_and_the_problem(tmp_path: Path, extra: list[str], said: list[str]) -> None:
    folder = _write(tmp_path / "mods", "bad_agents", BAD_AGENTS)
    _write(
        folder,
        "broken_plugin",
        """
        raise RuntimeError("registry unreachable")
    """,
    )
    out = tmp_path / "run"
    res = moodbench(
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
        "http://127.0.0.1:9/v1",
        "--skip-preflight",
        "--out",
        out,
        *extra,
        path=[folder],
    )
    assert res.returncode == 2, explain(res)
    text = words(res.stderr)
    for part in said:
        assert part in text, explain(res)
    assert "Traceback" not in res.stderr
    assert not out.exists(), "a refused plugin must leave no run directory"


def test_agent_code_raising_mid_conversation_is_the_agents_failure(tmp_path: Path) -> None:
    folder = _write(tmp_path / "mods", "bad_agents", BAD_AGENTS)
    with start_scripted_server(HELPDESK_SCRIPT, tmp_path) as srv:
        res = moodbench(
            "run",
            "--plugin",
            "helpdesk",
            "--domain",
            "helpdesk",
            "--task-ids",
            "locked_out_1",
            "--variants",
            "control",
            "--agent",
            "bad_agents:CrashingAgent",
            "--agent-model",
            "openai/scripted",
            "--agent-base-url",
            srv.base_url,
            "--skip-preflight",
            "--out",
            tmp_path / "run",
            path=[folder, DOMAINS],
        )
    assert res.returncode == 0, explain(res)
    (row,) = rows(tmp_path / "run")
    assert row["exit_reason"] == "agent_error"
    assert "agent class bad_agents:CrashingAgent raised KeyError" in row["error"]


def test_a_failed_model_call_inside_the_users_agent_is_an_llm_error(tmp_path: Path) -> None:
    """tau2's LLMAgent calls litellm itself; a 500 there is the endpoint's fault: llm_error, re-run on resume."""
    script = {**HELPDESK_SCRIPT, "faults": {"error_500_rate": 1.0, "roles": ["agent"]}}
    with start_scripted_server(script, tmp_path) as srv:
        res = moodbench(
            "run",
            "--plugin",
            "helpdesk",
            "--domain",
            "helpdesk",
            "--task-ids",
            "locked_out_1",
            "--variants",
            "control",
            "--agent",
            "calm_agent:DeescalatingAgent",
            "--agent-model",
            "openai/scripted",
            "--agent-base-url",
            srv.base_url,
            "--skip-preflight",
            "--max-retries",
            "0",
            "--out",
            tmp_path / "run",
            path=[AGENTS, DOMAINS],
        )
        assert srv.requests(role="agent") and all(r["status"] == 500 for r in srv.requests(role="agent"))
    assert res.returncode == 0, explain(res)
    (row,) = rows(tmp_path / "run")
    assert row["exit_reason"] == "llm_error", row["error"]
    assert "agent class calm_agent:DeescalatingAgent raised" in row["error"]


def test_changed_agent_code_is_refused_on_resume(tmp_path: Path) -> None:
    folder = tmp_path / "mods"
    folder.mkdir()
    agent_file = folder / "my_agent.py"
    agent_file.write_text((AGENTS / "calm_agent.py").read_text().replace('"deescalating_agent"', '"my_deescalating_agent"'))
    with start_scripted_server(HELPDESK_SCRIPT, tmp_path) as srv:
        args = [
            "run",
            "--plugin",
            "helpdesk",
            "--domain",
            "helpdesk",
            "--task-ids",
            "locked_out_1",
            "--variants",
            "control,frustration",
            "--agent",
            "my_agent:DeescalatingAgent",
            "--agent-model",
            "openai/scripted",
            "--agent-base-url",
            srv.base_url,
            "--skip-preflight",
            "--out",
            tmp_path / "run",
        ]
        first = moodbench(*args, path=[folder, DOMAINS])
        assert first.returncode == 0, explain(first)
        before = sha256_file(agent_file)
        con = sqlite3.connect(tmp_path / "run" / "results.sqlite")  # as if the run had been killed before this one finished
        with con:
            con.execute("DELETE FROM simulations WHERE variant = 'frustration'")
        con.close()
        agent_file.write_text(agent_file.read_text() + "\n# tuned the prompt\n")
        second = moodbench(*args, path=[folder, DOMAINS])
        assert second.returncode == 2 and "another version of the agent class" in words(second.stderr), explain(second)
        assert before in second.stderr.replace("\n", "")
        forced = moodbench(*args, "--force-config", path=[folder, DOMAINS])
        assert forced.returncode == 0 and "1 conversation(s) to run" in words(forced.stderr), explain(forced)
    shas = sorted(r["agent_impl"]["sha256"] for r in rows(tmp_path / "run"))
    assert shas == sorted([before, sha256_file(agent_file)]), "each record keeps the version that played it"


def test_variants_show_and_customer_probe_on_a_plugin_domain(tmp_path: Path) -> None:
    shown = moodbench(
        "variants",
        "--plugin",
        "helpdesk",
        "--show",
        "anger",
        "--domain",
        "helpdesk",
        "--task-id",
        "broken_screen_1",
        path=[DOMAINS],
    )
    assert shown.returncode == 0, explain(shown)
    assert "Your laptop screen flickers" in shown.stdout and "<emotional_state>" in shown.stdout
    with start_scripted_server(HELPDESK_SCRIPT, tmp_path) as srv:
        probed = moodbench(
            "probe",
            "--plugin",
            "helpdesk",
            "--user",
            "--domain",
            "helpdesk",
            "--model",
            "openai/scripted",
            "--base-url",
            srv.base_url,
            "--user-format",
            "tau2",
            "--json",
            path=[DOMAINS],
        )
        assert probed.returncode in (0, 1), explain(probed)
        report = json.loads(probed.stdout)
        assert report["domain"] == "helpdesk" and report["tasks"]
        assert any("locked out" in m["content"] for b in srv.bodies("user") for m in b["messages"] if m["role"] == "system")


@pytest.mark.slow
def test_plugin_agent_and_domain_on_ray(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'moodbench[ray]')")
    with start_scripted_server(HELPDESK_SCRIPT, tmp_path) as srv:
        res = moodbench(
            "run",
            "--plugin",
            "helpdesk",
            "--plugin",
            "calm_agent",
            "--agent",
            "deescalating_agent",
            "--domain",
            "helpdesk",
            "--variants",
            "control",
            "--executor",
            "ray",
            "--agent-model",
            "openai/scripted",
            "--agent-base-url",
            srv.base_url,
            "--skip-preflight",
            "--out",
            tmp_path / "run",
            path=[AGENTS, DOMAINS],
            timeout=600,
        )
        assert res.returncode == 0, explain(res)
    got = rows(tmp_path / "run")
    assert {(r["task_id"], r["exit_reason"]) for r in got} == set(OUTCOMES.items())
    assert all(r["agent_impl"]["cls"] == "calm_agent:DeescalatingAgent" for r in got)


def test_a_plugin_still_importing_in_another_thread_is_waited_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two conversations in one worker ask for the same plugin at once: neither goes on before its import ended.

    (The flaw this pins: ``sys.modules`` lists a module while another thread still runs it, so the second
    conversation found the plugin's domain unregistered and ended as a harness_error.)
    """
    import threading
    import time

    from moodbench.sim import load_plugins

    name = f"slow_plugin_{os.getpid()}"
    _write(tmp_path, name, "import time\ntime.sleep(0.5)\nREGISTERED = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen: list[bool] = []

    def conversation() -> None:
        load_plugins([name])
        seen.append(getattr(sys.modules[name], "REGISTERED", False))

    first = threading.Thread(target=conversation)
    first.start()
    while name not in sys.modules and first.is_alive():  # the first thread is inside the plugin's import
        time.sleep(0.001)
    conversation()
    first.join()
    assert seen == [True, True]
