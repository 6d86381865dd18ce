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
from moodbench.results._record import FLAG_NAMES, ConversationRecord
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
        "excluded": len(records) - done,
        "avg_reward": (sum(r.reward or 0.0 for r in scored) / len(scored)) if scored else None,
        "pass_hat_k": {str(k): pass_hat_k(by_task, k) for k in range(1, trials + 1)},
        "exit_reasons": dict(sorted(Counter(r.exit_reason.value for r in records).items())),
        "tokens": dict(tokens),
        "cost_usd": round(cost, 6),
        "wall_seconds": round(wall, 3),
        "recovered_text_tool_calls": recovered,
        "fidelity": {"flagged": flags.get("any", 0), **{k: flags[k] for k in sorted(FLAG_NAMES) if flags.get(k)}},
    }


def compute_summary(records: Iterable[ConversationRecord], planned: dict[str, dict[str, int]], trials: int,
                    variants: list[str], domains: list[str]) -> dict[str, Any]:
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
        "by_domain": {d: {v: _block(by_dv.get((d, v), []), planned.get(d, {}).get(v, 0), trials) for v in order} for d in domains},
        "trials": trials,
    }


def summary_of_store(store: Store) -> dict[str, Any]:
    plan = store.get_meta("plan") or {}
    config = store.get_meta("config") or {}
    return compute_summary(store.records(), plan.get("planned", {}), int(config.get("trials", 1)),
                           plan.get("variants", config.get("variants", [])), plan.get("domains", config.get("domains", [])))


def summary_for_run(run_dir: Path) -> dict[str, Any]:
    """Recompute the summary of a run directory from its store and stored plan."""
    with Store(Path(run_dir) / "results.sqlite", readonly=True) as store:
        return summary_of_store(store)


def write_summary(run_dir: Path) -> dict[str, Any]:
    data = summary_for_run(run_dir)
    atomic_write_text(Path(run_dir) / "summary.json", json.dumps(data, indent=2, sort_keys=False))
    return data
