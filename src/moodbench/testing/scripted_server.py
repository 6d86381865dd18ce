"""A scripted, OpenAI-compatible chat-completions server.

tau2 conversations need two LLMs (the tool-calling agent and the simulated
customer) and sometimes a judge.  Real models are slow, non-deterministic and
unavailable in CI, so tests and benchmarks point litellm/openai at this server
instead: every reply comes from a script, chosen by *which* participant is
asking (detected from tau2's system prompts) and *how far* into the
conversation it is (the number of assistant messages in the request).  Because
the server keeps no per-conversation state, hundreds of conversations can share
one process and still get reproducible replies.

It runs as a real subprocess (``python -m moodbench.testing.scripted_server``)
so that clients exercise real HTTP, real connection pools and real failure
modes (HTTP 429/500/503, timeouts, dropped connections) drawn from a seeded RNG.

Only the standard library and aiohttp are imported at module load; keep it that
way, since every test that starts a server pays the import time.

Script reference (JSON or YAML; keys starting with ``_`` are ignored, any other
unknown key is an error at start-up so typos fail loudly)::

    models: [scripted]          # GET /v1/models
    seed: 0                     # fault RNG (and jitter RNG) seed
    latency_ms: 0               # added to every reply, errors included
    latency_jitter_ms: 0        # uniform extra, from its own RNG (fault sequence unchanged)
    roles:
      agent:  {turns: [RESPONSE, ...], after: repeat_last | cycle | RESPONSE, latency_ms: 0}
      user:   {...}             # default when unscripted: "###STOP###"
      judge:  {...}
      <custom>: {detect: REGEX on system prompt, model: MODEL NAME, turns: [...]}
    faults: {error_500_rate, error_429_rate, retry_after_s, timeout_rate, timeout_s,
             drop_rate, drip_rate, drip_bytes_per_s, drip_headers, huge_rate, huge_bytes,
             huge_chunked, endless_rate, malformed_tool_call_rate, down, first_n_fail,
             require_api_key, roles: [names]}

Role: the first script role (in script order) whose ``model`` equals the
request's model or whose ``detect`` regex matches the system text; else
``user`` if the system text has ``<scenario>``, ``agent`` if it has
``<policy>``, else ``judge``.  Turn = number of ``assistant`` messages in the
request.  Note that tau2's orchestrator sends a hard-coded agent greeting as the
first assistant message, so the agent's first *LLM* call is turn 1 (turn 0 is
only reached by clients that do not do that); every agent tool-call message
also counts as a turn.

RESPONSE keys: ``content``; ``tool_calls: [{name, arguments: dict | raw str, id?}]``;
``text_tool_call: {name, arguments}`` + ``style: bare|fenced|tagged``;
``by_tool_choice: {auto|required|none: RESPONSE}`` (missing -> auto, a dict
naming a function -> required); ``echo_last: true``; ``empty: true``;
``think: str`` (prefixes ``<think>..</think>``); ``status: 4xx/5xx`` (+ ``error``,
``retry_after_s``); ``match: [{if_contains | if_regex, in: any|last|system|all,
then: RESPONSE}]`` + ``else: RESPONSE``; ``delay_ms``; ``finish_reason``.

Faults are drawn per request of a faulted role (``faults.roles``, default all)
from ``random.Random(seed)``, two draws per request, in arrival order, so the
k-th request always meets the same fate.  Precedence: down (503, every role) >
first_n_fail (500) > 500 > 429 > timeout > drop.  ``malformed_tool_call_rate``
only touches the agent's structured tool calls.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import socket
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from aiohttp import web

Response = dict[str, Any]

ROLES_BUILTIN = ("agent", "user", "judge")

# What a role says when the script gives it nothing: the simulated customer ends
# the conversation (so a half-written script cannot loop forever), everyone else
# says something harmless.
DEFAULT_RESPONSES: dict[str, Response] = {
    "user": {"content": "###STOP###"},
    "agent": {"content": "OK"},
    "judge": {"content": "OK"},
}
FALLBACK_RESPONSE: Response = {"content": "OK"}

TOP_LEVEL_KEYS = {"models", "seed", "latency_ms", "latency_jitter_ms", "roles", "faults", "description"}
ROLE_KEYS = {"turns", "after", "detect", "model", "latency_ms"}
FAULT_KEYS = {
    "error_500_rate",
    "error_429_rate",
    "retry_after_s",
    "timeout_rate",
    "timeout_s",
    "drop_rate",
    "drip_rate",
    "drip_bytes_per_s",
    "drip_headers",
    "huge_rate",
    "huge_bytes",
    "huge_chunked",
    "endless_rate",
    "malformed_tool_call_rate",
    "down",
    "first_n_fail",
    "require_api_key",
    "roles",
}
# Faults that answer 200 but send the reply in a way only a client with a deadline and a size
# limit survives; handle_chat writes them itself.
REPLY_FAULTS = ("drip", "huge", "endless")
RESPONSE_KEYS = {
    "content",
    "tool_calls",
    "text_tool_call",
    "style",
    "by_tool_choice",
    "echo_last",
    "empty",
    "status",
    "error",
    "retry_after_s",
    "think",
    "match",
    "else",
    "delay_ms",
    "finish_reason",
}
# At least one of these must be present, otherwise the response says nothing.
RESPONSE_PAYLOAD_KEYS = {
    "content",
    "tool_calls",
    "text_tool_call",
    "by_tool_choice",
    "echo_last",
    "empty",
    "status",
    "think",
    "match",
}
TEXT_TOOL_STYLES = ("bare", "fenced", "tagged")
TOOL_CHOICES = ("auto", "required", "none")
MALFORMED_ARGUMENTS = "{bad json"


class ScriptError(ValueError):
    """Raised at load time so a typo in a script fails the test that wrote it, not a later request."""


# --------------------------------------------------------------------------- script


def load_script(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a JSON or YAML script; YAML is imported lazily because JSON is the common case."""
    text = Path(path).read_text(encoding="utf-8")
    suffix = Path(path).suffix.lower()
    if suffix in (".yaml", ".yml"):
        import yaml

        script = yaml.safe_load(text)
    else:
        try:
            script = json.loads(text)
        except json.JSONDecodeError:
            import yaml

            script = yaml.safe_load(text)
    if script is None:
        script = {}
    validate_script(script)
    return script


