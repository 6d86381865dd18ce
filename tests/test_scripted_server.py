"""End-to-end tests of the scripted server: real subprocess, real HTTP (httpx and the openai SDK).

Most behaviour is checked against one module-scoped server whose script gives
each scenario its own custom role (selected by a marker in the system prompt),
because process start-up is the dominant cost; fault modes need their own
servers since faults are per-process state.
"""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from scripted import SRC_DIR, ScriptedServer, start_scripted_server

AGENT_SYSTEM = (
    "<instructions>\nYou are a customer service agent that helps the user according to the <policy> provided "
    "below.\n</instructions>\n<policy>\n# Retail agent policy\nBe nice.\n</policy>"
)
USER_SYSTEM = (
    "# User Simulation Guidelines\nYou are playing the role of a customer.\n\n<scenario>\nYou want to return "
    "order #W123.\n</scenario>\n\n<persona>You are furious and type in capitals.</persona>"
)
JUDGE_SYSTEM = "You are a strict grader. Reply with a JSON verdict."

TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_user_details",
            "description": "Look up a user.",
            "parameters": {
                "type": "object",
                "properties": {"user_id": {"type": "string"}},
                "required": ["user_id"],
            },
        },
    }
]

MAIN_SCRIPT: dict[str, Any] = {
    "models": ["scripted", "scripted-agent"],
    "roles": {
        # Custom roles first: each is one scenario, selected by a marker in the system prompt.
        "choice": {
            "detect": "SCENARIO-CHOICE",
            "turns": [
                {
                    "by_tool_choice": {
                        "auto": {"content": "auto reply"},
                        "required": {"tool_calls": [{"name": "get_user_details", "arguments": {"user_id": "r"}}]},
                        "none": {"content": "none reply"},
                    }
                }
            ],
        },
        "styles": {
            "detect": "SCENARIO-STYLES",
            "turns": [
                {"text_tool_call": {"name": "find", "arguments": {"q": 1}}},
                {"text_tool_call": {"name": "find", "arguments": {"q": 2}}, "style": "fenced"},
                {"text_tool_call": {"name": "find", "arguments": {"q": 3}}, "style": "tagged"},
                {"text_tool_call": {"name": "find", "arguments": {"q": 4}}, "content": "Let me check."},
            ],
        },
        "misc": {
            "detect": "SCENARIO-MISC",
            "turns": [
                {"echo_last": True},
                {"empty": True},
                {"think": "hmm", "content": "answer"},
                {"status": 500},
                {"status": 429, "retry_after_s": 2},
                {"tool_calls": [{"name": "broken", "arguments": "{not json"}]},
                {
                    "content": "both",
                    "tool_calls": [
                        {"name": "a", "arguments": {}},
                        {"name": "b", "arguments": {"x": [1, 2]}},
                    ],
                },
            ],
        },
        "matcher": {
            "detect": "SCENARIO-MATCH",
            "turns": [
                {
                    "match": [
                        {"if_contains": "refund", "then": {"content": "matched refund"}},
                        {"if_regex": "order #W\\d+", "in": "last", "then": {"content": "matched order"}},
                        {"if_contains": "VIP", "in": "system", "then": {"content": "matched vip"}},
                    ],
                    "else": {"content": "no match"},
                }
            ],
        },
        "cycler": {"detect": "SCENARIO-CYCLE", "turns": [{"content": "c0"}, {"content": "c1"}], "after": "cycle"},
        "afterer": {"detect": "SCENARIO-AFTER", "turns": [{"content": "a0"}], "after": {"content": "done"}},
        "by_model": {"model": "judge-model", "turns": [{"content": "routed by model"}]},
        "agent": {
            "turns": [
                {"content": "Hello, how can I help?"},
                {"tool_calls": [{"name": "get_user_details", "arguments": {"user_id": "sara_1"}}]},
                {"content": "Your order is on its way."},
            ]
        },
        "user": {"turns": [{"content": "I WANT A REFUND"}, {"content": "NOW"}], "after": {"content": "###STOP###"}},
        "judge": {"turns": [{"content": '{"verdict": "pass"}'}]},
    },
}


def convo(system: str, *turns: tuple[str, str]) -> list[Any]:
    return [{"role": "system", "content": system}] + [{"role": r, "content": c} for r, c in turns]


