"""Turning tool calls written as text into real tool calls.

Small models (and servers whose tool parser does not match the model) often write the call into
the message text: a bare ``{"name": ..., "arguments": ...}``, a fenced json block, or
``<tool_call>`` tags. Without recovery such an agent "never calls a tool" and scores zero for a
formatting reason; with it, reports can tell "formatted wrong" from "never called". Only calls that
name a real tool are accepted, so prose that happens to contain JSON is left alone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from moodbench._util.jsontext import json_values

_TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|\Z)", re.DOTALL)
_FENCED = re.compile(r"```(?:json|tool_call|javascript|js)?\s*\n?(.*?)```", re.DOTALL)


def _as_call(obj: Any, tool_names: set[str]) -> tuple[str, dict] | None:
    if not isinstance(obj, dict):
        return None
    if "function" in obj and isinstance(obj["function"], dict):  # OpenAI-shaped
        obj = obj["function"]
    name = obj.get("name") or obj.get("tool") or obj.get("tool_name")
    if not isinstance(name, str) or name not in tool_names:
        return None
    args: Any = next((obj[k] for k in ("arguments", "parameters", "args", "input") if k in obj), {})
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            return None
    if args is None:
        args = {}
    if not isinstance(args, dict):
        return None
    return name, args


def _calls_in(fragment: str, tool_names: set[str]) -> list[tuple[str, dict]]:
    calls: list[tuple[str, dict]] = []
    for value in json_values(fragment):
        items = value if isinstance(value, list) else [value]
        for item in items:
            call = _as_call(item, tool_names)
            if call:
                calls.append(call)
    return calls


def recover_text_tool_calls(text: str | None, tool_names: Iterable[str]) -> list[tuple[str, dict]]:
    """Return the ``(name, arguments)`` calls written in ``text``; empty if there are none.

    Tagged calls win over fenced blocks, which win over bare JSON, so a model that explains a call
    in prose and then writes it in tags is read once, not twice.
    """
    if not text:
        return []
    names = set(tool_names)
    for pattern in (_TAGGED, _FENCED):
        fragments = pattern.findall(text)
        calls = [c for frag in fragments for c in _calls_in(frag, names)]
        if calls:
            return calls
    return _calls_in(text, names)
