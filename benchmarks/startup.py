"""Start-up time of the commands a user types most, on an imported run, and of `moodbench run`.

    .venv/bin/python benchmarks/startup.py               # 5 repetitions each
    .venv/bin/python benchmarks/startup.py --reps 10 --json out.json

What it does, all through the real CLI in subprocesses: a small real run against the scripted server (mock
domain, 12 conversations; it also warms the OS file cache), exported as two tau2 Results files (control and
frustration) with `moodbench export`; then, timed from process launch:

* `import` of both files into a new run directory (until the process exits);
* `summary` and `report --json` on the imported run (until exit);
* `view` of the imported run once its report is built (until it prints that it serves);
* `moodbench run` of a fresh 2-conversation experiment (until the scripted server sees its first request:
  the first conversation has started).

Each command also runs once under ``python -X importtime`` to say whether it imported tau2, tau2's registry or
litellm (``tests/test_startup.py`` asserts the same property). Times depend on the machine and its load: the
script prints both. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SRC, machine, start_server

CLI = [sys.executable, "-m", "moodbench.cli"]
MOCK = ["--domain", "mock", "--task-ids", "create_task_1,update_task_1", "--agent-model", "openai/scripted", "--skip-preflight"]


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "NO_PROXY": "127.0.0.1,localhost",
        "MPLBACKEND": "Agg",
    }


def _check(args: list[str]) -> None:
    res = subprocess.run([*CLI, *args], capture_output=True, text=True, env=_env(), timeout=600)
    if res.returncode != 0:
        raise RuntimeError(f"moodbench {' '.join(args)} failed ({res.returncode}): {res.stdout[-2000:]} {res.stderr[-3000:]}")


def _timed(args: list[str], until: str | None = None, python: list[str] | None = None) -> tuple[float, float, str]:
    """Seconds from launch to exit (or to a line containing ``until``), the process's CPU seconds (user + system:
    what a quiet machine's wall time would be, near enough, on a loaded one), and stderr (for -X importtime)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [*(python or [sys.executable]), "-m", "moodbench.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    assert proc.stdout is not None
    if until is None:
        out, err = proc.communicate(timeout=600)
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"moodbench {' '.join(args)} failed: {out[-2000:]} {err[-3000:]}")
        return elapsed, _cpu_since(before), err
    line = ""
    while until not in line:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            raise RuntimeError(
                f"moodbench {' '.join(args)} exited before printing {until!r}: {proc.stderr.read()[-3000:] if proc.stderr else ''}"
            )
    elapsed = time.perf_counter() - t0
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    return elapsed, _cpu_since(before), err  # view: its CPU includes the idle second or so until SIGINT (~0)


def _cpu_since(before: resource.struct_rusage) -> float:
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _imports(stderr: str) -> dict[str, bool]:
    mods = set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)\s*$", stderr, re.M))
    return {
        "tau2": "tau2" in mods,
        "tau2.registry": "tau2.registry" in mods,
        "litellm": "litellm" in mods,
        "scipy": "scipy" in mods,
        "matplotlib": "matplotlib" in mods,
    }


def _first_request(tmp: Path, script: dict, i: int) -> float:
    """Seconds from launching `moodbench run` to the scripted server's first request."""
    srv = start_server(script, tmp)
    try:
        t_launch = time.time()
        _check(
            [
                "run",
                *MOCK,
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
        first = srv.stats()["first_request_at"]
    finally:
        srv.stop()
    return first - t_launch


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    from moodbench.testing.scripts import mock_example_script

    tmp = Path(tempfile.mkdtemp(prefix="moodbench-startup-"))
    script = mock_example_script()
    print(f"machine: {machine()}", flush=True)
    srv = start_server(script, tmp)
    try:
        _check(
            [
                "run",
                *MOCK,
                "--variants",
                "control,frustration",
                "--trials",
                "3",
                "--agent-base-url",
                srv.base_url,
                "--out",
                str(tmp / "source"),
            ]
        )
    finally:
        srv.stop()
    files = []
    for v in ("control", "frustration"):
        _check(["export", "--variant", v, "--out", str(tmp / f"{v}.json"), str(tmp / "source")])
        files.append(f"{tmp / f'{v}.json'}={v}")
    imported = tmp / "imported"
    _check(["import", "--format", "tau2", "--out", str(imported), *files])
    built = tmp / "built"
    _check(["import", "--format", "tau2", "--out", str(built), *files])
    _check(["report", str(built)])

    commands: dict[str, tuple[list[str] | None, str | None]] = {
        "import": (None, None),
        "summary": (["summary", str(imported)], None),
        "report --json": (["report", "--json", str(imported)], None),
        "view (report built)": (["view", str(built), "--port", "0", "--no-open"], "press Ctrl-C"),
    }
    results: dict[str, dict] = {}
    for name, (args, until) in commands.items():
        times, cpus = [], []
        for i in range(a.reps + 1):
            argv = args or ["import", "--format", "tau2", "--out", str(tmp / f"imp-{i}"), *files]
            if i == a.reps:  # one more under -X importtime: what it imported (not timed)
                _, _, err = _timed(argv, until, python=[sys.executable, "-X", "importtime"])
                results[name] = {
                    "median_s": round(statistics.median(times), 3),
                    "min_s": round(min(times), 3),
                    "median_cpu_s": round(statistics.median(cpus), 3),
                    "imported": _imports(err),
                }
                break
            elapsed, cpu, _ = _timed(argv, until)
            times.append(elapsed)
            cpus.append(cpu)
        r = results[name]
        print(
            f"{name}: median {r['median_s']} s wall (min {r['min_s']} s), {r['median_cpu_s']} s CPU, over {a.reps}; "
            f"imports {r['imported']}",
            flush=True,
        )
    firsts = [_first_request(tmp, script, i) for i in range(a.reps)]
    results["run: launch to first model request"] = {
        "median_s": round(statistics.median(firsts), 3),
        "min_s": round(min(firsts), 3),
    }
    print(f"load average now {os.getloadavg()[0]:.1f}", flush=True)
    print(
        f"run (warm cache): first model request {results['run: launch to first model request']['median_s']} s after launch "
        f"(median of {a.reps}; min {min(firsts):.3f} s)",
        flush=True,
    )
    out = {"machine": machine(), "load_average_end": round(os.getloadavg()[0], 2), "reps": a.reps, "results": results}
    print(json.dumps(out, indent=1))
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
