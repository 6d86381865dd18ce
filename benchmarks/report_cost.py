"""What the failure anatomy ("How the agent failed") adds to ``moodbench report`` on 1,000 conversations.

    .venv/bin/python benchmarks/report_cost.py                        # 1,000 conversations, 1 repeat
    .venv/bin/python benchmarks/report_cost.py --conversations 400 --repeats 2 --json

1. A real retail run: ``moodbench run`` against the scripted server (``_common.retail_script``: 9 model calls,
   four tool calls with real tau2 retail tool outputs, a write), 2 tasks x 2 variants, so the transcripts,
   tau2 reward_info and task facts are exactly what a run stores.
2. A synthetic run in a real store: those records cloned into ``--conversations`` rows (50 tasks x 4 variants
   x N/200 trials, rewards drawn per task with a drop for two variants, so tasks flip and side-by-side pages are
   written), inserted with ``Store.insert`` next to the real run's configuration and plan.
3. ``build_report`` (what ``moodbench report`` runs) in a fresh child process per measurement, with and without
   the anatomy section, alternating; the median wall time of each and their ratio are printed. The issue's
   bound is ratio <= 1.20.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SRC, machine, retail_script, run_child, start_server

HERE = Path(__file__).resolve()
VARIANTS = ("control", "frustration", "anger", "anxiety")
DROP = {"control": 0.0, "frustration": 0.10, "anger": 0.20, "anxiety": 0.0}
TASKS = 50
BOUND = 1.20


def _real_run(tmp: Path) -> Path:
    srv = start_server(retail_script("write"), tmp / "server")
    try:
        out = tmp / "real"
        env_py = {"PYTHONPATH": str(SRC), "LITELLM_LOCAL_MODEL_COST_MAP": "True", "NO_PROXY": "127.0.0.1,localhost"}
        import os

        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "moodbench.cli",
                "run",
                "--domain",
                "retail",
                "--task-ids",
                "0,1",
                "--variants",
                "control,frustration",
                "--trials",
                "1",
                "--agent-model",
                "openai/scripted",
                "--agent-base-url",
                srv.base_url,
                "--concurrency",
                "2",
                "--max-retries",
                "0",
                "--skip-preflight",
                "--out",
                str(out),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, **env_py},
            timeout=900,
        )
        if r.returncode != 0:
            raise RuntimeError(f"the real run failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
        return out
    finally:
        srv.stop()


def _synthetic(real: Path, out: Path, n: int, seed: int) -> int:
    """Clone the real run's records into ``n`` rows of a new store; returns the number written."""
    sys.path.insert(0, str(SRC))
    from moodbench.results import ExitReason, Store

    rng = random.Random(seed)
    with Store(real / "results.sqlite", readonly=True) as src:
        templates = [r for r in src.records(with_payload=True) if r.simulation]
        config, plan = src.get_meta("config"), src.get_meta("plan")
        prompts = {d: src.prompt(d) for r in templates for d in (r.agent_prompt_sha256, r.user_prompt_sha256) if d}
    trials = max(1, n // (TASKS * len(VARIANTS)))
    config = {**config, "variants": list(VARIANTS), "trials": trials, "task_ids": None}
    plan = {
        **plan,
        "variants": list(VARIANTS),
        "domains": ["retail"],
        "planned": {"retail": {v: TASKS * trials for v in VARIANTS}},
    }
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    with Store(out / "results.sqlite") as store:
        store.set_meta("config", config)
        store.set_meta("plan", plan)
        roles = {r.agent_prompt_sha256: "agent" for r in templates} | {r.user_prompt_sha256: "user" for r in templates}
        for d, text in prompts.items():
            if text is not None:
                store.put_prompt(roles.get(d, "user"), text)
        for t in range(TASKS):
            p = rng.uniform(0.2, 0.9)
            for v in VARIANTS:
                for k in range(trials):
                    tpl = templates[(t + k) % len(templates)]
                    ok = rng.random() < p - DROP[v]
                    info = json.loads(json.dumps(tpl.reward_info or {}))
                    info["reward"] = 1.0 if ok else 0.0
                    if isinstance(info.get("db_check"), dict):
                        info["db_check"] = {"db_match": ok, "db_reward": 1.0 if ok else 0.0}
                    for a in info.get("action_checks") or []:
                        a["action_match"] = ok
                    rec = tpl.model_copy(
                        update={
                            "id": None,
                            "cell_key": f"retail|syn{t}|{v}|{k}",
                            "task_id": f"syn{t}",
                            "variant": v,
                            "trial": k,
                            "seed": 1000 * t + k,
                            "reward": info["reward"],
                            "reward_info": info,
                            "exit_reason": ExitReason.SUCCESS if ok else ExitReason.TASK_FAILED,
                        }
                    )
                    written += int(store.insert(rec))
    return written


def _child(run_dir: str, out: str, anatomy: bool) -> None:
    sys.path.insert(0, str(SRC))
    from moodbench.report import build_report

    t0 = time.perf_counter()
    result = build_report([Path(run_dir)], Path(out), anatomy=anatomy)
    wall = time.perf_counter() - t0
    print("RESULT " + json.dumps({"wall_s": wall, "anatomy": anatomy, "has_section": "anatomy" in result.data}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--conversations", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=1, help="measurements of each configuration (alternating)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--keep", type=Path, help="also copy the synthetic run directory here (for profiling)")
    ap.add_argument("--child", nargs=3, metavar=("RUN_DIR", "OUT", "ANATOMY"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        _child(a.child[0], a.child[1], a.child[2] == "1")
        return 0
    where = machine()
    with tempfile.TemporaryDirectory(prefix="moodbench-report-cost-") as d:
        tmp = Path(d)
        real = _real_run(tmp)
        n = _synthetic(real, tmp / "synthetic", a.conversations, a.seed)
        if a.keep:
            import shutil

            shutil.copytree(tmp / "synthetic", a.keep, dirs_exist_ok=True)
        times: dict[bool, list[float]] = {False: [], True: []}
        cpu: dict[bool, list[float]] = {False: [], True: []}
        for i in range(a.repeats):
            for anatomy in (False, True) if i % 2 == 0 else (True, False):
                res, c = run_child(
                    [
                        str(HERE),
                        "--child",
                        str(tmp / "synthetic"),
                        str(tmp / f"report-{int(anatomy)}-{i}"),
                        "1" if anatomy else "0",
                    ]
                )
                assert res["has_section"] == anatomy
                times[anatomy].append(res["wall_s"])
                cpu[anatomy].append(c)
        without, with_ = statistics.median(times[False]), statistics.median(times[True])
        flips = json.loads((tmp / "report-1-0" / "report.json").read_text())["anatomy"]["flipping_tasks"]
        pages = sum(len(f["flips"]) for f in flips)
    ratio = with_ / without
    result = {
        "conversations": n,
        "repeats": a.repeats,
        "without_anatomy_s": round(without, 2),
        "with_anatomy_s": round(with_, 2),
        "ratio": round(ratio, 3),
        "bound": BOUND,
        "within_bound": ratio <= BOUND,
        "pair_pages": pages,
        "cpu_without_s": round(statistics.median(cpu[False]), 2),
        "cpu_with_s": round(statistics.median(cpu[True]), 2),
        "machine": where,
    }
    if a.json:
        print(json.dumps(result))
    else:
        print(
            f"{where}\n{n} conversations ({pages} side-by-side pages): report without anatomy {without:.1f} s, with {with_:.1f} s "
            f"(median of {a.repeats}); ratio {ratio:.3f} (bound {BOUND:.2f}: {'ok' if ratio <= BOUND else 'EXCEEDED'})"
        )
    return 0 if ratio <= BOUND else 1


if __name__ == "__main__":
    raise SystemExit(main())
