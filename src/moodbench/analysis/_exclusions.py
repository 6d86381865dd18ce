"""Missing conversations of one comparison: how many each side lost, whether that looks outcome-related, and
the effect with every excluded outcome imputed both ways (the bounds a claim must survive).

Split from :mod:`moodbench.analysis._claims`, which calls :func:`exclusion_check` for every row.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from moodbench.analysis._inference import ALPHA, PairedEffect, paired_effect
from moodbench.results import ConversationRecord

__all__ = ["EXCLUSION_RATE_GAP", "MissingBounds", "exclusion_check", "mde_with_exclusions", "missing_bounds"]

PairKey = tuple[str, str, int]


@dataclass(frozen=True)
class MissingBounds:
    """The effect with every excluded outcome imputed as a failure (0) and as a success (1).

    ``worst`` imputes the variant's excluded conversations as failures and the baseline's as successes,
    ``best`` the reverse: every possible value of the missing outcomes gives an effect between them. A claim
    that keeps its sign in both is robust to whatever the exclusions hid.
    """

    excluded_baseline: int
    excluded_variant: int
    worst: PairedEffect
    best: PairedEffect

    def to_dict(self) -> dict[str, Any]:
        def one(e: PairedEffect) -> dict[str, Any]:
            return {"diff": e.diff, "ci": [e.ci_low, e.ci_high], "n_pairs": e.n_pairs, "n_tasks": e.n_tasks}

        lows = [x for x in (self.worst.ci_low, self.best.ci_low) if x is not None]
        highs = [x for x in (self.worst.ci_high, self.best.ci_high) if x is not None]
        return {
            "excluded_baseline": self.excluded_baseline,
            "excluded_variant": self.excluded_variant,
            "as_failures": one(self.worst),
            "as_successes": one(self.best),
            "ci_bounds": [min(lows) if lows else None, max(highs) if highs else None],
        }


def missing_bounds(baseline: Sequence[float], variant: Sequence[float], clusters: Sequence[Hashable]) -> MissingBounds | None:
    """Bounds of a paired effect over (task, trial)s both sides ran, NaN marking an excluded outcome.

    ``None`` when nothing is missing. Rewards lie in [0, 1], so imputing 0 and 1 brackets every possibility.
    """
    b = np.asarray(baseline, dtype=float)
    v = np.asarray(variant, dtype=float)
    mb, mv = np.isnan(b), np.isnan(v)
    if not (mb.any() or mv.any()):
        return None
    worst = paired_effect(np.where(mb, 1.0, b), np.where(mv, 0.0, v), clusters)
    best = paired_effect(np.where(mb, 0.0, b), np.where(mv, 1.0, v), clusters)
    return MissingBounds(int(mb.sum()), int(mv.sum()), worst, best)


def mde_with_exclusions(value: float | None, rate_variant: float, rate_baseline: float) -> float | None:
    """The MDE of a comparison that lost conversations: a drop is claimed only if the bound with the variant's excluded
    outcomes as successes (and the baseline's as failures) is significant too, and that bound can sit up to the two
    exclusion shares above the estimate (exactly that when the variant's failures are the ones excluded). Adding
    them keeps the promised power (conservative when exclusions are random)."""
    return None if value is None else value + rate_variant + rate_baseline


EXCLUSION_RATE_GAP = 0.02  # exclusion rates differing by 2 points or more (or Fisher p < 0.05): a caveat


def _turns(r: ConversationRecord) -> float:
    if r.stats.turns is not None:
        return float(r.stats.turns)
    return float(sum(1 for m in r.messages if m.get("role") == "user" and m.get("content")))


def exclusion_check(
    keys: Sequence[PairKey],
    base: dict[PairKey, ConversationRecord],
    var: dict[PairKey, ConversationRecord],
    base_x: dict[PairKey, ConversationRecord],
    var_x: dict[PairKey, ConversationRecord],
) -> dict[str, Any] | None:
    """Exclusions of one comparison over the (task, trial)s both sides ran: rates, whether they differ, whether the
    excluded conversations ran longer than the scored ones (an outcome-like signal), and the bounds.

    ``None`` when neither side lost a conversation there.
    """
    n = len(keys)
    xb = [k for k in keys if k in base_x]
    xv = [k for k in keys if k in var_x]
    if not n or not (xb or xv):
        return None
    from scipy import stats as sps  # here: scipy.stats costs ~0.5 s of start-up; most reports lose no conversation

    rate_b, rate_v = len(xb) / n, len(xv) / n
    p_rate = float(sps.fisher_exact([[len(xb), n - len(xb)], [len(xv), n - len(xv)]])[1])
    turns_x = [_turns(r) for r in [*(base_x[k] for k in xb), *(var_x[k] for k in xv)]]
    turns_s = [_turns(r) for k in keys for r in (base.get(k), var.get(k)) if r is not None]
    p_turns = None
    if len(turns_x) >= 2 and len(turns_s) >= 2 and len(set(turns_x + turns_s)) > 1:
        p_turns = float(sps.mannwhitneyu(turns_x, turns_s, alternative="greater").pvalue)
    mean_x = float(np.mean(turns_x)) if turns_x else None
    mean_s = float(np.mean(turns_s)) if turns_s else None
    concerns = []
    if rate_v != rate_b and (abs(rate_v - rate_b) >= EXCLUSION_RATE_GAP or p_rate < ALPHA):
        concerns.append("exclusions_differ")
    longer = mean_x is not None and mean_s is not None and mean_x > mean_s
    if longer and (p_turns is not None and p_turns < ALPHA or (p_turns is None and mean_s and mean_x > 1.5 * mean_s)):  # type: ignore[operator]
        concerns.append("exclusions_outcome")
    clusters = [(k[0], k[1]) for k in keys]
    b_vals = [float("nan") if k in base_x else float(base[k].reward) for k in keys]  # type: ignore[arg-type]
    v_vals = [float("nan") if k in var_x else float(var[k].reward) for k in keys]  # type: ignore[arg-type]
    bounds = missing_bounds(b_vals, v_vals, clusters)
    return {
        "pairs_run": n,
        "excluded_baseline": len(xb),
        "excluded_variant": len(xv),
        "rate_baseline": rate_b,
        "rate_variant": rate_v,
        "p_rate": p_rate,
        "turns_excluded_mean": mean_x,
        "turns_scored_mean": mean_s,
        "p_turns_longer": p_turns,
        "concerns": concerns,
        "bounds": None if bounds is None else bounds.to_dict(),
        "_bounds": bounds,
    }
