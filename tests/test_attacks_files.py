"""The adversarial attack table: files, locks, secrets, symlinks, the viewer (issues 20 and 24, and round 1).

Every row of :data:`ATTACKS` is one attack a hostile or careless user tried on moodbench, with

- ``id``: a short name (the pytest id: ``pytest tests/test_attacks_files.py -k import-during-run``);
- ``item``: where it was reported (``20.1`` = issue 20, item 1; ``r1`` = the first hardening round);
- ``description``: what broke;
- ``reproduce``: the commands, in words, that someone can type to see it;
- ``must_hold``: what has to be true now;
- ``check``: a function ``(tmp_path, env) -> None`` that mounts the attack through the real CLI
  (``python -m moodbench.cli`` in a subprocess) against the real scripted server or a hostile server
  written for the row, and asserts ``must_hold``; or ``covered_by``: the test elsewhere in ``tests/``
  that does (the row then checks that test still exists).

To add an attack: write its check below (reuse :class:`Env`'s finished run, ``cli`` and the helpers),
append a row, run ``pytest tests/test_attacks_files.py -k YOUR-ID``, and make sure it fails on the code
before your fix. The other half of the pass (bounds, hangs, crafted inputs, tracebacks) keeps its rows in
its own table module; ids are unique across both.
"""

from __future__ import annotations

import hashlib
import http.server
import importlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from moodbench.testing.scripts import mock_example_script
from scripted import ScriptedServer, cli_env, mock_run_args, start_scripted_server

MOODBENCH = [sys.executable, "-m", "moodbench.cli"]
TASKS = "create_task_1,update_task_1"
LOCK = ".moodbench.lock"


# --------------------------------------------------------------------------- helpers


def cli(*args: Any, timeout: float = 240, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MOODBENCH, *[str(a) for a in args]],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env=cli_env({"MOODBENCH_BACKOFF_BASE_S": "0.01", **(env or {})}),
    )


def start(*args: Any, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*MOODBENCH, *[str(a) for a in args]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
        env=cli_env({"PYTHONUNBUFFERED": "1", "MOODBENCH_BACKOFF_BASE_S": "0.01", **(env or {})}),
    )


def run_args(url: str, out: Path, *extra: Any, tasks: str = TASKS, variants: str = "control,frustration") -> list[Any]:
    return mock_run_args(url, out, *extra, tasks=tasks, variants=variants)


def explain(res: subprocess.CompletedProcess[str]) -> str:
    return f"exit {res.returncode}\nstdout:\n{res.stdout[-3000:]}\nstderr:\n{res.stderr[-3000:]}"


def wait_for(predicate: Callable[[], Any], limit: float = 90.0, what: str = "condition") -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def digest_tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink() and p.name != LOCK
    }


def rows(run_dir: Path) -> int:
    con = sqlite3.connect(run_dir / "results.sqlite")
    try:
        return int(con.execute("SELECT COUNT(*) FROM simulations").fetchone()[0])
    finally:
        con.close()


