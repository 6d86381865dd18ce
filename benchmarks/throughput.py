"""Throughput and CPU cost: moodbench vs tau2's own runner, same tasks, same scripted server, one run.

    .venv/bin/python benchmarks/throughput.py                      # CPU/conversation + concurrency 64
    .venv/bin/python benchmarks/throughput.py --concurrency 64,512 --executor process
    .venv/bin/python benchmarks/throughput.py --profile            # where moodbench's CPU goes (cProfile)

Three measurements, each harness in its own child process:

1. CPU seconds per conversation, against a server with no latency: each child's CPU for N2
   conversations minus that for N1, over N2 - N1, so start-up and imports cancel out (moodbench
   uses its thread executor here: the work per conversation is the same in every executor). The
   rewards of both harnesses are compared conversation by conversation.
2. Throughput at each concurrency against a server that answers in ``--latency-ms``: steady-state
   completions per second (between the 10% and 90% finish times) and the efficiency against the
   ideal rate ``concurrency / (model calls per conversation x latency)``.
3. The ratios moodbench / tau2 of both.

Each throughput run also reads the machine's busy CPU (every process, sampled every 0.25 s) between the
10% and 90% finish times: CPU per conversation in steady state whatever executor ran it, next to the most
a conversation may cost for 0.9 of the ideal rate on this machine's cores. Compared with measurement 1
(one process, 2 in flight, plus the server's share) it says how much the executor adds.

Numbers depend on the machine and on whatever else runs on it; the script prints the machine line
and the load average so a table row can say where it came from. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, retail_script, run_child, start_server, steady_rate

HERE = Path(__file__).resolve()


# --------------------------------------------------------------------------------------------- children
def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def child_moodbench(a: argparse.Namespace) -> dict:
    from rich.console import Console

    from moodbench import RunConfig, run
    from moodbench.results import Store

    ids = a.task_ids.split(",")
    extra: dict = {"executor": a.executor} if a.executor not in ("default", "") else {}
    if a.workers:
        extra["workers"] = a.workers
    out = Path(a.out)
    cfg = RunConfig(
        domains=[a.domain],
        task_ids=ids,
        variants=["control"],
        trials=math.ceil(a.n / len(ids)),
        concurrency=a.concurrency,
        agent_model="openai/scripted",
        agent_base_url=[a.base_url],
        out=out,
        skip_preflight=True,
        max_retries=0,
        **extra,
    )
    t0 = time.time()
    res = run(cfg, console=Console(file=open(os.devnull, "w")), freeze_gc=True)  # as the CLI runs
    t1 = time.time()
    with Store(out / "results.sqlite") as store:
        rows = list(store.records())
    return {
        "exit_code": int(res.exit_code),
        "t0": t0,
        "t1": t1,
        "n": len(rows),
        "finish": [_ts(r.finished_at or "") for r in rows],
        "rewards": {f"{r.task_id}|{r.trial}": r.reward for r in rows},
        "exit_reasons": dict(Counter(r.exit_reason.value for r in rows)),
    }


def child_tau2(a: argparse.Namespace) -> dict:
    from tau2.run import run_tasks

    from moodbench.sim._tau2 import load_tasks  # quiets tau2/litellm the same way for both harnesses

    ids = a.task_ids.split(",")
    by_id = {t.id: t for t in load_tasks(a.domain)}
    args = {"api_base": a.base_url, "api_key": "sk-no-key-required"}
    t0 = time.time()
    results = run_tasks(
        domain=a.domain,
        tasks=[by_id[i] for i in ids],
        agent="llm_agent",
        user="user_simulator",
        llm_agent="openai/scripted",
        llm_args_agent=dict(args),
        llm_user="openai/scripted",
        llm_args_user=dict(args),
        num_trials=math.ceil(a.n / len(ids)),
        max_concurrency=a.concurrency,
        console_display=False,
        log_level="ERROR",
        save_to=None,
    )
    t1 = time.time()
    sims = results.simulations
    return {
        "t0": t0,
        "t1": t1,
        "n": len(sims),
        "finish": [_ts(s.end_time) for s in sims],
        "rewards": {f"{s.task_id}|{s.trial}": (s.reward_info.reward if s.reward_info else None) for s in sims},
        "exit_reasons": dict(Counter(str(getattr(s.termination_reason, "value", s.termination_reason)) for s in sims)),
    }


def child_profile(a: argparse.Namespace) -> dict:
    """moodbench's conversations one after another in this thread, under cProfile (threads hide from it)."""
    import cProfile
    import io
    import pstats

    from moodbench.experiment import RunConfig, make_plan, model_specs
    from moodbench.llm import EndpointHealth, ModelClient
    from moodbench.results import Store
    from moodbench.sim import ConversationSettings, run_cell

    ids = a.task_ids.split(",")
    cfg = RunConfig(
        domains=[a.domain],
        task_ids=ids,
        variants=["control"],
        trials=math.ceil(a.n / len(ids)),
        agent_model="openai/scripted",
        agent_base_url=[a.base_url],
        out=Path(a.out),
        max_retries=0,
    )
    plan = make_plan(cfg)
    agent, user, judge = model_specs(cfg)
    health = EndpointHealth(0)
    s = ConversationSettings(
        catalog=plan.catalog,
        tasks=plan.tasks,
        agent_client=ModelClient(agent, health),
        user_client=ModelClient(user, health),
        judge_client=ModelClient(judge, health),
        freeze_gc=True,
    )
    store = Store(Path(a.out) / "results.sqlite")
    for c in plan.cells[:2]:  # warm caches the way a long run would have them
        store.insert(*run_cell(c, s))
    prof = cProfile.Profile(time.process_time)  # CPU, not wall: the machine may be shared
    cells = plan.cells[2:]
    cpu0 = time.process_time()
    prof.enable()
    for c in cells:
        record, prompts = run_cell(c, s)
        store.insert(record, prompts)
    prof.disable()
    cpu = (time.process_time() - cpu0) / max(1, len(cells))
    buf = io.StringIO()
    st = pstats.Stats(prof, stream=buf).sort_stats("cumulative")
    st.print_stats(a.profile_lines)
    buf2 = io.StringIO()
    pstats.Stats(prof, stream=buf2).sort_stats("tottime").print_stats(25)
    print(buf.getvalue())
    print(buf2.getvalue())
    return {"cpu_ms_per_conversation_profiled": round(cpu * 1000, 1), "n": len(cells)}


