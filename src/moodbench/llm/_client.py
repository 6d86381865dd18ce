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
import re
import threading
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm fetches a remote cost map at import otherwise
import httpx
import litellm
import openai

from moodbench.llm._fast import transport_for
from moodbench.llm._router import EndpointRouter, RoutedTransport
from moodbench.llm._textcalls import recover_text_tool_calls
from moodbench.llm._thinking import strip_thinking

litellm.suppress_debug_info = True

_RETRYABLE = (
    litellm.RateLimitError,
    litellm.APIConnectionError,
    litellm.Timeout,
    litellm.InternalServerError,
    litellm.ServiceUnavailableError,
    # In case a provider path lets the SDK's or the transport's own exceptions through unwrapped.
    openai.APIConnectionError,
    openai.APITimeoutError,
    httpx.TransportError,
)
# Status codes worth another try: request timeout, conflict/lock (the openai SDK retries these
# too), too early, rate limit, and every server-side error (502/503/504 from proxies included).
_RETRYABLE_STATUS = {408, 409, 425, 429}

# Names of environment variables whose values are treated as secrets and never written anywhere,
# even when moodbench did not read them itself (litellm picks up OPENAI_API_KEY and friends).
_SECRET_NAME = re.compile(r"(API_?KEY|TOKEN|SECRET|PASSWORD|PASSWD)", re.IGNORECASE)
_MIN_SECRET_LEN = 8


def secret_values(extra_env: tuple[str, ...] | list[str] = ()) -> list[str]:
    """Values to scrub from anything moodbench shows or stores: the named key variables plus any
    environment variable whose name looks like a credential. Longest first, so a key that contains
    another is replaced whole."""
    found: set[str] = set()
    for name, value in os.environ.items():
        # paths and numbers (PASSWORD_STORE_DIR, *_TOKEN_LIMIT) are settings, not credentials
        if (_SECRET_NAME.search(name) and len(value) >= _MIN_SECRET_LEN and not value.isdigit()
                and not value.startswith(("/", "~", "."))):
            found.add(value)
    for name in extra_env:
        value = os.environ.get(name)
        if value and len(value) >= 4:
            found.add(value)
    # the JSON-escaped spelling too, for keys with characters JSON escapes, seen inside stored JSON
    found |= {json.dumps(v)[1:-1] for v in found}
    return sorted(found, key=len, reverse=True)


def redact_text(text: str, secrets: list[str]) -> str:
    """``text`` with every secret replaced by ``***``."""
    for value in secrets:
        if value in text:
            text = text.replace(value, "***")
    return text


class LLMCallError(RuntimeError):
    """A model call failed after every retry. The conversation ends with exit reason ``llm_error``."""

    def __init__(self, message: str, endpoint: str):
        super().__init__(message)
        self.endpoint = endpoint


class EndpointDownError(LLMCallError):
    """Too many consecutive failures on an endpoint: the run stops starting conversations."""


class MalformedResponseError(RuntimeError):
    """A reply arrived but is not a usable chat completion (retried like a server error)."""


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
    # A server's Retry-After is honoured up to this long (it knows its queue better than we do).
    retry_after_max_s: float = 120.0
    empty_retries: int = 2
    # Replicas (several base_urls): requests go to the least busy one; at most this many in flight
    # per replica (None: no cap). See llm/_router.py.
    max_in_flight_per_endpoint: int | None = None

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
        # Set when the endpoint trips or the run is abandoned: wakes every conversation sleeping in
        # a backoff, so none of them waits out a 30 s delay against a server that is gone.
        self._stop = threading.Event()
        self.cancelled = False

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
                self._stop.set()

    def cancel(self) -> None:
        """The run was abandoned (second Ctrl-C): make every further call fail at once."""
        self.cancelled = True
        self._stop.set()

    def sleep(self, seconds: float) -> None:
        """A backoff delay that ends early when the endpoint trips or the run is cancelled."""
        if seconds > 0:
            self._stop.wait(seconds)


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
    """The server's own wait hint: ``retry-after-ms`` (OpenAI, vLLM), else ``Retry-After`` in
    seconds or as an HTTP date. litellm keeps the httpx response on its exceptions (verified with
    the scripted server's 429s), and some versions also copy the headers to
    ``litellm_response_headers``."""
    sources = [getattr(getattr(exc, "response", None), "headers", None), getattr(exc, "litellm_response_headers", None)]
    for headers in sources:
        if not headers:
            continue
        try:
            ms = headers.get("retry-after-ms")
            if ms is not None:
                return max(0.0, float(ms) / 1000.0)
        except (TypeError, ValueError, AttributeError):
            pass
        value = headers.get("retry-after") or headers.get("Retry-After")
        if value is None:
            continue
        try:
            return max(0.0, float(value))
        except (TypeError, ValueError):
            pass
        try:
            when = parsedate_to_datetime(str(value))
            return max(0.0, when.timestamp() - time.time())
        except (TypeError, ValueError, IndexError, OverflowError):
            continue
    return None