def no_traceback(res: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in res.stderr + res.stdout, explain(res)


def leaked(key: str, *roots: Path) -> list[str]:
    return [str(p) for root in roots for p in root.rglob("*") if p.is_file() and key.encode() in p.read_bytes()]


@dataclass
class Env:
    """What the rows share: one finished run (2 tasks x control, frustration) and the server that ran it."""

    server: ScriptedServer
    run: Path
    scratch: Path

    def copy_run(self, dest: Path) -> Path:
        shutil.copytree(self.run, dest, symlinks=True)
        return dest


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("attacks")
    with start_scripted_server(mock_example_script(), root / "server") as srv:
        res = cli(*run_args(srv.base_url, root / "base"))
        assert res.returncode == 0, explain(res)
        yield Env(srv, root / "base", root)


# --------------------------------------------------------------------------- 20.1 - 20.4: data loss


def import_during_run(tmp_path: Path, env: Env) -> None:
    exported = tmp_path / "control.json"
    assert cli("export", env.run, "--variant", "control", "--out", exported).returncode == 0
    out = tmp_path / "run"
    with start_scripted_server(mock_example_script(latency_ms=1500), tmp_path / "slow") as srv:
        writer = start(
            *run_args(srv.base_url, out, "--concurrency", "1", "--trials", "8", tasks="create_task_1", variants="control")
        )
        try:
            wait_for(lambda: len(srv.requests()) >= 1, what="the run's first request")
            imp = cli("import", "--format", "tau2", "--out", out, f"{exported}=imported")
            assert writer.poll() is None, "the run ended before the import: the attack did not happen"
            stdout, stderr = writer.communicate(timeout=400)
        finally:
            if writer.poll() is None:
                writer.kill()
    assert imp.returncode == 2 and "being written by another moodbench run" in imp.stderr, explain(imp)
    no_traceback(imp)
    assert writer.returncode == 0, stderr[-3000:]
    assert rows(out) == 8  # every conversation the run stored is in its directory, none went to a deleted copy
    assert cli("import", "--format", "tau2", "--out", out, f"{exported}=imported").returncode == 0  # after the run: fine


def export_onto_store(tmp_path: Path, env: Env) -> None:
    run = env.copy_run(tmp_path / "run")
    before = digest_tree(run)
    for extra in ([], ["--force"]):
        res = cli("export", run, "--out", run / "results.sqlite", *extra)
        assert res.returncode == 2 and "own files" in res.stderr, explain(res)
        no_traceback(res)
    existing = tmp_path / "mine.json"
    existing.write_text("my notes")
    res = cli("export", run, "--out", existing)
    assert res.returncode == 2 and "already exists" in res.stderr and "--force" in res.stderr, explain(res)
    assert existing.read_text() == "my notes"
    assert digest_tree(run) == before
    forced = cli("export", run, "--out", existing, "--force")
    assert forced.returncode == 0, explain(forced)
    assert json.loads(existing.read_text())["simulations"]


def merge_into_foreign_dir(tmp_path: Path, env: Env) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "manifest.json").write_text('{"mine": true}')
    (out / "summary.json").write_text('{"mine": true}')
    (out / "events.jsonl").write_text('{"mine": 1}\n')
    before = digest_tree(out)
    res = cli("merge", out, env.run)
    assert res.returncode == 2 and "not empty" in res.stderr, explain(res)
    no_traceback(res)
    assert digest_tree(out) == before and sorted(p.name for p in out.iterdir()) == [
        "events.jsonl",
        "manifest.json",
        "summary.json",
    ]


def report_into_user_folder(tmp_path: Path, env: Env) -> None:
    mine = tmp_path / "docs"
    mine.mkdir()
    (mine / "report.html").write_text("my own page")
    (mine / "notes.txt").write_text("mine")
    before = digest_tree(mine)
    res = cli("report", env.run, "--out", mine)
    assert res.returncode == 2 and "not a moodbench report folder" in res.stderr, explain(res)
    assert digest_tree(mine) == before
    again = cli("report", env.run, "--out", tmp_path / "fresh")
    assert again.returncode == 0, explain(again)
    (tmp_path / "fresh" / "my-notes.txt").write_text("kept")  # an earlier report folder with a file of mine: rewritten, mine kept
    third = cli("report", env.run, "--out", tmp_path / "fresh")
    assert third.returncode == 0 and (tmp_path / "fresh" / "my-notes.txt").read_text() == "kept", explain(third)


def racing_runs_keep_the_lock(tmp_path: Path, env: Env) -> None:
    with start_scripted_server(mock_example_script(latency_ms=1500), tmp_path / "slow") as srv:
        for attempt in range(2):
            out = tmp_path / f"race-{attempt}"
            racers = [
                start(
                    *run_args(
                        srv.base_url, out, "--concurrency", "1", "--trials", "20", tasks="create_task_1", variants="control"
                    )
                )
                for _ in range(4)
            ]
            try:
                wait_for(lambda: sum(p.poll() is not None for p in racers) >= 3, limit=240, what="the losers to exit")
                losers = [p for p in racers if p.poll() is not None]
                winner = next(p for p in racers if p.poll() is None)
                for p in losers:
                    assert p.returncode == 2 and "being written by another moodbench run" in p.communicate()[1]
                assert (out / LOCK).exists(), "a refused run unlinked the winner's lock file"
                late = cli(*run_args(srv.base_url, out, "--trials", "20", tasks="create_task_1", variants="control"))
                assert late.returncode == 2 and f"pid {winner.pid}" in late.stderr, explain(late)
                assert winner.poll() is None, "the winner ended early: the race was not tested"
            finally:
                for p in racers:
                    if p.poll() is None:
                        p.kill()
                        p.wait()