def chat(client: httpx.Client, messages: list[dict[str, Any]], **extra: Any) -> httpx.Response:
    return client.post("/chat/completions", json={"model": "scripted", "messages": messages, **extra})


@pytest.fixture(scope="module")
def main_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with start_scripted_server(MAIN_SCRIPT, tmp_path_factory.mktemp("main")) as srv:
        yield srv


@pytest.fixture(scope="module")
def http(main_server: ScriptedServer) -> Any:
    with httpx.Client(base_url=main_server.base_url, timeout=10, trust_env=False) as client:
        yield client


@pytest.fixture(scope="module")
def oai(main_server: ScriptedServer) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=main_server.base_url, api_key="none", max_retries=0, http_client=openai.DefaultHttpxClient(trust_env=False)
    )


def message_of(resp: httpx.Response) -> dict[str, Any]:
    assert resp.status_code == 200, resp.text
    return resp.json()["choices"][0]["message"]


# --------------------------------------------------------------------------- basics


def test_models_endpoint(http: httpx.Client, oai: openai.OpenAI) -> None:
    body = http.get("/models").json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["scripted", "scripted-agent"]
    assert all(m["object"] == "model" for m in body["data"])
    assert [m.id for m in oai.models.list()] == ["scripted", "scripted-agent"]


def test_role_detection_and_turn_index(http: httpx.Client) -> None:
    agent0 = convo(AGENT_SYSTEM, ("user", "hi"))
    assert message_of(chat(http, agent0))["content"] == "Hello, how can I help?"
    agent1 = agent0 + [{"role": "assistant", "content": "Hello"}, {"role": "user", "content": "id sara_1"}]
    msg = message_of(chat(http, agent1))
    assert msg["content"] is None and msg["tool_calls"][0]["function"]["name"] == "get_user_details"
    # Past the script: repeat_last is the default.
    agent3 = agent1 + [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}] * 2
    assert message_of(chat(http, agent3))["content"] == "Your order is on its way."

    # tau2 flips roles for the user simulator: its own earlier turns arrive as "assistant".
    user0 = convo(USER_SYSTEM, ("user", "Hi! How can I help you today?"))
    assert message_of(chat(http, user0))["content"] == "I WANT A REFUND"
    user1 = user0 + [{"role": "assistant", "content": "I WANT A REFUND"}, {"role": "user", "content": "Sure"}]
    assert message_of(chat(http, user1))["content"] == "NOW"
    user2 = user1 + [{"role": "assistant", "content": "NOW"}, {"role": "user", "content": "ok"}]
    assert message_of(chat(http, user2))["content"] == "###STOP###"

    assert message_of(chat(http, convo(JUDGE_SYSTEM, ("user", "grade this"))))["content"] == '{"verdict": "pass"}'
    assert message_of(chat(http, [{"role": "user", "content": "no system prompt"}]))["content"].startswith("{")
    # A script role can claim requests by model name.
    resp = http.post("/chat/completions", json={"model": "judge-model", "messages": convo(JUDGE_SYSTEM)})
    assert message_of(resp)["content"] == "routed by model"


def test_openai_sdk_tool_call_shape(oai: openai.OpenAI) -> None:
    messages: Any = convo(AGENT_SYSTEM, ("user", "hi"), ("assistant", "Hello"), ("user", "sara_1"))
    completion = oai.chat.completions.create(model="scripted-agent", messages=messages, tools=TOOLS)
    assert completion.object == "chat.completion"
    assert completion.model == "scripted-agent"
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_user_details"
    assert json.loads(call.function.arguments) == {"user_id": "sara_1"}
    usage = completion.usage
    assert usage is not None
    prompt_chars = sum(len(m["content"]) for m in messages)
    assert usage.prompt_tokens == prompt_chars // 4
    assert usage.completion_tokens == (len("get_user_details") + len('{"user_id": "sara_1"}')) // 4
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

    text = oai.chat.completions.create(model="scripted", messages=convo(AGENT_SYSTEM, ("user", "hi")))
    assert text.choices[0].finish_reason == "stop"
    assert text.choices[0].message.content == "Hello, how can I help?"
    assert not text.choices[0].message.tool_calls


