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
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from moodbench._util.errors import UsageError
from moodbench._util.paths import cache_root
from moodbench._util.proc import log_tail as _log_tail
from moodbench._util.proc import pid_alive, terminate_group

from .health import port_open
from .options import ServeOptions
from .parsers import UnknownModelFamily, resolve_parsers

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


class ServeConfigError(UsageError):
    """A usage problem (bad options, a taken port): exit code 2 like every UsageError; nothing was started."""


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


def remove_state(port: int, pid: int | None = None) -> None:
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
    return [",".join(ids[i * tp : (i + 1) * tp]) for i in range(replicas)]


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
                f"{flag} after `--` would override what moodbench sets; use moodbench's {_OWNED_FLAGS[flag]} option instead."
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
        argv = [
            *exe,
            "serve",
            model,
            "--host",
            opts.host,
            "--port",
            str(p),
            "--enable-auto-tool-choice",
            "--tool-call-parser",
            parsers.tool_parser,
        ]
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
        specs.append(
            LaunchSpec(
                replica=i,
                model=model,
                served_model=served,
                host=opts.host,
                port=p,
                argv=argv,
                env=env,
                log_path=log_dir / f"vllm-{p}.log",
                api_key=api_key,
            )
        )
    return specs


def run_command_line(specs: list[LaunchSpec]) -> str:
    """The ready-to-paste ``moodbench run`` line for these servers."""
    urls = ",".join(s.base_url for s in specs)
    return f"moodbench run --agent-model {shlex.quote('hosted_vllm/' + specs[0].served_model)} --agent-base-url {urls}"


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


def stop_recorded(state: Mapping, grace: float = STOP_GRACE_S) -> None:
    pid = int(state["pid"])
    if state.get("port") is not None:
        remove_state(int(state["port"]), pid)
    if state_process_alive(state):
        terminate_group(pid, int(state.get("pgid") or pid), grace=grace)


def wait_port_free(spec: LaunchSpec, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and port_open(spec.connect_host, spec.port, timeout=0.5):
        time.sleep(0.2)


def start_replica(spec: LaunchSpec) -> subprocess.Popen:
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
