"""Reward effects of a run: one task-clustered inference per (variant, scope, subset), claims over a stated family.

This module is the one road from stored conversations to the report's claims, and
:func:`claim_effects` is the one road from matched pairs to claims: the report calls it on records,
``benchmarks/calibration.py`` calls it on simulated arrays, so the calibration measures exactly what the
report prints (``docs/statistics.md``).

* A **pair** is the baseline and a variant conversation of the same (domain, task, trial); both must be
  scored (``llm_error``/``harness_error`` rows are excluded and counted by the report).
* **Scopes**: ``"all"`` (every domain pooled, clusters are (domain, task)) and, when the run has more than
  one domain, each domain. With one domain ``"all"`` *is* that domain, so it is not repeated.
* **Subsets**: ``"all"`` pairs, and ``"unflagged"`` (neither side carries a simulator-fidelity flag).
* **Family**: every row joins the report's one :class:`~moodbench.analysis._family.ReportFamily` (sections
  ``reward/all`` and ``reward/unflagged``; an unflagged row on exactly the 'all' pairs is the same test and is
  not counted twice). Called without a family, one run is its own family (resolved here).
* **Missing conversations**: excluded rows (``llm_error``/``harness_error``) of a (task, trial) that both
  sides ran are compared between variant and baseline (rate, Fisher exact; turn counts of excluded against
  scored conversations, Mann-Whitney), and the effect is recomputed with the excluded outcomes imputed as
  failures and as successes (:func:`missing_bounds`); the family claims only what holds in both bounds too
  (their p enter the claim's p), and the row's MDE adds the shift the adverse bound expects.
* The **MDE** of each row comes from the baseline's between- and within-task variance *on the pairs that
  row actually has* (:func:`design_from_pilot` + :func:`mde`, harmonic-mean pairs per task), at the report
  family's size; a scope's design row shows the largest of its rows' MDEs. The **A/A split** of the baseline is
  shown beside it when a task has at least two trials. Neither ever changes a claim.
* **pass^k** is descriptive (:func:`moodbench.analysis._inference.pass_hat_k_paired`): one task set for every k,
  dropped tasks counted, no p, and no interval below the minimum design.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from moodbench.analysis._exclusions import exclusion_check, mde_with_exclusions, missing_bounds
from moodbench.analysis._family import ReportFamily
from moodbench.analysis._inference import (
    ALPHA,
    MIN_PAIRS,
    MIN_TASKS,
    Claim,
    PairedEffect,
    aa_split,
    claim_family,
    paired_effect,
    pass_hat_k_paired,
)
from moodbench.analysis._power import Design, design_from_pilot, mde, mde_note
from moodbench.analysis._stats import mcnemar_exact
from moodbench.results import ConversationRecord

__all__ = [
    "POOLED",
    "SUBSETS",
    "ClaimedEffect",
    "Comparison",
    "baseline_by_task",
    "claim_effects",
    "matched_pairs",
    "mde_with_exclusions",
    "missing_bounds",
    "pairs_design",
    "pass_k_rows",
    "reward_effects",
    "scope_design",
    "scopes_of",
    "scored_index",
]

POOLED = "all"  # the scope of every domain together (and the only scope of a one-domain run)
SUBSETS = ("all", "unflagged")
MCNEMAR_LABEL = "McNemar on these pairs (secondary: counts pairs, not tasks; never decides a claim)"

Pair = tuple[ConversationRecord, ConversationRecord]
PairKey = tuple[str, str, int]


def scopes_of(domains: Sequence[str]) -> list[str]:
    """``["all"]`` for one domain, ``["all", d1, d2, ...]`` for several."""
    return [POOLED, *domains] if len(domains) > 1 else [POOLED]


def scored_index(records: Iterable[ConversationRecord]) -> dict[str, dict[PairKey, ConversationRecord]]:
    """variant -> {(domain, task, trial): record}, scored records only (excluded rows cannot pair)."""
    out: dict[str, dict[PairKey, ConversationRecord]] = defaultdict(dict)
    for r in records:
        if not r.excluded:
            out[r.variant][r.pair_key] = r
    return out


def excluded_index(records: Iterable[ConversationRecord]) -> dict[str, dict[PairKey, ConversationRecord]]:
    """variant -> {(domain, task, trial): record} of the excluded final rows (the missing outcomes)."""
    out: dict[str, dict[PairKey, ConversationRecord]] = defaultdict(dict)
    for r in records:
        if r.excluded:
            out[r.variant][r.pair_key] = r
    return out


def _in_scope(key: PairKey, scope: str) -> bool:
    return scope == POOLED or key[0] == scope


def matched_pairs(
    base: dict[PairKey, ConversationRecord], var: dict[PairKey, ConversationRecord], scope: str = POOLED, subset: str = "all"
) -> list[Pair]:
    """(baseline, variant) records of the same (domain, task, trial) in ``scope``, in a stable order."""
    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {SUBSETS}")
    keys = sorted(k for k in set(base) & set(var) if _in_scope(k, scope))
    pairs = [(base[k], var[k]) for k in keys]
    if subset == "unflagged":
        pairs = [(b, v) for b, v in pairs if not b.flagged and not v.flagged]
    return pairs


# --------------------------------------------------------------------------- the one road to a claim


@dataclass(frozen=True)
class Comparison:
    """Matched values of one (variant, scope, subset): ``baseline[i]`` and ``variant[i]`` are one pair,
    ``clusters[i]`` its task (a (domain, task) tuple when domains are pooled)."""

    baseline: Sequence[float]
    variant: Sequence[float]
    clusters: Sequence[Hashable]


@dataclass(frozen=True)
class ClaimedEffect:
    """A paired effect and the claim its family gave it (``verdict.claim`` is lower/higher/no_difference/too_few)."""

    effect: PairedEffect
    verdict: Claim


def claim_effects(comparisons: Sequence[Comparison], *, alpha: float = ALPHA) -> list[ClaimedEffect]:
    """Task-clustered paired effect of every comparison, then Holm-gated claims over them as one family.

    Effects below the minimum design (``MIN_TASKS``/``MIN_PAIRS``) are ``too_few`` and not counted in the
    family. Interval, p and claim all come from the same task-level t statistic.
    """
    effects = [paired_effect(c.baseline, c.variant, c.clusters) for c in comparisons]
    return [ClaimedEffect(e, v) for e, v in zip(effects, claim_family(effects, alpha=alpha))]


def _comparison(pairs: Sequence[Pair]) -> Comparison:
    return Comparison(
        [float(b.reward) for b, _ in pairs],  # type: ignore[arg-type]
        [float(v.reward) for _, v in pairs],  # type: ignore[arg-type]
        [b.task_key for b, _ in pairs],
    )


# --------------------------------------------------------------------------- design: MDE and A/A split


def baseline_by_task(
    records: Iterable[ConversationRecord], baseline: str, scope: str = POOLED
) -> dict[tuple[str, str], list[float]]:
    """The baseline's scored rewards per (domain, task), in trial order (the A/A split alternates trials)."""
    rows: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
    for r in records:
        if r.variant == baseline and not r.excluded and _in_scope(r.pair_key, scope):
            rows[r.task_key].append((r.trial, float(r.reward)))  # type: ignore[arg-type]
    return {k: [x for _, x in sorted(v)] for k, v in sorted(rows.items())}