def test_by_tool_choice(http: httpx.Client) -> None:
    msgs = convo("SCENARIO-CHOICE", ("user", "go"))
    assert message_of(chat(http, msgs))["content"] == "auto reply"
    assert message_of(chat(http, msgs, tool_choice="auto", tools=TOOLS))["content"] == "auto reply"
    assert message_of(chat(http, msgs, tool_choice="none", tools=TOOLS))["content"] == "none reply"
    required = message_of(chat(http, msgs, tool_choice="required", tools=TOOLS))
    assert required["tool_calls"][0]["function"]["name"] == "get_user_details"
    named = {"type": "function", "function": {"name": "get_user_details"}}
    assert message_of(chat(http, msgs, tool_choice=named, tools=TOOLS))["tool_calls"]


def test_text_tool_call_styles(http: httpx.Client) -> None:
    msgs = convo("SCENARIO-STYLES", ("user", "go"))
    contents = []
    for _ in range(4):
        msg = message_of(chat(http, msgs))
        assert "tool_calls" not in msg
        contents.append(msg["content"])
        msgs = msgs + [{"role": "assistant", "content": msg["content"]}, {"role": "user", "content": "ok"}]
    bare, fenced, tagged, prefixed = contents
    assert json.loads(bare) == {"name": "find", "arguments": {"q": 1}}
    assert fenced.startswith("```json\n") and fenced.endswith("\n```")
    assert json.loads(fenced[len("```json\n") : -len("\n```")]) == {"name": "find", "arguments": {"q": 2}}
    assert tagged.startswith("<tool_call>") and tagged.endswith("</tool_call>")
    assert json.loads(tagged[len("<tool_call>") : -len("</tool_call>")]) == {"name": "find", "arguments": {"q": 3}}
    assert prefixed.startswith("Let me check.\n")
    assert json.loads(prefixed.split("\n", 1)[1])["arguments"] == {"q": 4}


def test_echo_empty_think_status_and_raw_arguments(http: httpx.Client) -> None:
    msgs = convo("SCENARIO-MISC", ("user", "parrot THIS exactly"))

    def step(reply: str = "x") -> None:
        msgs.extend([{"role": "assistant", "content": reply}, {"role": "user", "content": "next"}])

    assert message_of(chat(http, msgs))["content"] == "parrot THIS exactly"
    step()
    empty = http.post("/chat/completions", json={"model": "m", "messages": msgs}).json()["choices"][0]
    assert empty["message"]["content"] == "" and "tool_calls" not in empty["message"]
    assert empty["finish_reason"] == "stop"
    step()
    assert message_of(chat(http, msgs))["content"] == "<think>hmm</think>answer"
    step()
    err = chat(http, msgs)
    assert err.status_code == 500 and "message" in err.json()["error"]
    step()
    limited = chat(http, msgs)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "2"
    step()
    raw = message_of(chat(http, msgs))
    assert raw["tool_calls"][0]["function"]["arguments"] == "{not json"
    step()
    both = http.post("/chat/completions", json={"model": "m", "messages": msgs}).json()["choices"][0]
    assert both["finish_reason"] == "tool_calls"
    assert both["message"]["content"] == "both"
    assert [c["function"]["name"] for c in both["message"]["tool_calls"]] == ["a", "b"]
    ids = [c["id"] for c in both["message"]["tool_calls"]]
    assert len(set(ids)) == 2 and all(i.startswith("call_") for i in ids)


def test_match_rules(http: httpx.Client) -> None:
    assert message_of(chat(http, convo("SCENARIO-MATCH", ("user", "I want a refund"))))["content"] == "matched refund"
    assert message_of(chat(http, convo("SCENARIO-MATCH", ("user", "order #W42 pls"))))["content"] == "matched order"
    assert message_of(chat(http, convo("SCENARIO-MATCH VIP", ("user", "hi"))))["content"] == "matched vip"
    # "in": "last" must not look at the system prompt.
    assert message_of(chat(http, convo("SCENARIO-MATCH order #W1", ("user", "hi"))))["content"] == "no match"
    # Default scope also looks at the system prompt.
    assert message_of(chat(http, convo("SCENARIO-MATCH refund", ("user", "hi"))))["content"] == "matched refund"


