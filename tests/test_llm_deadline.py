"""Every model call has a whole-request deadline and a reply-size limit, in both transports.

``--timeout`` used to bound each socket read only: a server that sends its reply a few bytes a
second (a wedged proxy, a dying GPU node) kept a conversation waiting for minutes and the
breaker never heard of it; a reply of hundreds of megabytes (or one that never ends) was read
into memory whole. The scripted server's ``drip``, ``huge`` and ``endless`` faults reproduce
those over real HTTP; each test runs once through the light transport and once through litellm.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from moodbench.llm import EndpointHealth, LLMCallError, ModelClient, ModelSpec, ReplyTooLargeError
from scripted import ScriptedServer, scripted_client, start_scripted_server

MESSAGES = [{"role": "system", "content": "You grade things."}, {"role": "user", "content": "hi"}]
# 5 bytes a second: the ~330-byte reply (headers included) would take over a minute to arrive,
# while every single read returns well inside the per-read timeout.
DRIP = {"drip_rate": 1.0, "drip_bytes_per_s": 5}


@pytest.fixture(params=["auto", "litellm"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _client(srv: ScriptedServer, transport: str, health: EndpointHealth | None = None, **spec: Any) -> ModelClient:
    spec = {"backoff_base_s": 0.01, "backoff_max_s": 0.05, **spec}
    client: ModelClient = scripted_client(srv.base_url, health or EndpointHealth(0), transport=transport, **spec)
    return client


# --------------------------------------------------------------------------- deadline


@pytest.mark.parametrize("drip_headers", [True, False], ids=["headers-drip", "body-drips"])
@pytest.mark.parametrize("retries", [0, 1])
def test_a_dripping_server_ends_at_the_deadline_and_trips_the_breaker(
    tmp_path: Path, transport: str, retries: int, drip_headers: bool
) -> None:
    timeout = 1.0
    health = EndpointHealth(retries + 1)  # trips on the last attempt's failure
    with start_scripted_server({"faults": {**DRIP, "drip_headers": drip_headers}}, tmp_path) as srv:
        client = _client(srv, transport, health, timeout_s=timeout, max_retries=retries)
        started = time.monotonic()
        with pytest.raises(LLMCallError) as info:
            client.complete(MESSAGES)
        elapsed = time.monotonic() - started
        logged = srv.requests()
    attempts = retries + 1
    assert len(logged) == attempts and {r["fault"] for r in logged} == {"drip"}
    assert f"after {attempts} attempt(s)" in str(info.value) and "deadline" in str(info.value), str(info.value)
    assert "worker thread" not in str(info.value)  # ended by the client's own deadline, not abandoned
    # about timeout x attempts; the bound is generous for a slow shared machine, and far below
    # the minute each dripped reply would take
    assert timeout * attempts * 0.9 <= elapsed < timeout * attempts + 15, elapsed
    assert health.down == srv.base_url  # every timed-out request counted towards the breaker


def test_a_provider_without_a_client_hook_is_abandoned_at_the_deadline(tmp_path: Path) -> None:
    """litellm's cloudflare path builds its own client (no hook): the call is given up in its worker
    thread at the deadline; the conversation and the breaker go on as for any timeout."""
    health = EndpointHealth(1)
    with start_scripted_server({"faults": DRIP}, tmp_path) as srv:
        client = ModelClient(
            ModelSpec(model="cloudflare/scripted", base_urls=(srv.base_url,), timeout_s=1.0, max_retries=0), health
        )
        started = time.monotonic()
        with pytest.raises(LLMCallError, match="worker thread") as info:
            client.complete(MESSAGES)
        elapsed = time.monotonic() - started
        assert len(srv.requests()) == 1
    assert "deadline" in str(info.value) and 0.9 <= elapsed < 15 and health.down == srv.base_url


def test_litellm_sends_the_providers_moodbench_hooks_through_the_deadline_client(tmp_path: Path) -> None:
    """For every provider the litellm transport hands a client to, the request really goes through
    it (the budget counts it), whatever the scripted server makes of the provider's protocol."""
    from moodbench.llm._http import RequestBudget
    from moodbench.llm._litellm import _HTTP_HANDLER_PROVIDERS, _OPENAI_SDK_PROVIDERS, LitellmTransport

    transport = LitellmTransport()
    bypassed = []
    with start_scripted_server({}, tmp_path) as srv:
        for provider in sorted(_OPENAI_SDK_PROVIDERS | _HTTP_HANDLER_PROVIDERS):
            budget = RequestBudget(20.0, 1_000_000)
            try:
                transport.completion(
                    model=f"{provider}/scripted",
                    messages=MESSAGES,
                    api_base=srv.base_url,
                    api_key="sk-x",
                    num_retries=0,
                    timeout=20,
                    max_tokens=8,
                    budget=budget,
                )
            except Exception:
                pass
            if budget.requests == 0:
                bypassed.append(provider)
    assert bypassed == []


