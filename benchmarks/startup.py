"""Start-up time of the commands a user types most, on imported runs, and of `moodbench run`.

    .venv/bin/python benchmarks/startup.py               # 5 repetitions each
    .venv/bin/python benchmarks/startup.py --reps 10 --json out.json

All through the real CLI in subprocesses, timed from process launch (wall and CPU seconds of the process, and the
load average when each command was timed: on a shared machine the CPU time is about what a quiet machine's wall
time would be). Two imported runs:

* **real**: the real tau2 Results files of ``tests/data/tau2`` (airline and telecom, six agents, a tau3-era file,
  a leaderboard submission that carries no tasks) imported with ``moodbench import --format tau2``;
* **claims**: 20 tasks x 2 trials per variant (tau2 Results files built with tau2's own models, as
  ``tests/test_startup.py`` does), large enough for the report's claims, p-values and MDE.

Timed: ``import`` (until exit), ``summary`` and ``report --json`` (until exit), ``view`` until it prints that it
serves (its report already built, and not built yet: then it listens at once and serves the first page once it has
built the report, both timed), and ``moodbench run`` of a
fresh 1-conversation experiment against the scripted server (until the server sees its first request: the first
conversation has started; with the run's CPU seconds until exit), plus the floor under that: the CPU seconds of
``import litellm`` alone, which tau2's orchestrator, evaluator and LLM agent/user modules import at module level.

Each command also runs once under ``python -X importtime`` to list the heavy modules it imported (tau2, tau2's
registry, litellm, scipy.stats, statsmodels, pandas, matplotlib; ``tests/test_startup.py`` asserts the same
property). Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SRC, machine, start_server

REPO = Path(__file__).resolve().parent.parent
REAL = REPO / "tests" / "data" / "tau2"
REAL_ITEMS = [
    ("gpt-4.1_airline_1trial", "control"),
    ("gpt-4.1_telecom_1trial", "control"),
    ("ft-gpt-4.1_airline_1trial", "ft"),
    ("ft-gpt-4.1_telecom_1trial", "ft"),
    ("claude-sonnet-4-5_airline_1trial", "claude"),
    ("langchain-gpt-oss-120b_airline_1trial", "langchain"),
    ("adaptive-agent_airline_no-info", "adaptive"),
    ("whissle_airline_tau3", "whissle"),
]
HEAVY = ("tau2", "tau2.registry", "litellm", "scipy.stats", "statsmodels", "pandas", "matplotlib")

CLI = [sys.executable, "-m", "moodbench.cli"]
MOCK = ["--domain", "mock", "--agent-model", "openai/scripted", "--skip-preflight"]


_SRC = [SRC]  # the sources measured (--src: e.g. an older checkout's, for a before/after in one sitting)


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(_SRC[0]), os.environ.get("PYTHONPATH", "")) if p),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "NO_PROXY": "127.0.0.1,localhost",
        "MPLBACKEND": "Agg",
    }


def _check(args: list[str]) -> None:
    res = subprocess.run([*CLI, *args], capture_output=True, text=True, env=_env(), timeout=600)
    if res.returncode != 0:
        raise RuntimeError(f"moodbench {' '.join(args)} failed ({res.returncode}): {res.stdout[-2000:]} {res.stderr[-3000:]}")


def _timed(
    args: list[str], until: str | None = None, python: list[str] | None = None, fetch: bool = False
) -> tuple[float, float, str]:
    """Seconds from launch to exit (or to a line containing ``until``; with ``fetch``, to the first transcripts
    page served by the URL the command printed), the process's CPU seconds (user + system: what a quiet machine's
    wall time would be, near enough, on a loaded one), and stderr (for -X importtime)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    # stderr to a file, not a pipe: -X importtime writes more than a pipe holds while stdout is read line by line
    with tempfile.TemporaryFile("w+") as errfile:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [*(python or [sys.executable]), "-m", "moodbench.cli", *args],
            stdout=subprocess.PIPE,
            stderr=errfile,
            text=True,
            env=_env(),
        )
        assert proc.stdout is not None
        if until is None:
            out, _ = proc.communicate(timeout=600)
            elapsed = time.perf_counter() - t0
        else:
            line, lines = "", ""
            while until not in line:
                line = proc.stdout.readline()
                lines += line
                if not line and proc.poll() is not None:
                    break
            urls = re.findall(r"transcripts: (http://127\.0\.0\.1:\d+/\S+)", lines)
            if fetch and urls:  # the page itself: a view that builds the report serves it once built
                opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
                with opener.open(urls[0], timeout=600) as resp:
                    resp.read()
            elapsed = time.perf_counter() - t0
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=60)  # view: its CPU includes the idle moment until SIGINT (~0)
        errfile.seek(0)
        err = errfile.read()
    if until is None and proc.returncode != 0:
        raise RuntimeError(f"moodbench {' '.join(args)} failed: {out[-2000:]} {err[-3000:]}")
    if until is not None and until not in line:
        raise RuntimeError(f"moodbench {' '.join(args)} exited before printing {until!r}: {err[-3000:]}")
    return elapsed, _cpu_since(before), err


