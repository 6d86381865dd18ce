"""A model endpoint and the calls made to it.

litellm gives one calling convention for vLLM, llama.cpp, Ollama, OpenAI, Anthropic and the rest;
this module adds what an experiment needs on top: retries with backoff that honour ``Retry-After``,
a per-request timeout, a default ``max_tokens`` so server defaults never truncate replies, a breaker
that notices a dead endpoint, ``<think>`` stripping, recovery of tool calls written as text, and a
record of tokens, cost and latency for every call. Nothing here is global: each run builds its own
clients and health tracker and hands them to the conversations that use them.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from moodbench import _tau2  # noqa: F401  (sets litellm's offline cost map before import)
import litellm

from moodbench.llm._textcalls import recover_text_tool_calls
from moodbench.llm._thinking import strip_thinking

litellm.suppress_debug_info = True

_RETRYABLE = (
    litellm.RateLimitError,
    litellm.APIConnectionError,
    litellm.Timeout,
    litellm.InternalServerError,
    litellm.ServiceUnavailableError,
)


class LLMCallError(RuntimeError):
    """A model call failed after every retry. The conversation ends with exit reason ``llm_error``."""

    def __init__(self, message: str, endpoint: str):
        super().__init__(message)
        self.endpoint = endpoint


class EndpointDownError(LLMCallError):
    """Too many consecutive failures on an endpoint: the run stops starting conversations."""


class ContextWindowError(RuntimeError):
    """The conversation outgrew the model's context window (exit reason ``context_window_exceeded``)."""


@dataclass(frozen=True)
class ModelSpec:
    """Who to call and how. Holds the *name* of the API-key variable, never its value."""

    model: str
    base_urls: tuple[str, ...] = ()
    api_key_env: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    max_tokens: int = 2048
    timeout_s: float = 120.0
    max_retries: int = 4
    backoff_base_s: float = 1.0
    backoff_max_s: float = 30.0
    empty_retries: int = 2

    def describe(self) -> str:
        return f"{self.model} @ {', '.join(self.base_urls)}" if self.base_urls else self.model


class EndpointHealth:
    """Counts consecutive failed requests per endpoint, shared by every conversation of one run.

    A single flaky reply is noise; dozens in a row with no success in between mean the server is
    gone, and starting more conversations would only turn GPU-hours into ``llm_error`` rows.
    """

    def __init__(self, max_consecutive_failures: int = 25):
        self.max_consecutive_failures = max_consecutive_failures
        self._lock = threading.Lock()
        self._consecutive: dict[str, int] = {}
        self.down: str | None = None
        self.last_error: str | None = None

    def success(self, endpoint: str) -> None:
        with self._lock:
            self._consecutive[endpoint] = 0

    def failure(self, endpoint: str, error: str) -> None:
        with self._lock:
            n = self._consecutive.get(endpoint, 0) + 1
            self._consecutive[endpoint] = n
            self.last_error = error
            if self.max_consecutive_failures and n >= self.max_consecutive_failures and self.down is None:
                self.down = endpoint


@dataclass
class ParsedToolCall:
    id: str
    name: str
    arguments: dict[str, Any]
    raw_arguments: str
    valid_json: bool = True
    recovered_from_text: bool = False


@dataclass
class Completion:
    """One model reply after sanitising, with the raw text kept for the record."""

    content: str | None
    raw_content: str | None
    tool_calls: list[ParsedToolCall]
    think_stripped: bool
    recovered_text_calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_s: float
    attempts: int
    endpoint: str
    finish_reason: str | None
    raw: dict[str, Any]

    @property
    def is_empty(self) -> bool:
        return not (self.content and self.content.strip()) and not self.tool_calls


