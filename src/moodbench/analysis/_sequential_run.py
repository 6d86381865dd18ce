"""A sequential run's looks, computed from its stored records: the one function the stage driver, resume and report use.

The run stores its plan (stages, boundaries, smallest effect) and the stage of every task in the store's
``sequential`` meta; the decisions are a pure function of the records and that plan, so a resumed run, a report
and the stage driver all replay the same looks (``replay``) and reach the same verdicts. A comparison is one
variant against the baseline, pooled over domains, on the matched scored pairs of the tasks in stages 1..k (the
report's own ``matched_pairs`` and ``paired_effect``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from moodbench._util.errors import UsageError
from moodbench.analysis._claims import _comparison_arrays, matched_pairs, scored_index
from moodbench.analysis._effect import ALPHA, PairedEffect, no_claim_reason, paired_effect
from moodbench.analysis._planning import planned_mde
from moodbench.analysis._sequential import (
    DEFAULT_LOOKS,
    SequentialPlan,
    SequentialResult,
    futility_level,
    futility_text,
    replay,
    stage_fractions,
    stage_sizes,
)
from moodbench.results import ConversationRecord

__all__ = [
    "META_KEY",
    "complete_looks",
    "plan_run",
    "report_sequential",
    "run_looks",
    "sequential_state",
    "stage_layout",
    "state_plan",
]

META_KEY = "sequential"  # the store meta (and manifest/summary key) holding the plan and the looks

TaskKey = tuple[str, str]


def stage_layout(tasks_by_domain: Mapping[str, Sequence[str]], looks: int) -> tuple[dict[TaskKey, int], tuple[int, ...]]:
    """Stage (1-based) of every (domain, task): each domain's tasks split into ``looks`` near-equal blocks in plan
    order, so every stage holds a share of every domain; returns the map and the tasks per stage."""
    stage_of: dict[TaskKey, int] = {}
    totals = [0] * looks
    for domain, ids in tasks_by_domain.items():
        if len(ids) < looks:
            raise ValueError(
                f"--looks {looks} needs at least {looks} tasks per domain ({domain!r} has {len(ids)}); lower --looks or add tasks"
            )
        start = 0
        for k, size in enumerate(stage_sizes(len(ids), looks)):
            for tid in ids[start : start + size]:
                stage_of[(domain, tid)] = k + 1
            totals[k] += size
            start += size
    return stage_of, tuple(totals)


def plan_run(
    tasks_by_domain: Mapping[str, Sequence[str]],
    variants: Sequence[str],
    baseline: str,
    trials: int,
    *,
    looks: int | None = None,
    smallest_effect: float | None = None,
) -> tuple[SequentialPlan, dict[TaskKey, int]]:
    """The plan of ``run --sequential``: stages of tasks, Holm over the variants (one pooled comparison each), and the
    smallest effect of interest (default: the planned MDE of the pooled comparison at the module's assumptions)."""
    others = [v for v in variants if v != baseline]
    if not others:
        raise ValueError(f"--sequential compares variants with {baseline!r}; name at least one other variant")
    k = DEFAULT_LOOKS if looks is None else looks
    stage_of, stages = stage_layout(tasks_by_domain, k)
    total = sum(stages)
    delta = smallest_effect
    if delta is None:
        delta = planned_mde(total, trials, len(others), 1)
        if delta is None:
            raise ValueError(
                f"{total} tasks x {trials} trials cannot make a claim, so no MDE to stop on; give --smallest-effect or add tasks"
            )
    conf = futility_level(stage_fractions(stages))
    plan = SequentialPlan(total, stages, ALPHA, len(others), delta, conf)  # as plan_sequential
    return plan, stage_of


def run_looks(
    records: Iterable[ConversationRecord],
    baseline: str,
    others: Sequence[str],
    plan: SequentialPlan,
    stage_of: Mapping[TaskKey, int],
    looks_run: int,
) -> SequentialResult:
    """Replay looks 1..``looks_run`` on the stored records (pairs of tasks outside the layout are ignored)."""
    index = scored_index(records)
    base = index.get(baseline, {})
    pairs = {v: matched_pairs(base, index.get(v, {})) for v in others}

    def effect_at(i: int, k: int) -> PairedEffect:
        chosen = [p for p in pairs[others[i]] if stage_of.get(p[0].task_key, plan.looks + 1) <= k]
        return paired_effect(*_comparison_arrays(chosen))

    return replay(plan, len(others), effect_at, looks_run, reason=no_claim_reason)


def complete_looks(
    records: Sequence[ConversationRecord],
    baseline: str,
    others: Sequence[str],
    plan: SequentialPlan,
    stage_of: Mapping[TaskKey, int],
    trials: int,
) -> int:
    """How many looks the records support: stage k counts once every (task, trial) of it has a stored conversation
    (scored or excluded) for the baseline and every variant still undecided after look k - 1. Used where the run's
    own count is not known: a run merged from the shards of a sequential run, and each shard's next stage."""
    have = {(r.domain, r.task_id, r.variant, r.trial) for r in records}
    active = [baseline, *others]
    n = 0
    for look in range(1, plan.looks + 1):
        tasks = [tk for tk, s in stage_of.items() if s == look]
        if not all((d, t, v, tr) in have for d, t in tasks for v in active for tr in range(trials)):
            break
        n = look
        result = run_looks(records, baseline, others, plan, stage_of, look)
        if result.decided:
            break
        active = [baseline, *(v for v, d in zip(others, result.final) if d.status == "continue")]
    return n


def sequential_state(
    plan: SequentialPlan, stage_of: Mapping[TaskKey, int], baseline: str, others: Sequence[str], result: SequentialResult | None
) -> dict[str, Any]:
    """What the store meta, manifest, summary and events hold: the plan, the layout and every look's decisions."""
    looks: list[dict[str, Any]] = []
    for k, decisions in enumerate(result.looks if result else ()):
        looks.append(
            {
                "look": k + 1,
                "tasks": sum(plan.stages[: k + 1]),
                "decisions": [{"variant": v, **d.to_dict()} for v, d in zip(others, decisions)],
            }
        )
    done = result is not None and (result.decided or result.looks_run == plan.looks)
    return {
        "plan": plan.to_dict(),
        "baseline": baseline,
        "comparisons": list(others),
        "stage_of": [[d, t, s] for (d, t), s in sorted(stage_of.items())],
        "looks": looks,
        "looks_run": 0 if result is None else result.looks_run,
        "stopped": done,
        "stopped_at_look": result.looks_run if done and result is not None else None,
        "stopped_early": bool(done and result is not None and result.looks_run < plan.looks),
        "variant_stopped_at_look": {} if result is None else dict(zip(others, result.stopped_at())),
    }


def state_plan(state: Mapping[str, Any]) -> tuple[SequentialPlan, dict[TaskKey, int]]:
    """The plan and stage layout back from a stored state (for the report and a resumed run).

    The state comes from a file (the store's ``sequential`` meta): anything that does not parse as a plan is a
    :class:`UsageError` naming it (exit 2), never a traceback."""
    try:
        plan = SequentialPlan.from_dict(state["plan"])
        return plan, {(str(d), str(t)): int(s) for d, t, s in state["stage_of"]}
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(
            f"this run's stored sequential plan (the 'sequential' entry of results.sqlite's meta) is damaged ({exc}); "
            "restore the run directory from a backup, or run the experiment again in a new one"
        ) from None


def report_sequential(
    records: Sequence[ConversationRecord], state: Mapping[str, Any], baseline: str, trials: int = 1
) -> dict[str, Any]:
    """The report's sequential section: the looks replayed from the records and the stored plan, ``final`` (per variant:
    the decision whose sequential p and repeated intervals replace the fixed-design ones) and a one-line summary."""
    plan, stage_of = state_plan(state)
    others = [str(v) for v in state["comparisons"]]
    looks_run = int(state.get("looks_run") or 0)
    if state.get("sharded"):  # merged from shards: the records say how far the stages got
        looks_run = complete_looks(records, str(state["baseline"]), others, plan, stage_of, trials)
    out: dict[str, Any] = {
        "looks_planned": plan.looks,
        "looks_run": looks_run,
        "stages": list(plan.stages),
        "bounds": list(plan.bounds),
        "smallest_effect": plan.smallest_effect,
        "futility_confidence": plan.futility_confidence,
        "futility": plan.futility,
        "futility_text": futility_text(plan.futility, plan.futility_confidence, plan.smallest_effect),
        "spending": plan.spending,
        "baseline": state["baseline"],
        "looks": [],
        "final": {},
    }
    if state["baseline"] != baseline or looks_run == 0:
        out["stopped_at_look"] = None
        out["summary"] = (
            f"sequential run against {state['baseline']!r}, reported against {baseline!r}: its looks do not apply, every "
            "reward row is reported as in a fixed design"
            if looks_run
            else "sequential run: no look taken yet (its first stage has not finished)"
        )
        out["final"] = {}
        return out
    result = run_looks(records, str(state["baseline"]), others, plan, stage_of, looks_run)
    done = result.decided or result.looks_run == plan.looks
    out["looks_run"] = result.looks_run
    out["stopped_at_look"] = result.looks_run if done else None
    out["stopped_early"] = bool(done and result.looks_run < plan.looks)
    for k, decisions in enumerate(result.looks):
        out["looks"].append(
            {
                "look": k + 1,
                "tasks": sum(plan.stages[: k + 1]),
                "decisions": [{"variant": v, **d.to_dict()} for v, d in zip(others, decisions)],
            }
        )
    for v, d in zip(others, result.final):
        row = {"variant": v, **d.to_dict()}
        out["final"][v] = row
    status = "stopped at look" if done else "running: last look"
    decided = ", ".join(
        f"{v} {('claimed ' + str(r['claim'])) if r['status'] == 'claimed' else r['status']} at look {r['look']}"
        for v, r in out["final"].items()
    )
    out["summary"] = f"{status} {result.looks_run} of {plan.looks} ({decided})"
    return out