def test_after_modes(http: httpx.Client) -> None:
    def nth(system: str, n: int) -> str:
        msgs = convo(system, ("user", "u"))
        for _ in range(n):
            msgs += [{"role": "assistant", "content": "a"}, {"role": "user", "content": "u"}]
        return message_of(chat(http, msgs))["content"]

    assert [nth("SCENARIO-CYCLE", i) for i in range(5)] == ["c0", "c1", "c0", "c1", "c0"]
    assert [nth("SCENARIO-AFTER", i) for i in range(3)] == ["a0", "done", "done"]


def test_streaming_via_openai_sdk(oai: openai.OpenAI, http: httpx.Client) -> None:
    messages: Any = convo(AGENT_SYSTEM, ("user", "hi"), ("assistant", "Hello"), ("user", "sara_1"))
    stream = oai.chat.completions.create(
        model="scripted", messages=messages, tools=TOOLS, stream=True, stream_options={"include_usage": True}
    )
    names, args, finish, usage = [], "", None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            for tc in choice.delta.tool_calls or []:
                if tc.function and tc.function.name:
                    names.append(tc.function.name)
                if tc.function and tc.function.arguments:
                    args += tc.function.arguments
            finish = choice.finish_reason or finish
    assert names == ["get_user_details"] and json.loads(args) == {"user_id": "sara_1"}
    assert finish == "tool_calls" and usage is not None and usage.prompt_tokens > 0

    long_text = "word " * 40
    text_stream = oai.chat.completions.create(model="scripted", messages=convo("SCENARIO-MISC", ("user", long_text)), stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in text_stream if c.choices) == long_text

    raw = chat(http, convo(AGENT_SYSTEM, ("user", "hi")), stream=True)
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.text.rstrip().endswith("data: [DONE]")


def test_bad_requests(http: httpx.Client) -> None:
    assert http.post("/chat/completions", content=b"{nope", headers={"content-type": "application/json"}).status_code == 400
    assert http.post("/chat/completions", json={"model": "m"}).status_code == 400
    assert http.get("/nope").status_code == 404


def test_request_log_and_stats(main_server: ScriptedServer, http: httpx.Client) -> None:
    marker = "log-marker-7d1f"
    resp = chat(http, convo(AGENT_SYSTEM, ("user", marker)))
    assert resp.status_code == 200
    entries = [e for e in main_server.requests() if marker in json.dumps(e["body"])]
    (entry,) = entries
    assert entry["role"] == "agent" and entry["turn"] == 0 and entry["status"] == 200 and entry["fault"] is None
    assert entry["body"]["messages"][-1]["content"] == marker
    assert entry["response"] == resp.json()
    assert isinstance(entry["n"], int) and abs(entry["t"] - time.time()) < 60
    # xdist may run this module's tests on several workers, each with its own server: send the
    # user-role request here instead of relying on another test having run first
    assert chat(http, convo(USER_SYSTEM, ("user", "hello"))).status_code == 200
    all_entries = main_server.requests()
    assert [e["n"] for e in all_entries] == sorted(e["n"] for e in all_entries)
    assert {e["role"] for e in main_server.requests(role="user")} == {"user"}
    assert main_server.bodies(role="agent")[-1]["messages"][-1]["content"] == marker
    errors = [e for e in main_server.requests(role="misc") if e["status"] == 500]
    if errors:  # present when the misc test ran first in this module
        assert errors[0]["response"] == {"status": 500}

    stats = main_server.stats()
    assert stats["requests"] == len(all_entries)
    assert stats["by_role"]["agent"] >= 1 and stats["by_status"]["200"] >= 1
    assert stats["in_flight"] == 0


def test_low_latency_keepalive(http: httpx.Client) -> None:
    """Sanity check that headers and body go out together with TCP_NODELAY (Nagle would add ~40 ms each)."""
    msgs = convo(JUDGE_SYSTEM, ("user", "x"))
    chat(http, msgs)
    durations = []
    for _ in range(15):
        t0 = time.perf_counter()
        assert chat(http, msgs).status_code == 200
        durations.append(time.perf_counter() - t0)
    assert statistics.median(durations) < 0.035, durations


# --------------------------------------------------------------------------- faults (own servers)


def fault_outcomes(srv: ScriptedServer, count: int) -> list[str]:
    outcomes = []
    with httpx.Client(base_url=srv.base_url, timeout=5, trust_env=False) as client:
        for _ in range(count):
            try:
                outcomes.append(str(chat(client, convo(AGENT_SYSTEM, ("user", "hi"))).status_code))
            except httpx.RemoteProtocolError:
                outcomes.append("drop")
    return outcomes


