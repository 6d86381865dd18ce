"""Is an OpenAI-compatible server up, and what does it serve? (``GET /v1/models``)

Shared by every backend (vLLM, llama.cpp's server, any OpenAI-compatible endpoint) and by
``moodbench run``'s preflight:

- ``list_models(base_url, timeout)`` -> the served model ids, or ``HealthError``;
- ``wait_ready(base_url, timeout, proc=None)`` -> polls until the list is non-empty, fails
  fast with ``ProcessDied`` when ``proc`` (the server we started) exits, ``StartupTimeout``
  after ``timeout`` seconds;
- ``probe(base_url)`` -> ``Probe`` telling "serves these models" / "port open but no
  OpenAI answer" / "nothing listening" apart (what ``--reuse`` decides on).

``base_url`` is what clients are given, e.g. ``http://127.0.0.1:8000/v1``; a bare
``http://host:port`` gets ``/v1`` added.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx


class HealthError(RuntimeError):
    """The server did not answer ``/v1/models`` with a model list."""


class AuthRequired(HealthError):
    """``/v1/models`` answered 401/403: the server is up but wants an API key."""


class ProcessDied(HealthError):
    def __init__(self, returncode: int | None, message: str = "") -> None:
        self.returncode = returncode
        super().__init__(message or f"server process exited with code {returncode} during start-up")


class StartupTimeout(HealthError, TimeoutError):
    pass


def models_url(base_url: str) -> str:
    """``http://h:p/v1`` -> ``http://h:p/v1/models``; ``http://h:p`` -> ``http://h:p/v1/models``."""
    base = base_url.rstrip("/")
    if not urlsplit(base).path:
        base += "/v1"
    return base + "/models"


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _client(url: str, timeout: float) -> httpx.Client:
    # A proxy from HTTP(S)_PROXY must not swallow requests to a server on this machine.
    return httpx.Client(timeout=timeout, trust_env=not _is_loopback(url), follow_redirects=True)


def _auth_headers(api_key: str | None) -> dict[str, str]:
    key = api_key if api_key is not None else os.environ.get("MOODBENCH_SERVER_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


def list_models(base_url: str, timeout: float = 5.0, api_key: str | None = None) -> list[str]:
    """The ids the server lists at ``/v1/models`` (may be empty while it is loading).

    Raises ``HealthError`` (``AuthRequired`` for 401/403) when there is no usable answer:
    connection refused/reset, timeout, non-2xx, or a body that is not an OpenAI model list.
    ``api_key`` defaults to ``$MOODBENCH_SERVER_API_KEY``.
    """
    url = models_url(base_url)
    try:
        with _client(url, timeout) as client:
            resp = client.get(url, headers=_auth_headers(api_key))
    except httpx.HTTPError as exc:
        raise HealthError(f"{url}: {type(exc).__name__}: {exc}") from exc
    if resp.status_code in (401, 403):
        raise AuthRequired(f"{url}: HTTP {resp.status_code} (the server wants an API key)")
    if resp.status_code >= 400:
        raise HealthError(f"{url}: HTTP {resp.status_code}: {resp.text[:200]}")
    try:
        data = resp.json()
        items = data["data"]
        return [str(item["id"]) for item in items]
    except (ValueError, KeyError, TypeError) as exc:
        raise HealthError(f"{url}: not an OpenAI model list: {resp.text[:200]!r}") from exc


def wait_ready(
    base_url: str,
    timeout: float,
    proc=None,
    *,
    interval: float = 0.5,
    api_key: str | None = None,
    on_poll: Callable[[float, str], None] | None = None,
) -> list[str]:
    """Poll ``/v1/models`` until it lists at least one model; return the ids.

    ``proc`` (a ``subprocess.Popen``, or anything with ``poll()``) is the server we started:
    when it exits first, ``ProcessDied`` is raised at once instead of waiting out the
    timeout. ``on_poll(elapsed_s, last_error)`` is called after each failed poll (progress
    display). ``AuthRequired`` is raised at once: waiting will not fix a missing key.
    """
    start = time.monotonic()
    last = "no answer yet"
    while True:
        if proc is not None and proc.poll() is not None:
            raise ProcessDied(proc.poll())
        try:
            models = list_models(base_url, timeout=min(5.0, max(timeout, 0.1)), api_key=api_key)
        except AuthRequired:
            raise
        except HealthError as exc:
            last = str(exc)
        else:
            if models:
                return models
            last = "server answered with an empty model list"
        elapsed = time.monotonic() - start
        if proc is not None and proc.poll() is not None:
            raise ProcessDied(proc.poll())
        if elapsed >= timeout:
            raise StartupTimeout(f"{models_url(base_url)} not ready after {timeout:.0f}s ({last})")
        if on_poll is not None:
            on_poll(elapsed, last)
        time.sleep(min(interval, max(0.0, timeout - elapsed)))


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass
class Probe:
    """What is on a port: ``state`` is "serving" (``models`` set), "busy" (accepts
    connections but gives no model list: loading, wedged, or not an OpenAI server) or
    "free" (nothing listening)."""

    state: str
    models: list[str] = field(default_factory=list)
    detail: str = ""


def probe(base_url: str, timeout: float = 3.0, api_key: str | None = None) -> Probe:
    parts = urlsplit(base_url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if not port_open(host, port, timeout=min(timeout, 1.0)):
        return Probe("free")
    try:
        models = list_models(base_url, timeout=timeout, api_key=api_key)
    except AuthRequired as exc:
        return Probe("busy", detail=str(exc))
    except HealthError as exc:
        return Probe("busy", detail=str(exc))
    if not models:
        return Probe("busy", detail="empty model list")
    return Probe("serving", models=models)