def validate_script(script: Any) -> None:
    """Reject malformed scripts up front, with the path of the offending part."""
    if not isinstance(script, dict):
        raise ScriptError("script must be a mapping")
    _check_keys(script, TOP_LEVEL_KEYS, "script")
    models = script.get("models", ["scripted"])
    if not isinstance(models, list) or not models or not all(isinstance(m, str) for m in models):
        raise ScriptError("script.models must be a non-empty list of strings")
    for key in ("latency_ms", "latency_jitter_ms"):
        if not isinstance(script.get(key, 0), (int, float)) or script.get(key, 0) < 0:
            raise ScriptError(f"script.{key} must be a non-negative number")
    roles = script.get("roles", {})
    if not isinstance(roles, dict):
        raise ScriptError("script.roles must be a mapping of role name -> role spec")
    for name, spec in roles.items():
        where = f"roles.{name}"
        if not isinstance(spec, dict):
            raise ScriptError(f"{where} must be a mapping")
        _check_keys(spec, ROLE_KEYS, where)
        turns = spec.get("turns", [])
        if not isinstance(turns, list):
            raise ScriptError(f"{where}.turns must be a list")
        for i, resp in enumerate(turns):
            validate_response(resp, f"{where}.turns[{i}]")
        after = spec.get("after", "repeat_last")
        if isinstance(after, str):
            if after not in ("repeat_last", "cycle"):
                raise ScriptError(f"{where}.after must be 'repeat_last', 'cycle' or a response")
        else:
            validate_response(after, f"{where}.after")
        if "detect" in spec:
            try:
                re.compile(spec["detect"])
            except (re.error, TypeError) as exc:
                raise ScriptError(f"{where}.detect is not a valid regex: {exc}") from exc
        if "model" in spec and not isinstance(spec["model"], str):
            raise ScriptError(f"{where}.model must be a string")
        if name not in ROLES_BUILTIN and "detect" not in spec and "model" not in spec:
            raise ScriptError(f"{where}: a custom role needs 'detect' or 'model' to ever be chosen")
    faults = script.get("faults", {})
    if not isinstance(faults, dict):
        raise ScriptError("script.faults must be a mapping")
    _check_keys(faults, FAULT_KEYS, "faults")
    for key in ("error_500_rate", "error_429_rate", "timeout_rate", "drop_rate", "drip_rate", "huge_rate", "endless_rate",
                "malformed_tool_call_rate"):
        rate = faults.get(key, 0.0)
        if not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
            raise ScriptError(f"faults.{key} must be a number in [0, 1]")
    for key in ("drip_bytes_per_s", "huge_bytes"):
        value = faults.get(key, 1)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise ScriptError(f"faults.{key} must be a positive number")
    for key in ("drip_headers", "huge_chunked"):
        if not isinstance(faults.get(key, True), bool):
            raise ScriptError(f"faults.{key} must be true or false")
    if "require_api_key" in faults and (not isinstance(faults["require_api_key"], str) or not faults["require_api_key"]):
        raise ScriptError("faults.require_api_key must be a non-empty string")
    if "roles" in faults and (
        not isinstance(faults["roles"], list) or not all(isinstance(r, str) for r in faults["roles"])
    ):
        raise ScriptError("faults.roles must be a list of role names")


