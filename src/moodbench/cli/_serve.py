"""``moodbench serve``: the foreground commands of the llama.cpp and SkyPilot backends (vLLM's are in
:mod:`moodbench.cli._serve_vllm`).

:mod:`moodbench.serve` starts, probes and stops servers and raises typed errors; this module prints
for the user, blocks until Ctrl-C and maps failures to exit codes.
"""

from __future__ import annotations

import http.client
import json
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Optional

import typer

from moodbench._util.exitcodes import ExitCode, Interrupted, exit_code_of
from moodbench.cli._app import app
from moodbench.cli._exit import console, fail, say
from moodbench.serve.options import ServeOptions

_DEFAULTS = ServeOptions(backend="")  # the flags show ServeOptions' defaults: one home for each


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def serve(
    ctx: typer.Context,
    backend: str = typer.Option(..., "--backend", help="llamacpp (CPU, GGUF) or vllm (GPU)."),
    model: Optional[str] = typer.Option(None, "--model", help="GGUF path or built-in name (llamacpp); Hugging Face id (vllm)."),
    host: str = typer.Option(_DEFAULTS.host, "--host", help="Bind address (default loopback only)."),
    port: Optional[int] = typer.Option(None, "--port"),
    ctx_size: int = typer.Option(_DEFAULTS.ctx, "--ctx", help="llamacpp context size."),
    threads: Optional[int] = typer.Option(None, "--threads", help="llamacpp CPU threads."),
    parallel: int = typer.Option(_DEFAULTS.parallel, "--parallel", help="llamacpp slots (prompt cache per slot)."),
    tensor_parallel: int = typer.Option(_DEFAULTS.tensor_parallel, "--tensor-parallel"),
    replicas: int = typer.Option(_DEFAULTS.replicas, "--replicas", help="vllm: servers on consecutive ports, one per GPU slice."),
    max_model_len: Optional[int] = typer.Option(None, "--max-model-len"),
    gpu_memory_utilization: Optional[float] = typer.Option(None, "--gpu-memory-utilization"),
    tool_call_parser: Optional[str] = typer.Option(None, "--tool-call-parser"),
    reasoning_parser: Optional[str] = typer.Option(None, "--reasoning-parser"),
    reuse: bool = typer.Option(False, "--reuse", help="Keep a healthy server already serving this model on the port."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the exact commands; change nothing."),
    stop: bool = typer.Option(False, "--stop", help="Stop servers started by moodbench serve."),
    startup_timeout: float = typer.Option(_DEFAULTS.startup_timeout, "--startup-timeout"),
    log_dir: Optional[Path] = typer.Option(None, "--log-dir"),
    skypilot: Optional[Path] = typer.Option(
        None, "--skypilot", help="Write (and launch, if SkyPilot is set up) a SkyPilot task YAML."
    ),
    gpus: str = typer.Option(_DEFAULTS.gpus, "--gpus"),
    cloud: Optional[str] = typer.Option(None, "--cloud"),
) -> None:
    """Start an OpenAI-compatible model server (extra vLLM arguments go after --)."""
    opts = ServeOptions(
        backend=backend,
        model=model,
        host=host,
        port=port,
        ctx=ctx_size,
        threads=threads,
        parallel=parallel,
        tensor_parallel=tensor_parallel,
        replicas=replicas,
        max_model_len=max_model_len,
        gpu_memory_utilization=gpu_memory_utilization,
        tool_call_parser=tool_call_parser,
        reasoning_parser=reasoning_parser,
        reuse=reuse,
        dry_run=dry_run,
        stop=stop,
        startup_timeout=startup_timeout,
        log_dir=log_dir,
        extra_args=list(ctx.args),
        skypilot=skypilot,
        gpus=gpus,
        cloud=cloud,
    )
    if backend == "llamacpp":
        raise typer.Exit(serve_llamacpp(opts, console))
    if backend == "vllm":
        from moodbench.cli._serve_vllm import serve_vllm

        raise typer.Exit(serve_vllm(opts, console))
    fail(f"unknown backend {backend!r}; valid backends: llamacpp, vllm")


def _reuse_existing(host: str, port: int) -> str | None:
    """The model id served at host:port if an OpenAI-compatible server already answers there."""
    try:
        conn = http.client.HTTPConnection(host, port, timeout=2)
        conn.request("GET", "/v1/models")
        resp = conn.getresponse()
        data = json.loads(resp.read())
        conn.close()
        if resp.status == 200 and data.get("data"):
            return str(data["data"][0].get("id"))
    except (OSError, ValueError, AttributeError):
        return None
    return None


def serve_llamacpp(opts: ServeOptions, console: Any = None) -> int:
    """``moodbench serve llamacpp``: resolve the model, start llama-server, block until Ctrl-C.

    Returns its exit code (:mod:`moodbench.cli._exit`: 2 for a missing binary, an unknown model or a
    taken port, 1 when the server fails, 130/143 after Ctrl-C/SIGTERM). Honours ``model``, ``host``, ``port`` (default 8080), ``ctx``,
    ``threads``, ``parallel``, ``reuse`` (an answering server on the port is reused, nothing started),
    ``dry_run`` (print the command only), ``startup_timeout``, ``log_dir`` and ``extra_args``
    (appended to llama-server's argv).
    """
    from moodbench.serve.install import LocalBackendMissing, llama_server_path
    from moodbench.serve.llamacpp import DEFAULT_PORT, LlamaCppServer, LlamaCppServerError, port_in_use
    from moodbench.serve.models import DEFAULT_MODEL, ModelResolutionError, cache_root, resolve_model

    port = opts.port or DEFAULT_PORT
    if opts.stop:
        say(console, "llamacpp runs in the foreground: stop it with Ctrl-C in its terminal.", "yellow")
        return ExitCode.OK
    if opts.reuse and (name := _reuse_existing(opts.host, port)):
        url = f"http://{opts.host}:{port}/v1"
        say(console, f"Reusing the server already at {url} (model {name}).", "green")
        say(console, f"moodbench run --agent-model openai/{name} --agent-base-url {url}")
        return ExitCode.OK
    try:
        binary = llama_server_path()
        model = resolve_model(opts.model or DEFAULT_MODEL, console=console)
    except (LocalBackendMissing, ModelResolutionError) as e:  # both are the user's to fix, as in `steer` and `run`
        say(console, f"error: {e}", "red")
        return ExitCode.USAGE
    log_dir = opts.log_dir or cache_root() / "logs"
    srv = LlamaCppServer(
        model,
        host=opts.host,
        port=port,
        ctx=opts.ctx,
        threads=opts.threads,
        parallel=opts.parallel,
        log_path=Path(log_dir) / f"llama-server-{port}.log",
        binary=binary,
        extra_args=opts.extra_args,
    )
    if opts.dry_run:
        say(console, " ".join(srv.command()))
        return ExitCode.OK
    if port_in_use(opts.host, port):
        say(console, f"error: {opts.host}:{port} is already in use; pick another --port (or --reuse it).", "red")
        return ExitCode.USAGE
    if opts.host not in ("127.0.0.1", "localhost", "::1"):
        say(console, f"warning: binding {opts.host}: the server has no API key and is reachable from outside.", "yellow")

    say(console, f"Starting llama-server for {model.name} (ctx {opts.ctx}, {opts.parallel} slots); log: {srv.log_path}")
    t0 = time.monotonic()

    def _term(signum: int, frame: Any) -> None:
        raise Interrupted(signum)

    # SIGINT too: a shell starts background jobs with SIGINT ignored, which would disable Ctrl-C handling.
    old: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            old[sig] = signal.signal(sig, _term)
    try:
        srv.start(timeout=opts.startup_timeout)
        say(console, f"Ready in {time.monotonic() - t0:.1f}s: {srv.base_url}  (model name: {srv.model_name})", "green")
        say(console, "Run the benchmark against it from another terminal:")
        say(console, f"  moodbench run --agent-model openai/{srv.model_name} --agent-base-url {srv.base_url}")
        say(console, "Press Ctrl-C to stop.")
        while srv.alive():
            time.sleep(0.5)
        say(console, f"llama-server exited unexpectedly.\n{srv.log_tail()}", "red")
        return ExitCode.FAILED
    except KeyboardInterrupt as exc:
        say(console, "Stopping llama-server ...")
        return exit_code_of(exc)
    except LlamaCppServerError as e:
        say(console, f"error: {e}", "red")
        return ExitCode.FAILED
    finally:
        srv.stop()
        for sig, handler in old.items():
            signal.signal(sig, handler)


def serve_skypilot(opts: ServeOptions, console) -> int:
    """``serve --backend vllm --skypilot FILE``: write the task, launch it when ``sky`` is here, wait, print the URLs."""
    # here, not at the top: httpx and YAML would slow every `moodbench` command's start
    from moodbench.serve.health import HealthError, wait_ready
    from moodbench.serve.skypilot import (
        ServeConfigError,
        cluster_name,
        endpoint,
        remote_specs,
        render_task_yaml,
        secret_names,
        sky_launch_argv,
    )

    cluster = cluster_name()
    path = Path(opts.skypilot or "TASK.yaml").expanduser()
    try:
        text = render_task_yaml(opts, cluster, str(path))
        specs = remote_specs(opts)
    except ServeConfigError as exc:
        say(console, f"Error: {exc}", style="bold red")
        return ExitCode.USAGE
    launch = sky_launch_argv(path, cluster)
    if opts.dry_run:
        say(console, f"# dry run: would write {path}:")
        say(console, text)
        say(console, "# and run:")
        say(console, shlex.join(launch))
        return ExitCode.OK
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    say(console, f"Wrote SkyPilot task {path}")
    if not shutil.which("sky"):
        say(
            console,
            "SkyPilot's `sky` command is not on PATH (pip install 'skypilot[aws]' or your "
            "cloud's extra, then `sky check`). Launch with:",
        )
        say(console, "  " + shlex.join(launch))
        say(console, f"then get the address with: sky status --endpoint {specs[0].port} {cluster}")
        return ExitCode.OK
    env = dict(os.environ)
    for name in secret_names():
        if name not in env:
            say(
                console,
                f"Warning: {name} is not set here; launching with an empty {name} "
                f"(fine for public models, gated ones will fail to download).",
                style="yellow",
            )
            env[name] = ""
    say(console, f"Launching: {shlex.join(launch)}", style="dim")
    rc = subprocess.run(launch, env=env, check=False).returncode
    if rc != 0:
        say(console, f"Error: sky launch exited with code {rc}.", style="bold red")
        return rc
    urls = []
    for s in specs:
        url = endpoint(cluster, s.port)
        if url is None:
            say(
                console,
                f"Error: could not get the endpoint of port {s.port} (sky status --endpoint {s.port} {cluster}).",
                style="bold red",
            )
            return ExitCode.FAILED
        urls.append(url)
    with console.status(f"Waiting for vLLM on {cluster} (model download and load can take a while)..."):
        for url in urls:
            try:
                wait_ready(url, opts.startup_timeout, api_key=os.environ.get("VLLM_API_KEY"), interval=5.0)
            except HealthError as exc:
                say(console, f"Error: {exc}. See `sky logs {cluster}`; stop with `sky down {cluster}`.", style="bold red")
                return ExitCode.FAILED
    say(console, f"vLLM is serving {specs[0].served_model} on SkyPilot cluster {cluster}:", style="bold green")
    for url in urls:
        say(console, f"  {url}")
    say(console, "Run the benchmark against it with:")
    agent = shlex.quote("hosted_vllm/" + specs[0].served_model)
    say(console, f"  moodbench run --agent-model {agent} --agent-base-url {','.join(urls)}")
    say(console, f"The cluster keeps running (and billing) until: sky down {cluster}", style="yellow")
    if not os.environ.get("VLLM_API_KEY"):
        say(
            console,
            "Note: the port is open to the internet and vLLM runs without an API key "
            "(export VLLM_API_KEY before launching to require one).",
            style="yellow",
        )
    return ExitCode.OK