def _status_code(exc: BaseException) -> int | None:
    code = getattr(exc, "status_code", None)
    if code is None:
        code = getattr(getattr(exc, "response", None), "status_code", None)
    try:
        return int(code) if code is not None else None
    except (TypeError, ValueError):
        return None


def _is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, _RETRYABLE):
        return True
    code = _status_code(exc)
    return code is not None and (code in _RETRYABLE_STATUS or code >= 500)


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
        self._secrets = secret_values((spec.api_key_env,) if spec.api_key_env else ())
        # Plain OpenAI-compatible endpoints skip litellm's ~8 ms/call overhead (see llm/_fast.py).
        self._transport = transport_for(spec.model, spec.base_urls, spec.args) or litellm
        self._router = None
        if len(spec.base_urls) > 1 or spec.max_in_flight_per_endpoint:
            self._router = EndpointRouter(spec.base_urls, spec.max_in_flight_per_endpoint)
            self._transport = RoutedTransport(self._transport, self._router)  # frees the slot after each call

    # -- secrets -------------------------------------------------------------------------------
    def redact(self, text: str) -> str:
        """Remove API keys from any text that may be shown or stored (exceptions, logs)."""
        return redact_text(text, self._secrets)

    # -- calling -------------------------------------------------------------------------------
    def _endpoint(self) -> str | None:
        if not self.spec.base_urls:
            return None
        if self._router is not None:  # least busy replica with a free slot (waits if all are full)
            return self._router.acquire()
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
        # Retries are ours alone (see complete); --agent-args must not multiply them.
        kw["num_retries"] = 0
        kw.pop("max_retries", None)
        if base_url:
            kw["api_base"] = base_url
        if self._api_key:
            kw["api_key"] = self._api_key
        elif base_url:
            # OpenAI-compatible local servers need *a* key in the client, never a real one.
            kw.setdefault("api_key", "sk-no-key-required")
        return kw

    def _backoff(self, attempt: int, exc: BaseException) -> float:
        """Exponential backoff with jitter; a server's Retry-After is a floor, never shortened."""
        hinted = _retry_after_seconds(exc)
        if hinted is not None:
            # Up to 10% extra so a crowd of conversations told "1 s" do not all return together.
            return min(hinted, self.spec.retry_after_max_s) * (1.0 + 0.1 * self._rng.random())
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
            if self.health.cancelled:
                raise LLMCallError(f"{endpoint_label}: run cancelled", self.spec.model)
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
                # num_retries=0 (in _kwargs) also becomes the openai SDK's max_retries, so the only
                # retries are the ones below: the request log shows exactly max_retries + 1 requests.
                response = self._transport.completion(messages=messages, **kw)
                latency = time.perf_counter() - started
                try:
                    completion = self._parse(response, latency, attempts, label, tools, recover_text_tool_calls)
                except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
                    # A 200 whose body is not a chat completion (no choices, no message) is the
                    # server's fault: retry it like a 5xx rather than crash the conversation.
                    raise MalformedResponseError(f"unusable response from the server: {exc!r}") from None
            except Exception as exc:  # noqa: BLE001 - classified below
                if _is_context_error(exc):
                    raise ContextWindowError(self.redact(str(exc))[:2000]) from None
                retryable = _is_retryable(exc) or isinstance(exc, MalformedResponseError)
                message = self.redact(f"{type(exc).__name__}: {exc}")[:2000]
                # Every failed request counts towards the breaker: a 401 or a 404 (model gone) on
                # every call is as dead an endpoint as a refused connection.
                self.health.failure(label, message)
                if not retryable or attempts > self.spec.max_retries:
                    raise LLMCallError(
                        f"{endpoint_label}: request failed after {attempts} attempt(s): {message}", label
                    ) from None
                self.health.sleep(self._backoff(attempts - 1, exc))
                continue
            self.health.success(label)
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