def validate_response(resp: Any, where: str) -> None:
    if not isinstance(resp, dict):
        raise ScriptError(f"{where} must be a mapping, got {type(resp).__name__}")
    _check_keys(resp, RESPONSE_KEYS, where)
    if not RESPONSE_PAYLOAD_KEYS & resp.keys():
        raise ScriptError(f"{where} needs one of {sorted(RESPONSE_PAYLOAD_KEYS)}")
    if "content" in resp and not isinstance(resp["content"], str):
        raise ScriptError(f"{where}.content must be a string")
    if "tool_calls" in resp:
        calls = resp["tool_calls"]
        if not isinstance(calls, list):
            raise ScriptError(f"{where}.tool_calls must be a list")
        for i, call in enumerate(calls):
            _validate_call(call, f"{where}.tool_calls[{i}]")
    if "text_tool_call" in resp:
        _validate_call(resp["text_tool_call"], f"{where}.text_tool_call")
        if resp.get("style", "bare") not in TEXT_TOOL_STYLES:
            raise ScriptError(f"{where}.style must be one of {TEXT_TOOL_STYLES}")
    if "by_tool_choice" in resp:
        branches = resp["by_tool_choice"]
        if not isinstance(branches, dict) or not branches:
            raise ScriptError(f"{where}.by_tool_choice must be a non-empty mapping")
        for choice, sub in branches.items():
            if choice not in TOOL_CHOICES:
                raise ScriptError(f"{where}.by_tool_choice keys must be among {TOOL_CHOICES}")
            validate_response(sub, f"{where}.by_tool_choice.{choice}")
    if "match" in resp:
        rules = resp["match"]
        if not isinstance(rules, list):
            raise ScriptError(f"{where}.match must be a list")
        for i, rule in enumerate(rules):
            rwhere = f"{where}.match[{i}]"
            if not isinstance(rule, dict) or "then" not in rule:
                raise ScriptError(f"{rwhere} must be a mapping with 'then'")
            _check_keys(rule, {"if_contains", "if_regex", "in", "then"}, rwhere)
            if "if_contains" not in rule and "if_regex" not in rule:
                raise ScriptError(f"{rwhere} needs 'if_contains' or 'if_regex'")
            if "if_contains" in rule and not isinstance(rule["if_contains"], str):
                raise ScriptError(f"{rwhere}.if_contains must be a string")
            if "if_regex" in rule:
                try:
                    re.compile(rule["if_regex"])
                except (re.error, TypeError) as exc:
                    raise ScriptError(f"{rwhere}.if_regex is not a valid regex: {exc}") from exc
            if rule.get("in", "any") not in ("any", "last", "system", "all"):
                raise ScriptError(f"{rwhere}.in must be 'any', 'last', 'system' or 'all'")
            validate_response(rule["then"], f"{rwhere}.then")
        if "else" not in resp:
            raise ScriptError(f"{where}: 'match' needs an 'else' so every request gets an answer")
        validate_response(resp["else"], f"{where}.else")
    if "status" in resp and (not isinstance(resp["status"], int) or not 400 <= resp["status"] <= 599):
        raise ScriptError(f"{where}.status must be an HTTP error code (400-599)")
    if "delay_ms" in resp and (not isinstance(resp["delay_ms"], (int, float)) or resp["delay_ms"] < 0):
        raise ScriptError(f"{where}.delay_ms must be a non-negative number")


def _validate_call(call: Any, where: str) -> None:
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        raise ScriptError(f"{where} must be a mapping with a string 'name'")
    _check_keys(call, {"name", "arguments", "id"}, where)
    if not isinstance(call.get("arguments", {}), (dict, str)):
        raise ScriptError(f"{where}.arguments must be a mapping or a (possibly malformed) JSON string")


def _check_keys(obj: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(k for k in obj if k not in allowed and not str(k).startswith("_"))
    if unknown:
        raise ScriptError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


# --------------------------------------------------------------------------- requests


def message_text(message: Any) -> str:
    """Flatten a chat message's content (string or list of parts) so matching and echo see plain text."""
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "".join(parts)
    return ""


def _usage_text(message: Any) -> str:
    text = message_text(message)
    if isinstance(message, dict) and isinstance(message.get("tool_calls"), list):
        for call in message["tool_calls"]:
            fn = call.get("function", {}) if isinstance(call, dict) else {}
            text += str(fn.get("name", "")) + str(fn.get("arguments", ""))
    return text


def system_text(messages: list[Any]) -> str:
    """All system (and developer) text, since some clients split the prompt over several system messages."""
    return "\n".join(
        message_text(m) for m in messages if isinstance(m, dict) and m.get("role") in ("system", "developer")
    )


def detect_role(body: dict[str, Any], script: dict[str, Any]) -> str:
    """Tell the tau2 participants apart from their prompts, which is all a stateless server can see.

    Script roles with a ``model`` or ``detect`` regex win (in script order), so a
    test can route a custom prompt wherever it likes.  Then ``<scenario>`` means
    the user simulator and ``<policy>`` the agent; the user check goes first
    because emotional persona blocks are free text appended to the user prompt,
    while tau2's agent prompt is a fixed template that never says ``<scenario>``.
    """
    messages = body.get("messages") or []
    system = system_text(messages)
    model = body.get("model")
    for name, spec in (script.get("roles") or {}).items():
        if "model" in spec and model == spec["model"]:
            return name
        if "detect" in spec and re.search(spec["detect"], system, re.DOTALL):
            return name
    if "<scenario>" in system:
        return "user"
    if "<policy>" in system:
        return "agent"
    return "judge"


def turn_index(messages: list[Any]) -> int:
    """Count prior assistant messages: for tau2's user simulator (roles flipped) those are its own turns too."""
    return sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "assistant")


