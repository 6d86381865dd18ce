"""How one model call is retried: which failures are worth another try, how long to wait, and the
per-call state tenacity carries between attempts.

Split from ``_client.py`` so the retry policy (``Retry-After`` honoured as a floor, jittered
exponential backoff, empty replies asked again at once) can be read on its own.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import openai
import tenacity

from moodbench.llm._litellm import litellm
from moodbench.llm._spec import Completion, LLMCallError, ModelSpec

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
    return any(
        s in text for s in ("context length", "context window", "maximum context", "too many tokens", "exceeds the context")
    )


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

    def __init__(
        self, message: str, label: str, retryable: bool, cause: BaseException, error_cls: type[LLMCallError] = LLMCallError
    ):
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
