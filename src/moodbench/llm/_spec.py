"""What a model call is made of: the endpoint's :class:`ModelSpec`, the run's :class:`EndpointHealth`
breaker, the :class:`Completion` a call returns and the errors it raises.

These are the plain data every caller of :class:`moodbench.llm.ModelClient` sees, kept apart from
the retry machinery (``_retry.py``) and the client itself (``_client.py``) so each file has one job.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Literal

from moodbench._util import defaults
from moodbench._util.secrets import redact_url


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
