"""`moodbench serve --backend vllm`: commands, replicas, reuse, start-up failures, --stop, SkyPilot.

Real subprocesses throughout: `tests/fakes/vllm` stands in for vLLM (stdlib HTTP server on
the requested host/port, records its argv and CUDA_VISIBLE_DEVICES), put first on a PATH
that holds nothing else of ours (no real `vllm`, no `sky`).
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
import yaml
from rich.console import Console

import moodbench.cli._serve_vllm as serve_cmd  # the foreground command lives in cli/; its probe is patched below
import moodbench.serve.vllm as vllm_mod
from moodbench._util.proc import pid_alive
from moodbench.serve import health, parsers
from moodbench.serve.options import ServeOptions
from moodbench.serve.skypilot import render_task_yaml
from moodbench.serve.vllm import (
    ServeConfigError,
    build_vllm_commands,
    read_state,
)
from scripted import cli_env

# serve_vllm / stop_vllm are the command's functions (returning exit codes), called directly to keep these tests fast
serve_vllm, stop_vllm = serve_cmd.serve_vllm, serve_cmd.stop_vllm

REPO = Path(__file__).resolve().parents[1]
FAKES = REPO / "tests" / "fakes"
FAKE_VLLM = FAKES / "vllm"
BASE_PATH = "/usr/local/bin:/usr/bin:/bin"


# ----------------------------------------------------------------------------- helpers


def free_ports(n: int) -> int:
    """The first of n consecutive free TCP ports on 127.0.0.1."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            first = s.getsockname()[1]
        if first + n > 65535:
            continue
        ok = True
        for p in range(first, first + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return first
    raise RuntimeError("no free ports")


def console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=200, color_system=None, force_terminal=False), buf


def opts(**kw) -> ServeOptions:
    kw.setdefault("backend", "vllm")
    kw.setdefault("startup_timeout", 20.0)
    return ServeOptions(**kw)


def records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for(predicate, timeout=15.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def pid_gone(pid: int) -> bool:
    return not pid_alive(pid)


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Isolated HOME/state/logs, the fake vllm first on PATH, no GPU env."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PATH", f"{FAKES}:{BASE_PATH}")
    monkeypatch.setenv("MOODBENCH_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("FAKE_VLLM_RECORD", str(tmp_path / "record.jsonl"))
    for name in (
        "CUDA_VISIBLE_DEVICES",
        "MOODBENCH_VLLM_BIN",
        "VLLM_API_KEY",
        "FAKE_VLLM_DIE",
        "FAKE_VLLM_DELAY",
        "FAKE_VLLM_HANG",
        "MOODBENCH_SERVER_API_KEY",
        "HF_TOKEN",
        "MOODBENCH_CACHE_DIR",
        "XDG_CACHE_HOME",
    ):  # the cache follows HOME here
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture
def procs():
    """Processes a test starts itself; killed (by pid, whole group) at the end."""
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=5)