def tool_choice_mode(body: dict[str, Any]) -> str:
    choice = body.get("tool_choice")
    if choice is None:
        return "auto"
    if isinstance(choice, dict):
        return "required"  # naming a function forces a call
    if isinstance(choice, str) and choice in TOOL_CHOICES:
        return choice
    return "auto"


@dataclass
class Reply:
    """A rendered script response: either an HTTP error or an assistant message."""

    status: int = 200
    content: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str | None = None
    error: str | None = None
    retry_after_s: float | None = None
    delay_s: float = 0.0


def select_response(role_spec: dict[str, Any] | None, role: str, turn: int) -> Response:
    default = DEFAULT_RESPONSES.get(role, FALLBACK_RESPONSE)
    if not role_spec:
        return default
    turns: list[Response] = role_spec.get("turns", [])
    if turn < len(turns):
        return turns[turn]
    after = role_spec.get("after", "repeat_last")
    if after == "repeat_last":
        return turns[-1] if turns else default
    if after == "cycle":
        return turns[turn % len(turns)] if turns else default
    return after


def resolve_response(resp: Response, body: dict[str, Any]) -> Response:
    """Follow ``by_tool_choice`` and ``match`` branches down to a concrete response."""
    for _ in range(64):  # scripts are finite trees; the bound only guards against surprises
        if "by_tool_choice" in resp:
            branches = resp["by_tool_choice"]
            mode = tool_choice_mode(body)
            resp = branches.get(mode) or branches.get("auto") or next(iter(branches.values()))
            continue
        if "match" in resp:
            resp = _match(resp, body)
            continue
        return resp
    raise ScriptError("response nesting too deep")


def _match(resp: Response, body: dict[str, Any]) -> Response:
    messages = body.get("messages") or []
    last = message_text(messages[-1]) if messages else ""
    system = system_text(messages)
    for rule in resp["match"]:
        scope = rule.get("in", "any")
        if scope == "last":
            haystacks = [last]
        elif scope == "system":
            haystacks = [system]
        elif scope == "all":
            haystacks = [message_text(m) for m in messages]
        else:
            haystacks = [last, system]
        needle = rule.get("if_contains")
        pattern = rule.get("if_regex")
        for hay in haystacks:
            if needle is not None and needle in hay:
                return rule["then"]
            if pattern is not None and re.search(pattern, hay, re.DOTALL):
                return rule["then"]
    return resp["else"]


def _arguments_json(arguments: Any) -> str:
    if isinstance(arguments, str):
        return arguments  # deliberately raw: lets scripts send malformed JSON
    return json.dumps(arguments if arguments is not None else {})


def _text_tool_call(call: dict[str, Any], style: str) -> str:
    arguments = call.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            pass  # keep the raw string; the point may be to test a broken call
    text = json.dumps({"name": call["name"], "arguments": arguments})
    if style == "fenced":
        return f"```json\n{text}\n```"
    if style == "tagged":
        return f"<tool_call>\n{text}\n</tool_call>"
    return text


# --------------------------------------------------------------------------- server state


@dataclass
class Plan:
    """Everything decided synchronously about one request, before any await."""

    n: int
    role: str
    turn: int
    fault: str | None
    reply: Reply | None  # None means: drop the connection
    completion: dict[str, Any] | None
    delay_s: float