# --------------------------------------------------------------------------- 20.5 - 20.7 and 24.8: secrets


def report_judge_url_masked(tmp_path: Path, env: Env) -> None:
    key = "sk-judge-" + os.urandom(6).hex()
    run = env.copy_run(tmp_path / "run")
    url = env.server.base_url.replace("http://", f"http://judge:{key}@")
    pages = cli("report", run, "--out", tmp_path / "report", "--judge-model", "openai/scripted", "--judge-base-url", url)
    as_json = cli("report", run, "--json", "--judge-model", "openai/scripted", "--judge-base-url", url)
    for res in (pages, as_json):
        assert res.returncode == 0, explain(res)
        assert key not in res.stdout + res.stderr
    assert json.loads(as_json.stdout)["runs"][0]["judge"]["base_url"].startswith("http://***@")
    assert {"report.json", "report.html", "report.md"} <= {p.name for p in (tmp_path / "report").iterdir()}
    assert leaked(key, tmp_path / "report", run) == []


def probe_json_masked(tmp_path: Path, env: Env) -> None:
    key = "sk-probe-" + os.urandom(6).hex()
    url = env.server.base_url.replace("http://", f"http://probe:{key}@")
    res = cli("probe", "--json", "--model", "openai/scripted", "--base-url", url, "--domain", "mock", "--threads", "2")
    assert res.returncode in (0, 1), explain(res)
    assert key not in res.stdout + res.stderr
    assert json.loads(res.stdout)["base_url"].startswith("http://***@")


def cloud_query_credentials(tmp_path: Path, env: Env) -> None:
    keys = {name: f"{name[:3].lower()}-{os.urandom(6).hex()}" for name in ("code", "sig", "X-Amz-Signature", "X-Goog-Signature")}
    query = "&".join(f"{k}={v}" for k, v in keys.items())
    out = tmp_path / "run"
    res = cli(
        *run_args(
            f"http://127.0.0.1:9/v1?{query}",
            out,
            "--max-retries",
            "0",
            "--max-consecutive-failures",
            "1",
            "--timeout",
            "2",
            tasks="create_task_1",
            variants="control",
        )
    )
    assert res.returncode == 4, explain(res)
    assert {"manifest.json", "events.jsonl", "results.sqlite", "summary.json"} <= {p.name for p in out.iterdir()}
    for value in keys.values():
        assert value not in res.stdout + res.stderr
        assert leaked(value, out) == []
    assert "code=***" in (out / "manifest.json").read_text()


def url_secret_in_a_server_error(tmp_path: Path, env: Env) -> None:
    """A server quoting a signed URL in its error (unknown to moodbench beforehand): masked in the stored
    error, events and output, by the one mask() every output goes through."""
    secret = "sv-" + os.urandom(8).hex()
    script = mock_example_script()
    script["roles"]["agent"]["turns"][1] = {"status": 401, "error": f"denied: https://blob.example/x?sv=1&sig={secret}"}
    out = tmp_path / "run"
    with start_scripted_server(script, tmp_path / "srv") as srv:
        res = cli(
            *run_args(
                srv.base_url,
                out,
                "--max-retries",
                "0",
                "--max-consecutive-failures",
                "1",
                tasks="create_task_1",
                variants="control",
            )
        )
    assert res.returncode in (0, 4), explain(res)
    assert secret not in res.stdout + res.stderr
    assert leaked(secret, out) == []
    con = sqlite3.connect(out / "results.sqlite")
    errors = " ".join(str(e) for (e,) in con.execute("SELECT error FROM simulations"))
    con.close()
    assert "sig=***" in errors, errors


