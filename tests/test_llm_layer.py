"""The model layer: its import, its retry policy, and its text sanitising.

Small local models write tool calls into the message text and leak their reasoning; two
functions decide what the *other* side of a tau2 conversation sees, so every format they accept
(and everything they must refuse) is pinned here, and one test drives both through a real
``ModelClient`` against the scripted server, so the formats a server actually emits are covered too.
The retry tests run against the scripted server as well (faults seeded, backoff shortened).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from moodbench.llm import recover_text_tool_calls, strip_thinking

TOOLS = ["get_user_details", "cancel_order", "transfer_to_human_agents"]
CALL = {"name": "get_user_details", "arguments": {"user_id": "sara_1"}}
EXPECTED = [("get_user_details", {"user_id": "sara_1"})]


# --------------------------------------------------------------------------- text tool calls


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(json.dumps(CALL), id="bare"),
        pytest.param("Let me look that up.\n" + json.dumps(CALL) + "\nOne moment.", id="bare-in-prose"),
        pytest.param("```json\n" + json.dumps(CALL) + "\n```", id="fenced-json"),
        pytest.param("```\n" + json.dumps(CALL) + "\n```", id="fenced-no-language"),
        pytest.param("Sure.\n```tool_call\n" + json.dumps(CALL, indent=2) + "\n```\nDone.", id="fenced-tool_call-indented"),
        pytest.param("<tool_call>\n" + json.dumps(CALL) + "\n</tool_call>", id="tagged"),
        pytest.param("<tool_call>" + json.dumps(CALL), id="tagged-unclosed"),
        pytest.param(
            json.dumps(
                {"type": "function", "function": {"name": "get_user_details", "arguments": json.dumps({"user_id": "sara_1"})}}
            ),
            id="openai-shaped-string-args",
        ),
        pytest.param(json.dumps({"name": "get_user_details", "parameters": {"user_id": "sara_1"}}), id="parameters-key"),
    ],
)
def test_each_format_is_recovered(text: str) -> None:
    assert recover_text_tool_calls(text, TOOLS) == EXPECTED


def test_arguments_as_dict_and_as_json_string_give_the_same_call() -> None:
    as_dict = json.dumps({"name": "cancel_order", "arguments": {"order_id": "#W1", "reason": "no longer needed"}})
    as_string = json.dumps({"name": "cancel_order", "arguments": json.dumps({"order_id": "#W1", "reason": "no longer needed"})})
    expected = [("cancel_order", {"order_id": "#W1", "reason": "no longer needed"})]
    assert recover_text_tool_calls(as_dict, TOOLS) == expected
    assert recover_text_tool_calls(as_string, TOOLS) == expected


def test_missing_or_empty_arguments_mean_no_arguments() -> None:
    assert recover_text_tool_calls('{"name": "transfer_to_human_agents"}', TOOLS) == [("transfer_to_human_agents", {})]
    assert recover_text_tool_calls('{"name": "transfer_to_human_agents", "arguments": ""}', TOOLS) == [
        ("transfer_to_human_agents", {})
    ]
    assert recover_text_tool_calls('{"name": "transfer_to_human_agents", "arguments": null}', TOOLS) == [
        ("transfer_to_human_agents", {})
    ]


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('{"name": "delete_everything", "arguments": {}}', id="unknown-tool-bare"),
        pytest.param('<tool_call>{"name": "delete_everything", "arguments": {}}</tool_call>', id="unknown-tool-tagged"),
        pytest.param('```json\n{"name": "Get_User_Details", "arguments": {}}\n```', id="name-is-case-sensitive"),
        pytest.param('{"name": "get_user_details", "arguments": "{bad json"}', id="string-args-not-json"),
        pytest.param('{"name": "get_user_details", "arguments": ["sara_1"]}', id="args-not-an-object"),
        pytest.param('{"name": 5, "arguments": {}}', id="name-not-a-string"),
        pytest.param('Your order {"status": "pending", "items": 2} is on its way.', id="prose-with-unrelated-json"),
        pytest.param('```json\n{"name": "get_user_details", "arguments": {"user_id": \n```', id="truncated-json"),
        pytest.param("I will call get_user_details for you now.", id="mention-without-json"),
        pytest.param("", id="empty"),
    ],
)
def test_non_calls_are_rejected(text: str) -> None:
    assert recover_text_tool_calls(text, TOOLS) == []


def test_none_text_and_no_tools_give_nothing() -> None:
    assert recover_text_tool_calls(None, TOOLS) == []
    assert recover_text_tool_calls(json.dumps(CALL), []) == []


def test_only_real_tools_are_kept_from_a_mixed_list() -> None:
    text = json.dumps([CALL, {"name": "rm_rf", "arguments": {}}, {"name": "cancel_order", "arguments": {"order_id": "#W2"}}])
    assert recover_text_tool_calls(text, TOOLS) == [EXPECTED[0], ("cancel_order", {"order_id": "#W2"})]


def test_several_tagged_calls_in_order() -> None:
    text = (
        "<tool_call>"
        + json.dumps(CALL)
        + "</tool_call>\n<tool_call>"
        + json.dumps({"name": "cancel_order", "arguments": {"order_id": "#W3"}})
        + "</tool_call>"
    )
    assert recover_text_tool_calls(text, TOOLS) == [EXPECTED[0], ("cancel_order", {"order_id": "#W3"})]


def test_tagged_call_explained_in_prose_is_read_once() -> None:
    """A model that shows the call as JSON and then emits it in tags must not call the tool twice."""
    text = "I am going to call " + json.dumps(CALL) + " now:\n<tool_call>" + json.dumps(CALL) + "</tool_call>"
    assert recover_text_tool_calls(text, TOOLS) == EXPECTED
    fenced_and_bare = "Calling " + json.dumps(CALL) + "\n```json\n" + json.dumps(CALL) + "\n```"
    assert recover_text_tool_calls(fenced_and_bare, TOOLS) == EXPECTED


def test_a_fence_without_calls_falls_back_to_bare_json() -> None:
    text = "```\nprint('hello')\n```\n" + json.dumps(CALL)
    assert recover_text_tool_calls(text, TOOLS) == EXPECTED


# --------------------------------------------------------------------------- think stripping


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        pytest.param("<think>The user wants a refund.</think>Sure, I can help.", "Sure, I can help.", id="closed"),
        pytest.param("<think>\nline one\nline two\n</think>\n\nHello!", "Hello!", id="closed-multiline"),
        pytest.param("<think>a</think>Hi <think>b</think>there", "Hi there", id="two-closed"),
        pytest.param("<thinking>x</thinking>Answer", "Answer", id="thinking-tag"),
        pytest.param("<reasoning>x</reasoning>Answer", "Answer", id="reasoning-tag"),
        pytest.param("<THINK>x</THINK>Answer", "Answer", id="upper-case"),
        pytest.param("<think>reasoning without end", "", id="unclosed-only"),
        pytest.param("Here you go.\n<think>and then I kept reasoning", "Here you go.", id="unclosed-after-answer"),
        pytest.param("reasoning</think>answer", "answer", id="leading-close-only"),
        pytest.param("step 1\nstep 2\n</think>\nThe answer.", "The answer.", id="leading-multiline"),
        pytest.param("<think></think>Hello", "Hello", id="empty-block"),
    ],
)
def test_think_blocks_are_removed(raw: str, clean: str) -> None:
    out, stripped = strip_thinking(raw)
    assert out == clean
    assert stripped is True
    assert "think>" not in out.lower()


@pytest.mark.parametrize("text", ["Hello there.", "  spaced  ", "I think this is right.", "a < b and c > d", ""])
def test_text_without_tags_is_returned_unchanged(text: str) -> None:
    assert strip_thinking(text) == (text, False)


def test_none_stays_none() -> None:
    assert strip_thinking(None) == (None, False)


def test_reasoning_text_never_survives() -> None:
    secret = "SECRET-REASONING-42"
    for raw in (f"<think>{secret}</think>ok", f"<think>{secret}", f"{secret}</think>ok", f"ok<think>{secret}"):
        out, _ = strip_thinking(raw)
        assert secret not in (out or ""), raw


# --------------------------------------------------------------------------- through a real client


def test_client_recovers_text_calls_and_strips_think_over_http(tmp_path: Path) -> None:
    """The scripted server writes each text style; ModelClient must turn them into real calls."""
    from moodbench.llm import ModelClient, ModelSpec
    from scripted import start_scripted_server

    args = {"user_id": "sara_1"}
    script: dict[str, Any] = {
        "roles": {
            "agent": {
                "turns": [
                    {"text_tool_call": {"name": "get_user_details", "arguments": args}, "style": "bare"},
                    {"text_tool_call": {"name": "get_user_details", "arguments": args}, "style": "fenced", "think": "PRIVATE-1"},
                    {"text_tool_call": {"name": "get_user_details", "arguments": args}, "style": "tagged"},
                    {"text_tool_call": {"name": "unknown_tool", "arguments": args}, "style": "tagged"},
                    {"content": "PRIVATE-2</think>Plain answer."},
                ],
            }
        }
    }
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_user_details",
                "description": "d",
                "parameters": {"type": "object", "properties": {"user_id": {"type": "string"}}},
            },
        }
    ]
    with start_scripted_server(script, tmp_path) as srv:
        client = ModelClient(ModelSpec(model="openai/scripted", base_urls=(srv.base_url,), max_retries=0))
        history: list[dict[str, Any]] = [
            {"role": "system", "content": "<policy>be nice</policy>"},
            {"role": "user", "content": "hi"},
        ]
        results = []
        for _ in range(5):
            c = client.complete(history, tools=tools, recover_text_tool_calls=True)
            results.append(c)
            history.append({"role": "assistant", "content": "next"})  # advances the server's turn counter
    for c in results[:3]:
        assert [(t.name, t.arguments, t.recovered_from_text) for t in c.tool_calls] == [("get_user_details", args, True)]
        assert c.recovered_text_calls == 1
        assert c.content is None
    assert results[1].think_stripped and "PRIVATE-1" in (results[1].raw_content or "")
    unknown = results[3]
    assert unknown.tool_calls == [] and unknown.recovered_text_calls == 0
    assert "unknown_tool" in (unknown.content or "")  # left as text, not executed
    assert results[4].content == "Plain answer." and results[4].think_stripped
    assert "PRIVATE-2" in (results[4].raw_content or "")


# --------------------------------------------------------------------------- import and retry policy

MESSAGES = [{"role": "system", "content": "You grade things."}, {"role": "user", "content": "hi"}]


def test_importing_the_model_layer_imports_no_tau2_and_keeps_litellm_offline() -> None:
    """tau2 is the conversation layer's business; litellm's offline cost map is set by the model layer itself."""
    env = {k: v for k, v in os.environ.items() if k != "LITELLM_LOCAL_MODEL_COST_MAP"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent / "src")
    code = (
        "import os, sys; import moodbench.llm; "
        "print('tau2' in sys.modules, [m for m in sys.modules if m.startswith('tau2')][:3], "
        "os.environ.get('LITELLM_LOCAL_MODEL_COST_MAP'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False [] True", out.stdout


def _client(srv: Any, health: Any = None, **spec: Any) -> Any:
    from scripted import scripted_client

    return scripted_client(srv.base_url, health, **spec)


def test_the_retry_policy_is_tenacity_sleeping_on_the_breaker(tmp_path: Path) -> None:
    import tenacity

    from moodbench.llm import EndpointHealth
    from moodbench.llm._client import _Call

    health = EndpointHealth(5)
    client = _client(type("S", (), {"base_url": "http://127.0.0.1:9/v1"})(), health)
    policy = client._retrying(_Call(MESSAGES, None, None, False, None, empty_left=0))
    assert isinstance(policy, tenacity.Retrying)
    assert policy.sleep == health.sleep  # a backoff ends when the breaker trips or the run is cancelled


def test_a_long_backoff_ends_at_once_when_the_run_is_cancelled(tmp_path: Path) -> None:
    """A call sleeping in a 30 s backoff returns as soon as the run is cancelled, without another request."""
    from moodbench.llm import EndpointHealth, LLMCallError
    from scripted import start_scripted_server

    health = EndpointHealth(0)
    errors: list[BaseException] = []
    with start_scripted_server({"faults": {"first_n_fail": 100}}, tmp_path) as srv:
        client = _client(srv, health, backoff_base_s=30, backoff_max_s=30, max_retries=5)

        def call() -> None:
            try:
                client.complete(MESSAGES)
            except LLMCallError as exc:
                errors.append(exc)

        worker = threading.Thread(target=call)
        worker.start()
        deadline = time.monotonic() + 30
        while not srv.requests() and time.monotonic() < deadline:
            time.sleep(0.02)
        cancelled_at = time.monotonic()
        health.cancel()
        worker.join(timeout=30)
        woke_after = time.monotonic() - cancelled_at
        logged = srv.requests()
    assert not worker.is_alive() and woke_after < 10, woke_after
    assert len(logged) == 1 and len(errors) == 1 and "cancelled" in str(errors[0])


def test_retry_after_is_capped_by_retry_after_max_s(tmp_path: Path) -> None:
    """A server asking for 60 s is waited on for at most retry_after_max_s (seed 1: a 429, then a 200)."""
    from scripted import start_scripted_server

    with start_scripted_server({"seed": 1, "faults": {"error_429_rate": 0.5, "retry_after_s": 60}}, tmp_path) as srv:
        started = time.monotonic()
        completion = _client(srv, max_retries=2, retry_after_max_s=0.2).complete(MESSAGES)
        elapsed = time.monotonic() - started
        logged = srv.requests()
    assert [r["status"] for r in logged] == [429, 200]
    assert completion.attempts == 2 and 0.2 <= logged[1]["t"] - logged[0]["t"] and elapsed < 30


@pytest.mark.parametrize("transport", ["auto", "litellm"])
def test_a_context_window_error_is_not_retried(tmp_path: Path, transport: str) -> None:
    from moodbench.llm import ContextWindowError
    from scripted import start_scripted_server

    script = {"roles": {"judge": {"turns": [{"status": 400, "error": "This model's maximum context length is 4096 tokens"}]}}}
    with start_scripted_server(script, tmp_path) as srv:
        with pytest.raises(ContextWindowError):
            _client(srv, max_retries=3, transport=transport).complete(MESSAGES)
        assert len(srv.requests()) == 1


@pytest.mark.parametrize(
    ("headers", "low", "high"),
    [
        ({"retry-after-ms": "1500"}, 1.5, 1.5),
        ({"Retry-After": "2"}, 2.0, 2.0),
        ({"Retry-After": "HTTP date 30 s from now"}, 25.0, 30.0),
        ({"Retry-After": "soon"}, None, None),
    ],
)
def test_retry_after_spellings(headers: dict[str, str], low: float | None, high: float | None) -> None:
    from moodbench.llm._client import _retry_after_seconds

    if headers.get("Retry-After", "").startswith("HTTP date"):
        headers = {"Retry-After": format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)}
    exc = RuntimeError("429")
    exc.response = httpx.Response(429, headers=headers)  # type: ignore[attr-defined]
    got = _retry_after_seconds(exc)
    assert got is None if low is None or high is None else (got is not None and low <= got <= high), got


@pytest.mark.parametrize("transport", ["auto", "litellm"])
def test_text_completions_go_to_v1_completions_with_stop_strings_retries_and_accounting(tmp_path: Path, transport: str) -> None:
    """The completion customer format: a plain continuation, through the same retries and parsing as chat."""
    from scripted import start_scripted_server

    script = {
        "seed": 3,
        "faults": {"first_n_fail": 1},
        "roles": {"judge": {"turns": [{"content": "<think>me first</think> I want my order refunded."}]}},
    }
    with start_scripted_server(script, tmp_path) as srv:
        completion = _client(srv, max_retries=2, transport=transport).complete_text(
            "TRANSCRIPT\nAGENT: Hi! How can I help you today?\nCUSTOMER:", stop=["\nAGENT:"], seed=7
        )
        logged = srv.requests()
    assert completion.content == "I want my order refunded." and completion.think_stripped  # <think> removed
    assert completion.attempts == 2 and [r["status"] for r in logged] == [500, 200]  # retried like a chat call
    body = logged[-1]["body"]
    assert body["prompt"].endswith("CUSTOMER:") and body["stop"] == ["\nAGENT:"] and body["seed"] == 7
    assert completion.completion_tokens > 0 and completion.finish_reason == "stop"
