"""How far one vector scale moved the customer and what it cost: the per-scale scores of a calibration
(VADER and marker words, paired with scale 0 by conversation; flagged replies, early stops, repetition,
goal overlap), the coherence rules with their thresholds, and the levels chosen from the coherent scales.

:mod:`._calibrate` runs the sweep and calls these; the thresholds are documented there.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

THRESHOLDS: dict[str, float] = {
    "ppl_ratio_max": 2.0,
    "flagged_increase_max": 0.20,
    "stop_increase_max": 0.20,
    "repetition_increase_max": 0.15,
    "goal_ratio_min": 0.5,
    "min_replies_ratio": 0.5,
}
REPETITION_NGRAM = 3
LEVEL_FRACTIONS: dict[str, float] = {"mild": 1 / 3, "moderate": 2 / 3, "severe": 1.0}


def _family(emotion: str) -> list[str]:
    from moodbench.judges import LEXICONS

    return [emotion] if emotion in LEXICONS else list(LEXICONS)


def _reply_scores(text: str, families: list[str]) -> dict[str, Any]:
    from moodbench.judges import marker_hits, text_scores
    from moodbench.results import strip_stop_tokens

    clean = strip_stop_tokens(text)
    if not clean:
        return {"vader": None, "marker_rate": None, "markers": 0, "words": 0, "repetition": None}
    s = text_scores([clean])
    hits = sum(marker_hits(clean)[f] for f in families)
    return {"vader": s["vader_compound"], "marker_rate": 100.0 * hits / s["words"] if s["words"] else 0.0, "markers": hits,
            "words": s["words"], "repetition": repetition_rate(clean)}  # fmt: skip


def repetition_rate(text: str, n: int = REPETITION_NGRAM) -> float:
    """Share of the word n-grams of ``text`` that repeat an earlier n-gram of it (0 = no loop); pure function."""
    from moodbench.judges import words as split_words

    words = split_words(text)
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if len(grams) >= 2 else 0.0


def goal_overlap(reason: str, replies: Sequence[str]) -> float:
    """Share of the scenario's content words that the customer's replies mention (fidelity's measure)."""
    from moodbench.judges import content_words

    target = content_words(reason)
    said: set[str] = set().union(*(content_words(r) for r in replies)) if replies else set()
    return len(target & said) / len(target) if target else 1.0


def _ci(base: list[float], variant: list[float], clusters: list[Any]) -> dict[str, Any]:
    """The project's one paired inference (task-clustered t), applied to scale-0 vs scale-s replies."""
    from moodbench.analysis import paired_effect

    e = paired_effect(base, variant, clusters) if base else None
    return {"mean": e.diff if e else None, "low": e.ci_low if e else None, "high": e.ci_high if e else None,
            "n_pairs": e.n_pairs if e else 0, "n_clusters": e.n_tasks if e else 0}


def _paired(rows: list[dict[str, Any]], base: list[dict[str, Any]], key: str) -> dict[str, Any]:
    index = {(r["task"], r["turn"], r["seed"]): r for r in base if r.get(key) is not None}
    a, b, clusters = [], [], []
    for r in rows:
        k = (r["task"], r["turn"], r["seed"])
        if r.get(key) is not None and k in index:
            a.append(float(index[k][key]))
            b.append(float(r[key]))
            clusters.append(r["task"])
    return _ci(a, b, clusters)


def _paired_goal(rows: list[dict[str, Any]], base: list[dict[str, Any]]) -> dict[str, Any]:
    """Goal overlap is per conversation: pair conversations by (task, seed), cluster by task."""
    mine = {(r["task"], r["seed"]): r["goal_overlap"] for r in rows if r.get("goal_overlap") is not None}
    theirs = {(r["task"], r["seed"]): r["goal_overlap"] for r in base if r.get("goal_overlap") is not None}
    keys = sorted(set(mine) & set(theirs))
    ci = _ci([theirs[k] for k in keys], [mine[k] for k in keys], [k[0] for k in keys])
    return {"mean": ci["mean"], "low": ci["low"], "high": ci["high"]}


def _rate(n: int, d: int) -> float | None:
    return n / d if d else None


def summarize_scale(scale: float, rows: list[dict[str, Any]], conversations: int, base_rows: list[dict[str, Any]] | None) -> dict[str, Any]:
    """One scale's row of the result table (``base_rows``: scale 0's replies, None for scale 0 itself)."""
    scored = [r for r in rows if r.get("vader") is not None]
    ppl = [r["perplexity"] for r in rows if r.get("perplexity") is not None]
    stops = len({(r["task"], r["seed"]) for r in rows if r["stop"]})
    out: dict[str, Any] = {
        "scale": scale,
        "replies": len(rows),
        "scored_replies": len(scored),
        "vader_compound": statistics.fmean(r["vader"] for r in scored) if scored else None,
        "markers": statistics.fmean(r["marker_rate"] for r in scored) if scored else None,
        "marker_hits": sum(r["markers"] for r in rows),
        "role_confusion": _rate(sum(r["role_confusion"] for r in rows), len(rows)),
        "echo": _rate(sum(r["echo"] for r in rows), len(rows)),
        "empty": _rate(sum(r["empty"] for r in rows), len(rows)),
        "refusal": _rate(sum(r.get("refusal", False) for r in rows), len(rows)),
        "self_repeat": _rate(sum(r.get("self_repeat", False) for r in rows), len(rows)),
        "errors": sum(r["error"] is not None for r in rows),
        "flagged": _rate(sum(_flagged(r) for r in rows), len(rows)),
        "stop_rate": _rate(stops, conversations),
        "perplexity": statistics.median(ppl) if ppl else None,
        "repetition": statistics.fmean(r["repetition"] for r in scored) if scored else None,
        "goal_overlap": _goal_mean(rows),
        "mean_words": statistics.fmean(r["words"] for r in scored) if scored else None,
    }
    if base_rows is None:
        out.update(vader_diff=0.0, ci=[0.0, 0.0], markers_diff=0.0, markers_ci=[0.0, 0.0], n_pairs=len(scored), detected=False)
        return out
    v = _paired(rows, base_rows, "vader")
    m = _paired(rows, base_rows, "marker_rate")
    g = _paired_goal(rows, base_rows)
    out.update(goal_diff=g["mean"], goal_ci=[g["low"], g["high"]])
    out.update(vader_diff=v["mean"], ci=[v["low"], v["high"]], markers_diff=m["mean"], markers_ci=[m["low"], m["high"]],
               n_pairs=v["n_pairs"], n_clusters=v["n_clusters"])  # fmt: skip
    out["detected"] = bool((v["high"] is not None and v["high"] < 0) or (m["low"] is not None and m["low"] > 0))
    return out


def _flagged(r: dict[str, Any]) -> bool:
    """A reply with a fidelity problem other than a stop (stops have their own rate)."""
    return bool(r["role_confusion"] or r["echo"] or r["empty"] or r.get("refusal") or r.get("self_repeat") or r["error"] is not None)


def _goal_mean(rows: list[dict[str, Any]]) -> float | None:
    per_conv = {(r["task"], r["seed"]): r["goal_overlap"] for r in rows if r.get("goal_overlap") is not None}
    return statistics.fmean(per_conv.values()) if per_conv else None


def _coherence(row: dict[str, Any], base: dict[str, Any], thresholds: dict[str, float]) -> tuple[bool, list[str]]:
    """Whether a scale's replies are still a coherent customer, and which thresholds failed."""
    why: list[str] = []
    if base["perplexity"] and row["perplexity"] is not None:
        ratio = row["perplexity"] / base["perplexity"]
        row["perplexity_ratio"] = ratio
        if ratio > thresholds["ppl_ratio_max"]:
            why.append(f"perplexity {ratio:.1f}x scale 0's (max {thresholds['ppl_ratio_max']:g}x)")
    elif row["scored_replies"]:
        why.append("perplexity could not be measured")
    if (row["flagged"] or 0) - (base["flagged"] or 0) > thresholds["flagged_increase_max"]:
        why.append(f"flagged replies {row['flagged']:.0%} vs {base['flagged'] or 0:.0%} at scale 0")
    if (row["stop_rate"] or 0) - (base["stop_rate"] or 0) > thresholds["stop_increase_max"]:
        why.append(f"stop rate {row['stop_rate']:.0%} vs {base['stop_rate'] or 0:.0%} at scale 0")
    if (row["repetition"] or 0) - (base["repetition"] or 0) > thresholds["repetition_increase_max"]:
        why.append(f"repetition {row['repetition']:.2f} vs {base['repetition'] or 0:.2f} at scale 0")
    base_goal = base.get("goal_overlap") or 0
    goal_high = (row.get("goal_ci") or [None, None])[1]
    if (base_goal >= 0.1 and (row.get("goal_overlap") or 0) < thresholds["goal_ratio_min"] * base_goal
            and goal_high is not None and goal_high < 0):  # fmt: skip
        why.append(f"goal overlap {row.get('goal_overlap') or 0:.2f} vs {base_goal:.2f} at scale 0 (CI of the drop below 0)")
    if row["scored_replies"] < thresholds["min_replies_ratio"] * max(1, base["scored_replies"]):
        why.append(f"only {row['scored_replies']} scored replies vs {base['scored_replies']} at scale 0")
    return not why, why


def choose_levels(rows: Sequence[dict[str, Any]]) -> dict[str, float] | None:
    """mild/moderate/severe scales from rows with ``scale`` and ``coherent``; pure function (see module doc).

    Positive scales are taken in increasing order; the first incoherent one ends the search. Negative
    scales (towards the calm side of the pairs) are measured and reported but never a level. None when
    no scale above 0 is coherent.
    """
    severe = None
    for row in sorted((r for r in rows if r["scale"] > 0), key=lambda r: r["scale"]):
        if not row["coherent"]:
            break
        severe = float(row["scale"])
    if severe is None:
        return None
    return {level: round(severe * f, 3) for level, f in LEVEL_FRACTIONS.items()}


