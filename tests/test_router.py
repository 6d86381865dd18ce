"""Replicas of one model: least-busy routing and a per-replica cap, over real HTTP."""

from __future__ import annotations

import threading
from pathlib import Path

from moodbench.llm import EndpointHealth, ModelClient, ModelSpec
from moodbench.llm._router import EndpointRouter  # private to llm: the router is tested as a unit
from scripted import start_scripted_server

SCRIPT = {"roles": {"agent": {"turns": [{"content": "hello"}], "after": "repeat_last"}}}
MESSAGES = [{"role": "system", "content": "<policy>be nice</policy>"}, {"role": "user", "content": "hi"}]


def _hammer(client: ModelClient, threads: int, calls: int) -> list[str]:
    endpoints: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(calls):
            c = client.complete(MESSAGES)
            with lock:
                endpoints.append(c.endpoint)

    ts = [threading.Thread(target=work) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return endpoints


def test_cap_per_replica_is_never_exceeded_and_both_replicas_serve(tmp_path: Path) -> None:
    with (
        start_scripted_server({**SCRIPT, "latency_ms": 60}, tmp_path) as a,
        start_scripted_server({**SCRIPT, "latency_ms": 60}, tmp_path) as b,
    ):
        spec = ModelSpec(model="openai/scripted", base_urls=(a.base_url, b.base_url), max_in_flight_per_endpoint=2, max_retries=0)
        client = ModelClient(spec, EndpointHealth(0))
        endpoints = _hammer(client, threads=8, calls=3)
        assert len(endpoints) == 24
        for srv in (a, b):
            stats = srv.stats()
            assert stats["max_in_flight"] <= 2, stats  # the server never saw more than the cap
            assert stats["requests"] >= 6  # and the load was shared
        assert client._router is not None and all(v["in_flight"] == 0 for v in client._router.snapshot().values())


def test_a_slow_replica_gets_fewer_requests(tmp_path: Path) -> None:
    with (
        start_scripted_server({**SCRIPT, "latency_ms": 400}, tmp_path) as slow,
        start_scripted_server({**SCRIPT, "latency_ms": 10}, tmp_path) as fast,
    ):
        spec = ModelSpec(model="openai/scripted", base_urls=(slow.base_url, fast.base_url), max_retries=0)
        endpoints = _hammer(ModelClient(spec, EndpointHealth(0)), threads=4, calls=6)
        assert endpoints.count(fast.base_url) > 2 * endpoints.count(slow.base_url)


def test_router_waits_for_a_free_slot() -> None:
    router = EndpointRouter(("http://a", "http://b"), max_in_flight=1)
    first, second = router.acquire(), router.acquire()
    assert {first, second} == {"http://a", "http://b"}
    got: list[str] = []
    waiter = threading.Thread(target=lambda: got.append(router.acquire()))
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive() and not got  # both replicas full: the third request waits
    router.release(second)
    waiter.join(5)
    assert got == [second]
