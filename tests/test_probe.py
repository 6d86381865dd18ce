"""``moodbench probe``: each failure mode reproduced by a scripted OpenAI-compatible server.

The probe is called in-process (one import of litellm per worker) but always over real HTTP to a
real server subprocess; two tests run the real CLI to check the table, ``--json`` and exit codes.
Scripts answer each probe case by matching its customer message, so every number asserted below
follows from the script: a wrong count means the probe miscounted.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from moodbench.doctor import ProbeCase, cases_for
from scripted import CLI, start_scripted_server

# Correct first calls for the mock domain's tool cases (arguments match the tools' schemas).
MOCK_CALLS: dict[str, dict[str, Any]] = {
    "mock-create-task": {"name": "create_task", "arguments": {"user_id": "user_1", "title": "Buy milk"}},
    "mock-complete-task": {"name": "update_task_status", "arguments": {"task_id": "task_1", "status": "completed"}},
    "mock-list-users": {"name": "get_users", "arguments": {}},
    "mock-delete-task": {"name": "transfer_to_human_agents", "arguments": {"summary": "The user wants task_1 deleted."}},
}
SAY: dict[str, Any] = {"content": "Happy to help with that."}
SAY_REQUIRED: dict[str, Any] = {"tool_calls": [{"name": "respond_to_user", "arguments": {"message": "Happy to help with that."}}]}


def agent_script(domain: str, reply: Callable[[ProbeCase], dict[str, Any]], models: list[str] | None = None) -> dict[str, Any]:
    """A script whose agent answers each probe case of ``domain`` with ``reply(case)`` (matched on the message)."""
    rules = [{"if_contains": c.message, "in": "last", "then": reply(c)} for c in cases_for(domain)]
    return {"models": models or ["scripted"], "roles": {"agent": {"turns": [{"match": rules, "else": {"content": "OK"}}]}}}


def good(case: ProbeCase) -> dict[str, Any]:
    """A model that does everything right, under both modes."""
    if case.needs_tool:
        return {"tool_calls": [MOCK_CALLS[case.id]]}
    return {"by_tool_choice": {"auto": SAY, "required": SAY_REQUIRED}}


def never_under_auto(case: ProbeCase) -> dict[str, Any]:
    """The failure that sank the old harness: calls tools only when forced."""
    if case.needs_tool:
        # under auto: prose, or (like Qwen2.5-0.5B on llama.cpp) a call written as text to a tool that does not exist
        auto = (
            {"text_tool_call": {"name": "delete_task", "arguments": {"task_id": "task_1"}}}
            if case.id == "mock-delete-task"
            else {"content": "Sure, I will look into that for you."}
        )
        return {"by_tool_choice": {"auto": auto, "required": {"tool_calls": [MOCK_CALLS[case.id]]}}}
    return {"by_tool_choice": {"auto": SAY, "required": SAY_REQUIRED}}


def text_calls(case: ProbeCase) -> dict[str, Any]:
    """Calls written into the text, in each of the three shapes small models use."""
    styles = ["bare", "fenced", "tagged", "fenced"]
    if case.needs_tool:
        index = [c.id for c in cases_for("mock") if c.needs_tool].index(case.id)
        return {"text_tool_call": MOCK_CALLS[case.id], "style": styles[index]}
    return {"by_tool_choice": {"auto": SAY, "required": SAY_REQUIRED}}


def messy(case: ProbeCase) -> dict[str, Any]:
    """One defect per case (the same under both modes)."""
    defects: dict[str, dict[str, Any]] = {
        "mock-create-task": {"think": "the user wants a task", "tool_calls": [MOCK_CALLS["mock-create-task"]]},
        "mock-complete-task": {"tool_calls": [{"name": "update_task", "arguments": {"task_id": "task_1"}}]},  # no such tool
        "mock-list-users": {"tool_calls": [{"name": "get_users", "arguments": "{bad json"}]},
        "mock-delete-task": {
            "tool_calls": [{"name": "transfer_to_human_agents", "arguments": {"reason": "delete"}}]
        },  # missing + unknown
        "mock-greeting": {"empty": True},
        "mock-thanks": {
            "tool_calls": [{"name": "get_users", "arguments": {}}, {"name": "get_users", "arguments": {}}]
        },  # unwanted, duplicate
        "mock-policy-status": {"think": "statuses...", "content": "A task can be pending or completed."},
        "mock-compliment": {"text_tool_call": {"name": "give_compliment", "arguments": {"to": "user_1"}}, "style": "fenced"},
    }
    return defects[case.id]


@pytest.fixture(scope="module")
def probe_mod():
    from moodbench import doctor  # litellm import: once per worker

    return doctor


def _spec(srv, model: str = "openai/scripted"):
    from moodbench.llm import ModelSpec

    return ModelSpec(model=model, base_urls=(srv.base_url,), timeout_s=30, max_retries=0)


def test_good_model_is_ok_and_gets_the_real_prompt(probe_mod, tmp_path: Path) -> None:
    with start_scripted_server(agent_script("mock", good), tmp_path) as srv:
        report = probe_mod.run_probe(_spec(srv), "mock", threads=4)
        bodies = srv.bodies("agent")
    for mode in ("auto", "required"):
        s = report.modes[mode]
        assert (s.cases, s.tool_cases, s.answer_cases) == (8, 4, 4)
        assert (s.proper_calls, s.text_calls, s.missed_calls, s.unwanted_calls, s.right_tool) == (4, 0, 0, 0, 4)
        assert (s.invalid_names, s.invalid_json, s.schema_errors, s.duplicate_calls, s.think, s.empty, s.errors) == (0,) * 7
        assert s.latency_mean_s is not None and s.latency_max_s >= s.latency_mean_s
    assert report.verdict.verdict == "ok" and report.verdict.advice == []
    # 8 cases x 2 modes, each with tau2's agent prompt, tau2's greeting first and the domain's real tools
    assert len(bodies) == 16
    assert sorted(b["tool_choice"] for b in bodies) == ["auto"] * 8 + ["required"] * 8
    for b in bodies:
        assert b["messages"][0]["role"] == "system" and "<policy>" in b["messages"][0]["content"]
        assert "Only existing users can create tasks" in b["messages"][0]["content"]
        assert (b["messages"][1]["role"], b["messages"][1]["content"]) == ("assistant", "Hi! How can I help you today?")
        names = {t["function"]["name"] for t in b["tools"]}
        expected = {"create_task", "get_users", "update_task_status", "transfer_to_human_agents"}
        assert names == (expected | {"respond_to_user"} if b["tool_choice"] == "required" else expected)


def test_never_calls_under_auto(probe_mod, tmp_path: Path) -> None:
    with start_scripted_server(agent_script("mock", never_under_auto), tmp_path) as srv:
        report = probe_mod.run_probe(_spec(srv), "mock", threads=4)
    auto, req = report.modes["auto"], report.modes["required"]
    assert (auto.proper_calls, auto.text_calls, auto.missed_calls, auto.right_tool) == (0, 0, 4, 0)
    assert (auto.invented_text_calls, auto.invented_names, auto.invalid_names) == (1, ["delete_task"], 0)
    assert (req.proper_calls, req.missed_calls, req.right_tool, req.unwanted_calls, req.invented_text_calls) == (4, 0, 4, 0, 0)
    v = report.verdict
    assert v.verdict == "never-calls-tools-under-auto"
    assert "it wrote 1 call(s) as text, naming tools that do not exist" in v.reasons[0]
    assert "4/4 under required" in v.reasons[0]
    assert not any("over-calling" in a for a in v.advice)
    assert any("--tool-choice required" in a for a in v.advice)
    assert any("--enable-auto-tool-choice" in a for a in v.advice)


def test_never_calls_under_auto_and_over_calls_under_required(probe_mod, tmp_path: Path) -> None:
    # what Qwen2.5-0.5B did on llama.cpp: nothing under auto, a real tool for everything under required
    def overcall(case: ProbeCase) -> dict[str, Any]:
        call = MOCK_CALLS[case.id] if case.needs_tool else {"name": "get_users", "arguments": {}}
        return {"by_tool_choice": {"auto": SAY, "required": {"tool_calls": [call]}}}

    with start_scripted_server(agent_script("mock", overcall), tmp_path) as srv:
        report = probe_mod.run_probe(_spec(srv), "mock", threads=4)
    assert report.modes["required"].unwanted_calls == 4 and report.modes["required"].right_tool == 4
    assert report.verdict.verdict == "never-calls-tools-under-auto"
    assert "expect over-calling: under required it called a real tool in 4/4 case(s)" in report.verdict.advice[0]


def test_text_written_calls_need_recovery(probe_mod, tmp_path: Path) -> None:
    with start_scripted_server(agent_script("mock", text_calls), tmp_path) as srv:
        report = probe_mod.run_probe(_spec(srv), "mock", threads=4)
    for mode in ("auto", "required"):
        s = report.modes[mode]
        assert (s.proper_calls, s.text_calls, s.tool_cases_text, s.missed_calls, s.right_tool) == (0, 4, 4, 0, 4)
        assert (s.schema_errors, s.empty) == (0, 0)
    v = report.verdict
    assert v.verdict == "needs-text-recovery"
    assert "4/4 tool case(s) under auto" in v.reasons[0]
    assert any("--recover-text-tool-calls" in a for a in v.advice)
    assert any("--tool-call-parser" in a for a in v.advice)


def test_messy_model_counts_each_defect(probe_mod, tmp_path: Path) -> None:
    with start_scripted_server(agent_script("mock", messy), tmp_path) as srv:
        report = probe_mod.run_probe(_spec(srv), "mock", threads=3)
    for mode in ("auto", "required"):
        s = report.modes[mode]
        assert s.proper_calls == 5  # 4 tool cases + the unwanted duplicate in "thanks"
        assert s.unwanted_calls == 1 and s.duplicate_calls == 1
        assert s.invalid_names == 1 and s.invalid_json == 1
        assert s.schema_errors == 2  # transfer_to_human_agents: 'summary' missing, 'reason' unknown
        assert s.think == 2 and s.empty == 1 and s.errors == 0
        assert (s.invented_text_calls, s.invented_names) == (1, ["give_compliment"])
        # right tool: create_task, get_users (bad JSON but the right name), transfer; not the invented update_task
        assert s.right_tool == 3 and s.missed_calls == 0
        assert (s.calls, s.broken_calls) == (6, 3)
    by_case = {r.case: r for r in report.results["auto"]}
    assert by_case["mock-complete-task"].invalid_names == ["update_task"]
    assert by_case["mock-greeting"].empty and not by_case["mock-compliment"].empty
    assert not by_case["mock-compliment"].called and by_case["mock-compliment"].invented_text_calls == ["give_compliment"]
    assert by_case["mock-policy-status"].content == "A task can be pending or completed."  # think stripped from content
    v = report.verdict
    assert v.verdict == "unusable" and "broken" in v.reasons[0]
    assert any("another model" in a for a in v.advice)


def test_wrong_tools_are_unusable(probe_mod, tmp_path: Path) -> None:
    def always_users(case: Any) -> dict[str, Any]:
        return {"tool_calls": [{"name": "get_users", "arguments": {}}]}

    with start_scripted_server(agent_script("mock", always_users), tmp_path) as srv:
        report = probe_mod.run_probe(_spec(srv), "mock", threads=4)
    s = report.modes["auto"]
    assert (s.right_tool, s.unwanted_calls, s.proper_calls) == (1, 4, 8)
    assert report.verdict.verdict == "unusable"
    assert "right tool" in report.verdict.reasons[0] and "auto 1/4" in report.verdict.reasons[0]


def test_failing_requests(probe_mod, tmp_path: Path) -> None:
    # every request fails under auto (vLLM without --enable-auto-tool-choice answers 400), required works
    def auto_400(case: ProbeCase) -> dict[str, Any]:
        required = {"tool_calls": [MOCK_CALLS[case.id]]} if case.needs_tool else SAY_REQUIRED
        return {
            "by_tool_choice": {
                "auto": {"status": 400, "error": "auto tool choice requires --enable-auto-tool-choice"},
                "required": required,
            }
        }

    script = agent_script("mock", auto_400)
    with start_scripted_server(script, tmp_path) as srv:
        report = probe_mod.run_probe(_spec(srv), "mock", threads=4)
    assert report.modes["auto"].errors == 8 and report.modes["required"].errors == 0
    assert "enable-auto-tool-choice" in report.results["auto"][0].error
    assert report.verdict.verdict == "never-calls-tools-under-auto"
    assert report.verdict.reasons[0].startswith("every tool_choice=auto request failed")


def test_retail_cases_use_real_tools(probe_mod) -> None:
    """Every expected tool exists in its domain, and every tool case's ids exist in tau2's data."""
    from moodbench.doctor import CASES, probe_domains
    from moodbench.sim._tau2 import registry

    for domain in probe_domains():
        names = {t.name for t in registry.get_env_constructor(domain)().get_tools()}
        cases = cases_for(domain)
        assert len(cases) >= 6 and len({c.message for c in cases}) == len(cases)
        assert any(c.needs_tool for c in cases) and any(not c.needs_tool for c in cases)
        for c in cases:
            assert set(c.expected) <= names, (c.id, c.expected)
        pre = cases_for(domain, preflight_only=True)
        assert any(c.needs_tool for c in pre) and any(not c.needs_tool for c in pre)
    assert {"mock", "retail", "airline"} <= set(probe_domains())
    retail = registry.get_env_constructor("retail")()
    assert "#W6247578" in retail.tools.db.orders and "9523456873" in retail.tools.db.products
    assert any(c.id == "retail-find-by-name-zip" for c in CASES)


# --------------------------------------------------------------------------- endpoints


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_split_model(probe_mod) -> None:
    assert probe_mod.split_model("openai/scripted") == ("openai", "scripted")
    assert probe_mod.split_model("hosted_vllm/Qwen/Qwen2.5-7B") == ("hosted_vllm", "Qwen/Qwen2.5-7B")
    assert probe_mod.split_model("Qwen/Qwen2.5-7B") == (None, "Qwen/Qwen2.5-7B")
    assert probe_mod.split_model("gpt-4o-mini") == (None, "gpt-4o-mini")


def test_endpoint_checks(probe_mod, tmp_path: Path) -> None:
    with start_scripted_server({"models": ["Qwen/Qwen2.5-7B"]}, tmp_path) as srv:
        ok = probe_mod.check_endpoint("agent", "hosted_vllm/Qwen/Qwen2.5-7B", srv.base_url)
        wrong = probe_mod.check_endpoint("user", "openai/scripted", srv.base_url)
    assert ok.ok and ok.checked and ok.served == ["Qwen/Qwen2.5-7B"]
    assert not wrong.ok and "'Qwen/Qwen2.5-7B'" in wrong.error and "not 'scripted'" in wrong.error
    assert "--user-model openai/Qwen/Qwen2.5-7B" in wrong.error
    dead_url = f"http://127.0.0.1:{_free_port()}/v1"
    dead = probe_mod.check_endpoint("agent", "openai/scripted", dead_url)
    assert not dead.ok and "does not answer" in dead.error and dead_url in dead.error
    provider = probe_mod.check_endpoint("judge", "openai/gpt-4o-mini", None)
    assert provider.ok and not provider.checked and "not checked" in provider.note


# --------------------------------------------------------------------------- user probe


def test_user_probe_recommends_the_format_without_echoes(probe_mod, tmp_path: Path) -> None:
    # tau2 format: the customer repeats the agent (the measured failure of small models); transcript: a real customer
    script = {
        "roles": {
            "user": {
                "turns": [
                    {
                        "match": [
                            {
                                "if_contains": "<conversation>",
                                "in": "last",
                                "then": {"content": "I need a task called 'Important Meeting' for user_1, please."},
                            }
                        ],
                        "else": {"echo_last": True},
                    }
                ]
            }
        }
    }
    with start_scripted_server(script, tmp_path) as srv:
        report = probe_mod.run_user_probe(_spec(srv), "mock", formats=("tau2", "transcript"), threads=4)
        user_requests = srv.requests("user")
    tau2, transcript = report.formats["tau2"], report.formats["transcript"]
    assert len(report.tasks) == 2 and len(user_requests) == 12
    assert (tau2.conversations, tau2.replies, tau2.echo, tau2.flagged, tau2.premature_stop) == (2, 6, 6, 6, 0)
    assert tau2.role_confusion == 2  # echoing "Hi! How can I help you today?"
    assert (transcript.replies, transcript.flagged, transcript.echo, transcript.role_confusion) == (6, 0, 0, 0)
    assert report.recommended == "transcript" and report.usable
    assert any("--user-format transcript" in a for a in report.advice)


def test_user_probe_premature_stop_and_unusable(probe_mod, tmp_path: Path) -> None:
    script = {
        "roles": {
            "user": {
                "turns": [
                    {
                        "match": [{"if_contains": "<conversation>", "in": "last", "then": {"content": "###STOP###"}}],
                        "else": {"content": "How can I assist you today?"},
                    }
                ]
            }
        }
    }
    with start_scripted_server(script, tmp_path) as srv:
        report = probe_mod.run_user_probe(_spec(srv), "mock", formats=("tau2", "transcript"), threads=4)
    tau2, transcript = report.formats["tau2"], report.formats["transcript"]
    assert (transcript.replies, transcript.premature_stop, transcript.flagged) == (2, 2, 2)  # stops at once, each conversation
    assert (tau2.replies, tau2.role_confusion, tau2.flagged, tau2.premature_stop) == (6, 6, 6, 0)
    assert not report.usable
    assert any("stronger --user-model" in a for a in report.advice)


def test_user_probe_measures_the_completion_format_and_skips_it_where_customers_have_tools(probe_mod, tmp_path: Path) -> None:
    # a chat-tuned small model: both chat formats answer like the agent; continued as a transcript it is the customer
    script = {
        "roles": {
            "user": {
                "turns": [
                    {
                        "match": [
                            {
                                "if_contains": "TRANSCRIPT",
                                "in": "system",
                                "then": {"content": " I need a task called 'Important Meeting' for user_1."},
                            }
                        ],
                        "else": {"content": "How can I assist you today?"},
                    }
                ]
            }
        }
    }
    with start_scripted_server(script, tmp_path) as srv:
        report = probe_mod.run_user_probe(_spec(srv), "mock", threads=4)
        texts = [r for r in srv.requests("user") if "prompt" in r["body"]]
    assert set(report.formats) == {"tau2", "transcript", "completion"}
    completion = report.formats["completion"]
    assert (completion.replies, completion.flagged, completion.role_confusion) == (6, 0, 0)
    assert report.formats["tau2"].role_confusion == 6 and report.formats["transcript"].role_confusion == 6
    assert report.recommended == "completion" and len(texts) == 6
    assert all(t["body"]["prompt"].rstrip().endswith("CUSTOMER:") and t["body"]["stop"] for t in texts)
    assert len({t["body"]["prompt"].split("<scenario>")[1][:200] for t in texts if "<scenario>" in t["body"]["prompt"]}) == 2
    with start_scripted_server(script, tmp_path / "telecom") as srv:
        telecom = probe_mod.run_user_probe(_spec(srv), "telecom", turns=1, threads=4)
    assert "completion" not in telecom.formats and any("not probed: completion" in a for a in telecom.advice)


# --------------------------------------------------------------------------- CLI


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ,
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        COLUMNS="200",
    )
    return subprocess.run(
        [*CLI, "probe", *args], check=False, capture_output=True, text=True, timeout=180, env=env, cwd=tempfile.gettempdir()
    )


def test_cli_json_and_table(tmp_path: Path) -> None:
    with start_scripted_server(agent_script("mock", never_under_auto), tmp_path) as srv:
        as_json = _cli("--model", "openai/scripted", "--base-url", srv.base_url, "--domain", "mock", "--json")
        table = _cli("--model", "openai/scripted", "--base-url", srv.base_url, "--domain", "mock")
    assert as_json.returncode == 1, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["verdict"] == "never-calls-tools-under-auto"
    assert data["modes"]["auto"]["missed_calls"] == 4 and data["modes"]["required"]["right_tool"] == 4
    assert data["endpoint"]["served"] == ["scripted"] and len(data["cases"]["auto"]) == 8
    assert table.returncode == 1
    text = " ".join(table.stdout.split())
    assert "no call when one was needed │ 4/4 │ 0/4" in text
    assert "verdict: never-calls-tools-under-auto" in text and "--tool-choice required" in text


def test_cli_dead_endpoint_and_wrong_model(tmp_path: Path) -> None:
    dead_url = f"http://127.0.0.1:{_free_port()}/v1"
    dead = _cli("--model", "openai/scripted", "--base-url", dead_url, "--domain", "mock")
    assert dead.returncode == 3 and dead_url in " ".join(dead.stderr.split())
    with start_scripted_server({"models": ["other-model"]}, tmp_path) as srv:
        wrong = _cli("--model", "openai/scripted", "--base-url", srv.base_url, "--domain", "mock", "--json")
        assert srv.requests() == []  # refused before any chat request
    assert wrong.returncode == 3 and "'other-model'" in " ".join(wrong.stderr.split())
