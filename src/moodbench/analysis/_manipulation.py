"""Manipulation check: did the emotion reach the simulated customer, before the outcome could colour its words?

An effect is about emotion only if the emotion is visible in what the customer wrote. The check is a test
that can be trusted (``docs/statistics.md``):

* one **declared primary score**: the customer's emotion-marker rate (hits per 100 words from the variant's
  own emotion families, :mod:`moodbench.judges`), not "any of several scores moved" (11% false passes under
  an exact null, issue 12);
* on the customer's **early turns**: those written before the agent's first tool result, at most the first
  ``EARLY_TURNS``. Later turns react to the outcome ("still not", "manager", "again" after the agent failed)
  and would let a reward effect pass for an emotion effect. All-turn scores are shown beside, as context;
* a **minimum effect** (``MIN_EFFECT`` markers per 100 words): passing means the one-sided lower confidence
  bound of the shift exceeds it, so a trivially small but "significant" shift on a big run does not pass;
* at level ``ALPHA / family size`` (Bonferroni over every variant x scope checked in the run), per domain
  and pooled, with the task-clustered t of every other number, and ``too_few`` below ``MIN_TASKS`` tasks
  or ``MIN_PAIRS`` pairs.

:func:`manipulation_family` is the one road from score pairs to statuses; ``benchmarks/calibration.py``
calls it as well.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from moodbench.analysis._claims import POOLED, Comparison, matched_pairs, scopes_of, scored_index
from moodbench.analysis._inference import ALPHA, MIN_PAIRS, MIN_TASKS, ManipulationResult, manipulation_test, paired_effect
from moodbench.analysis._variants import families_spec
from moodbench.judges import DEFAULT_FAMILIES, LEXICONS, families_of, text_scores
from moodbench.results import ConversationRecord, strip_stop_tokens

__all__ = [
    "EARLY_TURNS",
    "MIN_EFFECT",
    "NOT_APPLICABLE",
    "PRIMARY",
    "SCORES",
    "Score",
    "declared_emotions",
    "early_user_texts",
    "manipulation_check",
    "manipulation_family",
]

EARLY_TURNS = 2  # at most this many customer turns, and only those before the agent's first tool result
MIN_EFFECT = 1.0  # markers per 100 words: about one more emotion word in a 100-word opening than the baseline's


@dataclass(frozen=True)
class Score:
    key: str
    label: str
    direction: int  # +1: an emotional customer raises it; -1: lowers it
    min_effect: float


SCORES = (
    Score("markers_own", "emotion markers per 100 words (the variant's own families)", +1, MIN_EFFECT),
    Score("vader_compound", "VADER compound (-1 negative .. +1 positive)", -1, 0.05),
    Score("judge_own", "LLM judge 0-10 (the variant's own families)", +1, 1.0),
)
PRIMARY = SCORES[0]
TURNS = ("early", "all")


def early_user_texts(messages: Sequence[Mapping[str, Any]], limit: int = EARLY_TURNS) -> list[str]:
    """The customer's turns written before any outcome could be seen: before the agent's first tool result,
    at most ``limit`` of them (stop tokens removed, empty turns dropped)."""
    out: list[str] = []
    for m in messages:
        role = m.get("role")
        if role == "tool" and m.get("requestor", "assistant") != "user":
            break
        content = m.get("content")
        if role == "user" and isinstance(content, str):
            text = strip_stop_tokens(content)
            if text:
                out.append(text)
                if len(out) >= limit:
                    break
    return out


NOT_APPLICABLE = "not_applicable"


def declared_emotions(config: Mapping[str, Any], variants: Sequence[str], baseline: str) -> dict[str, str]:
    """Which variants are emotions, and which spec each is, as the run itself declares it (never guessed from a name).

    A moodbench run's variants are emotion specs its runner parsed against the catalog (``control`` gives none).
    An imported run declares its emotions at import (``moodbench import --emotions``, stored as ``emotions``);
    without that, its variants are agents, prompts or settings compared with the baseline, and the check does
    not apply to them.
    """
    if "emotions" in config or config.get("imports"):
        declared = config.get("emotions") or {}
        return {v: str(declared[v]) for v in variants if v in declared and v != baseline}
    return {v: v for v in variants if v not in (baseline, "control")}


def manipulation_family(
    comparisons: Sequence[Comparison], *, direction: int, min_effect: float, alpha: float = ALPHA
) -> list[ManipulationResult]:
    """One-sided checks of a declared score for a family of comparisons, Bonferroni over the checkable ones.

    A comparison below ``MIN_TASKS``/``MIN_PAIRS`` is ``too_few`` and not counted in the family size.
    """
    size = sum(1 for c in comparisons if len(set(c.clusters)) >= MIN_TASKS and len(c.clusters) >= MIN_PAIRS)
    return [
        manipulation_test(
            c.baseline, c.variant, c.clusters, direction=direction, min_effect=min_effect, family_size=max(1, size), alpha=alpha
        )
        for c in comparisons
    ]


class _Scorer:
    """Text scores of each record's early and all customer turns, computed once per record."""

    def __init__(self, judge_scores: Mapping[Any, Mapping[str, float]]):
        self.judge_scores = judge_scores
        self._cache: dict[tuple[int, str], dict[str, Any]] = {}

    def texts(self, r: ConversationRecord, turns: str) -> dict[str, Any]:
        key = (id(r), turns)
        if key not in self._cache:
            self._cache[key] = text_scores(early_user_texts(r.messages) if turns == "early" else r.user_texts)
        return self._cache[key]

    def value(self, r: ConversationRecord, score: str, turns: str, families: list[str]) -> float | None:
        if score == "judge_own":
            j = self.judge_scores.get(r.id) if r.id is not None else None
            if not j or turns != "all":  # the judge reads every customer turn
                return None
            vals = [j[f] for f in families if f in j] or list(j.values())
            return max(vals) if vals else None
        s = self.texts(r, turns)
        if score == "markers_own":
            return float(sum(s["marker_rate"][f] for f in families))
        value = s.get(score)
        return None if value is None else float(value)