def test_faults_are_deterministic_per_seed(tmp_path: Path) -> None:
    faults = {"error_500_rate": 0.25, "error_429_rate": 0.15, "drop_rate": 0.15, "retry_after_s": 0}
    script = {"seed": 7, "faults": faults, "roles": {"agent": {"turns": [{"content": "ok"}]}}}
    runs = []
    for seed in (7, 7, 8):
        with start_scripted_server({**script, "seed": seed}, tmp_path) as srv:
            runs.append(fault_outcomes(srv, 40))
            stats = srv.stats()
            assert stats["by_status"].get("0", 0) == runs[-1].count("drop")
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    assert {"200", "500", "429", "drop"} <= set(runs[0])


def test_429_retry_after_and_fault_roles(tmp_path: Path) -> None:
    script = {
        "faults": {"error_429_rate": 1.0, "retry_after_s": 3, "roles": ["agent"]},
        "roles": {"agent": {"turns": [{"content": "ok"}]}, "user": {"turns": [{"content": "fine"}]}},
    }
    with start_scripted_server(script, tmp_path) as srv, httpx.Client(base_url=srv.base_url, trust_env=False) as c:
        resp = chat(c, convo(AGENT_SYSTEM, ("user", "hi")))
        assert resp.status_code == 429
        assert resp.headers["Retry-After"] == "3"
        assert resp.json()["error"]["code"] == 429
        assert message_of(chat(c, convo(USER_SYSTEM, ("user", "hi"))))["content"] == "fine"
        client = openai.OpenAI(
            base_url=srv.base_url, api_key="x", max_retries=0, http_client=openai.DefaultHttpxClient(trust_env=False)
        )
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="scripted", messages=convo(AGENT_SYSTEM, ("user", "hi")))
        assert [e["status"] for e in srv.requests()] == [429, 200, 429]
        assert srv.requests()[0]["response"] == {"status": 429}


def test_drop_closes_connection(tmp_path: Path) -> None:
    with start_scripted_server({"faults": {"drop_rate": 1.0}}, tmp_path) as srv:
        body = json.dumps({"model": "m", "messages": convo(AGENT_SYSTEM, ("user", "hi"))}).encode()
        request = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        with socket.create_connection((srv.host, srv.port), timeout=5) as sock:
            sock.sendall(request)
            assert sock.recv(65536) == b""  # EOF, not a single byte of response
        with httpx.Client(base_url=srv.base_url, trust_env=False) as c, pytest.raises(httpx.RemoteProtocolError):
            chat(c, convo(AGENT_SYSTEM, ("user", "hi")))
        client = openai.OpenAI(
            base_url=srv.base_url, api_key="x", max_retries=0, http_client=openai.DefaultHttpxClient(trust_env=False)
        )
        with pytest.raises(openai.APIConnectionError):
            client.chat.completions.create(model="scripted", messages=convo(AGENT_SYSTEM, ("user", "hi")))
        assert srv.alive()
        assert srv.stats()["by_fault"] == {"drop": 3}
        assert "Traceback" not in srv.output()


def test_timeout_fault(tmp_path: Path) -> None:
    script = {"faults": {"timeout_rate": 1.0, "timeout_s": 0.6}, "roles": {"agent": {"turns": [{"content": "late"}]}}}
    with start_scripted_server(script, tmp_path) as srv, httpx.Client(base_url=srv.base_url, trust_env=False) as c:
        with pytest.raises(httpx.ReadTimeout):
            c.post("/chat/completions", json={"messages": convo(AGENT_SYSTEM)}, timeout=0.15)
        t0 = time.perf_counter()
        resp = c.post("/chat/completions", json={"messages": convo(AGENT_SYSTEM)}, timeout=5)
        assert resp.status_code == 200 and message_of(resp)["content"] == "late"
        assert time.perf_counter() - t0 >= 0.5
        assert srv.requests()[0]["fault"] == "timeout"


