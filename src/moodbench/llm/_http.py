"""httpx with a whole-request deadline and a reply-size limit, for every request a model call makes.

httpx's timeouts bound each phase and each socket read separately: a server that sends its reply
one byte a second never trips a 3 s read timeout, and a reply of hundreds of megabytes (or one
that never ends) is read into memory whole. A model call needs one bound for the whole request
(connect, send, wait, receive) and one for the size of what comes back.

:class:`RequestBudget` is that bound for one request; :func:`active` makes it the current one for
the calling thread, and every request sent by a client from :func:`deadline_client` in that thread
obeys it, whoever sends it (this package's light transport, the openai SDK or litellm's own
HTTP handler, both handed such a client):

* each connect, TLS handshake, socket read and write is given at most the time left, so the
  deadline ends even a request whose headers drip in (a network-backend wrapper inside httpcore's
  pool, see :func:`_clamp_network`);
* the body is counted as it streams in and the request ends the moment it passes the limit
  (a ``Content-Length`` above it ends it before the body is read); a compressed body is inflated
  here, a bounded piece at a time, and its *inflated* size is what counts (a 0.6 MB gzip reply that
  inflates to 600 MB ends at the limit), so only encodings this module can bound are asked for;
* the budget records why a request ended (``tripped``) and how many requests it covered, so the
  caller can tell its own deadline from any other timeout however an SDK re-wraps the exception.

Without an active budget these clients behave like plain ``httpx.Client``s.
"""

from __future__ import annotations

import http.cookiejar
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import httpcore
import httpx

_local = threading.local()


@dataclass
class RequestBudget:
    """Time and bytes one request may take; ``deadline`` is on the ``time.monotonic()`` clock."""

    timeout_s: float
    max_bytes: int | None = None
    deadline: float = field(init=False)
    # Why the request was ended by this budget, if it was.
    tripped: Literal["deadline", "size"] | None = None
    # Requests sent under this budget through a deadline client (0: the call bypassed it).
    requests: int = 0
    # The call could not be given the deadline and was left running in a worker thread.
    abandoned: bool = False

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.timeout_s

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def expired(self) -> bool:
        return self.remaining() <= 0

    def deadline_message(self) -> str:
        return f"no complete reply within {self.timeout_s:g} s (whole-request deadline)"

    def size_message(self) -> str:
        return f"reply larger than {self.max_bytes} bytes"


class ReplyTooLarge(httpx.ReadError):
    """The reply passed its budget's size limit; the connection was closed without reading the rest."""


def current() -> RequestBudget | None:
    """The budget of the request this thread is making, if any."""
    return getattr(_local, "budget", None)


@contextmanager
def active(budget: RequestBudget | None) -> Iterator[RequestBudget | None]:
    """Make ``budget`` the current one for this thread for the duration of the block."""
    previous = current()
    _local.budget = budget
    try:
        yield budget
    finally:
        _local.budget = previous


def _left(exc_type: type[Exception]) -> float | None:
    """Seconds the current budget leaves, raising ``exc_type`` if none are left; None without a budget."""
    budget = current()
    if budget is None:
        return None
    remaining = budget.remaining()
    if remaining <= 0:
        budget.tripped = "deadline"
        raise exc_type(budget.deadline_message())
    return remaining


def _clamped(timeout: float | None, exc_type: type[Exception]) -> float | None:
    remaining = _left(exc_type)
    if remaining is None:
        return timeout
    return remaining if timeout is None else min(timeout, remaining)


# A timeout this close to the deadline was the deadline's (socket timers may fire a hair early).
_DEADLINE_SLACK_S = 0.01


def _note_timeout() -> None:
    """A timeout fired: if it was the deadline's, say so on the budget."""
    budget = current()
    if budget is not None and budget.remaining() <= _DEADLINE_SLACK_S:
        budget.tripped = "deadline"


# --------------------------------------------------------------------------- inside httpcore


