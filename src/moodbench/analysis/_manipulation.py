"""Manipulation check: did the simulated customers of a variant actually *sound* different?

The previous harness reported effects of a "frustrated" customer whose messages read as neutral:
the emotion never reached the model. An effect is only about emotion if the emotion is visible in
what the customer wrote, so every variant is compared with the baseline on the customer's turns,
with the scores of :mod:`moodbench.judges` (VADER, marker words, optional LLM judge), each paired
with the baseline conversation of the same (domain, task, trial) and given a task-clustered CI.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from moodbench.analysis._stats import DEFAULT_RESAMPLES, DEFAULT_SEED, paired_bootstrap
from moodbench.judges import DEFAULT_FAMILIES, LEXICONS, families_of, text_scores
from moodbench.results import ConversationRecord

MIN_PAIRS = 10  # fewer paired conversations than this: "too few conversations to check"


def _own(score: dict[str, Any], families: list[str]) -> float:
    return sum(score["marker_rate"][f] for f in families)


def _judge_own(j: dict[str, float] | None, families: list[str]) -> float | None:
    if not j:
        return None
    vals = [j[f] for f in families if f in j] or list(j.values())
    return max(vals) if vals else None


METRICS = (
    # key, label, direction an emotional customer should move it
    ("markers_own", "emotion markers / 100 words (own families)", +1),
    ("vader_compound", "VADER compound", -1),
    ("vader_neg", "VADER negativity", +1),
    ("judge_own", "LLM judge 0-10 (own families)", +1),
)


def manipulation_check(
    convs: list[ConversationRecord],
    baseline: str,
    variants: list[str],
    judge: dict[str, Any] | None = None,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> dict[str, Any]:
    """Per variant: mean scores, paired differences with CIs, and whether the check passed."""
    judge_scores = (judge or {}).get("scores", {})
    scored = {c.id: text_scores(c.user_texts) for c in convs if not c.excluded}
    by_variant: dict[str, dict[tuple, ConversationRecord]] = defaultdict(dict)
    for c in convs:
        if not c.excluded:
            by_variant[c.variant][c.pair_key] = c
    base = by_variant.get(baseline, {})
    out: dict[str, Any] = {"baseline": baseline, "min_pairs": MIN_PAIRS, "lexicons": {k: list(v) for k, v in LEXICONS.items()},
                           "judge": {k: v for k, v in (judge or {}).items() if k != "scores"} or None, "variants": {}}
    for v in variants:
        fam = families_of(v) if v != baseline else list(DEFAULT_FAMILIES)
        mine = by_variant.get(v, {})
        means: dict[str, float | None] = {}
        values: dict[str, list[float]] = defaultdict(list)
        for c in mine.values():
            s = scored[c.id]
            if s["vader_compound"] is not None:
                values["vader_compound"].append(s["vader_compound"])
                values["vader_neg"].append(s["vader_neg"])
            values["markers_own"].append(_own(s, fam))
            values["markers_all"].append(sum(s["marker_rate"].values()))
            j = _judge_own(judge_scores.get(c.id), fam)
            if j is not None:
                values["judge_own"].append(j)
        for key in ("markers_own", "markers_all", "vader_compound", "vader_neg", "judge_own"):
            vals = values.get(key, [])
            means[key] = sum(vals) / len(vals) if vals else None
        entry: dict[str, Any] = {"families": fam, "n": len(mine), "means": means,
                                 "family_rates": {f: (sum(scored[c.id]["marker_rate"][f] for c in mine.values()) / len(mine) if mine else None)
                                                  for f in LEXICONS}}
        if v == baseline:
            out["variants"][v] = {**entry, "is_baseline": True}
            continue
        keys = sorted(set(base) & set(mine))
        diffs: dict[str, Any] = {}
        for key, label, direction in METRICS:
            a: list[float] = []
            b: list[float] = []
            clusters = []
            for k in keys:
                sb, sv = scored[base[k].id], scored[mine[k].id]
                if key == "judge_own":
                    x, y = _judge_own(judge_scores.get(base[k].id), fam), _judge_own(judge_scores.get(mine[k].id), fam)
                elif key == "markers_own":
                    x, y = _own(sb, fam), _own(sv, fam)
                else:
                    x, y = sb[key], sv[key]
                if x is None or y is None:
                    continue
                a.append(x)
                b.append(y)
                clusters.append(k[:2])
            if not a:
                if key != "judge_own" or judge_scores:
                    diffs[key] = {"label": label, "direction": direction, "n_pairs": 0, "mean": None, "low": None, "high": None,
                                  "moved": False}
                continue
            boot = paired_bootstrap(a, b, clusters, n_resamples=n_resamples, seed=seed)
            moved = boot.excludes_zero and (boot.mean or 0) * direction > 0
            diffs[key] = {"label": label, "direction": direction, **boot.to_dict(), "moved": moved}
        n_pairs = len(keys)
        passed = any(d["moved"] for d in diffs.values())
        if n_pairs < MIN_PAIRS:
            status, text = "too_few", f"Too few paired conversations ({n_pairs}) to check the manipulation (need >= {MIN_PAIRS})."
        elif passed:
            labels = ", ".join(d["label"] for d in diffs.values() if d["moved"])
            status, text = "passed", f"Customers differ from the baseline ({labels})."
        else:
            status, text = "failed", ("Customers do NOT differ detectably from the baseline on any score: the emotion may not have "
                                      "reached the simulated customer, so reward differences cannot be attributed to it.")
        out["variants"][v] = {**entry, "is_baseline": False, "n_pairs": n_pairs, "diffs": diffs, "status": status, "verdict": text}
    return out
