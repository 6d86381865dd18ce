"""``moodbench serve --backend vllm`` in the foreground: decide, start, wait, print, monitor, stop.

The command half of :mod:`moodbench.serve.vllm` (which builds the commands, records and stops
servers): everything here prints for the user or maps a failure to an exit code.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass

from moodbench._util.exitcodes import ExitCode, Interrupted, exit_code_of
from moodbench._util.proc import killpg, terminate_group
from moodbench.cli._exit import say
from moodbench.serve.health import AuthRequired, HealthError, list_models, probe
from moodbench.serve.options import ServeOptions
from moodbench.serve.parsers import resolve_parsers, unknown_parser_warnings
from moodbench.serve.vllm import (
    STOP_GRACE_S,
    LaunchSpec,
    ServeConfigError,
    build_vllm_commands,
    log_tail,
    read_state,
    recorded_servers,
    remove_state,
    run_command_line,
    start_replica,
    state_dir,
    state_process_alive,
    stop_recorded,
    wait_port_free,
)


def _error(console, text: str) -> None:
    say(console, f"Error: {text}", style="bold red")


def _print_dry_run(specs: list[LaunchSpec], console) -> None:
    say(console, f"# dry run: would start {len(specs)} vLLM server(s); nothing was started")
    for s in specs:
        say(console, f"# replica {s.replica}: {s.base_url}  (log: {s.log_path})")
        say(console, s.display())
    say(console, "# then:")
    say(console, run_command_line(specs))


def serve_vllm(opts: ServeOptions, console) -> int:
    """The whole ``moodbench serve --backend vllm`` command; returns the exit code."""
    if opts.stop:
        return stop_vllm(opts, console)
    if opts.skypilot is not None:
        from moodbench.cli._serve import serve_skypilot

        return serve_skypilot(opts, console)
    try:
        specs = build_vllm_commands(opts)
    except ServeConfigError as exc:
        _error(console, str(exc))
        return ExitCode.USAGE
    for warning in unknown_parser_warnings(resolve_parsers(opts.model or "", opts.tool_call_parser, opts.reasoning_parser)):
        say(console, f"Warning: {warning}", style="yellow")
    if opts.dry_run:
        _print_dry_run(specs, console)
        return ExitCode.OK
    return _run_foreground(specs, opts, console)


@dataclass
class _Running:
    spec: LaunchSpec
    proc: subprocess.Popen
    ready: bool = False


def _decide(spec: LaunchSpec, opts: ServeOptions, console) -> str:
    """ "keep" (reuse the healthy server on the port) or "start"; ServeConfigError otherwise.
    With --reuse, a server moodbench started that is not answering is stopped here."""
    state = read_state(spec.port) or {}
    ours = bool(state) and state_process_alive(state)
    found = probe(spec.base_url, api_key=spec.api_key)
    where = f"port {spec.port} ({spec.base_url})"
    if found.state == "serving":
        if spec.served_model in found.models:
            if opts.reuse:
                who = f" (pid {state['pid']}, started by moodbench)" if ours else ""
                say(console, f"Reusing the server on {where}{who}: it already serves {spec.served_model}.")
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
            say(
                console,
                f"Replacing the server moodbench started on {where} (pid {state['pid']}): "
                f"it accepts connections but does not answer /v1/models ({found.detail}).",
                style="yellow",
            )
            stop_recorded(state)
            wait_port_free(spec)
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
            say(
                console,
                f"Replacing the server moodbench started for {where} (pid {state['pid']}): it is not listening.",
                style="yellow",
            )
            stop_recorded(state)
            return "start"
        raise ServeConfigError(
            f"a vLLM server moodbench started for {where} (pid {state['pid']}) is still starting "
            f"(log: {state.get('log')}). Wait for it, pass --reuse to replace it, or --stop it."
        )
    if state is not None:
        remove_state(spec.port)  # stale record of a server that is gone
    return "start"


def _report_death(r: _Running, console, when: str) -> None:
    _error(
        console,
        f"vLLM replica {r.spec.replica} (port {r.spec.port}) exited with code "
        f"{r.proc.returncode} {when}. Last lines of {r.spec.log_path}:",
    )
    say(console, log_tail(r.spec.log_path))


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
        say(
            console,
            f"Warning: {len(specs)} replica(s) x tensor-parallel {opts.tensor_parallel} "
            f"need {need} GPUs; nvidia-smi lists {have}.",
            style="yellow",
        )


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
            return ExitCode.USAGE
        to_start = [spec for spec, what in plan if what == "start"]
        kept = [spec for spec, what in plan if what == "keep"]
        if to_start:
            exe = to_start[0].argv[0]
            if not (shutil.which(exe) or (os.sep in exe and os.access(exe, os.X_OK))):
                _error(
                    console,
                    f"`{exe}` was not found. Install vLLM (pip install vllm, on a CUDA "
                    f"machine) or set MOODBENCH_VLLM_BIN to its executable.",
                )
                return ExitCode.USAGE
            _check_gpus(to_start, opts, console)
        for spec in to_start:
            say(console, f"Starting replica {spec.replica} (log: {spec.log_path}): {spec.display()}", style="dim")
            started.append(_Running(spec, start_replica(spec)))
        if started:
            rc = _wait_all_ready(started, opts, console)
            if rc:
                return rc
        _print_ready(specs, started, kept, console)
        if not started:
            say(console, "Nothing was started here, so there is nothing to keep in the foreground.")
            return ExitCode.OK
        say(console, "Press Ctrl-C to stop the server(s) started here.", style="dim")
        return _monitor(started, console)
    except KeyboardInterrupt as exc:
        if started:
            say(console, f"Stopping {len(started)} vLLM server(s)...")
        return exit_code_of(exc)
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
            remove_state(r.spec.port, r.proc.pid)


def _sigterm_to_interrupt(signum, frame):
    raise Interrupted(signum)


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
                    return ExitCode.FAILED
                try:
                    models = list_models(r.spec.base_url, timeout=2.0, api_key=r.spec.api_key)
                except AuthRequired as exc:
                    status.stop()
                    _error(console, f"{exc}. Give the key with `-- --api-key KEY` or VLLM_API_KEY.")
                    return ExitCode.FAILED
                except HealthError:
                    continue
                if models:
                    r.ready = True
                    if r.spec.served_model not in models:
                        say(
                            console,
                            f"Warning: replica {r.spec.replica} lists {models}, not {r.spec.served_model}.",
                            style="yellow",
                        )
            n_ready = sum(r.ready for r in started)
            if n_ready == len(started):
                return ExitCode.OK
            elapsed = time.monotonic() - t0
            if time.monotonic() > deadline:
                status.stop()
                for r in started:
                    if not r.ready:
                        _error(
                            console,
                            f"vLLM replica {r.spec.replica} (port {r.spec.port}) did not "
                            f"answer /v1/models within {opts.startup_timeout:g}s "
                            f"(--startup-timeout). Last lines of {r.spec.log_path}:",
                        )
                        say(console, log_tail(r.spec.log_path))
                return ExitCode.FAILED
            status.update(f"Starting vLLM ({model}): {n_ready}/{len(started)} ready, {elapsed:.0f}s")
            time.sleep(0.25)


def _print_ready(specs: list[LaunchSpec], started: list[_Running], kept: list[LaunchSpec], console) -> None:
    pids = {r.spec.port: r.proc.pid for r in started}
    say(console, f"vLLM is serving {specs[0].served_model}:", style="bold green")
    for s in specs:
        how = f"pid {pids[s.port]}" if s.port in pids else "reused"
        say(console, f"  {s.base_url}  ({how}, log: {s.log_path})")
    if specs[0].host in ("0.0.0.0", "::"):  # noqa: S104 - recognising a wildcard bind, not binding one
        import socket

        say(console, f"  (listening on all interfaces: other machines use http://{socket.getfqdn()}:PORT/v1)")
    say(console, "Run the benchmark against it with:")
    say(console, "  " + run_command_line(specs))


def _monitor(started: list[_Running], console) -> int:
    while True:
        for r in started:
            if r.proc.poll() is None:
                continue
            if read_state(r.spec.port) is None:  # removed by `moodbench serve --stop`
                say(console, f"Replica {r.spec.replica} (port {r.spec.port}) was stopped with --stop; stopping the rest.")
                return ExitCode.OK
            _report_death(r, console, "while serving")
            return ExitCode.FAILED
        time.sleep(0.5)


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
        say(
            console,
            f"No vLLM servers recorded in {state_dir()}" + (f" for port {opts.port}" if opts.port is not None else "") + ".",
        )
        return ExitCode.OK
    for s in servers:
        alive = state_process_alive(s)
        if alive:
            stop_recorded(s, grace=grace)
            say(console, f"Stopped vLLM on port {s['port']} (pid {s['pid']}, {s.get('model')}).")
        else:
            remove_state(int(s["port"]))
            say(console, f"Removed the stale record for port {s['port']} (pid {s['pid']} is gone).")
    return ExitCode.OK