class ScriptedBackend:
    """The server's brain, kept free of HTTP so all decisions happen in one synchronous step per request.

    Deciding synchronously (before any ``await``) is what makes the fault
    sequence deterministic: request *k* always consumes the *k*-th draws of the
    seeded RNG, however requests interleave afterwards.
    """

    def __init__(self, script: dict[str, Any], request_log: IO[str] | None = None) -> None:
        validate_script(script)
        self.script = script
        self.models: list[str] = list(script.get("models", ["scripted"]))
        seed = script.get("seed", 0)
        self.fault_rng = random.Random(seed)
        # Jitter has its own RNG so turning it on does not shift the fault sequence.
        self.jitter_rng = random.Random(f"jitter-{seed}")
        self.faults: dict[str, Any] = dict(script.get("faults") or {})
        self.request_log = request_log
        self.seq = 0
        self.faulted_seq = 0
        self.tool_call_seq = 0
        self.by_role: Counter[str] = Counter()
        self.by_status: Counter[str] = Counter()
        self.by_role_status: dict[str, Counter[str]] = defaultdict(Counter)
        self.by_fault: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.started = time.time()
        self.first_request_at: float | None = None  # wall clock: a run's span as its endpoint saw it
        self.last_reply_at: float | None = None

    @property
    def down(self) -> bool:
        return bool(self.faults.get("down", False))

    def _base_delay_s(self, role_spec: dict[str, Any] | None) -> float:
        ms = float(self.script.get("latency_ms", 0) or 0)
        jitter = float(self.script.get("latency_jitter_ms", 0) or 0)
        if jitter:
            ms += self.jitter_rng.uniform(0, jitter)
        if role_spec:
            ms += float(role_spec.get("latency_ms", 0) or 0)
        return ms / 1000.0

    def _draw_fault(self, role: str) -> tuple[str | None, bool]:
        """Return (http_fault, malformed) for this request.

        Every request of a faulted role takes exactly two draws, whatever the
        outcome, so the k-th such request always meets the same fate.
        """
        if self.down:
            return "down", False
        fault_roles = self.faults.get("roles")
        if fault_roles is not None and role not in fault_roles:
            return None, False
        index = self.faulted_seq
        self.faulted_seq += 1
        u = self.fault_rng.random()
        u_malformed = self.fault_rng.random()
        malformed = u_malformed < float(self.faults.get("malformed_tool_call_rate", 0.0))
        if index < int(self.faults.get("first_n_fail", 0) or 0):
            return "first_n_fail", malformed
        edge = 0.0
        for name, key in (
            ("error_500", "error_500_rate"),
            ("error_429", "error_429_rate"),
            ("timeout", "timeout_rate"),
            ("drop", "drop_rate"),
            ("drip", "drip_rate"),
            ("huge", "huge_rate"),
            ("endless", "endless_rate"),
        ):
            edge += float(self.faults.get(key, 0.0))
            if u < edge:
                return name, malformed
        return None, malformed

    def plan(self, body: dict[str, Any], authorization: str | None = None) -> Plan:
        n = self.seq
        self.seq += 1
        messages = body.get("messages") or []
        role = detect_role(body, self.script)
        turn = turn_index(messages)
        role_spec = (self.script.get("roles") or {}).get(role)
        delay = self._base_delay_s(role_spec)
        required = self.faults.get("require_api_key")
        if required and authorization != f"Bearer {required}":
            # Refused before the model (and the fault RNG) is reached, as an auth middleware would.
            refused = Reply(status=401, error="Incorrect API key provided. You must provide a valid API key.")
            plan = Plan(n=n, role=role, turn=turn, fault="unauthorized", reply=refused, completion=None, delay_s=delay)
            self._record(plan, body, authorization)
            return plan
        fault, malformed = self._draw_fault(role)
        malformed = malformed and role == "agent"

        reply: Reply | None
        if fault == "down":
            reply = Reply(status=503, error="scripted server is down")
        elif fault in ("first_n_fail", "error_500"):
            reply = Reply(status=500, error=f"injected fault: {fault}")
        elif fault == "error_429":
            reply = Reply(
                status=429,
                error="injected fault: rate limited",
                retry_after_s=float(self.faults.get("retry_after_s", 1)),
            )
        elif fault == "drop":
            reply = None
        else:
            if fault == "timeout":
                delay += float(self.faults.get("timeout_s", 30))
            resp = resolve_response(select_response(role_spec, role, turn), body)
            reply = self.render(resp, body, malformed=malformed)
            delay += reply.delay_s
        completion = self.completion(reply, body, n) if reply is not None and reply.status == 200 else None
        plan = Plan(n=n, role=role, turn=turn, fault=fault, reply=reply, completion=completion, delay_s=delay)
        self._record(plan, body, authorization)
        return plan

    def render(self, resp: Response, body: dict[str, Any], *, malformed: bool = False) -> Reply:
        delay_s = float(resp.get("delay_ms", 0) or 0) / 1000.0
        if "status" in resp:
            return Reply(
                status=int(resp["status"]),
                error=str(resp.get("error", f"scripted status {resp['status']}")),
                retry_after_s=resp.get("retry_after_s", self.faults.get("retry_after_s", 1)),
                delay_s=delay_s,
            )
        content: str | None = resp.get("content")
        tool_calls: list[dict[str, Any]] = []
        if resp.get("echo_last"):
            messages = body.get("messages") or []
            content = message_text(messages[-1]) if messages else ""
        if resp.get("empty"):
            content = ""
        else:
            for call in resp.get("tool_calls", []):
                self.tool_call_seq += 1
                arguments = MALFORMED_ARGUMENTS if malformed else _arguments_json(call.get("arguments", {}))
                tool_calls.append(
                    {
                        "id": call.get("id") or f"call_{self.tool_call_seq}",
                        "type": "function",
                        "function": {"name": call["name"], "arguments": arguments},
                    }
                )
            if "text_tool_call" in resp:
                text = _text_tool_call(resp["text_tool_call"], resp.get("style", "bare"))
                content = f"{content}\n{text}" if content else text
        if "think" in resp:
            content = f"<think>{resp['think']}</think>{content or ''}"
        if content is None and not tool_calls:
            content = ""
        finish = resp.get("finish_reason") or ("tool_calls" if tool_calls else "stop")
        return Reply(content=content, tool_calls=tool_calls, finish_reason=finish, delay_s=delay_s)

    def completion(self, reply: Reply, body: dict[str, Any], n: int) -> dict[str, Any]:
        messages = body.get("messages") or []
        prompt_chars = sum(len(_usage_text(m)) for m in messages)
        completion_chars = len(reply.content or "") + sum(
            len(c["function"]["name"]) + len(c["function"]["arguments"]) for c in reply.tool_calls
        )
        prompt_tokens = max(1, prompt_chars // 4)
        completion_tokens = completion_chars // 4
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.tool_calls:
            message["tool_calls"] = reply.tool_calls
        model = body.get("model") if isinstance(body.get("model"), str) else self.models[0]
        return {
            "id": f"chatcmpl-scripted-{n}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "scripted",
            "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason, "logprobs": None}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def _record(self, plan: Plan, body: dict[str, Any], authorization: str | None = None) -> None:
        status = 0 if plan.reply is None else plan.reply.status
        self.by_role[plan.role] += 1
        self.by_status[str(status)] += 1
        self.by_role_status[plan.role][str(status)] += 1
        if plan.fault:
            self.by_fault[plan.fault] += 1
        if self.request_log is None:
            return
        response: dict[str, Any] = plan.completion if plan.completion is not None else {"status": status}
        entry = {
            "n": plan.n,
            "role": plan.role,
            "turn": plan.turn,
            "status": status,
            "fault": plan.fault,
            "stream": bool(body.get("stream")),
            "authorization": authorization,
            "body": body,
            "response": response,
            "t": time.time(),
        }
        # Logged before the reply is sent so a client that got its answer always finds the entry.
        self.request_log.write(json.dumps(entry) + "\n")
        self.request_log.flush()

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.seq,
            "by_role": dict(self.by_role),
            "by_status": dict(self.by_status),
            "by_role_status": {role: dict(c) for role, c in self.by_role_status.items()},
            "by_fault": dict(self.by_fault),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "uptime_s": time.time() - self.started,
            "first_request_at": self.first_request_at,
            "last_reply_at": self.last_reply_at,
        }


# --------------------------------------------------------------------------- HTTP

BACKEND_KEY: web.AppKey[ScriptedBackend] = web.AppKey("backend", ScriptedBackend)
_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 429: "rate_limit_exceeded",
                503: "service_unavailable"}