def start_fake(procs, port: int, model: str, **extra_env) -> subprocess.Popen:
    """A vLLM stand-in started by the test, not by moodbench (no state file)."""
    e = {**os.environ, **extra_env}
    p = subprocess.Popen(
        [str(FAKE_VLLM), "serve", model, "--host", "127.0.0.1", "--port", str(port)],
        env=e,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    procs.append(p)
    if not extra_env.get("FAKE_VLLM_HANG"):
        wait_for(lambda: _serves(port), what=f"fake on {port}")
    else:
        wait_for(lambda: health.port_open("127.0.0.1", port), what=f"hung fake on {port}")
    return p


def _serves(port: int) -> list[str]:
    try:
        return health.list_models(f"http://127.0.0.1:{port}/v1", timeout=1)
    except health.HealthError:
        return []


def _state(port: int) -> dict:
    """The record moodbench serve keeps for a server it started on ``port`` (there must be one)."""
    state = read_state(port)
    assert state is not None, f"no record for port {port}"
    return state


ENTRY = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from rich.console import Console
    from moodbench.serve.options import ServeOptions
    from moodbench.cli._serve_vllm import serve_vllm
    kw = json.loads(sys.argv[1])
    if kw.get("log_dir"): kw["log_dir"] = Path(kw["log_dir"])
    sys.exit(serve_vllm(ServeOptions(**kw), Console(width=300)))
""")


def serve_in_subprocess(procs, tmp_path, **kw) -> tuple[subprocess.Popen, Path]:
    """`serve_vllm` through `python -c` (how the CLI will call it), output to a file; started with SIGINT
    ignored, as a shell starts a background job, so Ctrl-C (SIGINT) is tested where it is hardest."""
    kw.setdefault("backend", "vllm")
    kw.setdefault("startup_timeout", 20.0)
    out = tmp_path / f"serve-{len(procs)}.out"
    with open(out, "wb") as fh:
        p = subprocess.Popen(
            [sys.executable, "-c", ENTRY, json.dumps(kw)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=cli_env(),
            start_new_session=True,  # this checkout's sources first
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # noqa: PLW1509
        )
    procs.append(p)
    return p, out


# ----------------------------------------------------------------------------- parser table


@pytest.mark.parametrize(
    "model, tool, reasoning",
    [
        ("Qwen/Qwen2.5-7B-Instruct", "hermes", None),
        ("Qwen/Qwen3-8B", "hermes", "qwen3"),
        ("Qwen/Qwen3-30B-A3B-Instruct-2507", "hermes", None),
        ("Qwen/Qwen3-Coder-30B-A3B-Instruct", "qwen3_coder", None),
        ("Qwen/QwQ-32B", "hermes", "deepseek_r1"),
        ("NousResearch/Hermes-3-Llama-3.1-8B", "hermes", None),
        ("meta-llama/Llama-3.1-8B-Instruct", "llama3_json", None),
        ("meta-llama/Llama-3.3-70B-Instruct", "llama3_json", None),
        ("meta-llama/Llama-4-Scout-17B-16E-Instruct", "llama4_pythonic", None),
        ("mistralai/Mistral-7B-Instruct-v0.3", "mistral", None),
        ("google/gemma-3-27b-it", "pythonic", None),
        ("deepseek-ai/DeepSeek-V3-0324", "deepseek_v3", None),
        ("deepseek-ai/DeepSeek-R1-0528", "deepseek_v3", "deepseek_r1"),
        ("zai-org/GLM-4.5-Air", "glm45", "glm45"),
        ("openai/gpt-oss-20b", "openai", "openai_gptoss"),
        ("ibm-granite/granite-3.1-8b-instruct", "granite", None),
        ("internlm/internlm2_5-7b-chat", "internlm", None),
        ("/models/local/Qwen2.5-0.5B-Instruct", "hermes", None),
    ],
)
def test_dry_run_command_per_family(env, model, tool, reasoning):
    c, buf = console()
    assert serve_vllm(opts(model=model, dry_run=True), c) == 0
    out = buf.getvalue()
    expected = [
        "vllm",
        "serve",
        model,
        "--host",
        "127.0.0.1",
        "--port",
        "8000",
        "--enable-auto-tool-choice",
        "--tool-call-parser",
        tool,
    ]
    if reasoning:
        expected += ["--reasoning-parser", reasoning]
    import shlex

    assert shlex.join(expected) in out.splitlines()
    assert f"moodbench run --agent-model hosted_vllm/{model} --agent-base-url http://127.0.0.1:8000/v1" in out
    assert not (env / "state").exists()  # dry run changes nothing
    assert not (env / "home" / ".cache").exists()


def test_dry_run_full_flags(env):
    c, buf = console()
    rc = serve_vllm(
        opts(
            model="Qwen/Qwen3-8B",
            dry_run=True,
            port=9100,
            replicas=2,
            tensor_parallel=2,
            max_model_len=32768,
            gpu_memory_utilization=0.85,
            reasoning_parser="none",
            extra_args=["--enable-prefix-caching", "--served-model-name", "q3"],
        ),
        c,
    )
    assert rc == 0
    lines = buf.getvalue().splitlines()
    assert (
        "CUDA_VISIBLE_DEVICES=0,1 vllm serve Qwen/Qwen3-8B --host 127.0.0.1 --port 9100 "
        "--enable-auto-tool-choice --tool-call-parser hermes --tensor-parallel-size 2 --max-model-len 32768 "
        "--gpu-memory-utilization 0.85 --enable-prefix-caching --served-model-name q3"
    ) in lines
    assert any(line.startswith("CUDA_VISIBLE_DEVICES=2,3 vllm serve") and "--port 9101" in line for line in lines)
    assert (
        "moodbench run --agent-model hosted_vllm/q3 --agent-base-url http://127.0.0.1:9100/v1,http://127.0.0.1:9101/v1"
    ) in lines


def test_unknown_family_is_an_error_naming_the_flag(env):
    c, buf = console()
    assert serve_vllm(opts(model="EleutherAI/pythia-70m", dry_run=True), c) == 2
    out = buf.getvalue()
    assert "--tool-call-parser" in out and "docs/vllm-parsers.md" in out
    # a distill is a known family without a tool format: same error, with the reason
    c, buf = console()
    assert serve_vllm(opts(model="deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", dry_run=True), c) == 2
    assert "no verified vLLM tool-call format" in buf.getvalue()
    # given explicitly, any model goes (and an unregistered name only warns)
    c, buf = console()
    assert serve_vllm(opts(model="EleutherAI/pythia-70m", tool_call_parser="my_plugin", dry_run=True), c) == 0
    assert "--tool-call-parser my_plugin" in buf.getvalue()
    assert "Warning" in buf.getvalue() and "not a built-in parser" in buf.getvalue()


def test_build_commands_slices_and_checks():
    specs = build_vllm_commands(opts(model="Qwen/Qwen3-8B", port=8100, replicas=3, tensor_parallel=2), environ={})
    assert [s.port for s in specs] == [8100, 8101, 8102]
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in specs] == ["0,1", "2,3", "4,5"]
    assert [s.base_url for s in specs] == [f"http://127.0.0.1:{p}/v1" for p in (8100, 8101, 8102)]
    # a slice of the caller's own CUDA_VISIBLE_DEVICES
    specs = build_vllm_commands(opts(model="Qwen/Qwen3-8B", replicas=2), environ={"CUDA_VISIBLE_DEVICES": "4,6,7"})
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in specs] == ["4", "6"]
    with pytest.raises(ServeConfigError, match="needs 4 GPUs"):
        build_vllm_commands(opts(model="Qwen/Qwen3-8B", replicas=2, tensor_parallel=2), environ={"CUDA_VISIBLE_DEVICES": "0,1,2"})
    # one replica inherits the environment untouched
    (one,) = build_vllm_commands(opts(model="Qwen/Qwen3-8B", tensor_parallel=4), environ={})
    assert one.env == {} and "--tensor-parallel-size" in one.argv
    # flags moodbench owns cannot be smuggled in after `--`
    for bad in (["--port", "9"], ["--host=0.0.0.0"], ["-tp", "2"], ["--tool-call-parser", "x"]):
        with pytest.raises(ServeConfigError, match="after `--`"):
            build_vllm_commands(opts(model="Qwen/Qwen3-8B", extra_args=bad), environ={})
    with pytest.raises(ServeConfigError, match="--model is required"):
        build_vllm_commands(opts(), environ={})
    # the executable can live elsewhere
    (spec,) = build_vllm_commands(opts(model="Qwen/Qwen3-8B"), environ={"MOODBENCH_VLLM_BIN": "'/opt/v env/bin/vllm'"})
    assert spec.argv[:2] == ["/opt/v env/bin/vllm", "serve"]
    (spec,) = build_vllm_commands(opts(model="Qwen/Qwen3-8B"), environ={"MOODBENCH_VLLM_BIN": "uv run vllm"})
    assert spec.argv[:4] == ["uv", "run", "vllm", "serve"]


def test_parser_table_names_exist_in_vllm_and_doc_is_current():
    for rule in parsers.PARSER_RULES:
        assert rule.tool_parser is None or rule.tool_parser in parsers.VLLM_TOOL_PARSERS, rule
        assert rule.reasoning_parser is None or rule.reasoning_parser in parsers.VLLM_REASONING_PARSERS, rule
        for example in rule.examples:  # every example is caught by its own row, not an earlier one
            assert parsers.match_family(example) is rule, (example, parsers.match_family(example))
    assert (REPO / parsers.DOC_PATH).read_text() == parsers.render_doc(), (
        "docs/vllm-parsers.md is stale: regenerate it from parsers.render_doc()"
    )
    doc_rows = re.findall(r"^\| (.+?) \| (\S+) \| ?(\S*) ?\|$", parsers.__doc__, re.MULTILINE)[1:]
    table = [(r.family, r.tool_parser or "(none)", r.reasoning_parser or "") for r in parsers.PARSER_RULES]
    assert doc_rows == table, "the module docstring's table drifted from PARSER_RULES"


# ----------------------------------------------------------------------------- health


def test_health_helpers(env, procs):
    port = free_ports(2)
    start_fake(procs, port, "some/model")
    assert health.list_models(f"http://127.0.0.1:{port}/v1") == ["some/model"]
    assert health.list_models(f"http://127.0.0.1:{port}") == ["some/model"]  # /v1 added
    assert health.wait_ready(f"http://127.0.0.1:{port}/v1", timeout=5) == ["some/model"]
    r = httpx.post(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        json={"model": "some/model", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.json()["choices"][0]["message"]["role"] == "assistant"
    assert health.probe(f"http://127.0.0.1:{port}/v1").state == "serving"
    assert health.probe(f"http://127.0.0.1:{port + 1}/v1").state == "free"
    with pytest.raises(health.HealthError):
        health.list_models(f"http://127.0.0.1:{port + 1}/v1", timeout=1)
    with pytest.raises(health.StartupTimeout):
        health.wait_ready(f"http://127.0.0.1:{port + 1}/v1", timeout=0.5, interval=0.1)
    dead = subprocess.Popen([sys.executable, "-c", "raise SystemExit(7)"])
    dead.wait()
    t0 = time.monotonic()
    with pytest.raises(health.ProcessDied) as info:
        health.wait_ready(f"http://127.0.0.1:{port + 1}/v1", timeout=30, proc=dead)
    assert info.value.returncode == 7 and time.monotonic() - t0 < 5


# ----------------------------------------------------------------------------- real starts


def test_replicas_ports_gpus_loopback_and_ctrl_c(env, procs):
    port = free_ports(2)
    p, out = serve_in_subprocess(
        procs, env, model="Qwen/Qwen2.5-0.5B-Instruct", port=port, replicas=2, tensor_parallel=2, log_dir=str(env / "logs")
    )
    wait_for(lambda: "Press Ctrl-C" in out.read_text() or p.poll() is not None, what="ready")
    text = out.read_text()
    assert p.poll() is None, text
    recs = sorted(records(env / "record.jsonl"), key=lambda r: r["port"])
    assert [r["port"] for r in recs] == [port, port + 1]
    assert [r["cuda_visible_devices"] for r in recs] == ["0,1", "2,3"]
    assert all(r["host"] == "127.0.0.1" for r in recs)  # loopback unless --host says otherwise
    assert all(r["argv"][r["argv"].index("--tensor-parallel-size") + 1] == "2" for r in recs)
    for r in recs:
        assert _serves(r["port"]) == ["Qwen/Qwen2.5-0.5B-Instruct"]
        state = _state(r["port"])
        assert state["pid"] == r["pid"] and Path(state["log"]) == env / "logs" / f"vllm-{r['port']}.log"
        assert "Starting vLLM API server" in Path(state["log"]).read_text()
    urls = f"http://127.0.0.1:{port}/v1,http://127.0.0.1:{port + 1}/v1"
    assert f"moodbench run --agent-model hosted_vllm/Qwen/Qwen2.5-0.5B-Instruct --agent-base-url {urls}" in text
    # not reachable through another interface than loopback
    other = _non_loopback_ip()
    if other:
        assert not health.port_open(other, port, timeout=0.5)

    os.kill(p.pid, signal.SIGINT)  # Ctrl-C: 130, as in `moodbench run`
    assert p.wait(timeout=30) == 130, out.read_text()
    for r in recs:
        assert pid_gone(r["pid"])
        assert read_state(r["port"]) is None
        assert not health.port_open("127.0.0.1", r["port"])


def _non_loopback_ip() -> str | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))  # no packet is sent
            ip = s.getsockname()[0]
    except OSError:
        return None
    return None if ip.startswith("127.") else ip


def test_reuse_keeps_same_model_then_stop_via_state_file(env, procs):
    port = free_ports(1)
    first, out = serve_in_subprocess(procs, env, model="Qwen/Qwen3-8B", port=port)
    wait_for(lambda: "Press Ctrl-C" in out.read_text() or first.poll() is not None, what="ready")
    pid = _state(port)["pid"]

    c, buf = console()
    assert serve_vllm(opts(model="Qwen/Qwen3-8B", port=port, reuse=True), c) == 0
    assert "Reusing" in buf.getvalue() and f"pid {pid}" in buf.getvalue()
    assert _state(port)["pid"] == pid and len(records(env / "record.jsonl")) == 1  # nothing restarted

    # without --reuse the same request is refused rather than clashing on the port
    c, buf = console()
    assert serve_vllm(opts(model="Qwen/Qwen3-8B", port=port), c) == 2
    assert "--reuse" in buf.getvalue()

    c, buf = console()
    assert stop_vllm(opts(port=port, stop=True), c) == 0
    assert f"pid {pid}" in buf.getvalue()
    wait_for(lambda: pid_gone(pid), what="server stopped")
    assert read_state(port) is None
    assert first.wait(timeout=30) == 0, out.read_text()  # the foreground saw --stop and exited cleanly
    assert "stopped with --stop" in out.read_text()

    c, buf = console()
    assert serve_vllm(opts(stop=True), c) == 0
    assert "No vLLM servers recorded" in buf.getvalue()


def test_reuse_with_a_different_model_is_an_error(env, procs):
    port = free_ports(1)
    start_fake(procs, port, "meta-llama/Llama-3.1-8B-Instruct")
    c, buf = console()
    assert serve_vllm(opts(model="Qwen/Qwen3-8B", port=port, reuse=True), c) == 2
    assert "meta-llama/Llama-3.1-8B-Instruct" in buf.getvalue()
    assert records(env / "record.jsonl")[-1]["model"] == "meta-llama/Llama-3.1-8B-Instruct"  # no new start


def test_reuse_replaces_a_wedged_server_we_started(env, procs):
    port = free_ports(1)
    (spec,) = build_vllm_commands(opts(model="Qwen/Qwen3-8B", port=port, log_dir=env / "logs"))
    spec.env["FAKE_VLLM_HANG"] = "1"  # listens, never answers
    old = vllm_mod.start_replica(spec)
    procs.append(old)
    wait_for(lambda: health.port_open("127.0.0.1", port), what="wedged server listening")

    p, out = serve_in_subprocess(procs, env, model="Qwen/Qwen3-8B", port=port, reuse=True)
    wait_for(lambda: "Press Ctrl-C" in out.read_text() or p.poll() is not None, timeout=30, what="ready")
    text = out.read_text()
    assert "Replacing" in text, text
    assert old.wait(timeout=10) is not None
    new_pid = _state(port)["pid"]
    assert new_pid != old.pid and _serves(port) == ["Qwen/Qwen3-8B"]
    os.kill(p.pid, signal.SIGINT)
    assert p.wait(timeout=30) == 130


def test_wedged_ports_without_reuse_are_errors(env, procs, monkeypatch):
    monkeypatch.setattr(health, "probe", _fast_probe)
    monkeypatch.setattr(serve_cmd, "probe", _fast_probe)
    port = free_ports(2)
    # ours, not answering: refuses without --reuse
    (spec,) = build_vllm_commands(opts(model="Qwen/Qwen3-8B", port=port, log_dir=env / "logs"))
    spec.env["FAKE_VLLM_HANG"] = "1"
    procs.append(vllm_mod.start_replica(spec))
    wait_for(lambda: health.port_open("127.0.0.1", port), what="listening")
    c, buf = console()
    assert serve_vllm(opts(model="Qwen/Qwen3-8B", port=port), c) == 2
    assert "does not answer" in buf.getvalue() and "--reuse" in buf.getvalue()
    # not ours: busy even with --reuse, and it is left alone
    other = start_fake(procs, port + 1, "x", FAKE_VLLM_HANG="1")
    c, buf = console()
    assert serve_vllm(opts(model="Qwen/Qwen3-8B", port=port + 1, reuse=True), c) == 2
    assert "busy" in buf.getvalue()
    assert other.poll() is None


def _fast_probe(base_url, timeout=3.0, api_key=None):
    return _REAL_PROBE(base_url, timeout=0.5, api_key=api_key)


_REAL_PROBE = health.probe


def test_early_death_prints_the_log_tail(env, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM_DIE", "1")
    port = free_ports(1)
    c, buf = console()
    t0 = time.monotonic()
    assert serve_vllm(opts(model="Qwen/Qwen3-8B", port=port, log_dir=env / "logs"), c) == 1
    assert time.monotonic() - t0 < 10
    out = buf.getvalue()
    assert "exited with code 3 during start-up" in out
    assert "CUDA out of memory (fake)" in out and "engine core failed to start" in out
    assert read_state(port) is None


def test_startup_timeout_stops_the_server(env, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM_DELAY", "60")
    port = free_ports(1)
    c, buf = console()
    assert serve_vllm(opts(model="Qwen/Qwen3-8B", port=port, startup_timeout=1.0), c) == 1
    assert "did not answer /v1/models within 1s" in buf.getvalue()
    (rec,) = records(env / "record.jsonl")
    wait_for(lambda: pid_gone(rec["pid"]), what="slow server killed")
    assert read_state(port) is None
    assert (env / "home" / ".cache" / "moodbench" / "logs" / f"vllm-{port}.log").exists()  # default log dir


def test_missing_vllm_executable(env, monkeypatch):
    monkeypatch.setenv("PATH", BASE_PATH)
    c, buf = console()
    assert serve_vllm(opts(model="Qwen/Qwen3-8B", port=free_ports(1)), c) == 2
    assert "MOODBENCH_VLLM_BIN" in buf.getvalue()


def test_stop_removes_stale_records(env):
    state = env / "state"
    state.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (state / "vllm-8123.json").write_text(json.dumps({"pid": dead.pid, "port": 8123, "model": "m"}))
    c, buf = console()
    assert serve_vllm(opts(stop=True, port=8123), c) == 0
    assert "stale" in buf.getvalue()
    assert not (state / "vllm-8123.json").exists()


# ----------------------------------------------------------------------------- SkyPilot

SENTINEL = "hf_SENTINEL_do_not_write_me_0123456789"


def _check_task(path: Path, port: int):
    text = path.read_text()
    assert SENTINEL not in text
    cfg = yaml.safe_load(text)
    assert cfg["resources"]["accelerators"] == "H100:2"
    assert cfg["resources"]["ports"] == [port, port + 1]
    assert cfg["resources"]["infra"] == "aws"
    assert cfg["secrets"] == {"HF_TOKEN": None}
    assert "HF_TOKEN" not in (cfg.get("envs") or {})
    assert cfg["setup"].strip() == "pip install vllm"
    assert f"CUDA_VISIBLE_DEVICES=1 vllm serve Qwen/Qwen3-8B --host 0.0.0.0 --port {port + 1}" in cfg["run"]
    assert "--tool-call-parser hermes --reasoning-parser qwen3" in cfg["run"]
    try:
        import sky
    except ImportError:  # SkyPilot not installed: the structural check above is all we can do
        return
    task = sky.Task.from_yaml(str(path))
    (res,) = task.resources
    assert res.accelerators == {"H100": 2}
    opened = []
    for spec in res.ports:  # SkyPilot folds consecutive ports into "A-B"
        lo, _, hi = str(spec).partition("-")
        opened += list(range(int(lo), int(hi or lo) + 1))
    assert sorted(opened) == [port, port + 1]
    assert [ref.name for ref in getattr(task, "_managed_secret_refs", [])] in ([], ["HF_TOKEN"])


def test_skypilot_yaml_without_sky_cli(env, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SENTINEL)
    port = 8200
    task = env / "task.yaml"
    c, buf = console()
    o = opts(model="Qwen/Qwen3-8B", port=port, replicas=2, skypilot=task, gpus="H100:2", cloud="aws")
    assert serve_vllm(o, c) == 0
    assert "sky launch -c moodbench-vllm" in buf.getvalue() and "--secret HF_TOKEN" in buf.getvalue()
    assert SENTINEL not in buf.getvalue()
    _check_task(task, port)
    # dry run writes nothing
    c, buf = console()
    assert serve_vllm(opts(model="Qwen/Qwen3-8B", skypilot=env / "dry.yaml", dry_run=True), c) == 0
    assert not (env / "dry.yaml").exists() and "secrets:" in buf.getvalue()
    # too few GPUs for the replicas
    c, buf = console()
    assert serve_vllm(opts(model="Qwen/Qwen3-8B", replicas=2, skypilot=task, gpus="H100:1"), c) == 2


def test_skypilot_launch_with_fake_sky(env, procs, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SENTINEL)
    port = free_ports(1)
    start_fake(procs, port, "Qwen/Qwen3-8B")  # stands for the server on the cluster
    bindir = env / "bin"
    bindir.mkdir()
    sky = bindir / "sky"
    sky.write_text(
        textwrap.dedent(f"""\
        #!/usr/bin/env python3
        import json, os, sys
        with open({str(env / "sky.jsonl")!r}, "a") as fh:
            fh.write(json.dumps({{"argv": sys.argv[1:], "hf_token_set": "HF_TOKEN" in os.environ}}) + "\\n")
        if sys.argv[1:3] == ["status", "--endpoint"]:
            print("127.0.0.1:" + sys.argv[3])
    """)
    )
    sky.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{FAKES}:{BASE_PATH}")
    task = env / "task.yaml"
    c, buf = console()
    assert serve_vllm(opts(model="Qwen/Qwen3-8B", port=port, skypilot=task), c) == 0
    out = buf.getvalue()
    calls = records(env / "sky.jsonl")
    assert calls[0]["argv"] == ["launch", "-c", "moodbench-vllm", str(task), "--secret", "HF_TOKEN", "-d"]
    assert calls[0]["hf_token_set"]  # sky reads the value from its environment, by name
    assert calls[1]["argv"] == ["status", "--endpoint", str(port), "moodbench-vllm"]
    assert SENTINEL not in task.read_text() and SENTINEL not in json.dumps(calls) and SENTINEL not in out
    assert f"--agent-base-url http://127.0.0.1:{port}/v1" in out and "sky down moodbench-vllm" in out


def test_skypilot_api_key_is_a_secret_too(env, monkeypatch):
    monkeypatch.setenv("VLLM_API_KEY", SENTINEL)
    text = render_task_yaml(opts(model="Qwen/Qwen3-8B"), path="t.yaml")
    assert SENTINEL not in text
    assert yaml.safe_load(text)["secrets"] == {"HF_TOKEN": None, "VLLM_API_KEY": None}
    assert "--secret HF_TOKEN --secret VLLM_API_KEY" in text
    c, buf = console()
    o = opts(model="Qwen/Qwen3-8B", skypilot=env / "t.yaml", extra_args=["--api-key", "k"])
    assert serve_vllm(o, c) == 2 and "VLLM_API_KEY" in buf.getvalue()
    assert not (env / "t.yaml").exists()


def test_render_task_yaml_header_names_the_command(env):
    text = render_task_yaml(opts(model="openai/gpt-oss-20b", gpus="H100:1"), path="t.yaml")
    assert text.startswith("# SkyPilot task")
    assert "sky launch -c moodbench-vllm t.yaml --secret HF_TOKEN -d" in text
    cfg = yaml.safe_load(text)
    assert "--tool-call-parser openai --reasoning-parser openai_gptoss" in cfg["run"]
    assert "infra" not in cfg["resources"]