def jwt_under_unknown_header(tmp_path: Path, env: Env) -> None:
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyQGV4YW1wbGUuY29tIn0.c2lnbmF0dXJl"
    for header in ("X-Goog-Iap-Jwt-Assertion", "X-Custom-Header"):
        res = cli(*run_args(env.server.base_url, tmp_path / header, "--agent-args", json.dumps({"extra_headers": {header: jwt}})))
        assert res.returncode == 2 and "looks like a secret" in res.stderr, explain(res)
        assert jwt not in res.stdout + res.stderr and not (tmp_path / header).exists()


class _HostileUsage(http.server.BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint whose every reply ends the conversation and reports negative token counts."""

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps(
            {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": "scripted",
                "choices": [
                    {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Thanks, bye. ###STOP###"}}
                ],
                "usage": {"prompt_tokens": -5000, "completion_tokens": -7, "total_tokens": -5007},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def negative_token_counts(tmp_path: Path, env: Env) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HostileUsage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        out = tmp_path / "run"
        res = cli(*run_args(f"http://127.0.0.1:{server.server_address[1]}/v1", out, tasks="create_task_1", variants="control"))
    finally:
        server.shutdown()
        server.server_close()
    assert res.returncode == 0, explain(res)
    con = sqlite3.connect(out / "results.sqlite")
    counts = con.execute(
        "SELECT agent_prompt_tokens, agent_completion_tokens, user_prompt_tokens, user_completion_tokens FROM simulations"
    ).fetchall()
    con.close()
    assert counts and all(v is not None and v >= 0 for row in counts for v in row), counts


def key_only_to_its_endpoint(tmp_path: Path, env: Env) -> None:
    agent_key, user_key = "sk-agent-" + os.urandom(6).hex(), "sk-user-" + os.urandom(6).hex()
    keys = {"MB_AGENT_KEY": agent_key, "MB_USER_KEY": user_key}
    with (
        start_scripted_server(mock_example_script(), tmp_path / "agent") as agent,
        start_scripted_server(mock_example_script(), tmp_path / "user") as user,
    ):
        base = [
            *run_args(agent.base_url, tmp_path / "a", tasks="create_task_1", variants="control"),
            "--api-key-env",
            "MB_AGENT_KEY",
            "--user-model",
            "openai/scripted",
            "--user-base-url",
            user.base_url,
        ]
        shared = cli(*base, env=keys)
        assert shared.returncode == 0, explain(shared)
        to_agent = {r["authorization"] for r in agent.requests()}
        to_user = {r["authorization"] for r in user.requests()}
        assert to_agent == {f"Bearer {agent_key}"}, to_agent
        assert all(agent_key not in str(a) for a in to_user), to_user  # the agent's key never reached the customer's server
        n_user = len(user.requests())
        own = cli(*[a if a != tmp_path / "a" else tmp_path / "b" for a in base], "--user-api-key-env", "MB_USER_KEY", env=keys)
        assert own.returncode == 0, explain(own)
        assert {r["authorization"] for r in user.requests()[n_user:]} == {f"Bearer {user_key}"}


# --------------------------------------------------------------------------- 20.8, 24.6, 24.7: symlinks and the viewer


def report_dir_symlink(tmp_path: Path, env: Env) -> None:
    run = env.copy_run(tmp_path / "run")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "report.html").write_text("precious")
    (run / "report").symlink_to(victim, target_is_directory=True)
    for res in (cli("report", run), cli("view", run, "--port", "0", "--no-open", timeout=120)):
        assert res.returncode == 2 and "symlink" in res.stdout + res.stderr, explain(res)
        no_traceback(res)
    assert sorted(p.name for p in victim.iterdir()) == ["report.html"] and (victim / "report.html").read_text() == "precious"


class _Viewer:
    def __init__(self, run: Path):
        self.proc = start("view", run, "--port", "0", "--no-open")
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        wait_for(
            lambda: any("serving" in line for line in self.lines) or self.proc.poll() is not None,
            limit=240,
            what="the viewer to listen",
        )
        line = next((x for x in self.lines if "serving" in x), "")
        assert line, f"viewer did not start: {self.lines}"
        self.port = int(line.split("http://127.0.0.1:")[1].split("/")[0])

    def _read(self) -> None:
        assert self.proc.stderr is not None and self.proc.stdout is not None
        for stream in (self.proc.stdout,):
            for line in stream:
                self.lines.append(line)

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=20) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, b""

    def threads(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def viewer_symlink_inside_report(tmp_path: Path, env: Env) -> None:
    run = env.copy_run(tmp_path / "run")
    secret = tmp_path / "outside.txt"
    secret.write_text("outside the run directory")
    viewer = _Viewer(run)
    try:
        assert viewer.get("/report.html")[0] == 200
        (run / "report" / "x").symlink_to(tmp_path, target_is_directory=True)
        (run / "report" / "leak.txt").symlink_to(secret)
        assert viewer.get("/x/outside.txt")[0] == 404
        assert viewer.get("/leak.txt")[0] == 404
        assert viewer.get("/report.html%00.png")[0] == 400  # 24.6: was a ValueError and no response
    finally:
        viewer.stop()
    again = cli("view", run, "--port", "0", "--no-open", timeout=120)  # a report/ holding a link is refused up front
    assert again.returncode == 2 and "symlink" in again.stdout + again.stderr, explain(again)


def view_port_out_of_range(tmp_path: Path, env: Env) -> None:
    for port in ("70000", "-1"):
        res = cli("view", env.run, "--port", port, "--no-open", timeout=120)
        assert res.returncode == 2 and "--port" in res.stderr, explain(res)
        no_traceback(res)


def viewer_half_sent_requests(tmp_path: Path, env: Env) -> None:
    max_threads, idle_limit_s = 48, 13.0  # the viewer serves 32 connections at once and drops one idle for 10 s
    run = env.copy_run(tmp_path / "run")
    viewer = _Viewer(run)
    socks: list[socket.socket] = []
    try:
        for _ in range(300):
            s = socket.create_connection(("127.0.0.1", viewer.port), timeout=10)
            s.sendall(b"GET /report.html HTTP/1.1\r\nHost: 127.0.0")  # never finished
            socks.append(s)
        time.sleep(1.0)
        assert viewer.threads() <= max_threads, viewer.threads()
        time.sleep(idle_limit_s)
        assert viewer.get("/report.html")[0] == 200  # the idle connections timed out; the viewer answers again
        assert viewer.threads() <= 8, viewer.threads()
    finally:
        for s in socks:
            s.close()
        viewer.stop()


# --------------------------------------------------------------------------- 24.5: merge is staged and atomic


def killed_merge(tmp_path: Path, env: Env) -> None:
    out = tmp_path / "merged"
    proc = start("merge", out, env.run)
    try:
        # kill as soon as the merge has written anything: into OUT (a partial run) or beside it (a staging folder)
        wait_for(
            lambda: (
                proc.poll() is not None
                or (out / "results.sqlite").exists()
                or any(p.name.startswith(".merged.merge-") for p in tmp_path.iterdir())
            ),
            limit=240,
            what="the merge to write",
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    if out.exists():  # the merge finished before the kill: whole, never partial
        assert rows(out) == rows(env.run) and (out / "summary.json").exists()
        return
    assert not out.exists()
    res = cli("summary", out)
    assert res.returncode == 2, explain(res)
    again = cli("merge", out, env.run)
    assert again.returncode == 0, explain(again)
    assert rows(out) == rows(env.run) and (out / "manifest.json").exists() and (out / "summary.json").exists()


# --------------------------------------------------------------------------- 20.20: a read-only run directory


def _read_only(cmd: list[str], directory: Path) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` (a moodbench command) with ``directory`` read-only: a read-only bind mount in a private
    mount namespace when root (chmod does not stop root), else a directory without write permission."""
    argv = [*MOODBENCH, *cmd]
    if os.geteuid() == 0:
        if not shutil.which("unshare"):
            pytest.skip("needs unshare to make a read-only mount as root")
        script = 'mount --bind -o ro "$1" "$1" && shift && exec "$@"'
        argv = ["unshare", "-m", "sh", "-c", script, "sh", str(directory), *argv]
        return subprocess.run(argv, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL, env=cli_env())
    mode = directory.stat().st_mode
    directory.chmod(0o555)
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL, env=cli_env())
    finally:
        directory.chmod(mode)