_ERROR_CODES: dict[int, Any] = {401: "invalid_api_key"}


def _json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # Serialised up front into one body so aiohttp sends headers and body in a single write.
    return web.Response(
        body=json.dumps(payload).encode(), status=status, content_type="application/json", headers=headers
    )


def _error_response(status: int, message: str, retry_after_s: float | None = None) -> web.Response:
    headers: dict[str, str] = {}
    if status == 429 and retry_after_s is not None:
        value = float(retry_after_s)
        headers["Retry-After"] = str(int(value)) if value.is_integer() else str(value)
        headers["retry-after-ms"] = str(int(value * 1000))
    payload = {
        "error": {
            "message": message,
            "type": _ERROR_TYPES.get(status, "server_error"),
            "param": None,
            "code": _ERROR_CODES.get(status, status),
        }
    }
    return _json_response(payload, status=status, headers=headers)


def sse_body(completion: dict[str, Any], include_usage: bool) -> bytes:
    """Render a completion as a whole SSE stream at once: clients parse it the same, and it is one write."""
    base = {k: completion[k] for k in ("id", "created", "model", "system_fingerprint")}
    base["object"] = "chat.completion.chunk"
    choice = completion["choices"][0]
    message = choice["message"]
    chunks: list[dict[str, Any]] = []

    def chunk(delta: dict[str, Any], finish: str | None = None) -> None:
        chunks.append({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]})

    chunk({"role": "assistant", "content": ""})
    content = message.get("content") or ""
    for i in range(0, len(content), 24):
        chunk({"content": content[i : i + 24]})
    for index, call in enumerate(message.get("tool_calls", [])):
        chunk(
            {
                "tool_calls": [
                    {
                        "index": index,
                        "id": call["id"],
                        "type": "function",
                        "function": {"name": call["function"]["name"], "arguments": ""},
                    }
                ]
            }
        )
        arguments = call["function"]["arguments"]
        for i in range(0, len(arguments), 32):
            chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments[i : i + 32]}}]})
    chunk({}, choice["finish_reason"])
    if include_usage:
        chunks.append({**base, "choices": [], "usage": completion["usage"]})
    parts = [f"data: {json.dumps(c)}\n\n" for c in chunks]
    parts.append("data: [DONE]\n\n")
    return "".join(parts).encode()


class _Dropped(Exception):
    """Signals that the connection was closed on purpose and nothing must be written."""


async def _planned(request: web.Request, backend: Any, body: dict[str, Any]) -> tuple[Any, web.Response | None]:
    """Plan the reply to a (chat-shaped) request and act out its delay, drop or error status.

    Returns ``(plan, None)`` when a completion is due, ``(plan, error response)`` otherwise; raises
    :class:`_Dropped` after cutting the connection.
    """
    plan = backend.plan(body, request.headers.get("Authorization"))
    if plan.delay_s > 0:
        await asyncio.sleep(plan.delay_s)
    if plan.reply is None:
        _drop(request)
        raise _Dropped()
    if plan.reply.status != 200:
        return plan, _error_response(plan.reply.status, plan.reply.error or "error", plan.reply.retry_after_s)
    return plan, None


