"""The embedded llama.cpp server: a real model, a real multi-turn tool conversation, tool_choice honoured.

Tests marked ``localmodel`` start llama-server with the cached ``qwen2.5-0.5b`` GGUF (skipped, with the
reason, when the backend or the model is absent) and keep to a handful of short requests: on 2 CPU
cores the 0.5B decodes ~25 tok/s and processes prompts at ~150 tok/s, so max_tokens stays small and the
system prompt short. The unmarked tests cover the request rewriting and the install checks.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from moodbench.serve.install import (
    LLAMA_CPP_PYTHON_VERSION,
    LocalBackendMissing,
    build_llama_server,
    build_local_binaries,
    build_variant,
    cached_generator_binary,
    cached_server_binary,
    cvector_generator_path,
    ensure_local_backend,
    find_cvector_generator,
    find_llama_server,
)
from moodbench.serve.llamacpp import (
    ForcedCall,
    LlamaCppServer,
    LlamaCppServerError,
    _Front,
    finish_forced_response,
    plan_chat_request,
)
from moodbench.serve.models import ModelResolutionError, resolve_model

MODEL = "qwen2.5-0.5b"

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_order_details",
            "description": "Get the status and items of an order.",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string", "description": "Order id such as '#W0000000'."}},
                "required": ["order_id"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "find_user_id_by_email",
            "description": "Find a customer's user id from their email address.",
            "parameters": {"type": "object", "properties": {"email": {"type": "string"}}, "required": ["email"]},
        },
    },
]
SYSTEM = "You are a customer service agent for an online store. Use the tools to look things up."
USER = "Hi, what is the status of my order #W2378156?"


# --------------------------------------------------------------------------------- unit (no model)
def _named(name: str) -> dict:
    return {"type": "function", "function": {"name": name}}


def test_named_tool_choice_is_forced_by_a_schema_for_that_tool_only() -> None:
    body = {"messages": [], "tools": TOOLS, "tool_choice": _named("find_user_id_by_email"), "stream": True}
    up, forced = plan_chat_request(body)
    assert forced is not None and forced.tool_names == ("find_user_id_by_email",) and forced.stream
    # prompt stays identical to "auto" (all tools rendered) -> prefix cache hit; the grammar does the forcing
    assert up["tools"] == TOOLS and up["tool_choice"] == "none" and "stream" not in up
    schema = up["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["name"] == {"const": "find_user_id_by_email"}
    assert schema["properties"]["arguments"] == TOOLS[1]["function"]["parameters"]
    assert body["tool_choice"] == _named("find_user_id_by_email")  # input not mutated


def test_required_allows_any_tool() -> None:
    up, forced = plan_chat_request({"messages": [], "tools": TOOLS, "tool_choice": "required"})
    assert forced is not None and forced.tool_names == ("get_order_details", "find_user_id_by_email")
    names = [v["properties"]["name"]["const"] for v in up["response_format"]["json_schema"]["schema"]["anyOf"]]
    assert names == ["get_order_details", "find_user_id_by_email"]


def test_auto_and_none_pass_unchanged() -> None:
    for choice in ("auto", "none", None):
        body = {"messages": [], "tools": TOOLS, "tool_choice": choice}
        assert plan_chat_request(body) == (body, None)


def test_named_tool_choice_for_unknown_function_is_an_error() -> None:
    with pytest.raises(ValueError, match="nope"):
        plan_chat_request({"tools": TOOLS, "tool_choice": _named("nope")})


def test_forced_reply_becomes_tool_calls_and_a_cut_off_one_does_not() -> None:
    forced = ForcedCall(tool_names=("get_order_details",), stream=False, include_usage=False)
    ok = {"choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant",
          "content": '{"name": "get_order_details", "arguments": {"order_id": "#W1"}}'}}]}  # fmt: skip
    msg = finish_forced_response(ok, forced)["choices"][0]
    assert msg["finish_reason"] == "tool_calls" and msg["message"]["content"] is None
    call = msg["message"]["tool_calls"][0]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_order_details"
    assert json.loads(call["function"]["arguments"]) == {"order_id": "#W1"}
    cut = {"choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": '{"name": "get_or'}}]}
    assert finish_forced_response(cut, forced) == cut


def test_missing_backend_error_names_the_install_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MOODBENCH_LLAMA_SERVER", str(tmp_path / "no-such-llama-server"))
    with pytest.raises(LocalBackendMissing, match="install-local-backend.sh"):
        ensure_local_backend()
    monkeypatch.setenv("MOODBENCH_CVECTOR_GENERATOR", str(tmp_path / "no-such-generator"))
    with pytest.raises(LocalBackendMissing, match="install-local-backend.sh"):
        cvector_generator_path()


def _fake_binary(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\necho fake\n")
    path.chmod(0o755)
    return path


def test_both_binaries_cached_means_no_build(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MOODBENCH_CACHE_DIR", str(tmp_path))
    for var in ("MOODBENCH_LLAMA_SERVER", "MOODBENCH_CVECTOR_GENERATOR"):
        monkeypatch.delenv(var, raising=False)
    server = _fake_binary(cached_server_binary())
    generator = _fake_binary(cached_generator_binary())
    tag = "" if build_variant() == "avx2" else f"-{build_variant()}"
    assert server.name == f"llama-server-{LLAMA_CPP_PYTHON_VERSION}{tag}"
    assert generator.name == f"llama-cvector-generator-{LLAMA_CPP_PYTHON_VERSION}{tag}"
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no toolchain: any build attempt would fail loudly
    assert build_local_binaries() == {"llama-server": server, "llama-cvector-generator": generator}
    assert find_llama_server() == server and find_cvector_generator() == generator


def test_the_build_variant_is_avx512_only_with_every_extension_it_uses_and_never_amx() -> None:
    from moodbench.serve.install import AVX512_CPU_FLAGS, VARIANT_FLAGS

    xeon = AVX512_CPU_FLAGS | {"avx2", "fma", "amx_int8", "amx_tile"}
    assert build_variant(frozenset(xeon)) == "avx512"
    assert build_variant(frozenset(xeon - {"avx512_vnni"})) == "avx2"  # one missing extension: the portable build
    assert build_variant(frozenset()) == "avx2"  # flags unreadable (not Linux): the portable build
    assert not any("AMX" in f or "NATIVE=ON" in f for flags in VARIANT_FLAGS.values() for f in flags)


def test_a_cache_with_only_the_server_triggers_the_combined_rebuild(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MOODBENCH_CACHE_DIR", str(tmp_path))
    for var in ("MOODBENCH_LLAMA_SERVER", "MOODBENCH_CVECTOR_GENERATOR"):
        monkeypatch.delenv(var, raising=False)
    _fake_binary(cached_server_binary())
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert find_cvector_generator() is None
    with pytest.raises(RuntimeError, match="building llama-server needs cmake"):  # it tried to build, found no cmake
        build_llama_server()


def test_control_vectors_become_llama_server_flags(tmp_path: Path) -> None:
    vec = tmp_path / "v.gguf"
    srv = LlamaCppServer(tmp_path / "m.gguf", port=1, binary="/bin/true", control_vectors=[(vec, 1.5), (tmp_path / "w.gguf", -0.25)],
                         control_vector_layers=(8, 23))  # fmt: skip
    cmd = srv.command()
    assert cmd.count("--control-vector-scaled") == 2
    assert cmd[cmd.index("--control-vector-scaled") + 1] == f"{vec}:1.5" and f"{tmp_path / 'w.gguf'}:-0.25" in cmd
    i = cmd.index("--control-vector-layer-range")
    assert cmd[i + 1 : i + 3] == ["8", "23"]
    assert "--control-vector-scaled" not in LlamaCppServer(tmp_path / "m.gguf", port=1, binary="/bin/true").command()
    with pytest.raises(ValueError, match="cannot parse"):
        LlamaCppServer(tmp_path / "m.gguf", port=1, control_vectors=[(tmp_path / "a:b.gguf", 1.0)])


def test_a_missing_control_vector_fails_before_launch(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    srv = LlamaCppServer(model, binary="/bin/true", control_vectors=[(tmp_path / "missing.gguf", 1.0)], front=False)
    with pytest.raises(LlamaCppServerError, match="control vector not found"):
        srv.start()


# ------------------------------------------------------- the HTTP front against a stand-in upstream
class _Upstream(BaseHTTPRequestHandler):
    """Stands in for llama-server: records each request; answers the forced call schema's first tool."""

    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[dict]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append(body)
        if body.get("stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in ("Hel", "lo"):
                event = json.dumps({"choices": [{"index": 0, "delta": {"content": piece}}]})
                data = f"data: {event}\n\n".encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        schema = (body.get("response_format") or {}).get("json_schema", {}).get("schema", {})
        first = (schema.get("anyOf") or [schema])[0]
        name = first.get("properties", {}).get("name", {}).get("const")
        content = json.dumps({"name": name, "arguments": {"email": "a@b.c"}}) if name else "plain text"
        data = json.dumps({"id": "x", "choices": [{"index": 0, "finish_reason": "stop",
                           "message": {"role": "assistant", "content": content}}]}).encode()  # fmt: skip
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture()
def front() -> Iterator[str]:
    up = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=up.serve_forever, daemon=True).start()
    _Upstream.seen = []
    f = _Front("127.0.0.1", 0, ("127.0.0.1", up.server_address[1]))
    f.start()
    try:
        yield f"http://127.0.0.1:{f.port}/v1"
    finally:
        f.stop()
        up.shutdown()
        up.server_close()