def _cpu_since(before: resource.struct_rusage) -> float:
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _imports(stderr: str) -> list[str]:
    """The heavy modules among those a process imported (``-X importtime``'s list)."""
    mods = set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)\s*$", stderr, re.M))
    return [m for m in HEAVY if m in mods]


def _first_request(tmp: Path, script: dict, i: int) -> tuple[float, float]:
    """Seconds from launching `moodbench run` (one conversation) to the scripted server's first request, and the
    run's CPU seconds until it exited."""
    srv = start_server(script, tmp)
    try:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t_launch = time.time()
        _check(
            [
                "run",
                *MOCK,
                "--task-ids",
                "create_task_1",
                "--variants",
                "control",
                "--trials",
                "1",
                "--agent-base-url",
                srv.base_url,
                "--out",
                str(tmp / f"first-{i}"),
            ]
        )
        cpu = _cpu_since(before)
        first = srv.stats()["first_request_at"]
    finally:
        srv.stop()
    return first - t_launch, cpu


def _real_items(tmp: Path) -> list[str]:
    items = []
    for name, variant in REAL_ITEMS:
        path = tmp / f"{name}.json"
        path.write_bytes(gzip.decompress((REAL / f"{name}.json.gz").read_bytes()))
        items.append(f"{path}={variant}")
    return items


def _claims_items(tmp: Path) -> list[str]:
    """20 tasks x 2 trials per variant, tau2 Results files built with tau2's models (tests/tau2_results.py)."""
    sys.path.insert(0, str(REPO / "tests"))
    from tau2_results import Conv, write

    ids = [f"t{i:02d}" for i in range(20)]
    base = write(tmp / "c20.json", [Conv(t, j, float((i + j) % 3 != 0)) for i, t in enumerate(ids) for j in range(2)], ids)
    angry = write(
        tmp / "a20.json",
        [Conv(t, j, float((i + j) % 2 != 0), opening="This is outrageous! ") for i, t in enumerate(ids) for j in range(2)],
        ids,
    )
    return [f"{base}=control", f"{angry}=anger"]


