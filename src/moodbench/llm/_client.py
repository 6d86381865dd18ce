"""A model endpoint and the calls made to it.

litellm gives one calling convention for vLLM, llama.cpp, Ollama, OpenAI, Anthropic and the rest;
this module adds what an experiment needs on top: retries with backoff that honour ``Retry-After``
(driven by tenacity), a whole-request deadline and a reply-size limit on every attempt (see
``_http.py``), a default ``max_tokens`` so server defaults never truncate replies, a breaker that
notices a dead endpoint, ``<think>`` stripping, recovery of tool calls written as text, and a
record of tokens, cost and latency for every call. Nothing here is global: each run builds its own
clients and health tracker and hands them to the conversations that use them.

Secrets: the key named by ``api_key_env`` and any credential in a base URL are used for requests
and scrubbed from everything this module shows (errors, ``Completion.endpoint``, the breaker's
``down``/``last_error``, :meth:`ModelSpec.describe`); see :mod:`moodbench._util.secrets`.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import threading
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import httpx
import openai
import tenacity

# redact_text and secret_values are also imported from here by runner.py until it moves to
# moodbench._util.secrets, where they are defined.
from moodbench._util import defaults
from moodbench._util.bounds import BoundError, check_tree, clean_strings, clean_text
from moodbench._util.secrets import redact_text, redact_url, secret_values, url_secrets
from moodbench.llm._fast import OpenAICompatTransport, fast_path_allowed
from moodbench.llm._http import RequestBudget
from moodbench.llm._litellm import LitellmTransport, litellm
from moodbench.llm._router import EndpointRouter, RoutedTransport
from moodbench.llm._textcalls import recover_text_tool_calls
from moodbench.llm._thinking import strip_thinking

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
# What OpenAI-compatible local servers get when the user named no key: *a* key, never a real one.
_PLACEHOLDER_KEY = "sk-no-key-required"
# A token count above this in a reply's usage is a broken (or hostile) server, not a real request: it
# would overflow SQLite's integers once summed. Negative counts are refused too.
MAX_REPORTED_TOKENS = 2**31 - 1


def _token_count(usage: Any, name: str) -> int:
    """``usage.<name>`` as a count in ``0..MAX_REPORTED_TOKENS``; ValueError (a malformed reply) otherwise."""
    value = getattr(usage, name, 0) or 0
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_REPORTED_TOKENS:
        raise ValueError(f"usage.{name} is {str(value)[:40]!r}, not a token count (0..{MAX_REPORTED_TOKENS})")
    return value


def _tool_arguments(raw_args: str) -> tuple[dict[str, Any], bool]:
    """(arguments, valid): a JSON object within :data:`moodbench._util.bounds.MAX_DEPTH` levels, else ``({}, False)``
    (an invalid tool call the conversation records, not a crash in the store's serializer)."""
    try:
        args = json.loads(raw_args) if raw_args and raw_args.strip() else {}
        if not isinstance(args, dict):
            return {}, False
        check_tree(args, "tool-call arguments", max_nodes=None)
    except (json.JSONDecodeError, RecursionError, BoundError):
        return {}, False
    return clean_strings(args), True


class LLMCallError(RuntimeError):
    """A model call failed after every retry. The conversation ends with exit reason ``llm_error``."""

    def __init__(self, message: str, endpoint: str):
        super().__init__(message)
        self.endpoint = endpoint


class EndpointDownError(LLMCallError):
    """Too many consecutive failures on an endpoint: the run stops starting conversations."""


class ReplyTooLargeError(LLMCallError):
    """A reply passed ``ModelSpec.max_response_bytes``; it was not read further and is not retried."""


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
    max_tokens: int = defaults.MAX_TOKENS
    # Whole-request deadline of each attempt: connect, send, wait and receive together, however
    # slowly the reply arrives. Retries each get their own.
    timeout_s: float = defaults.TIMEOUT_S
    max_retries: int = defaults.MAX_RETRIES
    backoff_base_s: float = 1.0
    backoff_max_s: float = 30.0
    # A server's Retry-After is honoured up to this long (it knows its queue better than we do).
    retry_after_max_s: float = 120.0
    empty_retries: int = 2
    # Replicas (several base_urls): requests go to the least busy one; at most this many in flight
    # per replica (None: no cap). See llm/_router.py.
    max_in_flight_per_endpoint: int | None = None
    # A reply above this many bytes ends the call (ReplyTooLargeError) without the rest being
    # read. 4 MiB is hundreds of times a 2048-token reply; only per-token top_logprobs on long
    # replies come near it (raise it for those), otherwise only a broken server does.
    max_response_bytes: int = defaults.MAX_RESPONSE_BYTES
    # "auto": plain OpenAI-compatible endpoints use the light transport (llm/_fast.py), the rest
    # litellm; "litellm": every call through litellm.
    transport: Literal["auto", "litellm"] = "auto"

    def __post_init__(self) -> None:
        if self.transport not in ("auto", "litellm"):
            raise ValueError(f"transport must be 'auto' or 'litellm', not {self.transport!r}")
        if self.max_response_bytes < 1:
            raise ValueError("max_response_bytes must be at least 1")

    def describe(self) -> str:
        """The model and its endpoints, fit to show (credentials in URLs masked)."""
        return f"{self.model} @ {', '.join(redact_url(u) for u in self.base_urls)}" if self.base_urls else self.model


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


def _make_transport(spec: ModelSpec) -> OpenAICompatTransport | LitellmTransport:
    if spec.transport != "litellm" and fast_path_allowed(spec.model, spec.base_urls, spec.args):
        return OpenAICompatTransport()  # skips litellm's ~8 ms/call overhead (see llm/_fast.py)
    return LitellmTransport()


@dataclass
class _Call:
    """One ``complete()`` call across its attempts."""

    messages: list[dict[str, Any]] | None  # a chat request (None: a text completion of ``prompt``)
    tools: list[dict[str, Any]] | None
    tool_choice: str | dict | None
    recover: bool
    seed: int | None
    empty_left: int
    prompt: str | None = None  # a text completion (``/v1/completions``)
    stop: list[str] | None = None
    attempts: int = 0  # requests sent
    failures: int = 0  # of which failed


class _FailedAttempt(Exception):
    """One failed request, already counted by the breaker and redacted; tenacity decides what next."""

    def __init__(self, message: str, label: str, retryable: bool, cause: BaseException,
                 error_cls: type[LLMCallError] = LLMCallError):
        super().__init__(message)
        self.message, self.label, self.retryable, self.cause, self.error_cls = message, label, retryable, cause, error_cls


class _EmptyReply(Exception):
    """An empty reply with empty-reply retries left: asked again at once."""

    def __init__(self, completion: Completion):
        super().__init__("empty reply")
        self.completion = completion


class _Backoff(tenacity.wait.wait_base):
    """Exponential backoff with jitter; a server's Retry-After is a floor, never shortened; empty replies wait not at all."""

    def __init__(self, spec: ModelSpec, rng: random.Random):
        self._spec = spec
        self._rng = rng
        self._exponential = tenacity.wait_exponential(multiplier=spec.backoff_base_s, max=spec.backoff_max_s)

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome is not None else None
        if not isinstance(exc, _FailedAttempt):
            return 0.0
        hinted = _retry_after_seconds(exc.cause)
        if hinted is not None:
            # Up to 10% extra so a crowd of conversations told "1 s" do not all return together.
            return min(hinted, self._spec.retry_after_max_s) * (1.0 + 0.1 * self._rng.random())
        # "Equal jitter": between half and all of the exponential delay, so retries don't stampede.
        return self._exponential(retry_state) * (0.5 + self._rng.random() / 2)


class ModelClient:
    """Calls one model (over one or several base URLs) for one run."""

    def __init__(self, spec: ModelSpec, health: EndpointHealth | None = None, *, rng: random.Random | None = None):
        self.spec = spec
        self.health = health or EndpointHealth(0)
        self._rr = itertools.count()
        self._rng = rng or random.Random()
        self._api_key = os.environ.get(spec.api_key_env) if spec.api_key_env else None
        self._labels = {url: redact_url(url) for url in spec.base_urls}
        named = secret_values((spec.api_key_env,) if spec.api_key_env else ())
        in_urls = [value for url in spec.base_urls for value in url_secrets(url)]
        self._secrets = sorted(set(named) | set(in_urls), key=len, reverse=True)
        self._transport: Any = _make_transport(spec)
        self._router = None
        if len(spec.base_urls) > 1 or spec.max_in_flight_per_endpoint:
            self._router = EndpointRouter(spec.base_urls, spec.max_in_flight_per_endpoint)
            self._transport = RoutedTransport(self._transport, self._router)  # frees the slot after each call

    # -- secrets -------------------------------------------------------------------------------
    def redact(self, text: str) -> str:
        """Remove API keys and URL credentials from any text that may be shown or stored (exceptions, logs)."""
        return redact_text(text, self._secrets)

    # -- calling -------------------------------------------------------------------------------
    def _endpoint(self) -> str | None:
        if not self.spec.base_urls:
            return None
        if self._router is not None:  # least busy replica with a free slot (waits if all are full)
            return self._router.acquire()
        return self.spec.base_urls[next(self._rr) % len(self.spec.base_urls)]

    def _label(self, base_url: str | None) -> str:
        """How an endpoint is named in errors, the breaker and ``Completion.endpoint``: never with credentials."""
        return self._labels.get(base_url, redact_url(base_url)) if base_url else self.spec.model

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
            # Custom base URLs get a placeholder, never a key from the environment: without one
            # litellm would send OPENAI_API_KEY (or HOSTED_VLLM_API_KEY...) to whatever server it is.
            kw["api_key"] = _PLACEHOLDER_KEY
        return kw

    def litellm_args(self) -> dict[str, Any]:
        """The litellm arguments (without ``model``) that reach this model: for code that calls the model
        itself (a user's tau2 agent class given ``llm``/``llm_args``), with the same key rule (a custom base
        URL never gets a key from the environment unless ``api_key_env`` names it) and the first base URL."""
        kw = self._kwargs(self.spec.base_urls[0] if self.spec.base_urls else None)
        kw.pop("model", None)
        kw["num_retries"] = self.spec.max_retries  # no moodbench retry loop around such calls
        return kw

    def _retrying(self, call: _Call) -> tenacity.Retrying:
        """The retry policy of one call: tenacity decides, the breaker's event does the sleeping.

        ``health.sleep`` is the sleep, so a backoff ends the moment the endpoint trips or the run
        is cancelled; the next attempt then fails at once (``_check_open``).
        """
        return tenacity.Retrying(
            retry=tenacity.retry_if_exception(lambda e: isinstance(e, _EmptyReply) or (isinstance(e, _FailedAttempt) and e.retryable)),
            stop=lambda _state: call.failures > self.spec.max_retries,
            wait=_Backoff(self.spec, self._rng),
            sleep=self.health.sleep,
            reraise=True,
        )

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
        call = _Call(messages, tools, tool_choice, recover_text_tool_calls, seed, empty_left=self.spec.empty_retries)
        return self._run(call)

    def complete_text(self, prompt: str, *, stop: list[str] | None = None, seed: int | None = None) -> Completion:
        """Continue ``prompt`` as plain text (``/v1/completions``, no chat template): the same retries,
        deadline, size limit, breaker, ``<think>`` stripping and accounting as :meth:`complete`.

        For servers and models that serve text completions (vLLM, llama.cpp, OpenAI-compatible
        servers); it is how a small local model plays the customer in the ``completion`` user format.
        """
        call = _Call(None, None, None, False, seed, empty_left=self.spec.empty_retries, prompt=prompt,
                     stop=list(stop) if stop else None)
        return self._run(call)

    def _run(self, call: _Call) -> Completion:
        try:
            return self._retrying(call)(self._attempt, call)
        except _EmptyReply as last:  # pragma: no cover - tenacity only stops on failures
            return last.completion
        except _FailedAttempt as failed:
            raise failed.error_cls(
                f"{self.spec.describe()}: request failed after {call.attempts} attempt(s): {failed.message}", failed.label
            ) from None

    def _check_open(self) -> None:
        if self.health.cancelled:
            raise LLMCallError(f"{self.spec.describe()}: run cancelled", self.spec.model)
        if self.health.down is not None:
            raise EndpointDownError(
                f"endpoint {self.health.down} is down (too many consecutive failures): {self.health.last_error}",
                self.health.down,
            )

    def _attempt(self, call: _Call) -> Completion:
        """One request: a completion, or a :class:`_FailedAttempt` already counted by the breaker."""
        self._check_open()
        base_url = self._endpoint()
        label = self._label(base_url)
        kw = self._kwargs(base_url)
        if call.tools:
            kw["tools"] = call.tools
            kw["tool_choice"] = call.tool_choice or "auto"
        if call.seed is not None and "seed" not in self.spec.args:
            kw["seed"] = call.seed
        call.attempts += 1
        budget = RequestBudget(self.spec.timeout_s, self.spec.max_response_bytes)
        started = time.perf_counter()
        try:
            # num_retries=0 (in _kwargs) also becomes the openai SDK's max_retries, so the only
            # retries are tenacity's: the request log shows exactly max_retries + 1 requests.
            if call.prompt is not None:
                if call.stop:
                    kw["stop"] = call.stop
                response = self._transport.text_completion(prompt=call.prompt, budget=budget, **kw)
            else:
                response = self._transport.completion(messages=call.messages, budget=budget, **kw)
            latency = time.perf_counter() - started
            try:
                completion = self._parse(response, latency, call.attempts, label, call.tools, call.recover)
            except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
                # A 200 whose body is not a chat completion (no choices, no message) is the
                # server's fault: retry it like a 5xx rather than crash the conversation.
                raise MalformedResponseError(f"unusable response from the server: {exc!r}") from None
        except Exception as exc:  # noqa: BLE001 - classified below
            call.failures += 1
            raise self._failure(exc, budget, base_url, label) from None
        self.health.success(label)
        if completion.is_empty and call.empty_left > 0:
            call.empty_left -= 1
            raise _EmptyReply(completion)
        return completion

    def _failure(self, exc: Exception, budget: RequestBudget, base_url: str | None, label: str) -> Exception:
        """Classify a failed request: the exception to raise, after counting it towards the breaker."""
        error_cls: type[LLMCallError] = LLMCallError
        if budget.tripped == "size":
            # However the SDK wrapped it, the budget knows the reply was cut off for its size.
            retryable, message = False, (f"{budget.size_message()}; raise --max-response-bytes if the model "
                                         "really writes replies that long")
            error_cls = ReplyTooLargeError
        elif _is_context_error(exc):
            return ContextWindowError(self.redact(str(exc))[:2000])  # the conversation's doing, not the endpoint's
        elif budget.tripped == "deadline":
            retryable, message = True, f"Timeout: {budget.deadline_message()}; raise --timeout for slower servers"
            if budget.abandoned:
                message += " (this provider's client takes no deadline: the request was left running in a worker thread)"
        else:
            retryable = _is_retryable(exc) or isinstance(exc, MalformedResponseError)
            message = f"{type(exc).__name__}: {exc}"
            if _status_code(exc) == 401 and base_url:
                message = f"{self._unauthorized()} ({message[:300]})"
        message = self.redact(message)[:2000]
        # Every failed request counts towards the breaker: a 401 or a 404 (model gone) on every
        # call is as dead an endpoint as a refused connection.
        self.health.failure(label, message)
        return _FailedAttempt(message, label, retryable, exc, error_cls)

    def _unauthorized(self) -> str:
        """What a 401 from a custom base URL means, in moodbench's terms."""
        name = self.spec.api_key_env
        if name and self._api_key:
            return f"401 Unauthorized: the endpoint rejected the key in ${name} (--api-key-env)"
        if name:
            return f"401 Unauthorized: the endpoint wants an API key, and ${name} (named by --api-key-env) is not set"
        return ("401 Unauthorized: the endpoint wants an API key; moodbench sends none to custom base URLs "
                "unless --api-key-env NAME names the variable holding it")

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
        # A lone surrogate (a "\ud800" escape) cannot be written as UTF-8: replaced here, or one reply
        # makes the whole run unreportable.
        text = clean_text(msg.content) if isinstance(msg.content, str) else msg.content
        reasoning = clean_text(reasoning) if isinstance(reasoning, str) else reasoning
        raw_content = f"<think>{reasoning}</think>{text or ''}" if reasoning else text
        content, stripped = strip_thinking(text)
        stripped = stripped or bool(reasoning)
        calls: list[ParsedToolCall] = []
        for i, tc in enumerate(msg.tool_calls or []):
            try:
                raw_args = tc.function.arguments if isinstance(tc.function.arguments, str) else json.dumps(tc.function.arguments)
            except (TypeError, ValueError, RecursionError):
                raw_args = ""
            raw_args = clean_text(raw_args)
            args, valid = _tool_arguments(raw_args)
            calls.append(ParsedToolCall(id=clean_text(tc.id or f"call_{i}"), name=clean_text(tc.function.name or ""), arguments=args,
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
        prompt_tokens, completion_tokens = _token_count(usage, "prompt_tokens"), _token_count(usage, "completion_tokens")
        try:
            cost = float(litellm.completion_cost(completion_response=response) or 0.0)
            cost = cost if math.isfinite(cost) and cost >= 0 else 0.0
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
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=cost,
            latency_s=latency,
            attempts=attempts,
            endpoint=endpoint,
            finish_reason=getattr(choice, "finish_reason", None),
            raw=raw,
        )

