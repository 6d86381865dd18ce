"""Kills: SIGKILL at seeded random moments then resume; Ctrl-C once (clean stop) and twice (abandon).

Every run is a real ``moodbench run`` subprocess against the scripted server. Kill moments are
chosen by a seeded RNG as "after the k-th model request", which the server's request log shows,
so a failure can be replayed with the same seed. Afterwards the store must pass SQLite's own
integrity check, hold every cell exactly once, and the resume must re-run only what was missing.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from moodbench.testing.scripts import MOCK_EXAMPLE_AGENT, MOCK_EXAMPLE_USER
from scripted import CLI, ScriptedServer, start_scripted_server

MOODBENCH = CLI
SEED = int(os.environ.get("MOODBENCH_KILL_SEED", "20240607"))

AGENT = MOCK_EXAMPLE_AGENT
USER = MOCK_EXAMPLE_USER


def run_cmd(srv: ScriptedServer, out: Path, trials: int, concurrency: int) -> list[str]:
    return [
        *MOODBENCH,
        "run",
        "--domain",
        "mock",
        "--task-ids",
        "create_task_1,update_task_1",
        "--variants",
        "control,frustration",
        "--trials",
        str(trials),
        "--concurrency",
        str(concurrency),
        "--agent-model",
        "openai/scripted",
        "--agent-base-url",
        srv.base_url,
        "--out",
        str(out),
        "--skip-preflight",
    ]


def start(cmd: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MOODBENCH_BACKOFF_BASE_S": "0.01"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, stdin=subprocess.DEVNULL)


def wait_for_requests(srv: ScriptedServer, n: int, proc: subprocess.Popen[str], limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while len(srv.requests()) < n and proc.poll() is None:
        assert time.monotonic() < deadline, f"never saw {n} requests:\n{srv.output()}"
        time.sleep(0.02)


def _events_text(out: Path) -> str:
    try:
        return (out / "events.jsonl").read_text()
    except OSError:
        return ""


def check_store(out: Path) -> dict[str, Any]:
    """Open the store the way a fresh reader would: integrity, finished-once, and per-cell counts."""
    con = sqlite3.connect(out / "results.sqlite")
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = con.execute("SELECT cell_key, exit_reason FROM simulations").fetchall()
        ok = [k for k, reason in rows if reason not in ("llm_error", "harness_error")]
        assert len(ok) == len(set(ok)), "a cell was stored as finished twice"
        # every stored simulation is complete JSON (nothing half-written survives a kill)
        for (sim,) in con.execute("SELECT simulation FROM simulations"):
            json.loads(sim)
        return {"finished": set(ok), "rows": len(rows)}
    finally:
        con.close()


@pytest.mark.slow  # three moodbench subprocesses
def test_sigkill_at_random_moments_then_resume_stores_every_cell_once(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    out = tmp_path / "run"
    script = {"seed": SEED, "latency_ms": 15, "latency_jitter_ms": 40, "roles": {"agent": AGENT, "user": USER}}
    planned = 2 * 2 * 5
    with start_scripted_server(script, tmp_path) as srv:
        cmd = run_cmd(srv, out, trials=5, concurrency=4)
        stored_before = 0
        for _ in range(2):
            # kill somewhere between "about to make the first request" and "most of what is left"
            k = rng.randint(0, 4 * (planned - stored_before) * 2 // 3)
            proc = start(cmd)
            wait_for_requests(srv, len(srv.requests()) + k, proc)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            state: dict[str, Any] = check_store(out) if (out / "results.sqlite").exists() else {"finished": set(), "rows": 0}
            assert len(state["finished"]) >= stored_before  # nothing stored is ever lost
            stored_before = len(state["finished"])
        proc = start(cmd)
        _, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stderr[-3000:]
    # the resume ran exactly the cells that were missing
    m = re.search(r"(\d+) conversation\(s\) to run, (\d+) already stored", " ".join(stderr.split()))
    assert m and int(m.group(2)) == stored_before and int(m.group(1)) == planned - stored_before, stderr[-2000:]
    state = check_store(out)
    assert len(state["finished"]) == planned
    summary = json.loads((out / "summary.json").read_text())
    assert sum(v["done"] for v in summary["variants"].values()) == planned
    for line in (out / "events.jsonl").read_text().splitlines():
        json.loads(line)  # a line cut by a kill is repaired before the next run appends


@pytest.mark.slow  # three moodbench subprocesses
def test_ctrl_c_once_stops_cleanly_twice_abandons_and_resume_completes(tmp_path: Path) -> None:
    # Ctrl-C twice against a server whose agent takes 60 s per reply: the process must leave at
    # once (exit 130) rather than wait out the requests in flight; nothing unfinished is stored.
    stuck = {"roles": {"agent": {**AGENT, "latency_ms": 60_000}, "user": USER}}
    with start_scripted_server(stuck, tmp_path) as slow:
        out_slow = tmp_path / "abandoned"
        proc = start(run_cmd(slow, out_slow, trials=1, concurrency=2))
        deadline = time.monotonic() + 120
        while len(slow.requests(role="agent")) < 2 and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        # the second Ctrl-C once the first was handled (its event is written), not after a guessed delay
        deadline = time.monotonic() + 60
        while '"event": "interrupt"' not in _events_text(out_slow) and proc.poll() is None:
            assert time.monotonic() < deadline, "the first Ctrl-C was never handled"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)  # the agent replies would take 60 s
    assert proc.returncode == 130, stderr[-3000:]
    assert "abandoned 2 running conversation(s)" in " ".join(stderr.split()) and "resume" in stderr
    assert check_store(out_slow)["rows"] == 0

    # Ctrl-C once: the conversations in flight finish and are stored, nothing new starts.
    script = {"latency_ms": 50, "roles": {"agent": AGENT, "user": USER}}
    out = tmp_path / "run"
    with start_scripted_server(script, tmp_path) as srv:
        cmd = run_cmd(srv, out, trials=4, concurrency=2)
        proc = start(cmd)
        wait_for_requests(srv, 6, proc)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 130, stderr[-3000:]
        assert "Interrupted" in stderr and "resume" in stderr and "Traceback" not in stderr
        state = check_store(out)
        assert 1 <= state["rows"] < 16 and state["rows"] == len(state["finished"])  # none cut short
        events = [json.loads(line)["event"] for line in (out / "events.jsonl").read_text().splitlines()]
        assert "interrupt" in events and events[-1] == "run_finished"

        resumed = start(cmd)
        _, stderr = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, stderr[-3000:]
    assert f"{16 - state['rows']} conversation(s) to run, {state['rows']} already stored" in " ".join(stderr.split())
    assert len(check_store(out)["finished"]) == 16
