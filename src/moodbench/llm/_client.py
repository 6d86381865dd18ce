"""A model endpoint and the calls made to it.

litellm gives one calling convention for vLLM, llama.cpp, Ollama, OpenAI, Anthropic and the rest;
this module adds what an experiment needs on top: retries with backoff that honour ``Retry-After``
(driven by tenacity), a whole-request deadline and a reply-size limit on every attempt (see
``_http.py``), a default ``max_tokens`` so server defaults never truncate replies, a breaker that
notices a dead endpoint, ``<think>`` stripping, recovery of tool calls written as text, and a
record of tokens, cost and latency for every call. Nothing here is global: each run builds its own
clients and health tracker and hands them to the conversations that use them.
The spec, breaker, reply and error types live in ``_spec.py`` and the retry policy in ``_retry.py``.

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
import time
from typing import Any

import tenacity

# redact_text and secret_values are also imported from here by runner.py until it moves to
# moodbench._util.secrets, where they are defined.
from moodbench._util.bounds import BoundError, check_tree, clean_strings, clean_text
from moodbench._util.secrets import redact_text, redact_url, secret_values, url_secrets
from moodbench.llm._fast import OpenAICompatTransport, fast_path_allowed
from moodbench.llm._http import RequestBudget
from moodbench.llm._litellm import LitellmTransport, litellm
from moodbench.llm._retry import (
    _Backoff,
    _Call,
    _EmptyReply,
    _FailedAttempt,
    _is_context_error,
    _is_retryable,
    _status_code,
)
from moodbench.llm._retry import (
    _retry_after_seconds as _retry_after_seconds,  # re-exported: tests read the Retry-After parsing
)
from moodbench.llm._router import EndpointRouter, RoutedTransport
from moodbench.llm._spec import (
    Completion,
    ContextWindowError,
    EndpointDownError,
    EndpointHealth,
    LLMCallError,
    MalformedResponseError,
    ModelSpec,
    ParsedToolCall,
    ReplyTooLargeError,
)
from moodbench.llm._textcalls import recover_text_tool_calls
from moodbench.llm._thinking import strip_thinking

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


def _make_transport(spec: ModelSpec) -> OpenAICompatTransport | LitellmTransport:
    if spec.transport != "litellm" and fast_path_allowed(spec.model, spec.base_urls, spec.args):
        return OpenAICompatTransport()  # skips litellm's ~8 ms/call overhead (see llm/_fast.py)
    return LitellmTransport()


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
        # Models litellm has no price for (a local or scripted model): asking again costs ~1 ms of CPU per call
        # (its provider look-up and fallbacks) for the same answer, 15% of a conversation's CPU at high concurrency.
        self._unpriced: set[str] = set()
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
            retry=tenacity.retry_if_exception(
                lambda e: isinstance(e, _EmptyReply) or (isinstance(e, _FailedAttempt) and e.retryable)
            ),
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
        call = _Call(
            None, None, None, False, seed, empty_left=self.spec.empty_retries, prompt=prompt, stop=list(stop) if stop else None
        )
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
            retryable, message = (
                False,
                (f"{budget.size_message()}; raise --max-response-bytes if the model really writes replies that long"),
            )
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
        return (
            "401 Unauthorized: the endpoint wants an API key; moodbench sends none to custom base URLs "
            "unless --api-key-env NAME names the variable holding it"
        )

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
            calls.append(
                ParsedToolCall(
                    id=clean_text(tc.id or f"call_{i}"),
                    name=clean_text(tc.function.name or ""),
                    arguments=args,
                    raw_arguments=raw_args or "",
                    valid_json=valid,
                )
            )
        recovered = 0
        if not calls and recover and tools and content:
            names = [t["function"]["name"] for t in tools]
            for j, (name, args) in enumerate(recover_text_tool_calls(content, names)):
                calls.append(
                    ParsedToolCall(
                        id=f"recovered_{int(time.time() * 1000)}_{j}",
                        name=name,
                        arguments=args,
                        raw_arguments=json.dumps(args),
                        recovered_from_text=True,
                    )
                )
                recovered += 1
            if recovered:
                content = None
        usage = getattr(response, "usage", None)
        prompt_tokens, completion_tokens = _token_count(usage, "prompt_tokens"), _token_count(usage, "completion_tokens")
        cost = 0.0
        priced_as = str(getattr(response, "model", None) or self.spec.model)
        if priced_as not in self._unpriced:
            try:
                cost = float(litellm.completion_cost(completion_response=response) or 0.0)
                cost = cost if math.isfinite(cost) and cost >= 0 else 0.0
            except Exception:  # noqa: BLE001 - unknown local models have no price
                if usage is not None:  # the model, not this reply, is what has no price
                    self._unpriced.add(priced_as)
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