def _score_comparison(
    pairs: Sequence[tuple[ConversationRecord, ConversationRecord]], value: Callable[[ConversationRecord], float | None]
) -> Comparison:
    a, b, clusters = [], [], []
    for x, y in pairs:
        vx, vy = value(x), value(y)
        if vx is None or vy is None:
            continue
        a.append(vx)
        b.append(vy)
        clusters.append(x.task_key)
    return Comparison(a, b, clusters)


def _bind(scorer: _Scorer, score: str, turns: str, families: list[str]) -> Callable[[ConversationRecord], float | None]:
    return lambda r: scorer.value(r, score, turns, families)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def manipulation_check(
    records: Sequence[ConversationRecord],
    baseline: str,
    variants: Sequence[str],
    domains: Sequence[str],
    judge: Mapping[str, Any] | None = None,
    *,
    alpha: float = ALPHA,
    emotions: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The check per variant and scope (each domain and pooled), with secondary scores as context.

    ``emotions``: the variants that are emotions and their specs (:func:`declared_emotions`); the others are
    listed under ``not_applicable`` and never checked. None treats every variant but the baseline as its own spec.

    Returns ``{"primary": ..., "checks": [...], "not_applicable": [...], "means": {...}, "judge": ...}``; ``checks``
    rows carry ``status`` (passed / failed / too_few) from the primary score on early turns only.
    """
    judge_scores = (judge or {}).get("scores", {})
    scorer = _Scorer(judge_scores)
    index = scored_index(records)
    base = index.get(baseline, {})
    specs = dict(emotions) if emotions is not None else {v: v for v in variants if v != baseline}
    others = [v for v in variants if v != baseline and v in specs]
    skipped = [
        {
            "variant": v,
            "status": NOT_APPLICABLE,
            "reason": "not an emotion: an agent, prompt or setting compared with the baseline, so there is no emotion to check",
        }
        for v in variants
        if v != baseline and v not in specs
    ]
    variants = [baseline] + others if baseline in variants else others
    scope_list = scopes_of(list(domains))
    fams = {v: (families_of(families_spec(specs[v])) if v != baseline else list(DEFAULT_FAMILIES)) for v in variants}
    cells = [(v, s, matched_pairs(base, index.get(v, {}), s)) for v in others for s in scope_list]

    comparisons = [_score_comparison(pairs, _bind(scorer, PRIMARY.key, "early", fams[v])) for v, _, pairs in cells]
    results = manipulation_family(comparisons, direction=PRIMARY.direction, min_effect=PRIMARY.min_effect, alpha=alpha)
    shown = [s for s in SCORES if s.key != "judge_own" or judge_scores]
    checks = []
    for (v, s, pairs), r in zip(cells, results):
        secondary = []
        for score in shown:
            for turns in TURNS:
                if score.key == "judge_own" and turns == "early":
                    continue
                c = _score_comparison(pairs, _bind(scorer, score.key, turns, fams[v]))
                e = paired_effect(c.baseline, c.variant, c.clusters)
                secondary.append(
                    {
                        "score": score.key,
                        "turns": turns,
                        "label": score.label,
                        "direction": score.direction,
                        "primary": score is PRIMARY and turns == "early",
                        "n_pairs": e.n_pairs,
                        "baseline_mean": e.baseline_mean,
                        "variant_mean": e.variant_mean,
                        "diff": e.diff,
                        "ci": [e.ci_low, e.ci_high],
                    }
                )
        checks.append(
            {
                "variant": v,
                "domain": s,
                "families": fams[v],
                "score": PRIMARY.key,
                "turns": "early",
                **{k: val for k, val in r.to_dict().items()},
                "secondary": secondary,
            }
        )
    means: dict[str, dict[str, Any]] = {}
    for v in variants:
        recs = [r for r in index.get(v, {}).values()]
        means[v] = {
            "n": len(recs),
            "families": fams[v],
            "markers_own_early": _mean([scorer.value(r, "markers_own", "early", fams[v]) or 0.0 for r in recs]),
            "markers_own_all": _mean([scorer.value(r, "markers_own", "all", fams[v]) or 0.0 for r in recs]),
            "vader_compound_all": _mean(
                [x for r in recs if (x := scorer.value(r, "vader_compound", "all", fams[v])) is not None]
            ),
        }
    return {
        "primary": {
            "score": PRIMARY.key,
            "label": PRIMARY.label,
            "turns": "early",
            "early_turns": EARLY_TURNS,
            "direction": PRIMARY.direction,
            "min_effect": PRIMARY.min_effect,
            "alpha": alpha,
            "family_size": results[0].family_size if results else 0,
            "scopes": scope_list,
        },
        "checks": checks,
        "not_applicable": skipped,
        "means": means,
        "lexicons": {k: list(v) for k, v in LEXICONS.items()},
        "judge": {k: v for k, v in (judge or {}).items() if k != "scores"} or None,
        "pooled": POOLED,
    }