def _retry_after_seconds(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    value = headers.get("retry-after") or headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _is_context_error(exc: BaseException) -> bool:
    if isinstance(exc, litellm.ContextWindowExceededError):
        return True
    text = str(exc).lower()
    return any(s in text for s in ("context length", "context window", "maximum context", "too many tokens", "exceeds the context"))


class ModelClient:
    """Calls one model (over one or several base URLs, round-robin) for one run."""

    def __init__(self, spec: ModelSpec, health: EndpointHealth | None = None, *, rng: random.Random | None = None):
        self.spec = spec
        self.health = health or EndpointHealth(0)
        self._rr = itertools.count()
        self._rng = rng or random.Random()
        self._api_key = os.environ.get(spec.api_key_env) if spec.api_key_env else None

    # -- secrets -------------------------------------------------------------------------------
    def redact(self, text: str) -> str:
        """Remove the API key from any text that may be shown or stored (exceptions, logs)."""
        if self._api_key and len(self._api_key) >= 4:
            text = text.replace(self._api_key, "***")
        return text

    # -- calling -------------------------------------------------------------------------------
    def _endpoint(self) -> str | None:
        if not self.spec.base_urls:
            return None
        return self.spec.base_urls[next(self._rr) % len(self.spec.base_urls)]

    def _kwargs(self, base_url: str | None) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "model": self.spec.model,
            "timeout": self.spec.timeout_s,
            "num_retries": 0,
            "drop_params": True,
            "max_tokens": self.spec.max_tokens,
        }
        kw.update(self.spec.args)
        if base_url:
            kw["api_base"] = base_url
        if self._api_key:
            kw["api_key"] = self._api_key
        elif base_url:
            # OpenAI-compatible local servers need *a* key in the client, never a real one.
            kw.setdefault("api_key", "sk-no-key-required")
        return kw

    def _backoff(self, attempt: int, exc: BaseException) -> float:
        hinted = _retry_after_seconds(exc)
        if hinted is not None:
            return min(hinted, self.spec.backoff_max_s)
        base = min(self.spec.backoff_max_s, self.spec.backoff_base_s * (2 ** attempt))
        return base * (0.5 + self._rng.random() / 2)  # jitter so retries don't stampede

    def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict | None = None,
        recover_text_tool_calls: bool = False,
        seed: int | None = None,
    ) -> Completion:
        """Send one chat request; raise :class:`LLMCallError` only after every retry failed."""
        endpoint_label = self.spec.describe()
        attempts = 0
        empty_left = self.spec.empty_retries
        while True:
            if self.health.down is not None:
                raise EndpointDownError(
                    f"endpoint {self.health.down} is down (too many consecutive failures): "
                    f"{self.health.last_error}",
                    self.health.down,
                )
            base_url = self._endpoint()
            label = base_url or self.spec.model
            kw = self._kwargs(base_url)
            if tools:
                kw["tools"] = tools
                kw["tool_choice"] = tool_choice or "auto"
            if seed is not None and "seed" not in self.spec.args:
                kw["seed"] = seed
            attempts += 1
            started = time.perf_counter()
            try:
                response = litellm.completion(messages=messages, **kw)
            except Exception as exc:  # noqa: BLE001 - classified below
                if _is_context_error(exc):
                    raise ContextWindowError(self.redact(str(exc))[:2000]) from None
                retryable = isinstance(exc, _RETRYABLE) or (
                    isinstance(exc, litellm.APIError) and getattr(exc, "status_code", 0) >= 500
                )
                message = self.redact(f"{type(exc).__name__}: {exc}")[:2000]
                if retryable:
                    self.health.failure(label, message)
                if not retryable or attempts > self.spec.max_retries:
                    raise LLMCallError(
                        f"{endpoint_label}: request failed after {attempts} attempt(s): {message}", label
                    ) from None
                time.sleep(self._backoff(attempts - 1, exc))
                continue
            latency = time.perf_counter() - started
            self.health.success(label)
            completion = self._parse(response, latency, attempts, label, tools, recover_text_tool_calls)
            if completion.is_empty and empty_left > 0:
                empty_left -= 1
                continue
            return completion

    def _parse(
        self,
        response: Any,
        latency: float,
        attempts: int,
        endpoint: str,
        tools: list[dict[str, Any]] | None,
        recover: bool,
    ) -> Completion:
        choice = response.choices[0]
        msg = choice.message
        # litellm already moves <think> blocks (and vLLM's reasoning parser output) into
        # reasoning_content; put them back into the raw record so nothing the model wrote is lost.
        reasoning = getattr(msg, "reasoning_content", None)
        raw_content = f"<think>{reasoning}</think>{msg.content or ''}" if reasoning else msg.content
        content, stripped = strip_thinking(msg.content)
        stripped = stripped or bool(reasoning)
        calls: list[ParsedToolCall] = []
        for i, tc in enumerate(msg.tool_calls or []):
            raw_args = tc.function.arguments if isinstance(tc.function.arguments, str) else json.dumps(tc.function.arguments)
            try:
                args = json.loads(raw_args) if raw_args and raw_args.strip() else {}
                valid = isinstance(args, dict)
                if not valid:
                    args = {}
            except json.JSONDecodeError:
                args, valid = {}, False
            calls.append(ParsedToolCall(id=tc.id or f"call_{i}", name=tc.function.name or "", arguments=args,
                                        raw_arguments=raw_args or "", valid_json=valid))
        recovered = 0
        if not calls and recover and tools and content:
            names = [t["function"]["name"] for t in tools]
            for j, (name, args) in enumerate(recover_text_tool_calls(content, names)):
                calls.append(ParsedToolCall(id=f"recovered_{int(time.time()*1000)}_{j}", name=name, arguments=args,
                                            raw_arguments=json.dumps(args), recovered_from_text=True))
                recovered += 1
            if recovered:
                content = None
        usage = getattr(response, "usage", None)
        try:
            cost = float(litellm.completion_cost(completion_response=response) or 0.0)
        except Exception:  # noqa: BLE001 - unknown local models have no price
            cost = 0.0
        try:
            raw = response.model_dump() if hasattr(response, "model_dump") else dict(response)
        except Exception:  # noqa: BLE001
            raw = {}
        return Completion(
            content=content if content else (None if calls else (content or "")),
            raw_content=raw_content,
            tool_calls=calls,
            think_stripped=stripped,
            recovered_text_calls=recovered,
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            cost_usd=cost,
            latency_s=latency,
            attempts=attempts,
            endpoint=endpoint,
            finish_reason=getattr(choice, "finish_reason", None),
            raw=raw,
        )
