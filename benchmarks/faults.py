"""Fault tolerance at scale: 200 conversations, 20% of model requests failing, SIGKILLs, resume.

    .venv/bin/python benchmarks/faults.py                   # 200 conversations, 2 kills, then resume
    .venv/bin/python benchmarks/faults.py --kills 0         # faults only
    .venv/bin/python benchmarks/faults.py --trials 40 --concurrency 32 --fail-rate 0.3 --seed 7

The scripted server (``moodbench.testing.scripted_server``) answers the mock domain's two scripted
tasks (``create_task_1`` succeeds, ``update_task_1`` fails) for five variants x ``--trials``, and
fails a seeded share of all requests: HTTP 500s, 429s with Retry-After, dropped connections and
timeouts. ``moodbench run`` is SIGKILLed ``--kills`` times at seeded random moments (after a random
number of stored conversations) and then re-run until it exits 0, exactly as a user would resume.

Printed at the end (and as JSON with ``--json``):

- completed: cells with a finished row; duplicated: cells with more than one finished row;
  lost: planned cells with none. The run is correct when duplicated = lost = 0.
- wrong outcome: finished cells whose exit reason differs from the fault-free answer (success for
  create_task_1, task_failed for update_task_1): a fault must never change a result.
- llm_error rows (conversations whose calls failed after every retry; kept as history, re-run).

Backoff is shortened with MOODBENCH_BACKOFF_BASE_S / MOODBENCH_BACKOFF_MAX_S (hidden knobs of
moodbench) so the run takes a couple of minutes; a real server gets the 1 s..30 s defaults.
Exit status 1 if anything was duplicated, lost or changed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, start_server
from moodbench.testing.scripts import (
    MOCK_EXAMPLE_AGENT,
    MOCK_EXAMPLE_OUTCOMES,
    MOCK_EXAMPLE_USER,
)

TASKS = ("create_task_1", "update_task_1")
EXPECTED = MOCK_EXAMPLE_OUTCOMES
VARIANTS = "control,frustration,anger,anxiety,confusion"

SCRIPT_ROLES = {"agent": MOCK_EXAMPLE_AGENT, "user": MOCK_EXAMPLE_USER}


def fault_mix(rate: float) -> dict[str, float]:
    """Split ``rate`` over the failure kinds: 40% 500s, 25% 429s, 25% dropped connections, 10% timeouts."""
    return {"error_500_rate": 0.4 * rate, "error_429_rate": 0.25 * rate, "drop_rate": 0.25 * rate, "timeout_rate": 0.1 * rate}


def stored_rows(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return int(con.execute("SELECT COUNT(*) FROM simulations").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0  # not created yet


def count(db: Path, planned: int) -> dict[str, int]:
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT cell_key, task_id, exit_reason FROM simulations").fetchall()
        ok = [(k, t, r) for k, t, r in rows if r not in ("llm_error", "harness_error")]
        per_cell: dict[str, int] = {}
        for k, _, _ in ok:
            per_cell[k] = per_cell.get(k, 0) + 1
        return {
            "planned": planned,
            "completed": len(per_cell),
            "duplicated": sum(1 for n in per_cell.values() if n > 1),
            "lost": planned - len(per_cell),
            "wrong_outcome": sum(1 for _, t, r in ok if EXPECTED[t] != r),
            "llm_error_rows": sum(1 for _, _, r in rows if r == "llm_error"),
            "harness_error_rows": sum(1 for _, _, r in rows if r == "harness_error"),
            "integrity_ok": int(con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"),
        }
    finally:
        con.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20, help="trials per task and variant (2 tasks x 5 variants each)")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--fail-rate", type=float, default=0.2, help="share of all model requests that fail")
    ap.add_argument("--kills", type=int, default=2, help="SIGKILLs at random moments before the final resume")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--backoff-base", type=float, default=0.02, help="seconds (MOODBENCH_BACKOFF_BASE_S)")
    ap.add_argument("--latency-ms", type=float, default=20, help="server latency per request")
    ap.add_argument("--max-retries", type=int, default=8)
    ap.add_argument("--out", type=Path, help="run directory (default: a temporary one)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON too")
    args = ap.parse_args()

    rng = random.Random(args.seed)
    planned = len(TASKS) * 5 * args.trials
    work = Path(tempfile.mkdtemp(prefix="moodbench-faults-"))
    out = args.out or work / "run"
    script = {
        "seed": args.seed,
        "latency_ms": args.latency_ms,
        "roles": SCRIPT_ROLES,
        "faults": {**fault_mix(args.fail_rate), "retry_after_s": 0.05, "timeout_s": 3},
    }
    server = start_server(script, work)
    env = {
        **os.environ,
        "MOODBENCH_BACKOFF_BASE_S": str(args.backoff_base),
        "MOODBENCH_BACKOFF_MAX_S": str(max(args.backoff_base * 16, 0.1)),
        "PYTHONUNBUFFERED": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "moodbench.cli",
        "run",
        "--domain",
        "mock",
        "--task-ids",
        ",".join(TASKS),
        "--variants",
        VARIANTS,
        "--trials",
        str(args.trials),
        "--concurrency",
        str(args.concurrency),
        "--agent-model",
        "openai/scripted",
        "--agent-base-url",
        server.base_url,
        "--out",
        str(out),
        "--timeout",
        "0.5",
        "--max-retries",
        str(args.max_retries),
        "--skip-preflight",
    ]
    print(f"machine: {machine()}", flush=True)
    print(
        f"{planned} conversations, {args.fail_rate:.0%} of requests failing, concurrency {args.concurrency}, "
        f"{args.kills} kill(s), seed {args.seed}",
        flush=True,
    )
    phases: list[dict[str, Any]] = []
    t0 = time.monotonic()
    db = out / "results.sqlite"
    try:
        for k in range(args.kills):
            before = stored_rows(db)
            target = before + rng.randint(1, max(1, (planned - before) // 2))
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
            while stored_rows(db) < target and proc.poll() is None:
                time.sleep(0.05)
            # a little later still, so the kill lands mid-conversation or mid-write, not just after one
            time.sleep(rng.uniform(0.0, 0.5))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait()
            phases.append({"phase": f"kill {k + 1}", "rows_stored": stored_rows(db), "exit": proc.returncode})
            print(f"  kill {k + 1}: SIGKILL after {stored_rows(db)} stored rows (exit {proc.returncode})", flush=True)
        for attempt in range(5):  # resume until done (llm_error cells are re-run by each resume)
            res = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
            phases.append({"phase": f"resume {attempt + 1}", "rows_stored": stored_rows(db), "exit": res.returncode})
            print(f"  resume {attempt + 1}: exit {res.returncode}, {stored_rows(db)} stored rows", flush=True)
            if res.returncode != 0:
                print(res.stderr[-2000:], file=sys.stderr)
            if res.returncode == 0 and count(db, planned)["lost"] == 0:
                break
        wall = time.monotonic() - t0
        stats = server.stats()
    finally:
        server.stop()
    result = count(db, planned)
    failed = stats["requests"] - stats["by_status"].get("200", 0) + stats["by_fault"].get("timeout", 0)
    result.update(
        {"requests": stats["requests"], "failed_requests": failed, "by_fault": stats["by_fault"], "wall_seconds": round(wall, 1)}
    )
    print()
    print(
        f"completed {result['completed']}/{planned}   duplicated {result['duplicated']}   lost {result['lost']}   "
        f"wrong outcome {result['wrong_outcome']}   llm_error rows {result['llm_error_rows']}   "
        f"store integrity {'ok' if result['integrity_ok'] else 'BROKEN'}"
    )
    print(
        f"requests {stats['requests']}, failed {failed} ({failed / max(1, stats['requests']):.1%}): "
        + ", ".join(f"{k}={v}" for k, v in sorted(stats["by_fault"].items()))
        + f"; wall {wall:.0f} s"
    )
    print(f"run directory: {out}")
    if args.json:
        print(json.dumps({**result, "phases": phases}))
    bad = result["duplicated"] or result["lost"] or result["wrong_outcome"] or not result["integrity_ok"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
