"""``moodbench serve --backend vllm``: start (or reuse, or stop) vLLM OpenAI-compatible servers.

    vllm serve MODEL --host H --port P --enable-auto-tool-choice --tool-call-parser X
        [--reasoning-parser R] [--tensor-parallel-size N] [--max-model-len L]
        [--gpu-memory-utilization F] EXTRA...

- the tool-call / reasoning parsers come from the model-family table in ``parsers.py``
  (an unknown family without ``--tool-call-parser`` is an error, exit code 2);
- ``--replicas N`` starts N servers on consecutive ports, replica i on GPUs
  ``i*tp .. i*tp+tp-1`` (``CUDA_VISIBLE_DEVICES``; a slice of the caller's own
  ``CUDA_VISIBLE_DEVICES`` when that is set);
- every server runs in its own process group (``subprocess.Popen(argv)``, never a shell),
  output to ``~/.cache/moodbench/logs/vllm-PORT.log`` (or ``opts.log_dir``), and is recorded
  in ``$MOODBENCH_STATE_DIR`` (default ``~/.cache/moodbench/servers``) as ``vllm-PORT.json``
  so ``--stop`` and ``--reuse`` can find it later;
- the command waits for ``/v1/models``, fails fast with the end of the log when a server
  dies during start-up, prints the base URLs and a ``moodbench run`` line, then stays in the
  foreground until Ctrl-C (or SIGTERM) and stops what it started.

``MOODBENCH_VLLM_BIN`` overrides the executable (e.g. ``/opt/vllm-venv/bin/vllm``): vLLM
often lives in an environment of its own.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rich.text import Text

from moodbench._util.paths import cache_root
from moodbench._util.proc import killpg, pid_alive, terminate_group
from moodbench._util.proc import log_tail as _log_tail

from .health import AuthRequired, HealthError, list_models, port_open, probe
from .options import ServeOptions
from .parsers import UnknownModelFamily, resolve_parsers, unknown_parser_warnings

DEFAULT_PORT = 8000
STOP_GRACE_S = 20.0
LOG_TAIL_LINES = 40


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    return _log_tail(path, lines)

# Flags moodbench sets itself: given again after `--` they would silently win (argparse
# keeps the last value) and moodbench would health-check the wrong port / slice the wrong GPUs.
_OWNED_FLAGS = {
    "--host": "--host",
    "--port": "--port",
    "--tensor-parallel-size": "--tensor-parallel",
    "-tp": "--tensor-parallel",
    "--tool-call-parser": "--tool-call-parser",
    "--reasoning-parser": "--reasoning-parser",
}


class ServeConfigError(Exception):
    """A usage problem reported to the user with exit code 2 (nothing was started)."""

    exit_code = 2


@dataclass
class LaunchSpec:
    """One ``vllm serve`` process: what to run, where it listens, where it logs."""

    replica: int
    model: str
    served_model: str  # the id /v1/models lists (differs with --served-model-name)
    host: str  # what vLLM binds
    port: int
    argv: list[str]
    env: dict[str, str]  # additions to the caller's environment
    log_path: Path
    api_key: str | None = field(default=None, repr=False)

    @property
    def connect_host(self) -> str:
        """Where to reach it from this machine (a wildcard bind is reached via loopback)."""
        if self.host in ("", "0.0.0.0"):  # noqa: S104 - recognising a wildcard bind, not binding one
            return "127.0.0.1"
        if self.host == "::":
            return "::1"
        return self.host

    @property
    def base_url(self) -> str:
        host = self.connect_host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/v1"

    def display(self) -> str:
        """The command as one shell line (env additions first), for --dry-run and messages."""
        prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        cmd = shlex.join(self.argv)
        return f"{prefix} {cmd}" if prefix else cmd


# ----------------------------------------------------------------------------- paths, state


def state_dir() -> Path:
    env = os.environ.get("MOODBENCH_STATE_DIR")
    return Path(env).expanduser() if env else cache_root() / "servers"


def default_log_dir() -> Path:
    return cache_root() / "logs"


def state_path(port: int) -> Path:
    return state_dir() / f"vllm-{port}.json"


def read_state(port: int) -> dict | None:
    return _read_state_file(state_path(port))


def _read_state_file(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("pid"), int) else None


def _write_state(spec: LaunchSpec, proc: subprocess.Popen) -> None:
    path = state_path(spec.port)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "backend": "vllm",
        "pid": proc.pid,
        "pgid": proc.pid,  # started with start_new_session: it leads its own group
        "start_ticks": _proc_start_ticks(proc.pid),
        "model": spec.model,
        "served_model": spec.served_model,
        "host": spec.host,
        "port": spec.port,
        "base_url": spec.base_url,
        "log": str(spec.log_path),
        "argv": spec.argv,
        "env": spec.env,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "moodbench_pid": os.getpid(),
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def _remove_state(port: int, pid: int | None = None) -> None:
    """Remove the record for ``port`` (only if it still names ``pid``, when given)."""
    path = state_path(port)
    if pid is not None:
        data = _read_state_file(path)
        if data is not None and data.get("pid") != pid:
            return
    try:
        path.unlink()
    except FileNotFoundError:
        pass


# ----------------------------------------------------------------------------- processes


def _proc_start_ticks(pid: int) -> int | None:
    """The process start time from /proc (Linux), to tell a recycled pid from ours."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def state_process_alive(state: Mapping) -> bool:
    """Whether the process a state record names is still the one we started."""
    pid = state.get("pid")
    if not isinstance(pid, int) or pid <= 0 or not pid_alive(pid):
        return False
    recorded = state.get("start_ticks")
    current = _proc_start_ticks(pid)
    return recorded is None or current is None or recorded == current