def test_front_forces_a_named_call_and_returns_tool_calls(front: str) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "tools": TOOLS, "tool_choice": _named("find_user_id_by_email")}
    r = httpx.post(f"{front}/chat/completions", json=body, timeout=10)
    assert r.status_code == 200
    msg = r.json()["choices"][0]["message"]
    assert msg["content"] is None and msg["tool_calls"][0]["function"]["name"] == "find_user_id_by_email"
    sent = _Upstream.seen[-1]
    assert sent["tool_choice"] == "none" and sent["tools"] == TOOLS and "response_format" in sent


def test_front_relays_auto_requests_untouched_including_chunked_bodies_and_streams(front: str) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "tools": TOOLS, "tool_choice": "auto", "stream": True}
    raw = json.dumps(body).encode()
    chunks = (raw[i : i + 50] for i in range(0, len(raw), 50))  # a generator body goes out chunked
    with httpx.stream("POST", f"{front}/chat/completions", content=chunks, timeout=10) as r:
        text = "".join(
            json.loads(line[6:])["choices"][0]["delta"]["content"] for line in r.iter_lines() if line.startswith("data: ")
        )
    assert text == "Hello"
    assert _Upstream.seen[-1] == body


def test_front_relays_text_completions_unchanged(front: str) -> None:
    # The completion customer format posts here; even a stray tool_choice must not be rewritten.
    body = {"prompt": "AGENT: Hi!\nCUSTOMER:", "stop": ["\nAGENT:"], "max_tokens": 8, "tool_choice": "required"}
    r = httpx.post(f"{front}/completions", json=body, timeout=10)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "plain text"
    assert _Upstream.seen[-1] == body