def scope_design(base_by_task: dict[Any, list[float]], family_size: int) -> tuple[Design | None, float | None]:
    """Design parameters estimated from the baseline itself and the MDE of a drop at 80% power.

    ``None`` MDE below the minimum design, when no drop can reach the power, or when the baseline has no
    variance to plan from (see :func:`mde`). The trial count is the harmonic mean of the tasks' counts, the
    number that sets the variance of a task mean when tasks lost conversations.
    """
    if not base_by_task:
        return None, None
    design = design_from_pilot(base_by_task, family_size=max(1, family_size))
    sizes = [len(v) for v in base_by_task.values() if len(v)]
    if sizes:
        design = replace(design, trials=len(sizes) / sum(1.0 / n for n in sizes))
    return design, mde(design)


def pairs_design(pairs: Sequence[Pair]) -> Design | None:
    """The design of one comparison on the pairs it actually has: the baseline rewards of those pairs only
    (a pair lost on the variant side is lost to the comparison), family size 1 (set it with ``replace``)."""
    by_task: dict[Hashable, list[float]] = defaultdict(list)
    for b, _ in pairs:
        by_task[b.task_key].append(float(b.reward))  # type: ignore[arg-type]
    return scope_design(dict(by_task), 1)[0]


def _design_row(scope: str, base: dict[Any, list[float]], family_size: int) -> dict[str, Any]:
    design, value = scope_design(base, family_size)
    trials = [len(v) for v in base.values()]
    aa = aa_split(base).to_dict() if trials and max(trials) >= 2 else None
    return {
        "domain": scope,
        "tasks": len(base),
        "conversations": sum(trials),
        "min_trials": min(trials, default=0),
        "max_trials": max(trials, default=0),
        "family_size": family_size,
        "mde": value,
        "mde_note": None if design is None else mde_note(design),
        "power": None if design is None else design.power,
        "baseline_success": None if design is None else design.baseline_success,
        "icc": None if design is None else design.icc,
        "within_var": None if design is None else design.within_var,
        "aa": aa,
    }