# --------------------------------------------------------------------------------------------- parent
class CpuSampler:
    """Machine-wide busy CPU seconds (``psutil.cpu_times``: all processes, all cores) sampled every 0.25 s,
    so the CPU of a run's steady state can be read off between two finish times whatever processes it used."""

    def __init__(self, every_s: float = 0.25):
        import threading

        self._every = every_s
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def cores() -> int:
        import psutil

        return psutil.cpu_count() or 1

    @staticmethod
    def _busy() -> float:
        import psutil

        t = psutil.cpu_times()  # guest time is already in user; steal is not this machine's work
        return t.user + t.system + getattr(t, "nice", 0.0) + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), self._busy()))
            self._stop.wait(self._every)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((time.time(), self._busy()))

    def _at(self, t: float) -> float:
        """Busy CPU seconds at time ``t``, interpolated between samples."""
        pts = self.samples
        for (t0, c0), (t1, c1) in zip(pts, pts[1:]):
            if t0 <= t <= t1:
                return c0 if t1 == t0 else c0 + (c1 - c0) * (t - t0) / (t1 - t0)
        return pts[-1][1] if t > pts[-1][0] else pts[0][1]

    def per_completion(self, finish_times: list[float], lo: float = 0.1, hi: float = 0.9) -> float | None:
        """Busy CPU seconds per conversation finished between the lo and hi quantiles of the finish times."""
        ts = sorted(finish_times)
        if len(ts) < 10 or len(self.samples) < 2:
            return None
        i, j = int(len(ts) * lo), int(len(ts) * hi) - 1
        if ts[j] <= ts[i]:
            return None
        return (self._at(ts[j]) - self._at(ts[i])) / (j - i)


def _child(
    kind: str, base_url: str, n: int, concurrency: int, a: argparse.Namespace, tmp: Path, executor: str | None = None
) -> tuple[dict, float]:
    out = tmp / f"{kind}-{n}-{concurrency}-{time.monotonic_ns()}"
    args = [
        str(HERE),
        "--child",
        kind,
        "--base-url",
        base_url,
        "--n",
        str(n),
        "--concurrency",
        str(concurrency),
        "--domain",
        a.domain,
        "--task-ids",
        a.task_ids,
        "--executor",
        executor or a.executor,
        "--out",
        str(out),
        *(["--workers", str(a.workers)] if a.workers else []),
    ]
    return run_child(args)


def measure_cpu(a: argparse.Namespace, tmp: Path) -> dict:
    n1, n2 = (int(x) for x in a.cpu_conversations.split(","))
    srv = start_server(retail_script(a.flow, latency_ms=0), tmp)
    out: dict = {}
    try:
        for kind in ("moodbench", "tau2") if not a.skip_tau2 else ("moodbench",):
            s0 = srv.cpu_seconds()
            # threads: CPU per conversation is the same work in any executor, and only a process's own
            # (waited-for) children show in RUSAGE_CHILDREN; forkserver workers would not
            r1, c1 = _child(kind, srv.base_url, n1, a.cpu_concurrency, a, tmp, executor="thread")
            r2, c2 = _child(kind, srv.base_url, n2, a.cpu_concurrency, a, tmp, executor="thread")
            s1 = srv.cpu_seconds()
            out[kind] = {
                "cpu_s_per_conversation": (c2 - c1) / (r2["n"] - r1["n"]),
                "server_cpu_s_per_conversation": (s1 - s0) / (r1["n"] + r2["n"]),
                "exit_reasons": r2["exit_reasons"],
                "rewards": r2["rewards"],
            }
        calls = srv.stats()
    finally:
        srv.stop()
    out["server_stats"] = calls
    if "tau2" in out:
        m, t = out["moodbench"]["rewards"], out["tau2"]["rewards"]
        out["rewards_identical"] = m == t
        out["reward_mismatches"] = {k: (m.get(k), t.get(k)) for k in set(m) | set(t) if m.get(k) != t.get(k)}
    return out


