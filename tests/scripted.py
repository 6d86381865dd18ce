"""Start the scripted OpenAI-compatible server as a real subprocess for a test.

Lives outside conftest.py so any test (or benchmark) can import it directly:

    from scripted import start_scripted_server   # tests/ is on pytest's pythonpath (pyproject.toml)

    with start_scripted_server({"roles": {...}}, tmp_path) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="x")
        ...
        assert srv.requests(role="agent")[0]["turn"] == 0

A real process (not an in-process app) is the point: clients go through real
sockets, connection pools and retries, exactly as they would against vLLM or
llama.cpp.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

REPO_ROOT = Path(__file__).resolve().parent.parent
SRC_DIR = REPO_ROOT / "src"
_counter = itertools.count()
CLI = [sys.executable, "-m", "moodbench.cli"]  # the one spelling of "run the moodbench command" in tests


def run_cli(
    *args: object, extra_env: dict[str, str] | None = None, timeout: float = 120, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """``moodbench ARGS...`` as a real subprocess with :func:`cli_env`, text output captured, never raising on a
    non-zero exit (tests assert the exit code)."""
    kwargs.setdefault("env", cli_env(extra_env))
    return subprocess.run([*CLI, *(str(a) for a in args)], capture_output=True, text=True, timeout=timeout, check=False, **kwargs)


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a ``moodbench`` subprocess in a test: this checkout's sources first, litellm's
    bundled cost map (offline), loopback never proxied, matplotlib headless; ``extra`` on top."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC_DIR), env.get("PYTHONPATH", "")) if p)
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.setdefault("MPLBACKEND", "Agg")
    env.update(extra or {})
    return env


@dataclass
class ScriptedServer:
    """Handle on one running server; usable directly or as a context manager that stops it."""

    process: subprocess.Popen[bytes]
    host: str
    port: int
    script_path: Path
    request_log: Path
    output_path: Path

    @property
    def root_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What an OpenAI client / litellm ``api_base`` wants."""
        return f"{self.root_url}/v1"

    def requests(self, role: str | None = None) -> list[dict[str, Any]]:
        """Logged chat requests in arrival order: ``{"n", "role", "turn", "status", "fault", "body", "response", "t"}``."""
        if not self.request_log.exists():
            return []
        entries = []
        with self.request_log.open(encoding="utf-8") as fh:
            for line in fh:
                if not line.endswith("\n"):
                    break  # the server is mid-write; the entry is not complete yet
                entry = json.loads(line)
                if role is None or entry["role"] == role:
                    entries.append(entry)
        return entries

    def bodies(self, role: str | None = None) -> list[dict[str, Any]]:
        """Just the request JSON bodies the server received (optionally for one role)."""
        return [entry["body"] for entry in self.requests(role)]

    def stats(self) -> dict[str, Any]:
        """The server's ``GET /stats`` (counts by role/status/fault, in-flight high-water mark)."""
        # A no-proxy opener: an HTTP(S)_PROXY in the environment must not capture loopback traffic.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"{self.root_url}/stats", timeout=10) as resp:
            return json.loads(resp.read())

    def output(self) -> str:
        """The server's stdout/stderr so far (useful in assertion messages)."""
        try:
            return self.output_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL if it lingers; idempotent."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        return self.process.returncode

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_scripted_server(
    script: dict[str, Any],
    tmp_path: Path,
    *,
    host: str = "127.0.0.1",
    startup_timeout: float = 20.0,
    extra_args: list[str] | None = None,
) -> ScriptedServer:
    """Write ``script`` to ``tmp_path``, launch the server (no shell) and wait until it listens.

    Several servers may share one ``tmp_path``; each gets its own numbered files.
    Raises RuntimeError with the server's output if it exits or never binds.
    """
    tmp_path = Path(tmp_path)
    tmp_path.mkdir(parents=True, exist_ok=True)
    tag = f"scripted-{os.getpid()}-{next(_counter)}"
    script_path = tmp_path / f"{tag}.json"
    port_file = tmp_path / f"{tag}.port"
    request_log = tmp_path / f"{tag}.requests.jsonl"
    output_path = tmp_path / f"{tag}.out"
    script_path.write_text(json.dumps(script, indent=1), encoding="utf-8")

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC_DIR), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    cmd = [
        sys.executable,
        "-m",
        "moodbench.testing.scripted_server",
        "--script",
        str(script_path),
        "--host",
        host,
        "--port",
        "0",
        "--port-file",
        str(port_file),
        "--request-log",
        str(request_log),
        "--exit-with-parent",
        *(extra_args or []),
    ]
    with output_path.open("wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + startup_timeout
    while True:
        if port_file.exists():
            text = port_file.read_text(encoding="utf-8").strip()
            if text:
                return ScriptedServer(process, host, int(text), script_path, request_log, output_path)
        if process.poll() is not None:
            raise RuntimeError(
                f"scripted server exited with {process.returncode} before listening:\n"
                + output_path.read_text(encoding="utf-8", errors="replace")
            )
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise RuntimeError(
                f"scripted server did not listen within {startup_timeout}s:\n"
                + output_path.read_text(encoding="utf-8", errors="replace")
            )
        time.sleep(0.02)


def scripted_client(
    base_urls: str | tuple[str, ...],
    health: Any = None,
    *,
    model: str = "openai/scripted",
    backoff_base_s: float = 0.001,
    backoff_max_s: float = 0.01,
    **spec: Any,
) -> Any:
    """moodbench's model client for a scripted server (or several), with backoffs short enough for tests;
    ``spec``: other :class:`moodbench.llm.ModelSpec` fields (``transport``, ``timeout_s``...)."""
    from moodbench.llm import ModelClient, ModelSpec

    urls = (base_urls,) if isinstance(base_urls, str) else base_urls
    return ModelClient(
        ModelSpec(model=model, base_urls=urls, backoff_base_s=backoff_base_s, backoff_max_s=backoff_max_s, **spec), health
    )


def mock_run_args(url: str, out: Path, *extra: Any, tasks: str, variants: str) -> list[Any]:
    """``moodbench run`` arguments for tau2's mock domain against a scripted server at ``url`` (no preflight);
    ``extra`` flags go last."""
    return [
        "run",
        "--domain",
        "mock",
        "--task-ids",
        tasks,
        "--variants",
        variants,
        "--agent-model",
        "openai/scripted",
        "--agent-base-url",
        url,
        "--out",
        out,
        "--skip-preflight",
        *extra,
    ]
