"""The scripted server's brain, free of HTTP: which role asks, at which turn, what it is answered, which
fault it meets (one synchronous decision per request, so the fault sequence is deterministic).
"""

from __future__ import annotations

import json
import random
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import IO, Any

from moodbench.testing._script import (
    DEFAULT_RESPONSES,
    FALLBACK_RESPONSE,
    MALFORMED_ARGUMENTS,
    TOOL_CHOICES,
    Response,
    ScriptError,
    validate_script,
)


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
    return "\n".join(message_text(m) for m in messages if isinstance(m, dict) and m.get("role") in ("system", "developer"))


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
        self.first_request_at: float | None = None  # wall clock: a run's span as its endpoint saw it
        self.last_reply_at: float | None = None
        self.started = time.time()

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