async def handle_chat(request: web.Request) -> web.StreamResponse:
    backend = request.app[BACKEND_KEY]
    backend.in_flight += 1
    backend.max_in_flight = max(backend.max_in_flight, backend.in_flight)
    if backend.first_request_at is None:
        backend.first_request_at = time.time()
    try:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error_response(400, "request body is not valid JSON")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error_response(400, "request needs a 'messages' list")
        plan, refusal = await _planned(request, backend, body)
        if refusal is not None:
            return refusal
        assert plan.completion is not None
        stream = bool(body.get("stream"))
        if plan.fault in REPLY_FAULTS:
            return await _faulty_reply(request, plan.fault, plan.completion, stream, backend.faults)
        if stream:
            options = body.get("stream_options") or {}
            include_usage = bool(options.get("include_usage")) if isinstance(options, dict) else False
            return web.Response(
                body=sse_body(plan.completion, include_usage),
                content_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        return _json_response(plan.completion)
    finally:
        backend.in_flight -= 1
        backend.last_reply_at = time.time()


def text_as_chat(body: dict[str, Any]) -> dict[str, Any]:
    """A ``/v1/completions`` body seen as the chat request the script knows how to answer.

    The prompt is the "system" text (so role detection reads the customer's instructions in it), and
    each earlier ``CUSTOMER:`` line of the transcript counts as one of the customer's own turns.
    """
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        prompt = "".join(str(p) for p in prompt)
    prompt = str(prompt or "")
    own_turns = max(0, prompt.count("\nCUSTOMER:") - (1 if prompt.rstrip().endswith("CUSTOMER:") else 0))
    messages = [{"role": "system", "content": prompt}, *({"role": "assistant", "content": "(earlier)"} for _ in range(own_turns))]
    return {**body, "messages": messages}  # the prompt stays in the request log


def chat_as_text(completion: dict[str, Any]) -> dict[str, Any]:
    choices = [{"index": c.get("index", 0), "text": (c.get("message") or {}).get("content") or "",
                "finish_reason": c.get("finish_reason"), "logprobs": None} for c in completion.get("choices") or []]
    return {**completion, "object": "text_completion", "choices": choices}


async def handle_text(request: web.Request) -> web.StreamResponse:
    """``POST /v1/completions``: the same script, faults and log as chat requests (no streaming)."""
    backend = request.app[BACKEND_KEY]
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _error_response(400, "request body is not valid JSON")
    if not isinstance(body, dict) or not isinstance(body.get("prompt"), (str, list)):
        return _error_response(400, "request needs a 'prompt'")
    plan, refusal = await _planned(request, backend, text_as_chat(body))
    if refusal is not None:
        return refusal
    assert plan.completion is not None
    return _json_response(chat_as_text(plan.completion))


_FLOOD_CHUNK = 64 * 1024


async def _faulty_reply(request: web.Request, fault: str, completion: dict[str, Any], stream: bool,
                        faults: dict[str, Any]) -> web.StreamResponse:
    """Send a 200 that only a client with a whole-request deadline (drip) or a size limit (huge,
    endless) survives. Every loop stops when the client hangs up, so the server stays cheap."""
    content_type = "text/event-stream" if stream else "application/json"
    if fault == "drip":
        body = sse_body(completion, False) if stream else json.dumps(completion).encode()
        rate = float(faults.get("drip_bytes_per_s", 1))
        if faults.get("drip_headers", True):
            await _drip_raw(request, body, content_type, rate)
            raise _Dropped()  # everything was written by hand; aiohttp must add nothing
        resp = web.StreamResponse(headers={"Content-Type": content_type})
        resp.content_length = len(body)
        await resp.prepare(request)
        if not await _drip_writes(resp.write, body, rate, request):
            raise _Dropped()
        return resp
    resp = web.StreamResponse(headers={"Content-Type": content_type})
    total = int(faults.get("huge_bytes", 150_000_000)) if fault == "huge" else None
    head, pad, tail = _flood_parts(completion, stream)
    if total is not None and not faults.get("huge_chunked", True):
        resp.content_length = max(total, len(head) + len(tail))
    else:
        resp.enable_chunked_encoding()
    await resp.prepare(request)
    try:
        await resp.write(head)
        sent = len(head)
        while total is None or sent + len(tail) < total:
            n = _FLOOD_CHUNK if total is None else min(_FLOOD_CHUNK, total - len(tail) - sent)
            await resp.write(pad * (n // len(pad)) + pad[: n % len(pad)])
            sent += n
        await resp.write(tail)
        await resp.write_eof()
    except (ConnectionError, RuntimeError):  # the client hung up (the point, usually)
        raise _Dropped() from None
    return resp


def _flood_parts(completion: dict[str, Any], stream: bool) -> tuple[bytes, bytes, bytes]:
    """A valid reply split around its content, so padding can be written in between: a client
    that reads it all gets a parseable completion whose content is padding."""
    if stream:
        base = {k: completion[k] for k in ("id", "created", "model")}
        event = {**base, "object": "chat.completion.chunk",
                 "choices": [{"index": 0, "delta": {"content": "x" * 4000}, "finish_reason": None}]}
        pad = f"data: {json.dumps(event)}\n\n".encode()
        return b"", pad, b"data: [DONE]\n\n"
    marker = "@@PAD@@"
    doc = json.loads(json.dumps(completion))
    doc["choices"][0]["message"]["content"] = marker
    head, tail = json.dumps(doc).split(json.dumps(marker)[1:-1])
    return head.encode(), b"x", tail.encode()


async def _drip_writes(write: Any, body: bytes, rate: float, request: web.Request) -> bool:
    """Write ``body`` at ``rate`` bytes a second; False when the client hung up first."""
    step = max(1, int(rate / 10))  # at most ten writes a second
    pause = step / rate
    for i in range(0, len(body), step):
        transport = request.transport
        if transport is None or transport.is_closing():
            return False
        try:
            await write(body[i : i + step])
        except (ConnectionError, RuntimeError):
            return False
        await asyncio.sleep(pause)
    return True


async def _drip_raw(request: web.Request, body: bytes, content_type: str, rate: float) -> None:
    head = (f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n").encode()

    async def write(chunk: bytes) -> None:
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("client went away")
        transport.write(chunk)

    await _drip_writes(write, head + body, rate, request)
    _drop(request)


def _drop(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.close()


async def handle_models(request: web.Request) -> web.Response:
    backend = request.app[BACKEND_KEY]
    if backend.down:
        return _error_response(503, "scripted server is down")
    data = [{"id": m, "object": "model", "created": 0, "owned_by": "moodbench-scripted"} for m in backend.models]
    return _json_response({"object": "list", "data": data})


async def handle_health(request: web.Request) -> web.Response:
    if request.app[BACKEND_KEY].down:
        return _error_response(503, "scripted server is down")
    return _json_response({"status": "ok"})


async def handle_stats(request: web.Request) -> web.Response:
    return _json_response(request.app[BACKEND_KEY].stats())


@web.middleware
async def _drop_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Turn a deliberate drop into a quiet cancellation so aiohttp neither writes a response nor logs a traceback."""
    try:
        return await handler(request)
    except _Dropped:
        raise asyncio.CancelledError() from None


def build_app(backend: ScriptedBackend) -> web.Application:
    app = web.Application(client_max_size=256 * 1024 * 1024, middlewares=[_drop_middleware])
    app[BACKEND_KEY] = backend
    for prefix in ("/v1", ""):  # some clients are configured without the /v1 suffix
        app.router.add_post(f"{prefix}/chat/completions", handle_chat)
        app.router.add_post(f"{prefix}/completions", handle_text)
        app.router.add_get(f"{prefix}/models", handle_models)
    app.router.add_get("/health", handle_health)
    app.router.add_get("/stats", handle_stats)
    return app


def _bind(host: str, port: int) -> socket.socket:
    family, type_, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, type_, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(addr)
    sock.setblocking(False)
    return sock


def _write_port_file(path: Path, port: int) -> None:
    # Atomic rename so a poller never reads a half-written number.
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(f"{port}\n", encoding="utf-8")
    os.replace(tmp, path)


async def serve(
    script: dict[str, Any],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    port_file: Path | None = None,
    request_log: Path | None = None,
    exit_with_parent: bool = False,
) -> None:
    log_fh = open(request_log, "a", encoding="utf-8") if request_log else None
    backend = ScriptedBackend(script, log_fh)
    runner = web.AppRunner(build_app(backend), access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    sock = _bind(host, port)
    site = web.SockSite(runner, sock, backlog=2048)
    await site.start()
    bound_port = sock.getsockname()[1]
    if port_file:
        _write_port_file(port_file, bound_port)
    print(f"scripted server listening on http://{host}:{bound_port}/v1", file=sys.stderr, flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix
            pass
    watchdog = asyncio.create_task(_watch_parent(stop)) if exit_with_parent else None
    try:
        await stop.wait()
    finally:
        if watchdog:
            watchdog.cancel()
        await runner.cleanup()
        if log_fh:
            log_fh.close()


async def _watch_parent(stop: asyncio.Event) -> None:
    """Exit when the process that started us dies, so a killed test run leaves no stray servers behind."""
    parent = os.getppid()
    while True:
        await asyncio.sleep(0.5)
        if os.getppid() != parent:
            stop.set()
            return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m moodbench.testing.scripted_server",
        description="Scripted OpenAI-compatible chat-completions server for tests and benchmarks.",
    )
    parser.add_argument("--script", required=True, type=Path, help="JSON or YAML script")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (see --port-file)")
    parser.add_argument("--port-file", type=Path, help="written with the bound port once listening")
    parser.add_argument("--request-log", type=Path, help="append one JSON line per chat request")
    parser.add_argument("--exit-with-parent", action="store_true", help="stop when the parent process goes away")
    args = parser.parse_args(argv)
    try:
        script = load_script(args.script)
    except (OSError, ValueError) as exc:
        print(f"scripted server: cannot load script {args.script}: {exc}", file=sys.stderr)
        return 2
    asyncio.run(
        serve(
            script,
            host=args.host,
            port=args.port,
            port_file=args.port_file,
            request_log=args.request_log,
            exit_with_parent=args.exit_with_parent,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
