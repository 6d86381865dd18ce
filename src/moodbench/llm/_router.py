"""Load balancing over the replicas of one model, with a concurrency limit per replica.

``--agent-base-url http://gpu1:8000/v1,http://gpu2:8000/v1`` serves one model from several
servers. Round-robin ignores how busy each one is: a replica that is slow (longer prompts, a
smaller GPU, a restart) keeps getting the same share and its queue grows. The router sends each
request to the replica with the fewest requests in flight and, with a limit, never more than
``max_in_flight`` to one replica: a request that finds every replica full waits for a free slot
here instead of in the server's queue, where it would count against the request timeout.

``acquire()`` picks and reserves a replica; ``release(url)`` frees it. :class:`RoutedTransport`
releases after each call, so :class:`ModelClient` only asks ``acquire()`` where it used to
round-robin.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

from moodbench._util.secrets import redact_url


class EndpointRouter:
    """Least-in-flight choice among base URLs, optionally capped per URL (thread-safe)."""

    def __init__(self, base_urls: tuple[str, ...] | list[str], max_in_flight: int | None = None):
        if not base_urls:
            raise ValueError("EndpointRouter needs at least one base URL")
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.base_urls = tuple(base_urls)
        self.max_in_flight = max_in_flight
        self._in_flight = {u: 0 for u in self.base_urls}
        self._served = {u: 0 for u in self.base_urls}
        self._cond = threading.Condition()
        self._tiebreak = itertools.count()

    def acquire(self, timeout: float | None = None) -> str:
        """Reserve the least busy replica with a free slot, waiting for one if all are full."""
        with self._cond:
            while True:
                free = [u for u in self.base_urls if self.max_in_flight is None or self._in_flight[u] < self.max_in_flight]
                if free:
                    low = min(self._in_flight[u] for u in free)
                    candidates = [u for u in free if self._in_flight[u] == low]
                    url = candidates[next(self._tiebreak) % len(candidates)]  # ties: rotate
                    self._in_flight[url] += 1
                    self._served[url] += 1
                    return url
                if not self._cond.wait(timeout):
                    raise TimeoutError(f"no replica had a free slot within {timeout}s")

    def release(self, url: str | None) -> None:
        with self._cond:
            if url in self._in_flight and self._in_flight[url] > 0:
                self._in_flight[url] -= 1
                self._cond.notify()

    def labels(self) -> dict[str, str]:
        """Each replica's URL as it may be shown (credentials masked; numbered if that makes two alike)."""
        labels: dict[str, str] = {}
        for i, url in enumerate(self.base_urls):
            label = redact_url(url)
            labels[url] = label if label not in labels.values() else f"{label} [{i + 1}]"
        return labels

    def snapshot(self) -> dict[str, dict[str, int]]:
        """Per replica (by its shown label): requests in flight now and requests sent so far."""
        labels = self.labels()
        with self._cond:
            return {labels[u]: {"in_flight": self._in_flight[u], "served": self._served[u]} for u in self.base_urls}


class RoutedTransport:
    """Wraps a transport (litellm's or the light one) so every call releases its replica's slot."""

    def __init__(self, inner: Any, router: EndpointRouter):
        self.inner = inner
        self.router = router

    def completion(self, **kw: Any) -> Any:
        try:
            return self.inner.completion(**kw)
        finally:
            self.router.release(kw.get("api_base"))

    def text_completion(self, **kw: Any) -> Any:
        try:
            return self.inner.text_completion(**kw)
        finally:
            self.router.release(kw.get("api_base"))
