"""Dose-response: when a run holds several intensity levels of one emotion, does more emotion do more?

A group is one emotion delivered one way (``frustration`` by prompt, ``frustration@steer`` by steering...)
with at least two intensity levels in the run. For each group the report shows, per level, the primary
manipulation score (early customer turns, as in the manipulation check) and the reward, each as a
task-weighted mean and as a paired difference from the baseline (shown as level 0), and a task-clustered
linear trend (:func:`moodbench.analysis._inference.dose_response`: task fixed effects, CR1 cluster SE,
t(G-1)) **among the emotional levels only**: the question is whether the effect changes with the level; the
baseline comparison is each level's reward effect, claimed already. With the baseline as level 0 an equal
drop at every level read as a trend (claimed 0.35-0.73 of the time under a flat effect).

The reward trends join the report's one family (section ``dose/reward``), gated like reward claims: at least
``MIN_TASKS`` tasks with two levels and ``MIN_PAIRS`` conversations at every level; a trend with no spread
(every task the same at every level) gets no p and no claim. Trends of the manipulation score are
descriptive (context for the manipulation check, not a claim about the agent).

For steered groups (``steer``, ``both``) a level is a calibrated *scale* of one control vector, not a wording,
so each level row carries the scale and vector its records name (``steering``) and the group carries
``scales`` (level name -> scale) and ``vector_sha256`` (when every level used the same vector): a trend over
"levels" then reads as a trend over those scales, which need not be evenly spaced.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from moodbench.analysis._claims import POOLED, matched_pairs, scored_index
from moodbench.analysis._family import ReportFamily, descriptive
from moodbench.analysis._inference import ALPHA, MIN_PAIRS, MIN_TASKS, Trend, dose_response, paired_effect
from moodbench.analysis._manipulation import PRIMARY, early_user_texts
from moodbench.analysis._prompted_vs_steered import steering_by_variant
from moodbench.analysis._variants import Dose, dose_of, families_spec
from moodbench.judges import families_of, text_scores
from moodbench.results import ConversationRecord

__all__ = ["dose_groups", "dose_response_table"]


def dose_groups(variants: Sequence[str], baseline: str) -> dict[tuple[str, str], list[tuple[str, Dose]]]:
    """(emotion, method) -> [(variant, dose)] sorted by level, for groups with >= 2 distinct levels."""
    groups: dict[tuple[str, str], list[tuple[str, Dose]]] = defaultdict(list)
    for v in variants:
        d = dose_of(v) if v != baseline else None
        if d is not None:
            groups[(d.emotion, d.method)].append((v, d))
    return {k: sorted(g, key=lambda x: x[1].level) for k, g in groups.items() if len({d.level for _, d in g}) >= 2}


def _scales(method: str, members: Sequence[tuple[str, Dose]], steering: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A steered group's level name -> scale, and its vector when every level used the same one (else null)."""
    if method == "prompt":
        return {"scales": None, "vector_sha256": None}
    found = [steering.get(v) for v, _ in members]
    shas = {None if s is None else s["vector_sha256"] for s in found}
    return {
        "scales": {d.level_name: None if s is None else s["scale"] for (_, d), s in zip(members, found)},
        "vector_sha256": next(iter(shas)) if len(shas) == 1 else None,
    }


MARKER_TREND = "descriptive: the manipulation score's trend is context for the manipulation check, not a claim about the agent"


def trend_reason(t: Trend, *, min_tasks: int = MIN_TASKS, min_pairs: int = MIN_PAIRS) -> str | None:
    """Why a trend among the emotional levels cannot carry a claim (``None`` when it can): the reward claims'
    minimum design (tasks with two levels; conversations at every level), and zero spread."""
    if t.slope is None:
        return "not estimable: no task has two emotional levels"
    fewest = min((n for lv, _, n in t.per_level), default=0)
    if t.n_tasks < min_tasks or fewest < min_pairs:
        return (
            f"{t.n_tasks} tasks, fewest conversations at a level {fewest}; a trend claim needs >= {min_tasks} tasks "
            f"and >= {min_pairs} conversations at every level"
        )
    if t.degenerate is not None or t.p is None:
        return "every task has the same value at every level: no spread to estimate a slope's uncertainty from, so no p"
    return None


