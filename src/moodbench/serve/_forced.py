"""Forced tool calls for llama.cpp: ``tool_choice`` "required" or a named function becomes a grammar.

``llama-server``'s own handling is not enough for small models: "required" lets the model write free
text before the first ``<tool_call>`` and a named function is silently treated as "auto". So the
front (:mod:`._front`) rewrites such a request with :func:`plan_chat_request` (a JSON grammar that
admits only a call of an allowed tool) and turns the reply back into an OpenAI tool call with
:func:`finish_forced_response` (or its stream, ``_as_sse``).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

__all__ = ["ForcedCall", "finish_forced_response", "plan_chat_request"]


@dataclass(frozen=True)
class ForcedCall:
    """A request whose ``tool_choice`` demands a call ("required" or a named function)."""

    tool_names: tuple[str, ...]
    stream: bool
    include_usage: bool


def plan_chat_request(body: dict[str, Any]) -> tuple[dict[str, Any], ForcedCall | None]:
    """Decide how to send a ``/v1/chat/completions`` body to llama-server; pure function.

    ``"auto"``/``"none"``/absent: unchanged. ``"required"`` or a named function: llama-server's own
    "required" grammar lets the model write free text *before* the first ``<tool_call>`` (measured:
    Qwen2.5-Coder-0.5B wrote a bare JSON call plus prose and hit max_tokens without a real tool call),
    and a named choice is silently treated as "auto". So instead we send ``tool_choice: "none"`` plus a
    JSON-schema ``response_format`` whose only valid outputs are ``{"name": <allowed tool>, "arguments":
    <that tool's parameters>}``: the grammar forces exactly one well-formed call from the first token.
    ``tools`` stay in the request, so the prompt is byte-identical to the "auto" one (prefix cache hit)
    and the model still sees every tool, as the OpenAI semantics of a named choice imply. The reply is
    turned back into ``tool_calls`` by :func:`finish_forced_response`. The upstream request is never
    streamed; a streaming client gets the call as synthesized SSE events.

    Raises ``ValueError`` (the front answers 400, as OpenAI does) for a named function not in ``tools``
    or "required" without tools.
    """
    tc = body.get("tool_choice")
    tools = [t for t in body.get("tools") or [] if _tool_name(t)]
    if isinstance(tc, dict):
        fn: dict[str, Any] = tc["function"] if isinstance(tc.get("function"), dict) else {}
        name = fn.get("name") or tc.get("name")
        if tc.get("type") in ("auto", "none", "required") and not name:
            tc = tc["type"]
        elif not name:
            raise ValueError(f"unsupported tool_choice: {json.dumps(tc)}")
        else:
            allowed = [t for t in tools if _tool_name(t) == name]
            if not allowed:
                raise ValueError(f"tool_choice names function {name!r}, which is not in 'tools'")
            return _forced(body, allowed)
    if tc == "required":
        if not tools:
            raise ValueError("tool_choice 'required' needs a non-empty 'tools' list")
        return _forced(body, tools)
    return body, None


def _forced(body: dict[str, Any], allowed: list[dict[str, Any]]) -> tuple[dict[str, Any], ForcedCall]:
    variants = []
    for t in allowed:
        params = (t.get("function") or t).get("parameters") or {"type": "object"}
        variants.append(
            {
                "type": "object",
                "properties": {"name": {"const": _tool_name(t)}, "arguments": params},
                "required": ["name", "arguments"],
            }
        )
    schema = variants[0] if len(variants) == 1 else {"anyOf": variants}
    upstream = {k: v for k, v in body.items() if k not in ("stream", "stream_options", "parallel_tool_calls")}
    upstream["tool_choice"] = "none"
    upstream["response_format"] = {"type": "json_schema", "json_schema": {"name": "tool_call", "schema": schema}}
    opts: dict[str, Any] = body["stream_options"] if isinstance(body.get("stream_options"), dict) else {}
    forced = ForcedCall(
        tool_names=tuple(str(_tool_name(t)) for t in allowed),
        stream=bool(body.get("stream")),
        include_usage=bool(opts.get("include_usage")),
    )
    return upstream, forced


def finish_forced_response(resp: dict[str, Any], forced: ForcedCall) -> dict[str, Any]:
    """Turn the grammar-forced JSON content back into an OpenAI ``tool_calls`` message; pure function.

    A reply that does not parse (e.g. cut off by ``max_tokens``: ``finish_reason == "length"``) is
    returned unchanged, so the client sees plain content and no invented call.
    """
    out = dict(resp)
    choices = []
    for choice in resp.get("choices") or []:
        msg = dict(choice.get("message") or {})
        try:
            call = json.loads(msg.get("content") or "")
        except ValueError:
            call = None
        if isinstance(call, dict) and call.get("name") in forced.tool_names and isinstance(call.get("arguments"), dict):
            msg["content"] = None
            msg["tool_calls"] = [
                {
                    "id": f"call_{uuid.uuid4().hex[:24]}",
                    "type": "function",
                    "function": {"name": call["name"], "arguments": json.dumps(call["arguments"], ensure_ascii=False)},
                }
            ]
            choice = dict(choice, message=msg, finish_reason="tool_calls")
        choices.append(choice)
    out["choices"] = choices
    return out


def _as_sse(resp: dict[str, Any], forced: ForcedCall) -> bytes:
    """A finished chat completion as OpenAI-style ``chat.completion.chunk`` SSE events."""
    base: dict[str, Any] = {k: resp.get(k) for k in ("id", "created", "model", "system_fingerprint") if k in resp}
    base["object"] = "chat.completion.chunk"
    events: list[dict[str, Any]] = []
    for i, choice in enumerate(resp.get("choices") or []):
        msg = choice.get("message") or {}
        delta: dict[str, Any] = {"role": "assistant", "content": msg.get("content")}
        if msg.get("tool_calls"):
            delta["tool_calls"] = [dict(tc, index=j) for j, tc in enumerate(msg["tool_calls"])]
        events.append({**base, "choices": [{"index": i, "delta": delta, "finish_reason": None}]})
        events.append({**base, "choices": [{"index": i, "delta": {}, "finish_reason": choice.get("finish_reason")}]})
    if forced.include_usage and resp.get("usage"):
        events.append({**base, "choices": [], "usage": resp["usage"]})
    body = "".join(f"data: {json.dumps(e, ensure_ascii=False)}\n\n" for e in events) + "data: [DONE]\n\n"
    return body.encode()


def _tool_name(tool: Any) -> str | None:
    if not isinstance(tool, dict):
        return None
    fn = tool.get("function")
    return fn.get("name") if isinstance(fn, dict) else tool.get("name")