def test_front_answers_400_for_an_unknown_named_function(front: str) -> None:
    body = {"messages": [], "tools": TOOLS, "tool_choice": _named("nope")}
    r = httpx.post(f"{front}/chat/completions", json=body, timeout=10)
    assert r.status_code == 400 and "nope" in r.json()["error"]["message"]
    assert _Upstream.seen == []


# ------------------------------------------------------------------------------ real model server
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCppServer]:
    if find_llama_server() is None:
        pytest.skip("llama-server not installed: run scripts/install-local-backend.sh")
    try:
        model = resolve_model(MODEL, allow_download=False, allow_pip=False)
    except ModelResolutionError:
        pytest.skip(f"model {MODEL} not in the cache: run scripts/install-local-backend.sh (fetches it)")
    log = tmp_path_factory.mktemp("llamacpp") / "server.log"
    with LlamaCppServer(model, ctx=4096, parallel=2, threads=None, log_path=log) as srv:
        yield srv


def _chat(srv: LlamaCppServer, messages: list[dict], **kw: object) -> httpx.Response:
    body = {"model": srv.model_name, "messages": messages, "tools": TOOLS, "temperature": 0, "max_tokens": 48, **kw}
    return httpx.post(f"{srv.base_url}/chat/completions", json=body, timeout=300)