class _ClampedStream(httpcore.NetworkStream):
    """A connection whose every blocking operation ends by the current budget's deadline."""

    def __init__(self, inner: httpcore.NetworkStream):
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            return self._inner.read(max_bytes, _clamped(timeout, httpcore.ReadTimeout))
        except httpcore.TimeoutException:
            _note_timeout()
            raise

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        try:
            self._inner.write(buffer, _clamped(timeout, httpcore.WriteTimeout))
        except httpcore.TimeoutException:
            _note_timeout()
            raise

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        try:
            return _ClampedStream(self._inner.start_tls(ssl_context, server_hostname, _clamped(timeout, httpcore.ConnectTimeout)))
        except httpcore.TimeoutException:
            _note_timeout()
            raise

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _ClampedBackend(httpcore.NetworkBackend):
    """Hands out :class:`_ClampedStream` connections; connecting itself is clamped too."""

    def __init__(self, inner: httpcore.NetworkBackend):
        self._inner = inner

    def connect_tcp(
        self, host: str, port: int, timeout: float | None = None, local_address: str | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        try:
            stream = self._inner.connect_tcp(
                host, port, _clamped(timeout, httpcore.ConnectTimeout), local_address, socket_options
            )
        except httpcore.TimeoutException:
            _note_timeout()
            raise
        return _ClampedStream(stream)

    def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None) -> httpcore.NetworkStream:
        stream = self._inner.connect_unix_socket(path, _clamped(timeout, httpcore.ConnectTimeout), socket_options)
        return _ClampedStream(stream)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _clamp_network(transport: httpx.BaseTransport) -> bool:
    """Wrap the network backend of an ``httpx.HTTPTransport``'s connection pool; False if there is none.

    httpx offers no public way to give ``HTTPTransport`` a network backend, and the pool reads
    its per-read timeout once per response phase, so this is the one place where a read can be
    bounded by the time left rather than by a fixed timeout. It touches two private attributes
    (``HTTPTransport._pool`` and httpcore's ``ConnectionPool._network_backend``); if a release
    renames them the other bounds still hold (per-phase timeouts capped at the time left, the
    deadline checked between body chunks) and ``tests/test_llm_deadline.py``'s header-drip case
    fails, which is how anyone upgrading finds out.
    """
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if backend is None:
        return False
    if not isinstance(backend, _ClampedBackend):
        pool._network_backend = _ClampedBackend(backend)  # type: ignore[union-attr]
    return True


# --------------------------------------------------------------------------- the httpx layer


# What a deadline client accepts: the encodings it can inflate within the size limit (httpx would also
# ask for br and zstd when their packages are installed, and inflate them whole).
ACCEPT_ENCODING = "gzip, deflate"


class _Inflater:
    """One ``Content-Encoding`` (gzip or deflate) undone with a cap on what each piece may inflate to."""

    def __init__(self, encoding: str):
        self._gzip = encoding in ("gzip", "x-gzip")
        self._raw_fallback = not self._gzip  # "deflate" is zlib-wrapped by the RFC, raw by some servers
        self._z = zlib.decompressobj(16 + zlib.MAX_WBITS if self._gzip else zlib.MAX_WBITS)

    def feed(self, data: bytes, limit: int) -> bytes | None:
        """The inflated ``data``; None when it would pass ``limit`` bytes (the rest is never inflated)."""
        try:
            out = self._z.decompress(data, limit + 1)
        except zlib.error:
            if not self._raw_fallback:
                raise
            self._raw_fallback = False
            self._z = zlib.decompressobj(-zlib.MAX_WBITS)
            out = self._z.decompress(data, limit + 1)
        self._raw_fallback = False
        if len(out) > limit or self._z.unconsumed_tail:
            return None
        return out

    def flush(self, limit: int) -> bytes | None:
        out = self._z.flush()
        return None if len(out) > limit else out


def _encodings(response: httpx.Response) -> list[str]:
    """The response's content codings, outermost last (``identity`` dropped)."""
    value = response.headers.get("content-encoding", "")
    return [e.strip().lower() for e in value.split(",") if e.strip() and e.strip().lower() != "identity"]


class _LimitedStream(httpx.SyncByteStream):
    """A response body that ends at its budget's deadline or size limit, whoever reads it; with
    ``encodings``, inflated here and limited by its inflated size."""

    def __init__(
        self, inner: httpx.SyncByteStream, budget: RequestBudget, request: httpx.Request, encodings: list[str] | None = None
    ):
        self._inner = inner
        self._budget = budget
        self._request = request
        self._received = 0
        self._inflaters = [_Inflater(e) for e in reversed(encodings or [])]

    def _too_large(self) -> ReplyTooLarge:
        self._budget.tripped = "size"
        return ReplyTooLarge(self._budget.size_message() + (" (inflated)" if self._inflaters else ""), request=self._request)

    def _inflate(self, chunk: bytes, *, final: bool = False) -> bytes:
        limit = self._budget.max_bytes
        assert limit is not None
        for inflater in self._inflaters:
            left = limit - self._received
            try:
                out = inflater.feed(chunk, left)
                if out is not None and final:
                    tail = inflater.flush(left - len(out))
                    out = None if tail is None else out + tail
            except zlib.error as exc:
                raise httpx.DecodingError(
                    f"the reply's Content-Encoding could not be decoded: {exc}", request=self._request
                ) from None
            if out is None:
                raise self._too_large()
            chunk = out
        return chunk

    def __iter__(self) -> Iterator[bytes]:
        budget = self._budget
        chunks = iter(self._inner)
        while True:
            # The budget is made current only around each read, never across a yield, so a
            # half-read body cannot leave its deadline on the thread for unrelated requests.
            with active(budget):
                if budget.expired():
                    budget.tripped = "deadline"
                    raise httpx.ReadTimeout(budget.deadline_message(), request=self._request)
                try:
                    chunk = next(chunks)
                except StopIteration:
                    if self._inflaters:
                        rest = self._inflate(b"", final=True)
                        if rest:
                            yield rest
                    return
                except httpx.TimeoutException:
                    _note_timeout()
                    raise
            if self._inflaters:
                chunk = self._inflate(chunk)
            self._received += len(chunk)
            if budget.max_bytes is not None and self._received > budget.max_bytes:
                raise self._too_large()
            yield chunk

    def close(self) -> None:
        self._inner.close()