def read_only_run_dir(tmp_path: Path, env: Env) -> None:
    run = env.copy_run(tmp_path / "run")
    for name in ("results.sqlite-wal", "results.sqlite-shm"):
        (run / name).unlink(missing_ok=True)
    before = digest_tree(run)
    summary = _read_only(["summary", str(run), "--json"], run)
    assert summary.returncode == 0, explain(summary)
    assert json.loads(summary.stdout)["variants"]["control"]["done"] == 2
    text = _read_only(["summary", str(run)], run)
    assert text.returncode == 0 and "control" in text.stdout, explain(text)
    report = _read_only(["report", str(run), "--json"], run)
    assert report.returncode == 0 and json.loads(report.stdout)["effects"], explain(report)
    export = _read_only(["export", str(run), "--out", str(tmp_path / "out.json")], run)
    assert export.returncode == 0 and json.loads((tmp_path / "out.json").read_text())["simulations"], explain(export)
    assert digest_tree(run) == before
    # a store whose last rows are still in its write-ahead log (a run killed before its checkpoint)
    con = sqlite3.connect(run / "results.sqlite")
    con.execute("PRAGMA wal_autocheckpoint=0")
    con.execute("DELETE FROM simulations WHERE variant='frustration'")
    con.commit()
    assert (run / "results.sqlite-wal").stat().st_size > 0
    try:
        pending = _read_only(["summary", str(run), "--json"], run)
    finally:
        con.close()
    assert pending.returncode == 0, explain(pending)
    assert json.loads(pending.stdout)["variants"]["frustration"]["done"] == 0  # the WAL's rows were read, not missed


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Attack:
    id: str
    item: str
    description: str
    reproduce: str
    must_hold: str
    check: Callable[[Path, Env], None] | None = None
    covered_by: str | None = None
    marks: tuple[Any, ...] = field(default_factory=tuple)