# --------------------------------------------------------------------------- missing conversations


# --------------------------------------------------------------------------- secondary numbers


def _mcnemar(pairs: Sequence[Pair]) -> dict[str, Any]:
    b_only = sum(1 for b, v in pairs if b.success and not v.success)
    v_only = sum(1 for b, v in pairs if v.success and not b.success)
    both = sum(1 for b, v in pairs if b.success and v.success)
    return {
        "label": MCNEMAR_LABEL,
        "baseline_only": b_only,
        "variant_only": v_only,
        "both_success": both,
        "both_fail": len(pairs) - b_only - v_only - both,
        "p": mcnemar_exact(b_only, v_only) if pairs else None,
    }


PASS_K_DESCRIPTIVE = (
    "descriptive: pass^1 is the reward effect already claimed, and pass^k intervals for k >= 2 "
    "under-covered in small designs near the floor/ceiling; shown without p, and without interval below the minimum design"
)


def pass_k_rows(base: Mapping[Hashable, Sequence[bool]], var: Mapping[Hashable, Sequence[bool]]) -> list[dict[str, Any]]:
    """The report's pass^k rows from paired successes per task: one task set for every k, descriptive (no claim,
    no p), the interval shown only from the minimum design on and never with zero spread."""
    rows = []
    for k, p in pass_hat_k_paired(base, var).items():
        pairs_used = sum(min(len(base[t]), len(var[t])) for t in base if t in var and min(len(base[t]), len(var[t])) >= p.k_max)
        gated = p.n_tasks >= MIN_TASKS and pairs_used >= MIN_PAIRS and p.degenerate is None
        rows.append(
            {
                "k": k,
                "n_tasks": p.n_tasks,
                "baseline_mean": p.baseline,
                "variant_mean": p.variant,
                "diff": p.diff,
                "ci": [p.ci_low, p.ci_high] if gated else [None, None],
                "p": None,
                "dropped_tasks": p.dropped_tasks,
                "k_max": p.k_max,
                "too_few": not gated,
                "descriptive": PASS_K_DESCRIPTIVE,
            }
        )
    return rows


def _pass_k(pairs: Sequence[Pair]) -> list[dict[str, Any]]:
    """Paired pass^k on the matched pairs (:func:`pass_k_rows`)."""
    base: dict[Hashable, list[bool]] = defaultdict(list)
    var: dict[Hashable, list[bool]] = defaultdict(list)
    for b, v in pairs:
        base[b.task_key].append(b.success)
        var[b.task_key].append(v.success)
    return pass_k_rows(base, var)