def _listen_addresses(port: int) -> list[str]:
    """Local addresses with a LISTEN socket on ``port`` (Linux /proc/net/tcp{,6}, hex as the kernel writes)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            addr, port_hex = cols[1].rsplit(":", 1)
            if int(port_hex, 16) == port and cols[3] == "0A":  # 0A = LISTEN
                found.append(addr)
    return found


@pytest.mark.localmodel
def test_models_endpoint_reports_the_name_clients_send(server: LlamaCppServer) -> None:
    data = httpx.get(f"{server.base_url}/models", timeout=10).json()
    assert server.model_name == MODEL
    assert data["data"][0]["id"] == server.model_name
    assert server.base_url.startswith("http://127.0.0.1:") and server.base_url.endswith("/v1")


@pytest.mark.localmodel
def test_binds_loopback_only(server: LlamaCppServer) -> None:
    if not Path("/proc/net/tcp").exists():
        pytest.skip("needs Linux /proc/net/tcp")
    backend_port = int(server.backend_url.rsplit(":", 1)[1].split("/")[0])
    for port in (server.port, backend_port):
        addrs = _listen_addresses(port)
        assert addrs, f"nothing listens on {port}"
        assert set(addrs) == {"0100007F"}, f"port {port} listens on {addrs}, not only 127.0.0.1"


@pytest.mark.localmodel
def test_two_turn_tool_conversation(server: LlamaCppServer) -> None:
    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]
    r1 = _chat(server, messages, tool_choice="auto")
    assert r1.status_code == 200, r1.text
    msg1 = r1.json()["choices"][0]["message"]
    assert msg1.get("content") or msg1.get("tool_calls")  # small models often write the call as text

    # Turn 2, exactly as tau2/OpenAI clients send it: assistant content null + tool_calls, then the result.
    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_order_details", "arguments": json.dumps({"order_id": "#W2378156"})},
                }
            ],
        },
        {
            "role": "tool",
            "tool_call_id": "call_1",
            "name": "get_order_details",
            "content": json.dumps({"order_id": "#W2378156", "status": "delivered", "items": ["keyboard"]}),
        },
    ]
    r2 = _chat(server, messages)
    assert r2.status_code == 200, r2.text
    msg2 = r2.json()["choices"][0]["message"]
    assert (msg2.get("content") or "").strip() or msg2.get("tool_calls")


@pytest.mark.localmodel
def test_tool_choice_required_yields_a_real_tool_call(server: LlamaCppServer) -> None:
    r = _chat(server, [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}], tool_choice="required")
    assert r.status_code == 200, r.text
    calls = r.json()["choices"][0]["message"].get("tool_calls") or []
    assert calls and calls[0]["function"]["name"] in {t["function"]["name"] for t in TOOLS}
    json.loads(calls[0]["function"]["arguments"])  # arguments are a JSON string, per the OpenAI API


@pytest.mark.localmodel
def test_tool_choice_named_forces_that_function(server: LlamaCppServer) -> None:
    # The order question makes get_order_details the natural pick; the named choice must override it.
    choice = {"type": "function", "function": {"name": "find_user_id_by_email"}}
    r = _chat(server, [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}], tool_choice=choice)
    assert r.status_code == 200, r.text
    calls = r.json()["choices"][0]["message"].get("tool_calls") or []
    assert [c["function"]["name"] for c in calls][:1] == ["find_user_id_by_email"]


@pytest.mark.localmodel
def test_streamed_forced_call_arrives_as_tool_call_chunks(server: LlamaCppServer) -> None:
    body = {
        "model": server.model_name,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}],
        "tools": TOOLS,
        "tool_choice": "required",
        "temperature": 0,
        "max_tokens": 48,
        "stream": True,
    }
    events = []
    with httpx.stream("POST", f"{server.base_url}/chat/completions", json=body, timeout=300) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[6:]))
    calls = [tc for e in events for c in e["choices"] for tc in (c["delta"].get("tool_calls") or [])]
    assert calls and calls[0]["function"]["name"] in {t["function"]["name"] for t in TOOLS}
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.localmodel
def test_named_tool_choice_for_unknown_function_is_400(server: LlamaCppServer) -> None:
    choice = {"type": "function", "function": {"name": "delete_everything"}}
    r = _chat(server, [{"role": "user", "content": "hi"}], tool_choice=choice)
    assert r.status_code == 400 and "delete_everything" in r.text
