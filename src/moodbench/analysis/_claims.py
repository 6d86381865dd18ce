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
* **Families**: the primary family is every variant x scope of one run on the ``"all"`` subset; the
  ``"unflagged"`` rows are a sensitivity analysis with a family of the same shape. Holm within each.
* The **MDE** of a scope comes from the baseline's own between- and within-task variance
  (:func:`design_from_pilot` + :func:`mde`); the **A/A split** of the baseline is shown beside it when a
  task has at least two trials. Neither ever changes a claim.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from moodbench.analysis._inference import ALPHA, Claim, PairedEffect, aa_split, claim_family, paired_effect, pass_hat_k_paired
from moodbench.analysis._power import Design, design_from_pilot, mde
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


def _in_scope(key: PairKey, scope: str) -> bool:
    return scope == POOLED or key[0] == scope


def matched_pairs(base: dict[PairKey, ConversationRecord], var: dict[PairKey, ConversationRecord], scope: str = POOLED,
                  subset: str = "all") -> list[Pair]:
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
    return Comparison([float(b.reward) for b, _ in pairs], [float(v.reward) for _, v in pairs],  # type: ignore[arg-type]
                      [b.task_key for b, _ in pairs])


# --------------------------------------------------------------------------- design: MDE and A/A split


def baseline_by_task(records: Iterable[ConversationRecord], baseline: str, scope: str = POOLED) -> dict[tuple[str, str], list[float]]:
    """The baseline's scored rewards per (domain, task), in trial order (the A/A split alternates trials)."""
    rows: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
    for r in records:
        if r.variant == baseline and not r.excluded and _in_scope(r.pair_key, scope):
            rows[r.task_key].append((r.trial, float(r.reward)))  # type: ignore[arg-type]
    return {k: [x for _, x in sorted(v)] for k, v in sorted(rows.items())}


def scope_design(base_by_task: dict[Any, list[float]], family_size: int) -> tuple[Design | None, float | None]:
    """Design parameters estimated from the baseline itself and the MDE of a drop at 80% power.

    ``None`` MDE below the minimum design, or when no drop can reach the power (see :func:`mde`).
    """
    if not base_by_task:
        return None, None
    design = design_from_pilot(base_by_task, family_size=max(1, family_size))
    return design, mde(design)


def _design_row(scope: str, base: dict[Any, list[float]], family_size: int) -> dict[str, Any]:
    design, value = scope_design(base, family_size)
    trials = [len(v) for v in base.values()]
    aa = aa_split(base).to_dict() if trials and max(trials) >= 2 else None
    return {
        "domain": scope, "tasks": len(base), "conversations": sum(trials),
        "min_trials": min(trials, default=0), "max_trials": max(trials, default=0),
        "family_size": family_size, "mde": value, "power": None if design is None else design.power,
        "baseline_success": None if design is None else design.baseline_success,
        "icc": None if design is None else design.icc,
        "within_var": None if design is None else design.within_var,
        "aa": aa,
    }


# --------------------------------------------------------------------------- secondary numbers


def _mcnemar(pairs: Sequence[Pair]) -> dict[str, Any]:
    b_only = sum(1 for b, v in pairs if b.success and not v.success)
    v_only = sum(1 for b, v in pairs if v.success and not b.success)
    both = sum(1 for b, v in pairs if b.success and v.success)
    return {"label": MCNEMAR_LABEL, "baseline_only": b_only, "variant_only": v_only, "both_success": both,
            "both_fail": len(pairs) - b_only - v_only - both, "p": mcnemar_exact(b_only, v_only) if pairs else None}


def _pass_k(pairs: Sequence[Pair]) -> list[dict[str, Any]]:
    """Paired pass^k on the matched pairs: both sides have the same trials of the same tasks."""
    base: dict[Hashable, list[bool]] = defaultdict(list)
    var: dict[Hashable, list[bool]] = defaultdict(list)
    for b, v in pairs:
        base[b.task_key].append(b.success)
        var[b.task_key].append(v.success)
    return [{"k": k, "n_tasks": p.n_tasks, "baseline_mean": p.baseline, "variant_mean": p.variant, "diff": p.diff,
             "ci": [p.ci_low, p.ci_high], "p": p.p} for k, p in pass_hat_k_paired(base, var).items()]


# --------------------------------------------------------------------------- a run's effects


def _row(variant: str, scope: str, subset: str, c: ClaimedEffect, pairs: Sequence[Pair], family: str) -> dict[str, Any]:
    e, v = c.effect, c.verdict
    return {
        "variant": variant, "domain": scope, "subset": subset,
        "n_pairs": e.n_pairs, "n_tasks": e.n_tasks,
        "baseline_mean": e.baseline_mean, "variant_mean": e.variant_mean, "diff": e.diff,
        "ci": [e.ci_low, e.ci_high], "p": e.p, "p_adjusted": v.p_adjusted, "claim": v.claim,
        "family": family, "family_size": v.family_size, "ci_family": [v.ci_family_low, v.ci_family_high],
        "se": e.se, "df": e.df, "relative_pct": e.relative_pct,
        "mcnemar": _mcnemar(pairs),
    }


def reward_effects(records: Sequence[ConversationRecord], baseline: str, variants: Sequence[str],
                   domains: Sequence[str], *, alpha: float = ALPHA) -> dict[str, Any]:
    """Every effect of one run with its claim, the families, each scope's design (MDE, A/A) and paired pass^k.

    Returns ``{"effects": [...], "families": [...], "designs": [...], "pass_hat_k": [...]}``; effect rows
    follow report.json's documented shape (without the ``run`` field, which the report adds).
    """
    others = [v for v in variants if v != baseline]
    index = scored_index(records)
    base = index.get(baseline, {})
    scope_list = scopes_of(list(domains))
    out: dict[str, Any] = {"effects": [], "families": [], "designs": [], "pass_hat_k": []}
    primary_eligible = 1
    for subset in SUBSETS:
        family = f"reward/{subset}"
        cells = [(v, s, matched_pairs(base, index.get(v, {}), s, subset)) for v in others for s in scope_list]
        claimed = claim_effects([_comparison(p) for _, _, p in cells], alpha=alpha)
        size = claimed[0].verdict.family_size if claimed else 0
        if subset == "all":
            primary_eligible = max(1, size)
        out["families"].append({
            "name": family, "subset": subset, "size": size, "planned": len(cells), "method": "holm", "alpha": alpha,
            "members": f"{len(others)} variant(s) x {len(scope_list)} scope(s) ({', '.join(scope_list)})"
                       + ("" if subset == "all" else "; sensitivity analysis on pairs without simulator flags"),
        })
        for (v, s, pairs), c in zip(cells, claimed):
            row = _row(v, s, subset, c, pairs, family)
            row["unpaired"] = sum(1 for k in set(index.get(v, {})) ^ set(base) if _in_scope(k, s))
            out["effects"].append(row)
            if subset == "all":
                out["pass_hat_k"] += [{"variant": v, "domain": s, **pk} for pk in _pass_k(pairs)]
    for s in scope_list:
        out["designs"].append(_design_row(s, baseline_by_task(records, baseline, s), primary_eligible))
    mdes = {d["domain"]: d["mde"] for d in out["designs"]}
    for row in out["effects"]:
        row["mde"] = mdes.get(row["domain"])
    return out
