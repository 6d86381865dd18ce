"""An OpenAI-compatible model server on 127.0.0.1 for a GGUF file: llama.cpp's ``llama-server``.

Why ``llama-server`` (the C++ one, built by :mod:`moodbench.serve.install`) rather than the Python
``llama_cpp.server`` or a layer of our own over ``llama-cpp-python`` (measured on 2 CPU cores with
Qwen2.5-Coder-0.5B; see the serve notes in the report):

* tau2's agent sends the standard multi-turn tool conversation: an assistant turn with
  ``content: null`` + ``tool_calls`` (arguments as a JSON string) followed by ``tool`` results.
  ``llama_cpp.server`` answers that with HTTP 500; ``llama-server --jinja`` renders it with the model's
  own chat template (arguments decoded to objects first, so the Qwen template does not double-encode).
* ``--parallel N --kv-unified`` keeps N slots in one shared KV pool and ``--cache-ram`` (default 8 GiB)
  keeps idle slots' prompts in RAM: tau2's agent prompt and the simulated customer's prompt are each
  processed once per conversation, not on every turn. A 1,730-token system prompt took 15-23 s cold
  and ~0.03 s on the next turn, also after another prompt was served in between.
* The Python binding keeps a single context; switching between the agent's and the customer's prompt
  would re-process thousands of tokens on every turn (or need a state cache we would have to build).

``llama-server``'s own handling of ``tool_choice`` is not enough for small models: "required" lets the
model write free text before the first ``<tool_call>`` (Qwen2.5-Coder-0.5B wrote a bare JSON call plus
prose and hit max_tokens with no tool call), and a named function is silently treated as "auto". So by
default a small in-process HTTP front (:class:`_Front`) listens on the public port; it turns
"required"/named into a grammar-forced call (see :func:`plan_chat_request`) and relays every other
request and response, streams included, unchanged.

Tool calls that small models write as plain text under "auto" (bare JSON, fenced blocks) stay text
here; the client side (``moodbench.llm``) recovers them, because only it knows which tool names are real.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Self

from moodbench._util.proc import log_tail as _log_tail
from moodbench._util.proc import terminate_group
from moodbench.serve._forced import ForcedCall, finish_forced_response, plan_chat_request
from moodbench.serve._front import _Front
from moodbench.serve.install import llama_server_path
from moodbench.serve.models import (
    cache_root,
)

__all__ = [
    "ForcedCall",
    "LlamaCppServer",
    "LlamaCppServerError",
    "finish_forced_response",
    "plan_chat_request",
]

DEFAULT_PORT = 8080


class LlamaCppServerError(RuntimeError):
    """The server failed to start or died; the message includes the tail of its log."""


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
        return False


def _alias_for(model_path: Path) -> str:
    """The name /v1/models reports and clients send: the file stem (``qwen2.5-0.5b`` for built-ins)."""
    return model_path.name.removesuffix(".gguf") or "local-model"


def _die_with_parent_fn() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the kernel SIGTERM llama-server when we die (Linux only).

    Why: the server runs in its own session, so a SIGKILLed or SIGTERMed parent (Python's default SIGTERM
    runs no cleanup) would otherwise leave an orphan holding ~0.8 GB and a port - seen in practice with
    ``timeout`` around a script. ``PR_SET_PDEATHSIG`` fires when the *thread* that started the child
    exits, so it is only armed when starting from the main thread; other threads rely on stop()/atexit.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before fork: no dlopen in the child
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def arm() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return arm


class LlamaCppServer:
    """A ``llama-server`` child process (own process group, log to a file) plus the optional front.

    Use as a context manager (``with LlamaCppServer(path) as srv: ... srv.base_url``) or call
    :meth:`start` / :meth:`stop`. ``ctx`` is the shared KV pool: with ``--kv-unified`` any single
    conversation may use all of it, and ``parallel`` slots keep that many prompts cached at once
    (tau2 with one local model for agent and customer uses two slots per concurrent conversation).
    ``cache_ram_mib`` caps the RAM copy of idle slots' prompts. ``front=False`` serves llama-server
    directly on ``port`` (then a named ``tool_choice`` behaves like "auto" and "required" is weak).

    ``control_vectors`` steers every reply of this server: ``(file, scale)`` pairs (control vectors from
    :func:`moodbench.steer.build_vector`) become ``--control-vector-scaled FILE:SCALE``, applied on
    ``control_vector_layers`` (``--control-vector-layer-range A B``, inclusive; default: llama.cpp's,
    all layers). The vectors act on the whole server, so a run steers one customer variant per server.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        host: str = "127.0.0.1",
        port: int | None = None,
        ctx: int = 16384,
        threads: int | None = None,
        parallel: int = 4,
        log_path: str | os.PathLike[str] | None = None,
        *,
        alias: str | None = None,
        front: bool = True,
        binary: str | os.PathLike[str] | None = None,
        cache_ram_mib: int = 2048,
        extra_args: Sequence[str] = (),
        control_vectors: Sequence[tuple[str | os.PathLike[str], float]] = (),
        control_vector_layers: tuple[int, int] | None = None,
    ) -> None:
        self.model_path = Path(model_path)
        self.host = host
        self.port = port if port else _free_port(host)
        self.ctx = ctx
        self.threads = threads
        self.parallel = parallel
        self.alias = alias or _alias_for(self.model_path)
        self.front_enabled = front
        self.binary = Path(binary) if binary else None
        self.cache_ram_mib = cache_ram_mib
        self.extra_args = list(extra_args)
        self.control_vectors = [(Path(f), float(scale)) for f, scale in control_vectors]
        self.control_vector_layers = control_vector_layers
        for f, _ in self.control_vectors:
            if any(c in str(f) for c in ",:"):  # llama-server splits FILE:SCALE,... at these characters
                raise ValueError(f"control vector path {f} contains ',' or ':', which --control-vector-scaled cannot parse")
        if control_vector_layers is not None and not (1 <= control_vector_layers[0] <= control_vector_layers[1]):
            raise ValueError(f"control_vector_layers {control_vector_layers} must be (start, end) with 1 <= start <= end")
        self.log_path = Path(log_path) if log_path else cache_root() / "logs" / f"llama-server-{self.port}.log"
        self.model_name: str = self.alias
        self._proc: subprocess.Popen[bytes] | None = None
        self._front: _Front | None = None
        self._backend_port: int | None = None
        self._log_fh: Any = None

    # -- properties
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def backend_url(self) -> str:
        """llama-server itself (bypassing the front): what the front forwards to."""
        return f"http://{self.host}:{self._backend_port}/v1"

    def command(self) -> list[str]:
        """The llama-server argv (no shell)."""
        binary = self.binary or llama_server_path()
        port = self._backend_port or self.port
        cmd = [
            str(binary),
            "--model", str(self.model_path),
            "--host", self.host,
            "--port", str(port),
            "--ctx-size", str(self.ctx),
            "--parallel", str(self.parallel),
            "--kv-unified",  # one KV pool: a long tau2 prompt may use all of ctx, not ctx/parallel
            "--jinja",  # the model's own chat template: renders tool_calls / tool turns, parses <tool_call>
            "--alias", self.alias,
            "--no-webui",
            # RAM cache of idle slots' prompts (restored instead of re-processed). llama-server's default
            # is 8 GiB per server, which a long run with several servers could actually fill on a laptop.
            "--cache-ram", str(self.cache_ram_mib),
        ]  # fmt: skip
        if self.threads:
            cmd += ["--threads", str(self.threads)]
        for f, scale in self.control_vectors:
            cmd += ["--control-vector-scaled", f"{f}:{scale:g}"]
        if self.control_vectors and self.control_vector_layers is not None:
            cmd += ["--control-vector-layer-range", str(self.control_vector_layers[0]), str(self.control_vector_layers[1])]
        return cmd + self.extra_args

    # -- lifecycle
    def start(self, timeout: float = 300.0) -> LlamaCppServer:
        """Start and wait until ``/v1/models`` answers 200 (model loaded); raises with the log tail."""
        if self._proc is not None:
            return self
        if not self.model_path.is_file():
            raise LlamaCppServerError(f"model file not found: {self.model_path}")
        for f, _ in self.control_vectors:
            if not f.is_file():
                raise LlamaCppServerError(f"control vector not found: {f} (build it with: moodbench steer build)")
        if self.front_enabled:
            self._front = _Front(self.host, self.port, ("127.0.0.1", 1))  # binds the public port now: fails fast
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_fh = open(self.log_path, "ab")
        atexit.register(self.stop)
        try:
            # The internal port is picked free, but another process may grab it before llama-server binds
            # (tests and runs start servers concurrently): retry that case with a fresh port.
            for attempt in range(3):
                self._backend_port = _free_port(self.host) if self._front is not None else self.port
                if self._front is not None:
                    self._front.upstream = (self.host, self._backend_port)
                if self._launch_and_wait(timeout) or self._front is None or attempt == 2:
                    break
            if self._proc is None:
                raise LlamaCppServerError(f"llama-server could not bind a port.\n{self.log_tail()}")
            if self._front is not None:
                self._front.start()
        except BaseException:
            self.stop()
            raise
        return self

    def _launch_and_wait(self, timeout: float) -> bool:
        """Start llama-server; True once ready, False if it exited because its port was taken."""
        cmd = self.command()
        start_offset = self._log_fh.tell()
        self._log_fh.write(("\n$ " + " ".join(cmd) + "\n").encode())
        self._log_fh.flush()
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log_fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us, not the server: we stop it in order
            preexec_fn=_die_with_parent_fn(),  # noqa: PLW1509 - only a pre-resolved prctl call runs in the child
        )
        try:
            self._wait_ready(timeout)
            return True
        except LlamaCppServerError:
            with open(self.log_path, "rb") as fh:
                fh.seek(start_offset)
                port_taken = b"couldn't bind" in fh.read()
            if self._proc is not None and self._proc.poll() is not None and port_taken:
                self._proc = None
                return False
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise LlamaCppServerError(
                    f"llama-server exited with code {self._proc.returncode} while starting.\n{self.log_tail()}"
                )
            try:
                conn = http.client.HTTPConnection(self.host, self._backend_port, timeout=2)
                conn.request("GET", "/v1/models")
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                if resp.status == 200:
                    ids = [m.get("id") for m in json.loads(data).get("data", []) if isinstance(m, dict)]
                    if ids and ids[0]:
                        self.model_name = str(ids[0])
                    return
                last = f"HTTP {resp.status}"
            except (OSError, ValueError) as e:
                last = type(e).__name__
            time.sleep(0.25)
        raise LlamaCppServerError(f"llama-server not ready after {timeout:.0f}s ({last}).\n{self.log_tail()}")

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL after ``timeout``; idempotent."""
        if self._front is not None:
            with contextlib.suppress(Exception):
                self._front.stop()
            self._front = None
        proc, self._proc = self._proc, None
        if proc is not None:
            terminate_group(proc.pid, proc.pid, proc=proc, grace=timeout)
        if self._log_fh is not None:
            with contextlib.suppress(OSError):
                self._log_fh.close()
            self._log_fh = None
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's log (read from its last 64 KiB, however long the log grew)."""
        if not self.log_path.exists():
            return f"(no log at {self.log_path})"
        text = _log_tail(self.log_path, lines)
        return f"--- last {min(lines, len(text.splitlines()))} lines of {self.log_path} ---\n{text}"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.alive() else "stopped"
        return f"LlamaCppServer({self.model_path.name}, {self.base_url}, {state})"
