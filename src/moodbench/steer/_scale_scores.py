"""How far one vector scale moved the customer and what it cost: the per-scale scores of a calibration
(VADER and marker words, paired with scale 0 by conversation; flagged replies, early stops, repetition,
goal overlap), and the levels chosen from the coherent scales (coherence itself: :mod:`._coherence`).

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
    return {
        "mean": e.diff if e else None,
        "low": e.ci_low if e else None,
        "high": e.ci_high if e else None,
        "se": e.se if e else None,
        "n_pairs": e.n_pairs if e else 0,
        "n_clusters": e.n_tasks if e else 0,
    }


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


def summarize_scale(
    scale: float, rows: list[dict[str, Any]], conversations: int, base_rows: list[dict[str, Any]] | None
) -> dict[str, Any]:
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
    out.update(vader_diff=v["mean"], ci=[v["low"], v["high"]], vader_se=v["se"], markers_diff=m["mean"],
               markers_ci=[m["low"], m["high"]], n_pairs=v["n_pairs"], n_clusters=v["n_clusters"])  # fmt: skip
    out["detected"] = bool((v["high"] is not None and v["high"] < 0) or (m["low"] is not None and m["low"] > 0))
    return out


def _flagged(r: dict[str, Any]) -> bool:
    """A reply with a fidelity problem other than a stop (stops have their own rate)."""
    return bool(
        r["role_confusion"] or r["echo"] or r["empty"] or r.get("refusal") or r.get("self_repeat") or r["error"] is not None
    )


def _goal_mean(rows: list[dict[str, Any]]) -> float | None:
    per_conv = {(r["task"], r["seed"]): r["goal_overlap"] for r in rows if r.get("goal_overlap") is not None}
    return statistics.fmean(per_conv.values()) if per_conv else None


def choose_levels(rows: Sequence[dict[str, Any]]) -> dict[str, float] | None:
    """mild/moderate/severe scales from rows with ``scale`` and ``coherent``; pure function (see module doc).

    Positive scales are taken in increasing order; the first incoherent one ends the search (the rows'
    ``coherent`` come from :func:`moodbench.steer._coherence.decide`, which is already monotone). Negative
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


MIN_VADER_EFFECT = 0.10  # the smallest tone change worth detecting when a sweep detected none (VADER compound)


def judge_sweep(per_scale: dict[float, list[dict[str, Any]]], conversations: int, limits: dict[str, float], *, n_tasks: int,
                seeds: int, grid: Sequence[float]) -> tuple[list[dict[str, Any]], dict[str, float] | None, dict[str, Any], list[str]]:  # fmt: skip
    """The table, levels, evidence and warnings of a sweep's scored replies; pure function (tested on
    replies with a known truth). Coherence: :func:`moodbench.steer._coherence.decide`."""
    from moodbench.steer._coherence import decide, suggest_tasks

    base_rows = per_scale[0.0]
    decision = decide(per_scale, limits)
    base = summarize_scale(0.0, base_rows, conversations, None)
    base["coherent"], base["why_incoherent"] = True, []
    table = [base]
    for scale in sorted((s for s in per_scale if s != 0), key=lambda s: (abs(s), s)):
        row = summarize_scale(scale, per_scale[scale], conversations, base_rows)
        row["coherent"], row["why_incoherent"] = decision.coherent[scale], decision.why[scale]
        row["checks"] = {name: c.to_dict() for name, c in decision.checks[scale].items()}
        table.append(row)
    levels = choose_levels(table)
    warnings: list[str] = list(decision.notes)
    positive = sorted(s for s in per_scale if s > 0)
    evidence: dict[str, Any] = {
        "rule": "coherence: paired task-clustered differences to scale 0, isotonic in the scale, incoherent when the fitted "
                "excess is above its margin and its 95% interval above 0 (steer/_coherence.py)",
        "bounded_by": ({"scale": decision.onset, "checks": decision.bounded_by} if decision.onset is not None else None),
        "manipulation": [{"scale": r["scale"], "vader_diff": r["vader_diff"], "ci": r["ci"], "markers_diff": r["markers_diff"],
                          "markers_ci": r["markers_ci"], "detected": r["detected"]} for r in table[1:] if r["scale"] > 0],
        "notes": decision.notes,
        "suggested_design": None,
    }  # fmt: skip
    if decision.undecided:
        need = max(2, n_tasks + 1)
        evidence["suggested_design"] = {"tasks": need, "seeds": seeds}
        warnings.append(f"too small to decide: {', '.join(decision.undecided)} measured on fewer than 2 tasks, so no interval "
                        f"can be given; fix: calibrate on at least {need} tasks (--tasks)")  # fmt: skip
    if levels is None:
        first = positive[0] if positive else None
        if first is not None and decision.onset == first:
            warnings.append(f"the smallest tested scale ({first:g}) is already credibly incoherent ({'; '.join(decision.bounded_by)}): "
                            f"try smaller scales (e.g. --scales 0,{first / 4:g},{first / 2:g}), other layers or the prompt")  # fmt: skip
        else:
            warnings.append("no scale above 0 was tested; fix: e.g. --scales 0,0.5,1,1.5")
    else:
        severe_row = next(r for r in table if r["scale"] == levels["severe"])
        if decision.onset is None and levels["severe"] == max(grid, key=abs):
            warnings.append(
                f"the largest tested scale ({levels['severe']:g}) is still coherent: test larger scales to find the limit"
            )
        if not any(r["detected"] for r in table[1:] if 0 < r["scale"] <= levels["severe"]):
            target = max(abs(severe_row.get("vader_diff") or 0.0), MIN_VADER_EFFECT)
            more = suggest_tasks(n_tasks, severe_row.get("vader_se"), target)
            if more is not None:
                evidence["suggested_design"] = {"tasks": more, "seeds": seeds}
            warnings.append(f"the manipulation is not detectable at any coherent scale up to severe ({levels['severe']:g}; VADER and "
                            "marker CIs include 0): the emotion may not reach the customer"
                            + (f"; a VADER change of {-target:+.2f} would need about {more} tasks x {seeds} seeds to detect"
                               if more else ""))  # fmt: skip
    if 1 / conversations > limits["stop_increase_max"]:
        warnings.append(f"{conversations} conversations per scale: one early stop ({1 / conversations:.0%}) is already above the "
                        f"stop-rate margin (+{limits['stop_increase_max']:.0%}); only a credible excess counts, but so few "
                        "conversations rarely make one: give more --seeds or --tasks before concluding")  # fmt: skip
    return table, levels, evidence, warnings