# --------------------------------------------------------------------------- a run's effects


def _row(variant: str, scope: str, subset: str, e: PairedEffect, pairs: Sequence[Pair], family: str) -> dict[str, Any]:
    return {
        "variant": variant,
        "domain": scope,
        "subset": subset,
        "n_pairs": e.n_pairs,
        "n_tasks": e.n_tasks,
        "baseline_mean": e.baseline_mean,
        "variant_mean": e.variant_mean,
        "diff": e.diff,
        "ci": [e.ci_low, e.ci_high],
        "p": e.p,
        "p_adjusted": None,
        "claim": "too_few",
        "family": family,
        "family_size": 0,
        "ci_family": [None, None],
        "se": e.se,
        "df": e.df,
        "relative_pct": e.relative_pct,
        "mcnemar": _mcnemar(pairs),
    }


def reward_effects(
    records: Sequence[ConversationRecord],
    baseline: str,
    variants: Sequence[str],
    domains: Sequence[str],
    *,
    alpha: float = ALPHA,
    family: ReportFamily | None = None,
    sequential: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Every effect of one run, its exclusions and bounds, each scope's design (MDE, A/A) and paired pass^k.

    ``sequential`` (a ``run --sequential``: variant -> its final look decision, ``report_sequential``'s ``final``):
    the pooled row of each planned comparison carries the sequential p and the repeated intervals instead of the
    fixed-design ones (``row["sequential"]`` keeps both); every other reward row stays out of the family, since its
    fixed-design p is not valid after the run stopped on the data.

    With ``family`` (the report's) the rows join it and stay undecided until the caller resolves the family
    and calls :func:`finish_reward_effects` with its size; without, the run is its own family and both happen
    here. Returns ``{"effects": [...], "families": [...], "designs": [...], "pass_hat_k": [...]}``; effect rows
    follow report.json's documented shape (without the ``run`` field, which the report adds).
    """
    own = family is None
    fam = ReportFamily(alpha) if family is None else family
    others = [v for v in variants if v != baseline]
    index, xindex = scored_index(records), excluded_index(records)
    base, base_x = index.get(baseline, {}), xindex.get(baseline, {})
    scope_list = scopes_of(list(domains))
    out: dict[str, Any] = {
        "effects": [],
        "families": [],
        "designs": [],
        "pass_hat_k": [],
        "_designs": {},
        "_records": records,
        "_baseline": baseline,
        "_scopes": scope_list,
    }
    primary: dict[tuple[str, str], dict[str, Any]] = {}
    for subset in SUBSETS:
        section = f"reward/{subset}"
        for v in others:
            var, var_x = index.get(v, {}), xindex.get(v, {})
            for s in scope_list:
                pairs = matched_pairs(base, var, s, subset)
                e = paired_effect(*_comparison_arrays(pairs))
                row = _row(v, s, subset, e, pairs, section)
                row["unpaired"] = sum(1 for k in set(var) ^ set(base) if _in_scope(k, s))
                ran = sorted(k for k in (set(base) | set(base_x)) & (set(var) | set(var_x)) if _in_scope(k, s))
                if subset == "unflagged":  # an excluded conversation has no flags: it stays in the sensitivity subset
                    ran = [k for k in ran if not ((k in base and base[k].flagged) or (k in var and var[k].flagged))]
                check = exclusion_check(ran, base, var, base_x, var_x)
                bounds_obj = None if check is None else check.pop("_bounds")
                row["exclusions"] = check
                bounds = None if bounds_obj is None else (bounds_obj.worst, bounds_obj.best)
                same = primary.get((v, s))
                seq = None if sequential is None else sequential.get(v)
                if sequential is not None and (seq is None or subset != "all" or s != POOLED):
                    fam.add(section, row, p=e.p, estimate=e.diff, se=e.se, df=e.df, reason=SEQUENTIAL_NOTE)
                elif seq is not None:
                    e = _sequential_effect(row, e, seq)
                    fam.add_effect(section, row, e, bounds=bounds)
                elif subset == "unflagged" and same is not None and same["n_pairs"] == e.n_pairs:
                    fam.add_same(section, row, same)
                else:
                    fam.add_effect(section, row, e, bounds=bounds)
                if subset == "all":
                    primary[(v, s)] = row
                out["_designs"][id(row)] = pairs_design(pairs)
                out["effects"].append(row)
                if subset == "all":
                    pk = _pass_k(pairs)
                    out["pass_hat_k"] += [{"variant": v, "domain": s, **x} for x in pk]
        out["families"].append(
            {
                "name": section,
                "subset": subset,
                "planned": len(others) * len(scope_list),
                "method": "holm",
                "alpha": alpha,
                "members": f"{len(others)} variant(s) x {len(scope_list)} scope(s) ({', '.join(scope_list)})"
                + ("" if subset == "all" else "; sensitivity analysis on pairs without simulator flags"),
                "part_of": "report",
            }
        )
    fam.describe("pass_hat_k", PASS_K_DESCRIPTIVE)
    if own:
        fam.resolve()
        finish_reward_effects(out, fam.size)
    return out


SEQUENTIAL_NOTE = (
    "sequential run: only each variant's pooled comparison carries a claim (sequential p, repeated interval); this "
    "row's fixed-design p is not valid after the run stopped on the data"
)


def _sequential_effect(row: dict[str, Any], e: PairedEffect, seq: Mapping[str, Any]) -> PairedEffect:
    """The pooled row of a sequential run: the repeated p and interval replace the fixed-design ones (kept in the row)."""
    row["sequential"] = {
        "look": seq["look"],
        "status": seq["status"],
        "z": seq["z"],
        "p_fixed": e.p,
        "ci_fixed": [e.ci_low, e.ci_high],
        "ci_family": seq["ci_family"],
    }
    row["p"], row["ci"] = seq["p_repeated"], [seq["ci_low"], seq["ci_high"]]
    return replace(e, p=seq["p_repeated"], ci_low=seq["ci_low"], ci_high=seq["ci_high"])


def finish_reward_effects(out: dict[str, Any], family_size: int) -> dict[str, Any]:
    """After the family is resolved: section sizes, every row's MDE at the family's size, the scopes' designs."""
    m = max(1, family_size)
    for row in out["effects"]:
        if "sequential" in row:  # the repeated interval at the family's level, not the fixed design's
            row["ci_family"] = row["sequential"]["ci_family"]
    for f in out["families"]:
        rows = [r for r in out["effects"] if r["family"] == f["name"]]
        f["size"] = sum(1 for r in rows if r.get("no_claim_reason") is None and "same_test_as" not in r)
        f["family_size"] = family_size
    for row in out["effects"]:
        design = out["_designs"].get(id(row))
        d = None if design is None else replace(design, family_size=m)
        value = None if d is None else mde(d)
        x = row.get("exclusions")
        row["mde"] = value if not x else mde_with_exclusions(value, x["rate_variant"], x["rate_baseline"])
        row["mde_note"] = None if d is None else mde_note(d)
    records, baseline = out.pop("_records"), out.pop("_baseline")
    for s in out.pop("_scopes"):
        row = _design_row(s, baseline_by_task(records, baseline, s), m)
        mdes = [r["mde"] for r in out["effects"] if r["domain"] == s and r["subset"] == "all"]
        known = [x for x in mdes if x is not None]
        if mdes:  # the promise that holds for every variant: the largest MDE over the pairs each actually has
            row["mde"] = max(known) if known else None
            notes = [r["mde_note"] for r in out["effects"] if r["domain"] == s and r["subset"] == "all" and r["mde_note"]]
            row["mde_note"] = notes[0] if notes else row["mde_note"]
        out["designs"].append(row)
    out.pop("_designs")
    return out


def _comparison_arrays(pairs: Sequence[Pair]) -> tuple[list[float], list[float], list[Hashable]]:
    c = _comparison(pairs)
    return list(c.baseline), list(c.variant), list(c.clusters)