class DeadlineTransport(httpx.BaseTransport):
    """Wraps an httpx transport so requests made under a :class:`RequestBudget` obey it."""

    def __init__(self, inner: httpx.BaseTransport):
        self._inner = inner
        self.network_clamped = _clamp_network(inner)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        budget = current()
        if budget is None:
            return self._inner.handle_request(request)
        budget.requests += 1
        remaining = budget.remaining()
        if remaining <= 0:
            budget.tripped = "deadline"
            raise httpx.ConnectTimeout(budget.deadline_message(), request=request)
        # Every phase gets at most the time left (the pool wait included, which the network
        # backend never sees).
        timeouts = dict(request.extensions.get("timeout") or {})
        for phase in ("connect", "read", "write", "pool"):
            value = timeouts.get(phase)
            timeouts[phase] = remaining if value is None else min(value, remaining)
        request.extensions["timeout"] = timeouts
        if budget.max_bytes is not None:
            request.headers["Accept-Encoding"] = ACCEPT_ENCODING
        try:
            response = self._inner.handle_request(request)
        except httpx.TimeoutException:
            _note_timeout()
            raise
        length = response.headers.get("content-length", "")
        if budget.max_bytes is not None and length.isdigit() and int(length) > budget.max_bytes:
            response.close()
            budget.tripped = "size"
            raise ReplyTooLarge(f"{budget.size_message()} (Content-Length: {length})", request=request)
        assert isinstance(response.stream, httpx.SyncByteStream)
        headers = response.headers
        encodings = _encodings(response) if budget.max_bytes is not None else []
        if encodings:
            unknown = [e for e in encodings if e not in ("gzip", "x-gzip", "deflate")]
            if unknown:
                response.close()
                raise httpx.DecodingError(
                    f"the reply is encoded as {', '.join(unknown)}, which was not asked for (only "
                    f"{ACCEPT_ENCODING}) and cannot be size-limited",
                    request=request,
                )
            # inflated below; httpx must not inflate it again
            headers = httpx.Headers(
                [(k, v) for k, v in response.headers.multi_items() if k.lower() not in ("content-encoding", "content-length")]
            )
        return httpx.Response(
            status_code=response.status_code,
            headers=headers,
            stream=_LimitedStream(response.stream, budget, request, encodings),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._inner.close()


class _DeadlineClient(httpx.Client):
    """An ``httpx.Client`` whose transports (the default one and each proxy one it builds from the
    environment) are :class:`DeadlineTransport`s, so proxies, TLS settings and ``trust_env`` work
    exactly as in a plain client."""

    def _init_transport(self, *args: Any, **kwargs: Any) -> httpx.BaseTransport:
        return DeadlineTransport(super()._init_transport(*args, **kwargs))

    def _init_proxy_transport(self, *args: Any, **kwargs: Any) -> httpx.BaseTransport:
        return DeadlineTransport(super()._init_proxy_transport(*args, **kwargs))


class _NoCookies(http.cookiejar.CookieJar):
    """A jar that keeps no cookie and sends none.

    A model API has no business keeping state in cookies between calls (litellm blocks them too).
    A policy that refuses every domain did the same, but httpx hands every reply to the jar, which
    parsed its headers into cookies only to refuse them: 6% of a conversation's CPU."""

    def __init__(self) -> None:
        super().__init__(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))

    def extract_cookies(self, response: Any, request: Any) -> None:
        return None

    def set_cookie(self, cookie: http.cookiejar.Cookie) -> None:
        return None


def _no_cookies() -> http.cookiejar.CookieJar:
    return _NoCookies()


def deadline_client(*, max_connections: int | None = None, follow_redirects: bool = False) -> httpx.Client:
    """A pooled, thread-safe client whose requests obey the calling thread's :class:`RequestBudget`."""
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections or 1024)
    return _DeadlineClient(limits=limits, follow_redirects=follow_redirects, cookies=_no_cookies())
