"""A scripted, OpenAI-compatible chat-completions server.

tau2 conversations need two LLMs (the tool-calling agent and the simulated
customer) and sometimes a judge.  Real models are slow, non-deterministic and
unavailable in CI, so tests and benchmarks point litellm/openai at this server
instead: every reply comes from a script, chosen by *which* participant is
asking (detected from tau2's system prompts) and *how far* into the
conversation it is (the number of assistant messages in the request).  Because
the server keeps no per-conversation state, hundreds of conversations can share
one process and still get reproducible replies.

It runs as a real subprocess (``python -m moodbench.testing.scripted_server``)
so that clients exercise real HTTP, real connection pools and real failure
modes (HTTP 429/500/503, timeouts, dropped connections) drawn from a seeded RNG.

Only the standard library and aiohttp are imported at module load; keep it that
way, since every test that starts a server pays the import time.

Script reference (JSON or YAML; keys starting with ``_`` are ignored, any other
unknown key is an error at start-up so typos fail loudly)::

    models: [scripted]          # GET /v1/models
    seed: 0                     # fault RNG (and jitter RNG) seed
    latency_ms: 0               # added to every reply, errors included
    latency_jitter_ms: 0        # uniform extra, from its own RNG (fault sequence unchanged)
    roles:
      agent:  {turns: [RESPONSE, ...], after: repeat_last | cycle | RESPONSE, latency_ms: 0}
      user:   {...}             # default when unscripted: "###STOP###"
      judge:  {...}
      <custom>: {detect: REGEX on system prompt, model: MODEL NAME, turns: [...]}
    faults: {error_500_rate, error_429_rate, retry_after_s, timeout_rate, timeout_s,
             drop_rate, drip_rate, drip_bytes_per_s, drip_headers, huge_rate, huge_bytes,
             huge_chunked, endless_rate, malformed_tool_call_rate, down, first_n_fail,
             require_api_key, roles: [names]}

Role: the first script role (in script order) whose ``model`` equals the
request's model or whose ``detect`` regex matches the system text; else
``user`` if the system text has ``<scenario>``, ``agent`` if it has
``<policy>``, else ``judge``.  Turn = number of ``assistant`` messages in the
request.  Note that tau2's orchestrator sends a hard-coded agent greeting as the
first assistant message, so the agent's first *LLM* call is turn 1 (turn 0 is
only reached by clients that do not do that); every agent tool-call message
also counts as a turn.

RESPONSE keys: ``content``; ``tool_calls: [{name, arguments: dict | raw str, id?}]``;
``text_tool_call: {name, arguments}`` + ``style: bare|fenced|tagged``;
``by_tool_choice: {auto|required|none: RESPONSE}`` (missing -> auto, a dict
naming a function -> required); ``echo_last: true``; ``empty: true``;
``think: str`` (prefixes ``<think>..</think>``); ``status: 4xx/5xx`` (+ ``error``,
``retry_after_s``); ``match: [{if_contains | if_regex, in: any|last|system|all,
then: RESPONSE}]`` + ``else: RESPONSE``; ``delay_ms``; ``finish_reason``.

Faults are drawn per request of a faulted role (``faults.roles``, default all)
from ``random.Random(seed)``, two draws per request, in arrival order, so the
k-th request always meets the same fate.  Precedence: down (503, every role) >
first_n_fail (500) > 500 > 429 > timeout > drop.  ``malformed_tool_call_rate``
only touches the agent's structured tool calls.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from moodbench.testing._backend import ScriptedBackend
from moodbench.testing._script import REPLY_FAULTS, ScriptError, load_script, validate_script

__all__ = ["ScriptError", "ScriptedBackend", "build_app", "load_script", "main", "serve", "validate_script"]

# --------------------------------------------------------------------------- HTTP

BACKEND_KEY: web.AppKey[ScriptedBackend] = web.AppKey("backend", ScriptedBackend)
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    429: "rate_limit_exceeded",
    503: "service_unavailable",
}
_ERROR_CODES: dict[int, Any] = {401: "invalid_api_key"}


def _json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # Serialised up front into one body so aiohttp sends headers and body in a single write.
    return web.Response(body=json.dumps(payload).encode(), status=status, content_type="application/json", headers=headers)


def _error_response(status: int, message: str, retry_after_s: float | None = None) -> web.Response:
    headers: dict[str, str] = {}
    if status == 429 and retry_after_s is not None:
        value = float(retry_after_s)
        headers["Retry-After"] = str(int(value)) if value.is_integer() else str(value)
        headers["retry-after-ms"] = str(int(value * 1000))
    payload = {
        "error": {
            "message": message,
            "type": _ERROR_TYPES.get(status, "server_error"),
            "param": None,
            "code": _ERROR_CODES.get(status, status),
        }
    }
    return _json_response(payload, status=status, headers=headers)


def sse_body(completion: dict[str, Any], include_usage: bool) -> bytes:
    """Render a completion as a whole SSE stream at once: clients parse it the same, and it is one write."""
    base = {k: completion[k] for k in ("id", "created", "model", "system_fingerprint")}
    base["object"] = "chat.completion.chunk"
    choice = completion["choices"][0]
    message = choice["message"]
    chunks: list[dict[str, Any]] = []

    def chunk(delta: dict[str, Any], finish: str | None = None) -> None:
        chunks.append({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]})

    chunk({"role": "assistant", "content": ""})
    content = message.get("content") or ""
    for i in range(0, len(content), 24):
        chunk({"content": content[i : i + 24]})
    for index, call in enumerate(message.get("tool_calls", [])):
        chunk(
            {
                "tool_calls": [
                    {
                        "index": index,
                        "id": call["id"],
                        "type": "function",
                        "function": {"name": call["function"]["name"], "arguments": ""},
                    }
                ]
            }
        )
        arguments = call["function"]["arguments"]
        for i in range(0, len(arguments), 32):
            chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments[i : i + 32]}}]})
    chunk({}, choice["finish_reason"])
    if include_usage:
        chunks.append({**base, "choices": [], "usage": completion["usage"]})
    parts = [f"data: {json.dumps(c)}\n\n" for c in chunks]
    parts.append("data: [DONE]\n\n")
    return "".join(parts).encode()


class _Dropped(Exception):
    """Signals that the connection was closed on purpose and nothing must be written."""


async def _planned(request: web.Request, backend: Any, body: dict[str, Any]) -> tuple[Any, web.Response | None]:
    """Plan the reply to a (chat-shaped) request and act out its delay, drop or error status.

    Returns ``(plan, None)`` when a completion is due, ``(plan, error response)`` otherwise; raises
    :class:`_Dropped` after cutting the connection.
    """
    plan = backend.plan(body, request.headers.get("Authorization"))
    if plan.delay_s > 0:
        await asyncio.sleep(plan.delay_s)
    if plan.reply is None:
        _drop(request)
        raise _Dropped()
    if plan.reply.status != 200:
        return plan, _error_response(plan.reply.status, plan.reply.error or "error", plan.reply.retry_after_s)
    return plan, None


async def handle_chat(request: web.Request) -> web.StreamResponse:
    backend = request.app[BACKEND_KEY]
    backend.in_flight += 1
    backend.max_in_flight = max(backend.max_in_flight, backend.in_flight)
    if backend.first_request_at is None:
        backend.first_request_at = time.time()
    try:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error_response(400, "request body is not valid JSON")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error_response(400, "request needs a 'messages' list")
        plan, refusal = await _planned(request, backend, body)
        if refusal is not None:
            return refusal
        assert plan.completion is not None
        stream = bool(body.get("stream"))
        if plan.fault in REPLY_FAULTS:
            return await _faulty_reply(request, plan.fault, plan.completion, stream, backend.faults)
        if stream:
            options = body.get("stream_options") or {}
            include_usage = bool(options.get("include_usage")) if isinstance(options, dict) else False
            return web.Response(
                body=sse_body(plan.completion, include_usage),
                content_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        return _json_response(plan.completion)
    finally:
        backend.in_flight -= 1
        backend.last_reply_at = time.time()


def text_as_chat(body: dict[str, Any]) -> dict[str, Any]:
    """A ``/v1/completions`` body seen as the chat request the script knows how to answer.

    The prompt is the "system" text (so role detection reads the customer's instructions in it), and
    each earlier ``CUSTOMER:`` line of the transcript counts as one of the customer's own turns.
    """
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        prompt = "".join(str(p) for p in prompt)
    prompt = str(prompt or "")
    own_turns = max(0, prompt.count("\nCUSTOMER:") - (1 if prompt.rstrip().endswith("CUSTOMER:") else 0))
    messages = [{"role": "system", "content": prompt}, *({"role": "assistant", "content": "(earlier)"} for _ in range(own_turns))]
    return {**body, "messages": messages}  # the prompt stays in the request log


def chat_as_text(completion: dict[str, Any]) -> dict[str, Any]:
    choices = [
        {
            "index": c.get("index", 0),
            "text": (c.get("message") or {}).get("content") or "",
            "finish_reason": c.get("finish_reason"),
            "logprobs": None,
        }
        for c in completion.get("choices") or []
    ]
    return {**completion, "object": "text_completion", "choices": choices}


async def handle_text(request: web.Request) -> web.StreamResponse:
    """``POST /v1/completions``: the same script, faults and log as chat requests (no streaming)."""
    backend = request.app[BACKEND_KEY]
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _error_response(400, "request body is not valid JSON")
    if not isinstance(body, dict) or not isinstance(body.get("prompt"), (str, list)):
        return _error_response(400, "request needs a 'prompt'")
    plan, refusal = await _planned(request, backend, text_as_chat(body))
    if refusal is not None:
        return refusal
    assert plan.completion is not None
    return _json_response(chat_as_text(plan.completion))


_FLOOD_CHUNK = 64 * 1024


async def _faulty_reply(
    request: web.Request, fault: str, completion: dict[str, Any], stream: bool, faults: dict[str, Any]
) -> web.StreamResponse:
    """Send a 200 that only a client with a whole-request deadline (drip) or a size limit (huge,
    endless) survives. Every loop stops when the client hangs up, so the server stays cheap."""
    content_type = "text/event-stream" if stream else "application/json"
    if fault == "drip":
        body = sse_body(completion, False) if stream else json.dumps(completion).encode()
        rate = float(faults.get("drip_bytes_per_s", 1))
        if faults.get("drip_headers", True):
            await _drip_raw(request, body, content_type, rate)
            raise _Dropped()  # everything was written by hand; aiohttp must add nothing
        resp = web.StreamResponse(headers={"Content-Type": content_type})
        resp.content_length = len(body)
        await resp.prepare(request)
        if not await _drip_writes(resp.write, body, rate, request):
            raise _Dropped()
        return resp
    resp = web.StreamResponse(headers={"Content-Type": content_type})
    total = int(faults.get("huge_bytes", 150_000_000)) if fault == "huge" else None
    head, pad, tail = _flood_parts(completion, stream)
    if total is not None and not faults.get("huge_chunked", True):
        resp.content_length = max(total, len(head) + len(tail))
    else:
        resp.enable_chunked_encoding()
    await resp.prepare(request)
    try:
        await resp.write(head)
        sent = len(head)
        while total is None or sent + len(tail) < total:
            n = _FLOOD_CHUNK if total is None else min(_FLOOD_CHUNK, total - len(tail) - sent)
            await resp.write(pad * (n // len(pad)) + pad[: n % len(pad)])
            sent += n
        await resp.write(tail)
        await resp.write_eof()
    except (ConnectionError, RuntimeError):  # the client hung up (the point, usually)
        raise _Dropped() from None
    return resp


def _flood_parts(completion: dict[str, Any], stream: bool) -> tuple[bytes, bytes, bytes]:
    """A valid reply split around its content, so padding can be written in between: a client
    that reads it all gets a parseable completion whose content is padding."""
    if stream:
        base = {k: completion[k] for k in ("id", "created", "model")}
        event = {
            **base,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": "x" * 4000}, "finish_reason": None}],
        }
        pad = f"data: {json.dumps(event)}\n\n".encode()
        return b"", pad, b"data: [DONE]\n\n"
    marker = "@@PAD@@"
    doc = json.loads(json.dumps(completion))
    doc["choices"][0]["message"]["content"] = marker
    head, tail = json.dumps(doc).split(json.dumps(marker)[1:-1])
    return head.encode(), b"x", tail.encode()


async def _drip_writes(write: Any, body: bytes, rate: float, request: web.Request) -> bool:
    """Write ``body`` at ``rate`` bytes a second; False when the client hung up first."""
    step = max(1, int(rate / 10))  # at most ten writes a second
    pause = step / rate
    for i in range(0, len(body), step):
        transport = request.transport
        if transport is None or transport.is_closing():
            return False
        try:
            await write(body[i : i + step])
        except (ConnectionError, RuntimeError):
            return False
        await asyncio.sleep(pause)
    return True


async def _drip_raw(request: web.Request, body: bytes, content_type: str, rate: float) -> None:
    head = (
        f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()

    async def write(chunk: bytes) -> None:
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("client went away")
        transport.write(chunk)

    await _drip_writes(write, head + body, rate, request)
    _drop(request)


def _drop(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.close()


async def handle_models(request: web.Request) -> web.Response:
    backend = request.app[BACKEND_KEY]
    if backend.down:
        return _error_response(503, "scripted server is down")
    data = [{"id": m, "object": "model", "created": 0, "owned_by": "moodbench-scripted"} for m in backend.models]
    return _json_response({"object": "list", "data": data})


async def handle_health(request: web.Request) -> web.Response:
    if request.app[BACKEND_KEY].down:
        return _error_response(503, "scripted server is down")
    return _json_response({"status": "ok"})


async def handle_stats(request: web.Request) -> web.Response:
    return _json_response(request.app[BACKEND_KEY].stats())


@web.middleware
async def _drop_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Turn a deliberate drop into a quiet cancellation so aiohttp neither writes a response nor logs a traceback."""
    try:
        return await handler(request)
    except _Dropped:
        raise asyncio.CancelledError() from None


def build_app(backend: ScriptedBackend) -> web.Application:
    app = web.Application(client_max_size=256 * 1024 * 1024, middlewares=[_drop_middleware])
    app[BACKEND_KEY] = backend
    for prefix in ("/v1", ""):  # some clients are configured without the /v1 suffix
        app.router.add_post(f"{prefix}/chat/completions", handle_chat)
        app.router.add_post(f"{prefix}/completions", handle_text)
        app.router.add_get(f"{prefix}/models", handle_models)
    app.router.add_get("/health", handle_health)
    app.router.add_get("/stats", handle_stats)
    return app


def _bind(host: str, port: int) -> socket.socket:
    family, type_, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, type_, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(addr)
    sock.setblocking(False)
    return sock


def _write_port_file(path: Path, port: int) -> None:
    # Atomic rename so a poller never reads a half-written number.
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(f"{port}\n", encoding="utf-8")
    os.replace(tmp, path)


async def serve(
    script: dict[str, Any],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    port_file: Path | None = None,
    request_log: Path | None = None,
    exit_with_parent: bool = False,
) -> None:
    log_fh = open(request_log, "a", encoding="utf-8") if request_log else None
    backend = ScriptedBackend(script, log_fh)
    runner = web.AppRunner(build_app(backend), access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    sock = _bind(host, port)
    site = web.SockSite(runner, sock, backlog=2048)
    await site.start()
    bound_port = sock.getsockname()[1]
    if port_file:
        _write_port_file(port_file, bound_port)
    print(f"scripted server listening on http://{host}:{bound_port}/v1", file=sys.stderr, flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix
            pass
    watchdog = asyncio.create_task(_watch_parent(stop)) if exit_with_parent else None
    try:
        await stop.wait()
    finally:
        if watchdog:
            watchdog.cancel()
        await runner.cleanup()
        if log_fh:
            log_fh.close()


async def _watch_parent(stop: asyncio.Event) -> None:
    """Exit when the process that started us dies, so a killed test run leaves no stray servers behind."""
    parent = os.getppid()
    while True:
        await asyncio.sleep(0.5)
        if os.getppid() != parent:
            stop.set()
            return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m moodbench.testing.scripted_server",
        description="Scripted OpenAI-compatible chat-completions server for tests and benchmarks.",
    )
    parser.add_argument("--script", required=True, type=Path, help="JSON or YAML script")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (see --port-file)")
    parser.add_argument("--port-file", type=Path, help="written with the bound port once listening")
    parser.add_argument("--request-log", type=Path, help="append one JSON line per chat request")
    parser.add_argument("--exit-with-parent", action="store_true", help="stop when the parent process goes away")
    args = parser.parse_args(argv)
    try:
        script = load_script(args.script)
    except (OSError, ValueError) as exc:
        print(f"scripted server: cannot load script {args.script}: {exc}", file=sys.stderr)
        return 2
    asyncio.run(
        serve(
            script,
            host=args.host,
            port=args.port,
            port_file=args.port_file,
            request_log=args.request_log,
            exit_with_parent=args.exit_with_parent,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
