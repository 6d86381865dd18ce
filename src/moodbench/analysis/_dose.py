"""Dose-response: when a run holds several intensity levels of one emotion, does more emotion do more?

A group is one emotion delivered one way (``frustration`` by prompt, ``frustration@steer`` by steering...)
with at least two intensity levels in the run; the baseline is level 0 of every group. For each group the
report shows, per level, the primary manipulation score (early customer turns, as in the manipulation
check) and the reward, each as a task-weighted mean and as a paired difference from the baseline, and a
task-clustered linear trend over the levels (:func:`moodbench.analysis._inference.dose_response`: task fixed
effects, CR1 cluster SE, t(G-1)). The reward trends of one run are a family: Holm-adjusted p, and a claim
(lower / higher / no_difference, ``too_few`` below ``MIN_TASKS`` tasks), like every other claim.

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
from moodbench.analysis._inference import ALPHA, MIN_TASKS, adjust_pvalues, dose_response, paired_effect
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
    return {"scales": {d.level_name: None if s is None else s["scale"] for (_, d), s in zip(members, found)},
            "vector_sha256": next(iter(shas)) if len(shas) == 1 else None}


def _trend_claim(trend: dict[str, Any], p_adjusted: float | None, alpha: float) -> str:
    if trend["slope"] is None or trend["n_tasks"] < MIN_TASKS or p_adjusted is None:
        return "too_few"
    if p_adjusted < alpha and trend["slope"] != 0:
        return "lower" if trend["slope"] < 0 else "higher"
    return "no_difference"


def dose_response_table(records: Sequence[ConversationRecord], baseline: str, variants: Sequence[str], *,
                        alpha: float = ALPHA) -> list[dict[str, Any]]:
    """One entry per (group, outcome) with outcome ``reward`` or the primary manipulation score; pooled scope."""
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
            for lv, recs in [(0, base), *[(d.level, index.get(v, {})) for v, d in members]]:
                for r in recs.values():
                    levels.append(float(lv))
                    values.append(value(r))
                    clusters.append(r.task_key)
            t = dose_response(levels, values, clusters)
            per_level = {lv: (mean, n) for lv, mean, n in t.per_level}
            rows = [{"level": 0, "level_name": "baseline", "variant": baseline, "mean": per_level.get(0.0, (None, 0))[0],
                     "n": per_level.get(0.0, (None, 0))[1], "diff": None, "ci": [None, None], "n_pairs": 0,
                     "scale": 0.0 if method != "prompt" else None, "steering": None}]
            for v, d in members:
                pairs = matched_pairs(base, index.get(v, {}), POOLED)
                e = paired_effect([value(b) for b, _ in pairs], [value(x) for _, x in pairs], [b.task_key for b, _ in pairs])
                mean, n = per_level.get(float(d.level), (None, 0))
                st = steering.get(v)
                rows.append({"level": d.level, "level_name": d.level_name, "variant": v, "mean": mean, "n": n,
                             "diff": e.diff, "ci": [e.ci_low, e.ci_high], "n_pairs": e.n_pairs,
                             "scale": None if st is None else st["scale"], "steering": st})
            out.append({"emotion": emotion, "method": method, "outcome": outcome, **_scales(method, members, steering),
                        "label": "reward" if outcome == "reward" else PRIMARY.label + ", early turns",
                        "levels": rows, "slope": t.slope, "ci": [t.ci_low, t.ci_high], "se": t.se, "df": t.df, "p": t.p,
                        "n_tasks": t.n_tasks, "n_obs": t.n_obs})
    for outcome in ("reward", PRIMARY.key):
        members_ = [row for row in out if row["outcome"] == outcome]
        eligible = [row["p"] if row["slope"] is not None and row["n_tasks"] >= MIN_TASKS else None for row in members_]
        adjusted = adjust_pvalues(eligible)
        size = sum(1 for p in eligible if p is not None)
        for row, q in zip(members_, adjusted):
            row["p_adjusted"] = q
            row["family_size"] = size
            row["claim"] = _trend_claim(row, q, alpha)
    return out