def test_a_reply_in_time_is_untouched_by_the_deadline(tmp_path: Path, transport: str) -> None:
    """A slow but whole reply (0.4 s of latency, 1.5 s deadline) is a normal completion."""
    with start_scripted_server({"latency_ms": 400, "roles": {"judge": {"turns": [{"content": "fine"}]}}}, tmp_path) as srv:
        completion = _client(srv, transport, timeout_s=1.5, max_retries=0).complete(MESSAGES)
    assert completion.content == "fine" and completion.attempts == 1


# --------------------------------------------------------------------------- reply size


@contextmanager
def peak_rss_growth() -> Iterator[list[int]]:
    """Samples this process's resident memory while the block runs; yields [growth in bytes]."""
    page = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * page

    base, peak, stop = rss(), [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss())
            stop.wait(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = [0]
    try:
        yield out
    finally:
        stop.set()
        sampler.join()
        out[0] = max(peak[0], rss()) - base


@pytest.mark.parametrize(
    "faults",
    [
        pytest.param({"huge_rate": 1.0, "huge_bytes": 150_000_000}, id="huge-chunked"),
        pytest.param({"huge_rate": 1.0, "huge_bytes": 150_000_000, "huge_chunked": False}, id="huge-with-length"),
        pytest.param({"endless_rate": 1.0}, id="endless"),
    ],
)
def test_a_reply_over_the_size_limit_ends_clearly_without_being_read(tmp_path: Path, transport: str, faults: dict) -> None:
    health = EndpointHealth(100)
    with start_scripted_server({"faults": faults}, tmp_path) as srv:
        client = _client(srv, transport, health, max_retries=2, timeout_s=60)
        with peak_rss_growth() as growth, pytest.raises(ReplyTooLargeError) as info:
            client.complete(MESSAGES)
        logged = srv.requests()
    limit = 4 * 1024 * 1024
    assert isinstance(info.value, LLMCallError)
    assert f"reply larger than {limit} bytes" in str(info.value) and "--max-response-bytes" in str(info.value)
    assert len(logged) == 1  # a reply that large is a broken server, not bad luck: no retry
    assert health.last_error is not None  # ... but it counts towards the breaker
    assert growth[0] < 100 * 1024 * 1024, f"RSS grew by {growth[0] / 1e6:.0f} MB"


def test_the_size_limit_is_a_spec_setting(tmp_path: Path, transport: str) -> None:
    """A 3 MB reply passes the default limit and fails a 1 MB one."""
    with start_scripted_server({"faults": {"huge_rate": 1.0, "huge_bytes": 3_000_000}}, tmp_path) as srv:
        big = _client(srv, transport, max_retries=0).complete(MESSAGES)
        with pytest.raises(ReplyTooLargeError, match="reply larger than 1000000 bytes"):
            _client(srv, transport, max_retries=0, max_response_bytes=1_000_000).complete(MESSAGES)
    assert len(big.content or "") > 2_900_000


# --------------------------------------------------------------------------- transport choice


def test_transport_is_a_spec_field_not_an_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from moodbench.llm._fast import OpenAICompatTransport

    monkeypatch.setenv("MOODBENCH_LITELLM", "1")  # the CLI's debugging switch; the library never reads it
    spec = ModelSpec(model="openai/scripted", base_urls=("http://127.0.0.1:9/v1",))
    assert isinstance(ModelClient(spec)._transport, OpenAICompatTransport)
    assert not isinstance(ModelClient(ModelSpec(**{**spec.__dict__, "transport": "litellm"}))._transport, OpenAICompatTransport)


def test_proxies_from_the_environment_keep_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The deadline client builds its proxy transports the way httpx does (HTTPS_PROXY, NO_PROXY)
    and wraps each one, so a proxied request is bounded like a direct one."""
    from moodbench.llm._http import DeadlineTransport, deadline_client

    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    client = deadline_client()
    transports = [client._transport, *(t for t in client._mounts.values() if t is not None)]
    assert len(transports) == 2
    assert all(isinstance(t, DeadlineTransport) and t.network_clamped for t in transports)


def test_replies_setting_cookies_leave_no_cookie_for_the_next_request() -> None:
    """A model server that sets cookies (a load balancer's session, a tracking cookie) gets none back: every
    request stands alone, as litellm's do."""
    import http.server

    from moodbench.llm._http import deadline_client

    seen: list[str | None] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Cookie"))
            self.send_response(200)
            self.send_header("Set-Cookie", "session=abc123; Path=/")
            self.send_header("Set-Cookie", "lb=node-7; Path=/; Domain=127.0.0.1")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with deadline_client() as client:
            url = f"http://127.0.0.1:{server.server_address[1]}/v1/models"
            for _ in range(3):
                assert client.get(url).status_code == 200
            assert len(client.cookies.jar) == 0
    finally:
        server.shutdown()
        server.server_close()
    assert seen == [None, None, None]