ATTACKS: list[Attack] = [
    Attack(
        "import-during-run",
        "20.1",
        "import --out took no run lock: it swapped its copy in while a run wrote, and the "
        "run's later conversations went into the deleted directory (exit 0)",
        "start `moodbench run --out R` against a slow server; meanwhile `moodbench import --out R f.json=v`",
        "import exits 2 naming the running process; every conversation of the run is in R",
        import_during_run,
    ),
    Attack(
        "export-onto-store",
        "20.2",
        "export --out RUN/results.sqlite (or any existing file) overwrote it silently",
        "`moodbench export R --out R/results.sqlite`; `moodbench export R --out notes.json` (existing)",
        "exit 2 and nothing changed; --force replaces a user's file but never a run's own files",
        export_onto_store,
    ),
    Attack(
        "merge-into-foreign-dir",
        "20.3",
        "merge wrote into any non-empty directory without results.sqlite, replacing the user's manifest.json and summary.json",
        "`moodbench merge DIR_WITH_MY_FILES SHARD`",
        "exit 2; the directory's files unchanged",
        merge_into_foreign_dir,
    ),
    Attack(
        "report-into-user-folder",
        "20 (must hold 2)",
        "report --out a folder of the user's overwrote its report.html",
        "`moodbench report R --out ~/docs` (holding report.html)",
        "exit 2, the folder unchanged; an earlier report folder is rewritten, files the user added to it kept",
        report_into_user_folder,
    ),
    Attack(
        "racing-runs-keep-the-lock",
        "20.4",
        "two runs started at once on a new --out: the loser's cleanup unlinked "
        "the winner's lock file, so a later run wrote concurrently",
        "start 4 `moodbench run --out NEW` at once",
        "the losers exit 2; the lock file stays and a later run is refused naming the winner",
        racing_runs_keep_the_lock,
    ),
    Attack(
        "report-judge-url-masked",
        "20.5",
        "report --judge-base-url http://user:KEY@host/v1 wrote the key into report.json and printed it with --json",
        "`moodbench report R --judge-base-url http://u:KEY@h/v1 [--json]`",
        "KEY in no page (JSON, HTML, Markdown), no output; the URL shown as http://***@...",
        report_judge_url_masked,
    ),
    Attack(
        "probe-json-masked",
        "20.6",
        "probe --json printed the key of a base URL (the text output masked it)",
        "`moodbench probe --json --model M --base-url http://u:KEY@h/v1`",
        "KEY not printed",
        probe_json_masked,
    ),
    Attack(
        "cloud-query-credentials",
        "20.7",
        "?code= (Azure Functions), ?sig= (SAS), ?X-Amz-Signature= were stored in manifest.json, events.jsonl and results.sqlite",
        "`moodbench run --agent-base-url 'https://h/v1?code=K1&sig=K2&X-Amz-Signature=K3' ...`",
        "no value in any file of the run directory or output",
        cloud_query_credentials,
    ),
    Attack(
        "url-secret-in-server-error",
        "20.7",
        "a server's error quoting a signed URL (a credential moodbench was never told) was stored and printed",
        "an endpoint answering 401 'denied: https://b/x?sig=SECRET'",
        "sig=*** in the stored error, SECRET in no file and no output",
        url_secret_in_a_server_error,
    ),
    Attack(
        "report-dir-symlink",
        "20.8",
        "a shared run directory whose report/ is a symlink made report/view write into (and serve) the link's target",
        "`ln -s ~/somewhere R/report; moodbench report R; moodbench view R`",
        "both exit 2 naming the symlink; the target untouched",
        report_dir_symlink,
    ),
    Attack(
        "viewer-symlink-inside-report",
        "20.8 + 24.6",
        "a symlink inside report/ (x -> /) made the viewer serve any "
        "readable file; GET /report.html%00.png raised ValueError with no response",
        "`moodbench view R`; `ln -s / R/report/x`; GET /x/etc/hostname; GET /report.html%00.png",
        "404 through a link, 400 for a NUL, and a report/ holding a link is refused at start",
        viewer_symlink_inside_report,
    ),
    Attack(
        "read-only-run-dir",
        "20.20",
        "a healthy run directory on a read-only filesystem was called 'not a readable "
        "moodbench store' (WAL mode wants a -shm file)",
        "mount R read-only; `moodbench summary R`, `report R --json`, `export R --out elsewhere`",
        "all work and R is unchanged, also with rows still in the WAL",
        read_only_run_dir,
    ),
    Attack(
        "key-only-to-its-endpoint",
        "24.1",
        "the variable named by --api-key-env was sent to every custom endpoint, a different --user-base-url server included",
        "`run --api-key-env K --user-base-url OTHER`; OTHER's request log",
        "OTHER never sees K; --user-api-key-env K2 sends K2 there",
        key_only_to_its_endpoint,
    ),
    Attack(
        "killed-merge",
        "24.5",
        "SIGKILL mid-merge left a partial run that looked real; re-running was refused",
        "`moodbench merge OUT SHARD` killed with SIGKILL",
        "OUT absent (or whole); the merge re-runs",
        killed_merge,
    ),
    Attack(
        "view-port-out-of-range",
        "24.6",
        "view --port 70000 / --port -1 died with a traceback",
        "`moodbench view R --port 70000`",
        "exit 2 naming --port",
        view_port_out_of_range,
    ),
    Attack(
        "viewer-half-sent-requests",
        "24.7",
        "300 half-sent requests kept 300 viewer threads alive forever",
        "open 300 connections to the viewer, send half a request line each",
        "threads bounded; idle connections closed after the timeout; the viewer answers",
        viewer_half_sent_requests,
    ),
    Attack(
        "negative-token-counts",
        "24.8",
        "negative token counts from an endpoint were stored as they were",
        "an endpoint reporting usage.prompt_tokens = -5000",
        "stored counts are never negative",
        negative_token_counts,
    ),
    Attack(
        "jwt-under-unknown-header",
        "24.8",
        "a JWT under X-Goog-Iap-Jwt-Assertion (or any header) in --agent-args was accepted and stored",
        '`run --agent-args \'{"extra_headers": {"X-Custom": "eyJ..."}}\'`',
        "exit 2 'looks like a secret'; nothing written, the value not printed",
        jwt_under_unknown_header,
    ),
    # ---- the first round (tests/test_hardening.py keeps them; these rows point at them)
    Attack(
        "r1-dripping-server",
        "r1",
        "a server dripping its reply held a conversation forever",
        "a server sending 1 byte/s",
        "llm_error at the deadline; the breaker trips",
        covered_by="test_hardening.py::test_a_dripping_server_ends_as_llm_error_within_the_deadline_and_trips_the_breaker",
    ),
    Attack(
        "r1-url-credentials",
        "r1",
        "credentials in a base URL reached the manifest",
        "`--agent-base-url http://u:KEY@h/v1`",
        "KEY in no file or output",
        covered_by="test_hardening.py::test_credentials_in_a_base_url_never_reach_disk_or_output",
    ),
    Attack(
        "r1-secret-headers",
        "r1",
        "secret headers in request args were stored",
        '`--agent-args \'{"extra_headers": {"Cookie": ...}}\'`',
        "exit 2",
        covered_by="test_hardening.py::test_secret_looking_headers_in_request_args_are_refused",
    ),
    Attack(
        "r1-second-run",
        "r1",
        "two runs on one directory ran every conversation twice",
        "two `run --out R` at once",
        "the second exits 2; a killed run leaves no stuck lock",
        covered_by="test_hardening.py::test_a_second_run_on_the_same_directory_is_refused_and_a_killed_run_leaves_no_stuck_lock",
    ),
    Attack(
        "r1-sigterm",
        "r1",
        "SIGTERM killed the run without summary or manifest",
        "`kill -TERM` a run",
        "running conversations finish; everything written; exit 143",
        covered_by="test_hardening.py::test_sigterm_lets_running_conversations_finish_and_writes_everything",
    ),
    Attack(
        "r1-damaged-store",
        "r1",
        "a damaged store crashed or was modified",
        "truncate / garble results.sqlite",
        "exit 2 everywhere; the file left as it was",
        covered_by="test_hardening.py::test_a_damaged_store_is_exit_2_everywhere_and_left_as_it_was",
    ),
    Attack(
        "r1-foreign-directory",
        "r1",
        "run --out a project folder wrote into it",
        "`run --out ~/my-project`",
        "exit 2; nothing changed",
        covered_by="test_hardening.py::test_a_foreign_non_empty_directory_is_refused_and_untouched",
    ),
    Attack(
        "r1-torn-manifest",
        "r1",
        "two processes writing manifest.json tore it",
        "two writers at once",
        "the file is always whole",
        covered_by="test_hardening.py::test_manifest_writes_from_two_processes_never_tear",
    ),
    Attack(
        "r2-damaged-sequential-plan",
        "22",
        "a sequential run whose stored plan was edited (an unknown futility rule, a level that is not a number) "
        "crashed report and resume with a traceback",
        "edit the 'sequential' meta of results.sqlite, then `report RUN` or run the same command again",
        "exit 2 naming the damaged plan; nothing changed",
        covered_by="test_run_sequential.py::test_a_damaged_stored_plan_is_exit_2_for_the_report_and_the_resume",
    ),
    Attack(
        "r2-hostile-package-index",
        "22",
        "install-backend fetches the pinned llama.cpp sources straight from the package index: a hostile or broken "
        "index could list another file, send other bytes, cut the file short, or send without end",
        "serve /simple/NAME/ with a wrong digest, tampered or cut bytes, more than the pinned size, an endless page, "
        "or bytes trickling past the deadline",
        "refused before storing (SourcesError, then pip is asked); no partial file is left; bounded in size and time",
        covered_by="test_sources.py::test_a_page_or_a_file_that_never_ends_is_cut_off",
    ),
]


def test_attack_ids_are_unique_and_rows_complete() -> None:
    ids = [a.id for a in ATTACKS]
    assert len(ids) == len(set(ids))
    for a in ATTACKS:
        assert a.description and a.reproduce and a.must_hold and a.item
        assert (a.check is None) != (a.covered_by is None), a.id


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.id for a in ATTACKS])
def test_attack(attack: Attack, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if attack.covered_by is not None:
        module, name = attack.covered_by.split("::")
        tests = importlib.import_module(module.removesuffix(".py"))
        assert callable(getattr(tests, name, None)), f"{attack.covered_by} is gone: move the attack's check here"
        return
    assert attack.check is not None
    attack.check(tmp_path, request.getfixturevalue("env"))
