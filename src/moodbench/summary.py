"""summary.json: per-variant (and per-domain) numbers computed from the store, nothing else.

The report reads the same function, so the two can never disagree.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from math import comb
from pathlib import Path
from typing import Any, Iterable

from moodbench.outcomes import EXCLUDED
from moodbench.store import Row, Store


def pass_hat_k(successes_by_task: dict[str, list[bool]], k: int) -> float | None:
    """tau2's pass^k: mean over tasks of C(c, k) / C(n, k), tasks with at least k trials."""
    vals = [comb(sum(v), k) / comb(len(v), k) for v in successes_by_task.values() if len(v) >= k]
    return sum(vals) / len(vals) if vals else None


def _block(rows: list[Row], planned: int, trials: int) -> dict[str, Any]:
    scored = [r for r in rows if r.exit_reason not in EXCLUDED and r.reward is not None]
    by_task: dict[str, list[bool]] = defaultdict(list)
    for r in scored:
        by_task[f"{r.domain}|{r.task_id}"].append(r.reward >= 1.0 - 1e-9)
    tokens = Counter()
    cost = wall = 0.0
    flags = Counter()
    recovered = 0
    for r in rows:
        for col in ("agent_prompt_tokens", "agent_completion_tokens", "user_prompt_tokens", "user_completion_tokens"):
            tokens[col] += int(r.data.get(col) or 0)
        cost += float(r.data.get("cost_usd") or 0.0)
        wall += float(r.data.get("wall_seconds") or 0.0)
        f = r.json("flags") or {}
        for key, value in f.items():
            if key != "evidence" and value is True:
                flags[key] += 1
        stats = r.json("stats") or {}
        recovered += int(stats.get("agent", {}).get("recovered_text_calls", 0))
    done = sum(1 for r in rows if r.exit_reason not in EXCLUDED)
    return {
        "planned": planned,
        "done": done,
        "scored": len(scored),
        "excluded": len(rows) - done,
        "avg_reward": (sum(r.reward for r in scored) / len(scored)) if scored else None,
        "pass_hat_k": {str(k): pass_hat_k(by_task, k) for k in range(1, trials + 1)},
        "exit_reasons": dict(sorted(Counter(r.exit_reason for r in rows).items())),
        "tokens": dict(tokens),
        "cost_usd": round(cost, 6),
        "wall_seconds": round(wall, 3),
        "recovered_text_tool_calls": recovered,
        "fidelity": {"flagged": flags.get("any", 0), **{k: v for k, v in sorted(flags.items()) if k != "any"}},
    }


def compute_summary(rows: Iterable[Row], planned: dict[str, dict[str, int]], trials: int, variants: list[str], domains: list[str]) -> dict[str, Any]:
    """``planned``: {domain: {variant: n}} from the run's cells (this shard's, if sharded)."""
    rows = list(rows)
    by_variant: dict[str, list[Row]] = defaultdict(list)
    by_dv: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in rows:
        by_variant[r.variant].append(r)
        by_dv[(r.domain, r.variant)].append(r)
    order = list(variants) + sorted(set(by_variant) - set(variants))
    out: dict[str, Any] = {
        "variants": {v: _block(by_variant.get(v, []), sum(planned.get(d, {}).get(v, 0) for d in domains), trials) for v in order},
        "domains": list(domains),
        "by_domain": {d: {v: _block(by_dv.get((d, v), []), planned.get(d, {}).get(v, 0), trials) for v in order} for d in domains},
        "trials": trials,
    }
    return out


def summary_for_run(run_dir: Path) -> dict[str, Any]:
    """Recompute the summary of a run directory from its store and stored plan."""
    with Store(Path(run_dir) / "results.sqlite") as store:
        plan = store.get_meta("plan") or {}
        config = store.get_meta("config") or {}
        return compute_summary(store.rows(), plan.get("planned", {}), int(config.get("trials", 1)),
                               plan.get("variants", config.get("variants", [])), plan.get("domains", config.get("domains", [])))


def write_summary(run_dir: Path) -> dict[str, Any]:
    data = summary_for_run(run_dir)
    path = Path(run_dir) / "summary.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False))
    tmp.replace(path)  # atomic: a reader never sees half a summary
    return data