# ----------------------------------------------------------------------------- commands


def _flag_value(args: list[str], flag: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def _gpu_slices(replicas: int, tp: int, environ: Mapping[str, str]) -> list[str | None]:
    if replicas == 1:
        return [None]  # inherit the caller's CUDA_VISIBLE_DEVICES (or vLLM's default: the first GPUs)
    visible = (environ.get("CUDA_VISIBLE_DEVICES") or "").strip()
    if visible:
        ids = [x.strip() for x in visible.split(",") if x.strip()]
        if len(ids) < replicas * tp:
            raise ServeConfigError(
                f"--replicas {replicas} x --tensor-parallel {tp} needs {replicas * tp} GPUs, "
                f"but CUDA_VISIBLE_DEVICES={visible} names {len(ids)}."
            )
    else:
        ids = [str(i) for i in range(replicas * tp)]
    return [",".join(ids[i * tp:(i + 1) * tp]) for i in range(replicas)]


def vllm_executable(environ: Mapping[str, str] | None = None) -> list[str]:
    environ = os.environ if environ is None else environ
    return shlex.split(environ.get("MOODBENCH_VLLM_BIN") or "vllm")


def build_vllm_commands(opts: ServeOptions, environ: Mapping[str, str] | None = None) -> list[LaunchSpec]:
    """The ``vllm serve`` processes ``opts`` asks for; pure (starts nothing, writes nothing).

    ``environ`` (default ``os.environ``) supplies ``CUDA_VISIBLE_DEVICES``, ``VLLM_API_KEY``
    and ``MOODBENCH_VLLM_BIN``. Raises ``ServeConfigError`` (exit code 2) for bad options,
    including an unknown model family without ``--tool-call-parser``.
    """
    environ = os.environ if environ is None else environ
    if not opts.model:
        raise ServeConfigError("--model is required for --backend vllm (a Hugging Face id or a local path).")
    model = opts.model
    tp = int(opts.tensor_parallel or 1)
    replicas = int(opts.replicas or 1)
    if tp < 1 or replicas < 1:
        raise ServeConfigError("--tensor-parallel and --replicas must be at least 1.")
    port = DEFAULT_PORT if opts.port is None else int(opts.port)
    if not (1 <= port and port + replicas - 1 <= 65535):
        raise ServeConfigError(f"ports {port}..{port + replicas - 1} are out of range.")
    if opts.gpu_memory_utilization is not None and not (0 < opts.gpu_memory_utilization <= 1):
        raise ServeConfigError("--gpu-memory-utilization is a fraction in (0, 1], e.g. 0.9.")
    extra = list(opts.extra_args or [])
    for arg in extra:
        flag = arg.split("=", 1)[0]
        if flag in _OWNED_FLAGS:
            raise ServeConfigError(
                f"{flag} after `--` would override what moodbench sets; use moodbench's "
                f"{_OWNED_FLAGS[flag]} option instead."
            )
    try:
        parsers = resolve_parsers(model, opts.tool_call_parser, opts.reasoning_parser)
    except UnknownModelFamily as exc:
        raise ServeConfigError(str(exc)) from exc

    served = _flag_value(extra, "--served-model-name") or model
    api_key = _flag_value(extra, "--api-key") or environ.get("VLLM_API_KEY") or None
    log_dir = Path(opts.log_dir).expanduser() if opts.log_dir else default_log_dir()
    exe = vllm_executable(environ)
    slices = _gpu_slices(replicas, tp, environ)

    specs = []
    for i in range(replicas):
        p = port + i
        argv = [*exe, "serve", model, "--host", opts.host, "--port", str(p),
                "--enable-auto-tool-choice", "--tool-call-parser", parsers.tool_parser]
        if parsers.reasoning_parser:
            argv += ["--reasoning-parser", parsers.reasoning_parser]
        if tp > 1:
            argv += ["--tensor-parallel-size", str(tp)]
        if opts.max_model_len:
            argv += ["--max-model-len", str(int(opts.max_model_len))]
        if opts.gpu_memory_utilization is not None:
            argv += ["--gpu-memory-utilization", f"{opts.gpu_memory_utilization:g}"]
        argv += extra
        gpus = slices[i]
        env = {"CUDA_VISIBLE_DEVICES": gpus} if gpus is not None else {}
        specs.append(LaunchSpec(
            replica=i, model=model, served_model=served, host=opts.host, port=p, argv=argv,
            env=env, log_path=log_dir / f"vllm-{p}.log", api_key=api_key,
        ))
    return specs


def run_command_line(specs: list[LaunchSpec]) -> str:
    """The ready-to-paste ``moodbench run`` line for these servers."""
    urls = ",".join(s.base_url for s in specs)
    return f"moodbench run --agent-model {shlex.quote('hosted_vllm/' + specs[0].served_model)} --agent-base-url {urls}"


# ----------------------------------------------------------------------------- the command


def _plain(console, text: str = "", style: str | None = None) -> None:
    """Print without rich markup/highlighting or wrapping, so commands stay copy-pasteable."""
    console.print(Text(text, style=style or ""), soft_wrap=True, highlight=False)


def _error(console, text: str) -> None:
    _plain(console, f"Error: {text}", style="bold red")


def _print_dry_run(specs: list[LaunchSpec], console) -> None:
    _plain(console, f"# dry run: would start {len(specs)} vLLM server(s); nothing was started")
    for s in specs:
        _plain(console, f"# replica {s.replica}: {s.base_url}  (log: {s.log_path})")
        _plain(console, s.display())
    _plain(console, "# then:")
    _plain(console, run_command_line(specs))


def serve_vllm(opts: ServeOptions, console) -> int:
    """The whole ``moodbench serve --backend vllm`` command; returns the exit code."""
    if opts.stop:
        return stop_vllm(opts, console)
    if opts.skypilot is not None:
        from .skypilot import serve_skypilot

        return serve_skypilot(opts, console)
    try:
        specs = build_vllm_commands(opts)
    except ServeConfigError as exc:
        _error(console, str(exc))
        return exc.exit_code
    for warning in unknown_parser_warnings(resolve_parsers(opts.model or "", opts.tool_call_parser, opts.reasoning_parser)):
        _plain(console, f"Warning: {warning}", style="yellow")
    if opts.dry_run:
        _print_dry_run(specs, console)
        return 0
    return _run_foreground(specs, opts, console)


@dataclass
class _Running:
    spec: LaunchSpec
    proc: subprocess.Popen
    ready: bool = False


def _decide(spec: LaunchSpec, opts: ServeOptions, console) -> str:
    """"keep" (reuse the healthy server on the port) or "start"; ServeConfigError otherwise.
    With --reuse, a server moodbench started that is not answering is stopped here."""
    state = read_state(spec.port) or {}
    ours = bool(state) and state_process_alive(state)
    found = probe(spec.base_url, api_key=spec.api_key)
    where = f"port {spec.port} ({spec.base_url})"
    if found.state == "serving":
        if spec.served_model in found.models:
            if opts.reuse:
                who = f" (pid {state['pid']}, started by moodbench)" if ours else ""
                _plain(console, f"Reusing the server on {where}{who}: it already serves {spec.served_model}.")
                return "keep"
            raise ServeConfigError(
                f"{where} already serves {spec.served_model}. Pass --reuse to use it as it is, "
                f"--stop to stop it, or choose another --port."
            )
        raise ServeConfigError(
            f"{where} already serves a different model: {', '.join(found.models)} "
            f"(wanted {spec.served_model}). Stop it first"
            + (" (moodbench serve --backend vllm --stop --port " + str(spec.port) + ")" if ours else "")
            + " or choose another --port."
        )
    if found.state == "busy":
        if ours and opts.reuse:
            _plain(console, f"Replacing the server moodbench started on {where} (pid {state['pid']}): "
                            f"it accepts connections but does not answer /v1/models ({found.detail}).",
                   style="yellow")
            _stop_recorded(state)
            _wait_port_free(spec)
            return "start"
        if ours:
            raise ServeConfigError(
                f"the vLLM server moodbench started on {where} (pid {state['pid']}) does not answer "
                f"/v1/models yet (still loading? log: {state.get('log')}). Wait for it, pass --reuse "
                f"to replace it, or --stop it."
            )
        raise ServeConfigError(
            f"{where} is busy: something listens there but does not answer /v1/models with a model "
            f"list ({found.detail}), and moodbench did not start it. Choose another --port."
        )
    # nothing listening
    if ours:
        if opts.reuse:
            _plain(console, f"Replacing the server moodbench started for {where} (pid {state['pid']}): "
                            f"it is not listening.", style="yellow")
            _stop_recorded(state)
            return "start"
        raise ServeConfigError(
            f"a vLLM server moodbench started for {where} (pid {state['pid']}) is still starting "
            f"(log: {state.get('log')}). Wait for it, pass --reuse to replace it, or --stop it."
        )
    if state is not None:
        _remove_state(spec.port)  # stale record of a server that is gone
    return "start"


def _stop_recorded(state: Mapping, grace: float = STOP_GRACE_S) -> None:
    pid = int(state["pid"])
    if state.get("port") is not None:
        _remove_state(int(state["port"]), pid)
    if state_process_alive(state):
        terminate_group(pid, int(state.get("pgid") or pid), grace=grace)


def _wait_port_free(spec: LaunchSpec, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and port_open(spec.connect_host, spec.port, timeout=0.5):
        time.sleep(0.2)


def _start(spec: LaunchSpec) -> subprocess.Popen:
    spec.log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(spec.log_path, "wb") as log:
        log.write(f"# moodbench: {spec.display()}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            spec.argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **spec.env},
            start_new_session=True,  # own process group: Ctrl-C is ours to forward, killpg stops workers
        )
    _write_state(spec, proc)
    return proc


def _report_death(r: _Running, console, when: str) -> None:
    _error(console, f"vLLM replica {r.spec.replica} (port {r.spec.port}) exited with code "
                    f"{r.proc.returncode} {when}. Last lines of {r.spec.log_path}:")
    _plain(console, log_tail(r.spec.log_path))


def _check_gpus(specs: list[LaunchSpec], opts: ServeOptions, console) -> None:
    """Warn (only) when nvidia-smi shows fewer GPUs than the replicas need."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") or not shutil.which("nvidia-smi"):
        return
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return
    have = sum(1 for line in out.splitlines() if line.startswith("GPU "))
    need = len(specs) * max(1, opts.tensor_parallel)
    if have and have < need:
        _plain(console, f"Warning: {len(specs)} replica(s) x tensor-parallel {opts.tensor_parallel} "
                        f"need {need} GPUs; nvidia-smi lists {have}.", style="yellow")


def _run_foreground(specs: list[LaunchSpec], opts: ServeOptions, console) -> int:
    started: list[_Running] = []
    kept: list[LaunchSpec] = []
    previous = previous_int = None
    try:
        previous = signal.signal(signal.SIGTERM, _sigterm_to_interrupt)
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # inherited from a shell's background job
            previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    except ValueError:  # not the main thread
        previous = None
    try:
        try:
            plan = [(spec, _decide(spec, opts, console)) for spec in specs]
        except ServeConfigError as exc:
            _error(console, str(exc))
            return exc.exit_code
        to_start = [spec for spec, what in plan if what == "start"]
        kept = [spec for spec, what in plan if what == "keep"]
        if to_start:
            exe = to_start[0].argv[0]
            if not (shutil.which(exe) or (os.sep in exe and os.access(exe, os.X_OK))):
                _error(console, f"`{exe}` was not found. Install vLLM (pip install vllm, on a CUDA "
                                f"machine) or set MOODBENCH_VLLM_BIN to its executable.")
                return 2
            _check_gpus(to_start, opts, console)
        for spec in to_start:
            _plain(console, f"Starting replica {spec.replica} (log: {spec.log_path}): {spec.display()}", style="dim")
            started.append(_Running(spec, _start(spec)))
        if started:
            rc = _wait_all_ready(started, opts, console)
            if rc:
                return rc
        _print_ready(specs, started, kept, console)
        if not started:
            _plain(console, "Nothing was started here, so there is nothing to keep in the foreground.")
            return 0
        _plain(console, "Press Ctrl-C to stop the server(s) started here.", style="dim")
        return _monitor(started, console)
    except KeyboardInterrupt:
        if started:
            _plain(console, f"Stopping {len(started)} vLLM server(s)...")
        return 0
    finally:
        _stop_started(started)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if previous_int is not None:
            signal.signal(signal.SIGINT, previous_int)


def _stop_started(started: list[_Running]) -> None:
    """Stop what this command started; a second Ctrl-C while waiting kills at once."""
    grace = STOP_GRACE_S
    for r in started:
        try:
            if r.proc.poll() is None:
                terminate_group(r.proc.pid, r.proc.pid, proc=r.proc, grace=grace)
        except KeyboardInterrupt:
            grace = 0.0
            killpg(r.proc.pid, signal.SIGKILL)
            r.proc.wait()
        finally:
            killpg(r.proc.pid, signal.SIGKILL)  # no-op unless workers outlived their leader
            _remove_state(r.spec.port, r.proc.pid)


def _sigterm_to_interrupt(signum, frame):
    raise KeyboardInterrupt


def _wait_all_ready(started: list[_Running], opts: ServeOptions, console) -> int:
    t0 = time.monotonic()
    deadline = t0 + float(opts.startup_timeout)
    model = started[0].spec.model
    with console.status(f"Starting vLLM ({model})...") as status:
        while True:
            for r in started:
                if r.ready:
                    continue
                if r.proc.poll() is not None:
                    status.stop()
                    _report_death(r, console, "during start-up")
                    return 1
                try:
                    models = list_models(r.spec.base_url, timeout=2.0, api_key=r.spec.api_key)
                except AuthRequired as exc:
                    status.stop()
                    _error(console, f"{exc}. Give the key with `-- --api-key KEY` or VLLM_API_KEY.")
                    return 1
                except HealthError:
                    continue
                if models:
                    r.ready = True
                    if r.spec.served_model not in models:
                        _plain(console, f"Warning: replica {r.spec.replica} lists {models}, not "
                                        f"{r.spec.served_model}.", style="yellow")
            n_ready = sum(r.ready for r in started)
            if n_ready == len(started):
                return 0
            elapsed = time.monotonic() - t0
            if time.monotonic() > deadline:
                status.stop()
                for r in started:
                    if not r.ready:
                        _error(console, f"vLLM replica {r.spec.replica} (port {r.spec.port}) did not "
                                        f"answer /v1/models within {opts.startup_timeout:g}s "
                                        f"(--startup-timeout). Last lines of {r.spec.log_path}:")
                        _plain(console, log_tail(r.spec.log_path))
                return 1
            status.update(f"Starting vLLM ({model}): {n_ready}/{len(started)} ready, {elapsed:.0f}s")
            time.sleep(0.25)


def _print_ready(specs: list[LaunchSpec], started: list[_Running], kept: list[LaunchSpec], console) -> None:
    pids = {r.spec.port: r.proc.pid for r in started}
    _plain(console, f"vLLM is serving {specs[0].served_model}:", style="bold green")
    for s in specs:
        how = f"pid {pids[s.port]}" if s.port in pids else "reused"
        _plain(console, f"  {s.base_url}  ({how}, log: {s.log_path})")
    if specs[0].host in ("0.0.0.0", "::"):  # noqa: S104 - recognising a wildcard bind, not binding one
        import socket

        _plain(console, f"  (listening on all interfaces: other machines use http://{socket.getfqdn()}:PORT/v1)")
    _plain(console, "Run the benchmark against it with:")
    _plain(console, "  " + run_command_line(specs))


def _monitor(started: list[_Running], console) -> int:
    while True:
        for r in started:
            if r.proc.poll() is None:
                continue
            if read_state(r.spec.port) is None:  # removed by `moodbench serve --stop`
                _plain(console, f"Replica {r.spec.replica} (port {r.spec.port}) was stopped with --stop; "
                                f"stopping the rest.")
                return 0
            _report_death(r, console, "while serving")
            return 1
        time.sleep(0.5)


# ----------------------------------------------------------------------------- --stop


def recorded_servers() -> list[dict]:
    out = []
    for path in sorted(state_dir().glob("vllm-*.json")):
        data = _read_state_file(path)
        suffix = path.stem.split("-", 1)[1]
        if data is not None and suffix.isdigit():
            data["port"] = int(suffix)  # the file name is what _remove_state uses
            out.append(data)
    return out


def stop_vllm(opts: ServeOptions, console, grace: float = STOP_GRACE_S) -> int:
    """Stop the servers recorded in the state dir: all of them, or those on
    ``opts.port .. opts.port + replicas - 1`` when a port is given, and only those serving
    ``opts.model`` when a model is given."""
    servers = recorded_servers()
    if opts.port is not None:
        ports = set(range(int(opts.port), int(opts.port) + max(1, int(opts.replicas or 1))))
        servers = [s for s in servers if s.get("port") in ports]
    if opts.model:
        servers = [s for s in servers if opts.model in (s.get("model"), s.get("served_model"))]
    if not servers:
        _plain(console, f"No vLLM servers recorded in {state_dir()}"
                        + (f" for port {opts.port}" if opts.port is not None else "") + ".")
        return 0
    for s in servers:
        alive = state_process_alive(s)
        if alive:
            _stop_recorded(s, grace=grace)
            _plain(console, f"Stopped vLLM on port {s['port']} (pid {s['pid']}, {s.get('model')}).")
        else:
            _remove_state(int(s["port"]))
            _plain(console, f"Removed the stale record for port {s['port']} (pid {s['pid']} is gone).")
    return 0
