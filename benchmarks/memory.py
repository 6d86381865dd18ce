"""Memory per concurrent conversation: airline (tau2's largest database), all conversations in flight.

    .venv/bin/python benchmarks/memory.py                           # 16 and 256 in flight, default executor
    .venv/bin/python benchmarks/memory.py --concurrency 16,256 --executor thread

For each concurrency N, N airline conversations run at once against a scripted server slow enough
(``--latency-ms``) that all N are in flight together (the server's high-water mark of requests in
flight is printed to show it). The moodbench process and its worker processes are sampled every
0.25 s; the peak of their summed PSS (proportional set size: shared pages counted once) is the
run's footprint. The slope between the smallest and largest N is the memory per concurrent
conversation, and ``base + 256 x slope`` the projection for 256 conversations.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import airline_script, machine, start_server

HERE = Path(__file__).resolve()
AIRLINE_TASKS = "0,1,2,3,4,5,6,7"


def _footprint(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            mem = p.memory_full_info()
            total += getattr(mem, "pss", 0) or mem.rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def measure(n: int, a: argparse.Namespace, tmp: Path) -> dict:
    srv = start_server(airline_script(latency_ms=a.latency_ms), tmp)
    out = tmp / f"run-{n}-{time.monotonic_ns()}"
    ids = AIRLINE_TASKS.split(",")
    args = [
        sys.executable,
        "-m",
        "moodbench.cli",
        "run",
        "--domain",
        "airline",
        "--task-ids",
        AIRLINE_TASKS,
        "--variants",
        "control",
        "--trials",
        str(-(-n // len(ids))),
        "--concurrency",
        str(n),
        "--agent-model",
        "openai/scripted",
        "--agent-base-url",
        srv.base_url,
        "--out",
        str(out),
        "--skip-preflight",
        "--max-retries",
        "0",
        *(["--executor", a.executor] if a.executor != "default" else []),
        *(["--workers", str(a.workers)] if a.workers else []),
    ]
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    peak = 0
    samples: list[int] = []
    try:
        child = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        ps = psutil.Process(child.pid)
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                try:
                    value = _footprint(ps)
                except psutil.NoSuchProcess:
                    return
                samples.append(value)
                peak = max(peak, value)
                stop.wait(0.25)

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        _, err = child.communicate(timeout=3600)
        stop.set()
        t.join()
        if child.returncode != 0:
            raise RuntimeError(f"moodbench exited {child.returncode}: {err[-3000:]}")
        stats = srv.stats()
    finally:
        srv.stop()
    manifest = json.loads((out / "manifest.json").read_text())
    return {
        "concurrency": n,
        "peak_mib": round(peak / 2**20, 1),
        "max_in_flight_at_server": stats.get("max_in_flight"),
        "requests": stats.get("requests"),
        "executor_used": manifest.get("executor_used"),
        "load_average_after": round(os.getloadavg()[0], 2),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", default="16,256", help="comma-separated N (all N in flight at once)")
    p.add_argument("--latency-ms", type=float, default=3000.0, help="server latency: long enough for every start to overlap")
    p.add_argument("--executor", default="default", help="default (no flag, as a user types it), thread, process")
    p.add_argument("--workers", type=int, default=0, help="moodbench --workers (default: the executor's own choice)")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="moodbench-mem-"))
    print(f"machine: {machine()}")
    results = []
    for n in [int(x) for x in a.concurrency.split(",")]:
        r = measure(n, a, tmp)
        results.append(r)
        print(
            f"{n} airline conversations in flight ({a.executor} -> {r['executor_used']}): peak {r['peak_mib']} MiB "
            f"(server saw up to {r['max_in_flight_at_server']} requests at once)",
            flush=True,
        )
    out = {"machine": machine(), "executor": a.executor, "runs": results}
    if len(results) >= 2:
        lo, hi = results[0], results[-1]
        slope = (hi["peak_mib"] - lo["peak_mib"]) / (hi["concurrency"] - lo["concurrency"])
        base = lo["peak_mib"] - slope * lo["concurrency"]
        out["mib_per_conversation"] = round(slope, 2)
        out["base_mib"] = round(base, 1)
        out["projected_256_gib"] = round((base + 256 * slope) / 1024, 2)
        print(
            f"memory per concurrent airline conversation: {slope:.1f} MiB; base {base:.0f} MiB; "
            f"projected for 256: {out['projected_256_gib']} GiB",
            flush=True,
        )
    print(json.dumps(out, indent=1))
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
