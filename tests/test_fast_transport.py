"""The light OpenAI-compatible transport: used only where it applies, and indistinguishable from litellm.

The same calls go once through the light transport and once through litellm
(``ModelSpec(transport="litellm")``) against the scripted server; the parsed completions and the
request bodies the server received must agree.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from moodbench.llm import EndpointHealth, ModelClient, ModelSpec

# the two transports are private to llm; these tests compare them on the same requests
from moodbench.llm._fast import OpenAICompatTransport, transport_for
from moodbench.llm._litellm import LitellmTransport
from scripted import start_scripted_server

SCRIPT = {
    "roles": {
        "agent": {
            "turns": [
                {"think": "let me look", "tool_calls": [{"name": "get_order", "arguments": {"order_id": "#W1"}}]},
                {"content": "Your order is <b>pending</b>."},
            ],
            "after": "repeat_last",
        }
    }
}
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_order",
            "description": "Look up an order.",
            "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
        },
    }
]


def _history(turn: int) -> list[dict]:
    msgs: list[dict[str, Any]] = [
        {"role": "system", "content": "<policy>help</policy>"},
        {"role": "user", "content": "where is my order?"},
    ]
    if turn:
        msgs += [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "get_order", "arguments": '{"order_id": "#W1"}'}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": '{"status": "pending"}'},
        ]
    return msgs


def _calls(client: ModelClient) -> list[tuple]:
    out = []
    for turn in (0, 1):
        c = client.complete(_history(turn), tools=TOOLS, tool_choice="auto", seed=7)
        out.append(
            (
                c.content,
                c.raw_content,
                c.think_stripped,
                [(t.name, t.arguments, t.valid_json) for t in c.tool_calls],
                c.prompt_tokens,
                c.completion_tokens,
                c.finish_reason,
                c.cost_usd,
            )
        )
    return out


def test_same_completions_and_request_bodies_as_litellm(tmp_path: Path) -> None:
    with start_scripted_server(SCRIPT, tmp_path) as srv:
        spec = ModelSpec(model="openai/scripted", base_urls=(srv.base_url,), args={"temperature": 0.0}, max_retries=0)
        fast = ModelClient(spec, EndpointHealth(0))
        assert isinstance(fast._transport, OpenAICompatTransport)
        got_fast = _calls(fast)
        slow = ModelClient(replace(spec, transport="litellm"), EndpointHealth(0))
        assert not isinstance(slow._transport, OpenAICompatTransport)
        got_litellm = _calls(slow)
        assert got_fast == got_litellm
        assert got_fast[0][3] == [("get_order", {"order_id": "#W1"}, True)] and got_fast[0][2]
        bodies = srv.bodies(role="agent")
        keys = ("model", "messages", "tools", "tool_choice", "max_tokens", "seed", "temperature")
        fast_bodies, litellm_bodies = bodies[:2], bodies[2:]
        for b_fast, b_lite in zip(fast_bodies, litellm_bodies):
            assert {k: b_fast.get(k) for k in keys} == {k: b_lite.get(k) for k in keys}


@pytest.mark.parametrize(
    "model,urls,args,fast",
    [
        ("openai/qwen", ("http://127.0.0.1:8000/v1",), {}, True),
        ("hosted_vllm/Qwen/Qwen2.5-7B", ("http://gpu1:8000/v1", "http://gpu2:8000/v1"), {"temperature": 0}, True),
        ("openai/gpt-4o-mini", (), {}, False),  # hosted API, no base URL
        ("openai/gpt-4o-mini", ("https://api.openai.com/v1",), {}, False),  # model-specific rules live in litellm
        ("anthropic/claude", ("http://127.0.0.1:8000",), {}, False),  # another provider's protocol
        ("openai/qwen", ("http://127.0.0.1:8000/v1",), {"top_k": 20}, False),  # a parameter litellm maps
    ],
)
def test_fast_path_only_where_it_applies(model: str, urls: tuple[str, ...], args: dict, fast: bool) -> None:
    assert (transport_for(model, urls, args) is not None) is fast


def test_litellm_can_be_forced() -> None:
    spec = ModelSpec(model="openai/qwen", base_urls=("http://127.0.0.1:8000/v1",))
    assert isinstance(ModelClient(spec)._transport, OpenAICompatTransport)
    assert isinstance(ModelClient(replace(spec, transport="litellm"))._transport, LitellmTransport)
    with pytest.raises(ValueError, match="transport"):
        ModelSpec(model="openai/qwen", transport="fast")  # type: ignore[arg-type]


def test_a_priced_model_is_priced_on_every_call_and_an_unpriced_one_costs_nothing(tmp_path: Path) -> None:
    """Cost accounting: litellm's price for a model it knows, call after call; 0 for a model it does not know
    (asked once per client: the look-up is ~1 ms of CPU per call for the same answer)."""
    import litellm

    with start_scripted_server(SCRIPT, tmp_path) as srv:
        priced = ModelClient(ModelSpec(model="openai/gpt-4o-mini", base_urls=(srv.base_url,), max_retries=0), EndpointHealth(0))
        unpriced = ModelClient(ModelSpec(model="openai/scripted", base_urls=(srv.base_url,), max_retries=0), EndpointHealth(0))
        for turn in (0, 1, 0):
            c = priced.complete(_history(turn), tools=TOOLS, tool_choice="auto", seed=7)
            want = sum(
                litellm.cost_per_token(model="gpt-4o-mini", prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens)
            )
            assert c.prompt_tokens > 0 and c.cost_usd == pytest.approx(want) and c.cost_usd > 0
            assert unpriced.complete(_history(turn), tools=TOOLS, tool_choice="auto", seed=7).cost_usd == 0.0
