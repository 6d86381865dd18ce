"""summary.json: per-variant (and per-domain) numbers computed from the store, nothing else.

The report reads the same function, so the two can never disagree.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from math import comb
from pathlib import Path
from typing import Any

from moodbench._util.files import atomic_write_text
from moodbench.results._record import FLAG_NAMES, ConversationRecord, ExitReason
from moodbench.results._store import Store

TOKEN_FIELDS = ("agent_prompt_tokens", "agent_completion_tokens", "user_prompt_tokens", "user_completion_tokens")


def pass_hat_k(successes_by_task: dict[Any, list[bool]], k: int) -> float | None:
    """tau2's pass^k: the mean over tasks of C(c, k) / C(n, k) (c successes in n trials).

    As in tau2, k runs only up to the smallest trial count of any task: every task enters every k,
    so pass^k cannot rise with k because tasks with few trials silently dropped out.
    """
    counts = [len(v) for v in successes_by_task.values()]
    if not counts or k < 1 or k > min(counts):
        return None
    return sum(comb(sum(v), k) / comb(len(v), k) for v in successes_by_task.values()) / len(counts)


def max_k(successes_by_task: dict[Any, list[bool]]) -> int:
    """The largest k pass^k is defined for (tau2: the smallest trial count of any task)."""
    return min((len(v) for v in successes_by_task.values()), default=0)


def _block(records: list[ConversationRecord], planned: int, trials: int) -> dict[str, Any]:
    scored = [r for r in records if not r.excluded]
    by_task: dict[str, list[bool]] = defaultdict(list)
    for r in scored:
        by_task[f"{r.domain}|{r.task_id}"].append(r.success)
    tokens: Counter[str] = Counter()
    flags: Counter[str] = Counter()
    cost = wall = 0.0
    recovered = 0
    for r in records:
        for col in TOKEN_FIELDS:
            tokens[col] += int(getattr(r, col))
        cost += r.cost_usd
        wall += r.wall_seconds or 0.0
        flags.update(r.flags.raised())
        flags["any"] += int(r.flags.any)
        recovered += r.stats.agent.recovered_text_calls
    done = sum(1 for r in records if not r.exit_reason.excluded)
    return {
        "planned": planned,
        "done": done,
        "scored": len(scored),
        "excluded": len(records) - len(scored),  # every record left out of the averages, whatever the reason
        "not_run": sum(1 for r in records if r.exit_reason is ExitReason.INFRASTRUCTURE_ERROR),
        "agent_models": sorted({r.agent_model for r in records if r.agent_model}),
        "user_models": sorted({r.user_model for r in records if r.user_model}),
        "avg_reward": (sum(r.reward or 0.0 for r in scored) / len(scored)) if scored else None,
        "pass_hat_k": {str(k): pass_hat_k(by_task, k) for k in range(1, trials + 1)},
        "exit_reasons": dict(sorted(Counter(r.exit_reason.value for r in records).items())),
        "tokens": dict(tokens),
        "cost_usd": round(cost, 6),
        "wall_seconds": round(wall, 3),
        "recovered_text_tool_calls": recovered,
        "fidelity": {"flagged": flags.get("any", 0), **{k: flags[k] for k in sorted(FLAG_NAMES) if flags.get(k)}},
    }


def compute_summary(
    records: Iterable[ConversationRecord],
    planned: dict[str, dict[str, int]],
    trials: int,
    variants: list[str],
    domains: list[str],
) -> dict[str, Any]:
    """``planned``: {domain: {variant: n}} from the run's cells (this shard's, if sharded)."""
    rows = list(records)
    by_variant: dict[str, list[ConversationRecord]] = defaultdict(list)
    by_dv: dict[tuple[str, str], list[ConversationRecord]] = defaultdict(list)
    for r in rows:
        by_variant[r.variant].append(r)
        by_dv[(r.domain, r.variant)].append(r)
    order = list(variants) + sorted(set(by_variant) - set(variants))
    return {
        "variants": {v: _block(by_variant.get(v, []), sum(planned.get(d, {}).get(v, 0) for d in domains), trials) for v in order},
        "domains": list(domains),
        "by_domain": {
            d: {v: _block(by_dv.get((d, v), []), planned.get(d, {}).get(v, 0), trials) for v in order} for d in domains
        },
        "trials": trials,
    }


def tau2_reproduction(records: list[ConversationRecord], imports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per imported file: tau2's own metrics (computed from the raw file at import, by tau2's rule) beside
    moodbench's numbers for the same simulations, and why they differ where they do."""
    out = []
    for imp in imports:
        tau2 = imp.get("tau2_metrics")
        if not tau2:
            continue
        scored = [r for r in records if r.variant == imp["variant"] and r.domain == imp["domain"] and not r.excluded]
        by_task: dict[str, list[bool]] = defaultdict(list)
        for r in scored:
            by_task[r.task_id].append(r.success)
        avg = (sum(r.reward or 0.0 for r in scored) / len(scored)) if scored else None
        pk = {k: pass_hat_k(by_task, int(k)) for k in tau2["pass_hat_k"]}
        ours = {"avg_reward": avg, "pass_hat_k": pk, "simulations": len(scored)}
        why = []
        a, b = tau2.get("avg_reward"), avg
        if (a is None) != (b is None) or (a is not None and b is not None and abs(a - b) > 1e-9):
            why.append(
                f"avg_reward {_f(b)} here vs {_f(a)} by tau2's rule: "
                + (
                    f"{tau2['no_reward']} simulation(s) without a reward count as 0 here (as tau2's pass^k counts them) and are "
                    "skipped by tau2's mean"
                    if tau2.get("no_reward")
                    else "unexplained; please report it"
                )
            )
        for k, v in tau2["pass_hat_k"].items():
            mine = pk.get(k)
            if mine is None or abs(mine - v) > 1e-9:
                why.append(f"pass^{k} {_f(mine)} here vs {_f(v)} by tau2's rule (unexplained; please report it)")
        out.append(
            {
                k: imp.get(k)
                for k in (
                    "file",
                    "variant",
                    "domain",
                    "agent_model",
                    "user_model",
                    "agent_implementation",
                    "user_implementation",
                    "tau2_git_commit",
                    "num_trials",
                    "trials_found",
                    "solo",
                )
            }
            | {"tau2": tau2, "moodbench": ours, "matches": not why, "differences": why}
        )
    return out


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def summary_of_store(store: Store) -> dict[str, Any]:
    plan = store.get_meta("plan") or {}
    config = store.get_meta("config") or {}
    records = list(store.records())
    data = compute_summary(
        records,
        plan.get("planned", {}),
        int(config.get("trials", 1)),
        plan.get("variants", config.get("variants", [])),
        plan.get("domains", config.get("domains", [])),
    )
    sequential = store.get_meta("sequential")
    if sequential:  # run --sequential: where it stopped (cells of later stages were never needed, not missing)
        data["sequential"] = {k: v for k, v in sequential.items() if k != "stage_of"}
    imports = list(config.get("imports") or [])
    if imports:
        data["tau2_files"] = tau2_reproduction(records, imports)
        for imp in imports:
            block = data["variants"].get(imp["variant"])
            if block is not None:
                block.setdefault("sources", []).append(
                    {
                        k: imp.get(k)
                        for k in (
                            "file",
                            "domain",
                            "agent_model",
                            "user_model",
                            "agent_implementation",
                            "user_implementation",
                            "tau2_git_commit",
                        )
                    }
                )
    return data


def summary_for_run(run_dir: Path) -> dict[str, Any]:
    """Recompute the summary of a run directory from its store and stored plan."""
    with Store(Path(run_dir) / "results.sqlite", readonly=True) as store:
        return summary_of_store(store)


def write_summary(run_dir: Path) -> dict[str, Any]:
    data = summary_for_run(run_dir)
    atomic_write_text(Path(run_dir) / "summary.json", json.dumps(data, indent=2, sort_keys=False))
    return data