def measure_throughput(a: argparse.Namespace, tmp: Path, concurrency: int) -> dict:
    """Each moodbench executor (``default``: no executor flag, as a user types it) and tau2, one after
    another, each against a fresh server so its first request and last reply bound its own run."""
    out: dict = {"concurrency": concurrency}
    runs = [("moodbench", ex) for ex in a.executors] + ([] if a.skip_tau2 else [("tau2", "")])
    for kind, executor in runs:
        n = a.conversations or max(4 * concurrency, 64)
        if kind == "tau2":
            n = min(n, a.tau2_conversations or max(2 * concurrency, 64))
        srv = start_server(retail_script(a.flow, latency_ms=a.latency_ms), tmp)
        sampler = CpuSampler()
        try:
            started = time.time()
            sampler.start()
            try:
                r, cpu = _child(kind, srv.base_url, n, concurrency, a, tmp, executor=executor or None)
            finally:
                sampler.stop()
            stats = srv.stats()
        finally:
            srv.stop()
        calls = stats.get("requests", 0) / max(1, r["n"])
        ideal = concurrency / (calls * a.latency_ms / 1000.0)
        rate = steady_rate(r["finish"]) or r["n"] / (r["t1"] - r["t0"])
        span = (stats["last_reply_at"] - stats["first_request_at"]) if stats.get("first_request_at") else None
        whole = r["n"] / span if span else None
        name = f"moodbench[{executor}]" if kind == "moodbench" else "tau2"
        steady_cpu = sampler.per_completion(r["finish"])
        out[name] = {
            "conversations": r["n"],
            "calls_per_conversation": round(calls, 2),
            "ideal_per_s": round(ideal, 2),
            "steady_per_s": round(rate, 2),
            "steady_efficiency": round(rate / ideal, 3),
            "whole_run_per_s": round(whole, 2) if whole else None,
            "whole_run_efficiency": round(whole / ideal, 3) if whole else None,
            "first_request_after_s": round(stats["first_request_at"] - started, 2) if stats.get("first_request_at") else None,
            "process_wall_s": round(time.time() - started, 2),
            "exit_reasons": r["exit_reasons"],
            # forkserver workers are not our children: their CPU escapes RUSAGE_CHILDREN
            "cpu_ms_per_conversation_incl_startup": (
                round(cpu / max(1, r["n"]) * 1000, 1) if kind == "tau2" or executor == "thread" else None
            ),
            "load_average_after": round(os.getloadavg()[0], 2),
            # every process on the machine (moodbench's, the scripted server's, anything else running), busy CPU
            # between the 10% and 90% finish times over the conversations finished there
            "steady_machine_cpu_ms_per_conversation": round(steady_cpu * 1000, 1) if steady_cpu else None,
            # the most CPU a conversation may cost, all processes together, for 0.9 of the ideal rate on this machine
            "cpu_ms_budget_for_0.9": round(CpuSampler.cores() * 1000 / (0.9 * ideal), 1),
        }
    ref = next((out[k] for k in out if k.startswith("moodbench[")), None)
    if ref is not None and "tau2" in out:
        out["ratio_completions_per_s"] = round(ref["steady_per_s"] / out["tau2"]["steady_per_s"], 2)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--domain", default="retail")
    p.add_argument("--task-ids", default="0,1,2,3,4,5,6,7", help="tasks the conversations run on (cycled by trials)")
    p.add_argument("--flow", choices=["write", "read"], default="write", help="scripted agent cancels an order, or only reads")
    p.add_argument("--cpu-conversations", default="16,64", help="N1,N2 for the CPU difference measurement")
    p.add_argument("--cpu-concurrency", type=int, default=2)
    p.add_argument("--concurrency", default="64", help="comma-separated concurrencies for the throughput runs ('' skips)")
    p.add_argument("--latency-ms", type=float, default=200.0)
    p.add_argument(
        "--conversations", type=int, default=0, help="moodbench conversations per throughput run (default 4 x concurrency)"
    )
    p.add_argument(
        "--tau2-conversations", type=int, default=0, help="tau2 conversations per throughput run (default 2 x concurrency)"
    )
    p.add_argument(
        "--executor",
        default="default,thread,process",
        help="comma-separated moodbench executors for the throughput runs: default (no flag, as a user types it), "
        "thread, process, ray",
    )
    p.add_argument("--workers", type=int, default=0, help="moodbench --workers (default: the executor's own choice)")
    p.add_argument("--skip-tau2", action="store_true")
    p.add_argument("--skip-cpu", action="store_true")
    p.add_argument("--profile", action="store_true", help="only profile moodbench (cProfile, sequential) and exit")
    p.add_argument("--profile-lines", type=int, default=45)
    p.add_argument("--json", type=Path, help="also write the results here")
    # child mode (internal)
    p.add_argument("--child", choices=["moodbench", "tau2", "profile"], help=argparse.SUPPRESS)
    p.add_argument("--base-url", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    a = p.parse_args()

    a.executors = [x.strip() for x in a.executor.split(",") if x.strip()]
    if a.child:
        a.concurrency = int(a.concurrency)
        fn = {"moodbench": child_moodbench, "tau2": child_tau2, "profile": child_profile}[a.child]
        print("RESULT " + json.dumps(fn(a)), flush=True)
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="moodbench-bench-"))
    print(f"machine: {machine()}")
    print(f"domain {a.domain}, tasks {a.task_ids}, flow {a.flow}, moodbench executors {', '.join(a.executors)}")
    if a.profile:
        srv = start_server(retail_script(a.flow, latency_ms=0), tmp)
        try:
            args = [
                str(HERE),
                "--child",
                "profile",
                "--base-url",
                srv.base_url,
                "--n",
                str(a.conversations or 40),
                "--concurrency",
                "1",
                "--domain",
                a.domain,
                "--task-ids",
                a.task_ids,
                "--out",
                str(tmp / "profile"),
                "--profile-lines",
                str(a.profile_lines),
            ]
            import subprocess

            res = subprocess.run([sys.executable, *args], capture_output=True, text=True)
            print(res.stdout[-30000:], res.stderr[-3000:])
        finally:
            srv.stop()
        return 0

    results: dict = {"machine": machine(), "flow": a.flow, "executor": a.executor}
    if not a.skip_cpu:
        cpu = measure_cpu(a, tmp)
        results["cpu"] = {k: v for k, v in cpu.items() if k not in ("moodbench", "tau2")}
        for kind in ("moodbench", "tau2"):
            if kind in cpu:
                c = cpu[kind]
                results["cpu"][kind] = {
                    "cpu_ms_per_conversation": round(c["cpu_s_per_conversation"] * 1000, 1),
                    "server_cpu_ms_per_conversation": round(c["server_cpu_s_per_conversation"] * 1000, 1),
                    "exit_reasons": c["exit_reasons"],
                }
        m = results["cpu"]["moodbench"]["cpu_ms_per_conversation"]
        srv_ms = results["cpu"]["moodbench"]["server_cpu_ms_per_conversation"]
        line = f"CPU per conversation: moodbench {m} ms (+ the scripted server's {srv_ms} ms)"
        if "tau2" in results["cpu"]:
            t = results["cpu"]["tau2"]["cpu_ms_per_conversation"]
            results["cpu"]["ratio_tau2_over_moodbench"] = round(t / m, 2)
            line += f", tau2 {t} ms, tau2/moodbench = {t / m:.2f}x, rewards identical: {cpu['rewards_identical']}"
            results["cpu"].pop("rewards", None)
        print(line, flush=True)
    results["throughput"] = []
    for c in [int(x) for x in a.concurrency.split(",") if x.strip()]:
        r = measure_throughput(a, tmp, c)
        results["throughput"].append(r)
        for kind in [k for k in r if k.startswith("moodbench[") or k == "tau2"]:
            k = r[kind]
            print(
                f"concurrency {c} {kind}: efficiency whole run {k['whole_run_efficiency']} ({k['whole_run_per_s']}/s, first "
                f"request to last reply), steady {k['steady_efficiency']} ({k['steady_per_s']}/s); ideal {k['ideal_per_s']}/s "
                f"({k['calls_per_conversation']} calls/conv); first request {k['first_request_after_s']} s after launch; "
                f"{k['conversations']} conversations, {k['exit_reasons']}, load {k['load_average_after']}; steady CPU per "
                f"conversation, all processes: {k['steady_machine_cpu_ms_per_conversation']} ms (0.9 of ideal allows "
                f"{k['cpu_ms_budget_for_0.9']} ms)",
                flush=True,
            )
        if "ratio_completions_per_s" in r:
            print(f"concurrency {c}: moodbench/tau2 completions per second = {r['ratio_completions_per_s']}x", flush=True)
    print(json.dumps(results, indent=1, default=str))
    if a.json:
        a.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