def _measure(
    name: str, argv_for: Any, until: str | None, reps: int, before_each: Any = None, fetch: bool = False
) -> dict[str, Any]:
    times, cpus, loads = [], [], []
    for i in range(reps):
        if before_each:
            before_each()
        loads.append(os.getloadavg()[0])
        elapsed, cpu, _ = _timed(argv_for(i), until, fetch=fetch)
        times.append(elapsed)
        cpus.append(cpu)
    if before_each:
        before_each()
    _, _, err = _timed(argv_for(reps), until, python=[sys.executable, "-X", "importtime"], fetch=fetch)  # its imports
    r = {
        "median_s": round(statistics.median(times), 3),
        "min_s": round(min(times), 3),
        "median_cpu_s": round(statistics.median(cpus), 3),
        "load": round(statistics.median(loads), 1),
        "imported": _imports(err),
    }
    print(
        f"{name}: median {r['median_s']} s wall (min {r['min_s']} s), {r['median_cpu_s']} s CPU, load {r['load']}, "
        f"over {reps}; heavy imports: {', '.join(r['imported']) or 'none'}",
        flush=True,
    )
    return r


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--json", type=Path)
    p.add_argument("--src", type=Path, default=SRC, help="moodbench sources to measure (default: this checkout's src)")
    a = p.parse_args()
    _SRC[0] = a.src.resolve()
    from moodbench.testing.scripts import mock_example_script

    tmp = Path(tempfile.mkdtemp(prefix="moodbench-startup-"))
    script = mock_example_script()
    print(f"machine: {machine()}", flush=True)
    results: dict[str, dict] = {}
    for label, items in (("real", _real_items(tmp)), ("claims", _claims_items(tmp))):
        run, built = tmp / f"{label}-run", tmp / f"{label}-built"
        _check(["import", "--format", "tau2", "--out", str(run), *items])
        _check(["import", "--format", "tau2", "--out", str(built), *items])
        _check(["report", str(built)])
        results[f"{label}: import"] = _measure(
            f"{label}: import ({len(items)} files)",
            lambda i, label=label, items=items: ["import", "--format", "tau2", "--out", str(tmp / f"{label}-imp-{i}"), *items],
            None,
            a.reps,
        )
        for name, args in (("summary", ["summary", str(run)]), ("report --json", ["report", "--json", str(run)])):
            results[f"{label}: {name}"] = _measure(f"{label}: {name}", lambda i, args=args: args, None, a.reps)
        view = ["view", str(built), "--port", "0", "--no-open"]
        results[f"{label}: view (report built)"] = _measure(
            f"{label}: view (report built)", lambda i, view=view: view, "press Ctrl-C", a.reps
        )
        fresh = ["view", str(run), "--port", "0", "--no-open"]
        for what, fetch in (("serving", False), ("first page", True)):  # it listens at once, builds, then serves
            results[f"{label}: view (report not built yet), {what}"] = _measure(
                f"{label}: view (report not built yet), until {what}",
                lambda i, fresh=fresh: fresh,
                "press Ctrl-C",
                a.reps,
                before_each=lambda run=run: shutil.rmtree(run / "report", ignore_errors=True),
                fetch=fetch,
            )
    firsts, run_cpus, loads = [], [], []
    for i in range(a.reps):
        loads.append(os.getloadavg()[0])
        first, cpu = _first_request(tmp, script, i)
        firsts.append(first)
        run_cpus.append(cpu)
    results["run: launch to first model request"] = {
        "median_s": round(statistics.median(firsts), 3),
        "min_s": round(min(firsts), 3),
        "median_cpu_s_until_exit": round(statistics.median(run_cpus), 3),
        "load": round(statistics.median(loads), 1),
    }
    r = results["run: launch to first model request"]
    print(
        f"run (warm cache): first model request {r['median_s']} s after launch (min {r['min_s']} s), the run's CPU "
        f"{r['median_cpu_s_until_exit']} s until exit, load {r['load']}, over {a.reps}",
        flush=True,
    )
    floor = []
    for _ in range(a.reps):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([sys.executable, "-c", "import litellm"], env=_env(), check=True, capture_output=True)
        floor.append(_cpu_since(before))
    results["import litellm alone"] = {"median_cpu_s": round(statistics.median(floor), 3), "load": round(os.getloadavg()[0], 1)}
    print(
        f"import litellm alone (what tau2's conversation modules import): {results['import litellm alone']['median_cpu_s']} s CPU"
    )
    out = {"machine": machine(), "load_average_end": round(os.getloadavg()[0], 2), "reps": a.reps, "results": results}
    print(json.dumps(out, indent=1))
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