def dose_response_table(
    records: Sequence[ConversationRecord],
    baseline: str,
    variants: Sequence[str],
    *,
    alpha: float = ALPHA,
    family: ReportFamily | None = None,
) -> list[dict[str, Any]]:
    """One entry per (group, outcome) with outcome ``reward`` or the primary manipulation score; pooled scope.

    Reward trends join ``family`` (the report's; without one they form their own, resolved here)."""
    groups = dose_groups(variants, baseline)
    if not groups:
        return []
    index = scored_index(records)
    base = index.get(baseline, {})
    steering = steering_by_variant(records)
    cache: dict[tuple[int, str], float] = {}

    def marker(r: ConversationRecord, fam: list[str]) -> float:
        key = (id(r), ",".join(fam))
        if key not in cache:
            rates = text_scores(early_user_texts(r.messages))["marker_rate"]
            cache[key] = float(sum(rates[f] for f in fam))
        return cache[key]

    out: list[dict[str, Any]] = []
    for (emotion, method), members in groups.items():
        fam = families_of(families_spec(members[0][0]))
        for outcome in ("reward", PRIMARY.key):

            def value(r: ConversationRecord, outcome: str = outcome, fam: list[str] = fam) -> float:
                return float(r.reward) if outcome == "reward" else marker(r, fam)  # type: ignore[arg-type]

            levels, values, clusters = [], [], []
            for lv, recs in [(d.level, index.get(v, {})) for v, d in members]:
                for r in recs.values():
                    levels.append(float(lv))
                    values.append(value(r))
                    clusters.append(r.task_key)
            t = dose_response(levels, values, clusters)
            per_level = {lv: (mean, n) for lv, mean, n in t.per_level}
            base_level = dose_response(
                [0.0] * len(base), [value(r) for r in base.values()], [r.task_key for r in base.values()]
            ).per_level
            b_mean, b_n = (base_level[0][1], base_level[0][2]) if base_level else (None, 0)
            rows = [
                {
                    "level": 0,
                    "level_name": "baseline",
                    "variant": baseline,
                    "mean": b_mean,
                    "n": b_n,
                    "diff": None,
                    "ci": [None, None],
                    "n_pairs": 0,
                    "scale": 0.0 if method != "prompt" else None,
                    "steering": None,
                }
            ]
            for v, d in members:
                pairs = matched_pairs(base, index.get(v, {}), POOLED)
                e = paired_effect([value(b) for b, _ in pairs], [value(x) for _, x in pairs], [b.task_key for b, _ in pairs])
                mean, n = per_level.get(float(d.level), (None, 0))
                st = steering.get(v)
                rows.append(
                    {
                        "level": d.level,
                        "level_name": d.level_name,
                        "variant": v,
                        "mean": mean,
                        "n": n,
                        "diff": e.diff,
                        "ci": [e.ci_low, e.ci_high],
                        "n_pairs": e.n_pairs,
                        "scale": None if st is None else st["scale"],
                        "steering": st,
                    }
                )
            out.append(
                {
                    "emotion": emotion,
                    "method": method,
                    "outcome": outcome,
                    **_scales(method, members, steering),
                    "label": "reward" if outcome == "reward" else PRIMARY.label + ", early turns",
                    "levels": rows,
                    "slope": t.slope,
                    "ci": [t.ci_low, t.ci_high],
                    "se": t.se,
                    "df": t.df,
                    "p": t.p,
                    "n_tasks": t.n_tasks,
                    "n_obs": t.n_obs,
                    "trend_levels": "emotional levels only (baseline excluded)",
                    "no_claim_reason": trend_reason(t),
                    "_trend": t,
                }
            )
    own = family is None
    tests = ReportFamily(alpha) if family is None else family
    for row in out:
        t = row.pop("_trend")
        if row["outcome"] == "reward":
            tests.add("dose/reward", row, p=t.p, estimate=t.slope, se=t.se, df=t.df, reason=row["no_claim_reason"])
        else:
            descriptive(row, MARKER_TREND)
            row["p_adjusted"], row["family_size"] = None, None
    tests.describe(f"dose/{PRIMARY.key}", MARKER_TREND)
    if own:
        tests.resolve()
    return out