def test_down_mode(tmp_path: Path) -> None:
    with start_scripted_server({"faults": {"down": True}}, tmp_path) as srv:
        with httpx.Client(base_url=srv.base_url, trust_env=False) as c:
            assert chat(c, convo(AGENT_SYSTEM, ("user", "hi"))).status_code == 503
            assert chat(c, convo(USER_SYSTEM, ("user", "hi"))).status_code == 503
            assert c.get("/models").status_code == 503
            assert c.get(f"{srv.root_url}/health").status_code == 503
        assert srv.stats()["by_status"] == {"503": 2}


def test_first_n_fail_then_openai_sdk_retries(tmp_path: Path) -> None:
    script = {"faults": {"first_n_fail": 2}, "roles": {"agent": {"turns": [{"content": "recovered"}]}}}
    with start_scripted_server(script, tmp_path) as srv:
        with httpx.Client(base_url=srv.base_url, trust_env=False) as c:
            assert chat(c, convo(AGENT_SYSTEM)).status_code == 500
        client = openai.OpenAI(
            base_url=srv.base_url, api_key="x", max_retries=2, http_client=openai.DefaultHttpxClient(trust_env=False)
        )
        completion = client.chat.completions.create(model="scripted", messages=convo(AGENT_SYSTEM))
        assert completion.choices[0].message.content == "recovered"
        assert [e["status"] for e in srv.requests()] == [500, 500, 200]


def test_malformed_tool_call_fault_hits_agent_only(tmp_path: Path) -> None:
    call = {"tool_calls": [{"name": "get_user_details", "arguments": {"user_id": "u"}}]}
    script = {
        "faults": {"malformed_tool_call_rate": 1.0},
        "roles": {"agent": {"turns": [call]}, "user": {"turns": [call]}},
    }
    with start_scripted_server(script, tmp_path) as srv, httpx.Client(base_url=srv.base_url, trust_env=False) as c:
        agent = message_of(chat(c, convo(AGENT_SYSTEM, ("user", "hi"))))
        assert agent["tool_calls"][0]["function"]["arguments"] == "{bad json"
        user = message_of(chat(c, convo(USER_SYSTEM, ("user", "hi"))))
        assert json.loads(user["tool_calls"][0]["function"]["arguments"]) == {"user_id": "u"}


def test_concurrency_with_latency(tmp_path: Path) -> None:
    script = {"latency_ms": 200, "roles": {"agent": {"turns": [{"content": "ok"}]}}}

    async def burst(base_url: str) -> list[int]:
        limits = httpx.Limits(max_connections=250, max_keepalive_connections=250)
        async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30, trust_env=False) as client:
            reqs = [
                client.post("/chat/completions", json={"messages": convo(AGENT_SYSTEM, ("user", f"q{i}"))}) for i in range(200)
            ]
            return [r.status_code for r in await asyncio.gather(*reqs)]

    with start_scripted_server(script, tmp_path) as srv:
        t0 = time.perf_counter()
        statuses = asyncio.run(burst(srv.base_url))
        elapsed = time.perf_counter() - t0
        assert statuses == [200] * 200
        assert elapsed < 20, elapsed  # serial would be 40 s; loose on purpose
        stats = srv.stats()
        assert stats["max_in_flight"] >= 50, stats
        assert len(srv.requests()) == 200


# --------------------------------------------------------------------------- CLI


def test_cli_yaml_script_and_port_file(tmp_path: Path) -> None:
    script = tmp_path / "s.yaml"
    script.write_text("models: [yaml-model]\nroles:\n  agent:\n    turns:\n      - content: from yaml\n")
    port_file = tmp_path / "port"
    env = {"PYTHONPATH": str(SRC_DIR), "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "moodbench.testing.scripted_server", "--script", str(script), "--port", "0"]
    proc = subprocess.Popen([*cmd, "--port-file", str(port_file)], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while not (port_file.exists() and port_file.read_text().strip()):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        base = f"http://127.0.0.1:{int(port_file.read_text())}/v1"
        with httpx.Client(base_url=base, trust_env=False) as c:
            assert [m["id"] for m in c.get("/models").json()["data"]] == ["yaml-model"]
            assert message_of(chat(c, convo(AGENT_SYSTEM)))["content"] == "from yaml"
    finally:
        proc.terminate()
        assert proc.wait(timeout=5) == 0


def test_invalid_script_fails_fast(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="unknown key"):
        start_scripted_server({"roles": {"agent": {"turns": [{"contnet": "typo"}]}}}, tmp_path)
