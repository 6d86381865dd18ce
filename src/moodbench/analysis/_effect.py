"""The one t analysis behind every claim, the paired effect of one variant, and the design thresholds.

Split from ``_inference.py`` (which re-exports everything here) so the analyses built on it (claims in
``_inference.py``, pass^k in ``_pass_k.py``, the A/A split, dose-response and manipulation check in
``_secondary.py``) can import it without an import cycle; the method itself is described in
``_inference.py``'s docstring.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from scipy import special

ALPHA = 0.05  # family-wise error rate of the claims (Holm over the family), and of the manipulation check
CONFIDENCE = 0.95  # level of the per-effect (marginal) intervals shown next to every claim
# Minimum design for a claim, from the coverage grid of benchmarks/calibration.py (docs/statistics.md): over four
# simulated worlds (near-ceiling, hard, heterogeneous and homogeneous tasks) and true drops of 0, 10 and 20
# points, the task-level t interval covers 0.938-0.993 in every design with >= 20 tasks and >= 40 pairs. Below
# that it dips where a real drop sits in a few tasks: 0.927 at 15 tasks x 3 trials, 0.910 at 10 x 2, 0.87 at
# 5 x 3; with one trial per task (every task difference is -1, 0 or +1) 0.92-0.93 at 20-30 tasks, hence the
# pair floor: 40 tasks at one trial, 20 at two or more.
MIN_TASKS = 20
MIN_PAIRS = 40
CLAIMS = ("lower", "higher", "no_difference", "too_few")  # too_few also covers "the data cannot say": see no_claim_reason
METHOD = "task-clustered t: task-weighted mean paired difference, CR1 cluster SE (= SD of task means / sqrt(G)), t(G-1)"

ClaimValue = Literal["lower", "higher", "no_difference", "too_few"]


# --------------------------------------------------------------------------- the one t analysis


@dataclass(frozen=True)
class TaskT:
    """Mean, standard error and t(G-1) inference of G task-level values (one number per task)."""

    n_tasks: int
    mean: float | None
    se: float | None
    df: int | None
    ci_low: float | None
    ci_high: float | None
    p: float | None  # two-sided, H0: mean = 0
    confidence: float
    degenerate: str | None = None  # "zero_spread": every task value equal, so there is no uncertainty estimate

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ZERO_SPREAD = "zero_spread"
# values closer than this (relative to their size) count as equal: floating-point noise is not spread
_SPREAD_TOL = 1e-9


def _t_p_two_sided(t: float, df: int) -> float:
    return float(2.0 * special.stdtr(df, -abs(t)))


def _t_quantile(q: float, df: int) -> float:
    return float(special.stdtrit(df, q))


def task_t(task_values: Sequence[float] | np.ndarray, *, confidence: float = CONFIDENCE) -> TaskT:
    """One-sample t analysis of task-level values (mean over G tasks, SE = sd/sqrt(G), t with G-1 df).

    Degenerate cases are answered rather than raised, because a report must always render: no task gives
    all ``None``; one task gives a mean with no SE; identical values (SD 0, up to floating-point noise) give
    SE 0 but **no interval and no p** (``degenerate="zero_spread"``): a zero-width interval or a p of exactly 0
    or 1 would state certainty that G equal numbers cannot give (typically every task at the floor or the
    ceiling on both sides), so such an effect is never claimed.
    """
    x = np.asarray(task_values, dtype=float)
    g = int(x.size)
    if g == 0:
        return TaskT(0, None, None, None, None, None, None, confidence)
    mean = float(x.mean())
    if g == 1:
        return TaskT(1, mean, None, None, None, None, None, confidence)
    df = g - 1
    sd = float(x.std(ddof=1))
    se = sd / math.sqrt(g)
    lo, hi = float(x.min()), float(x.max())
    if hi - lo <= _SPREAD_TOL * max(1.0, abs(lo), abs(hi)):
        return TaskT(g, mean, 0.0, df, None, None, None, confidence, ZERO_SPREAD)
    half = _t_quantile(0.5 + confidence / 2.0, df) * se
    return TaskT(g, mean, se, df, mean - half, mean + half, _t_p_two_sided(mean / se, df), confidence)


def _labels(clusters: Sequence[Hashable], n: int) -> tuple[np.ndarray, int]:
    if len(clusters) != n:
        raise ValueError(f"clusters must have one label per observation ({len(clusters)} != {n})")
    if isinstance(clusters, np.ndarray) and clusters.dtype.kind in "iub":  # fast path (the calibration's integer tasks)
        uniq, inverse = np.unique(clusters, return_inverse=True)
        return inverse.astype(np.intp, copy=False).ravel(), int(uniq.size)
    index: dict[Hashable, int] = {}
    labels = np.fromiter((index.setdefault(c, len(index)) for c in clusters), dtype=np.intp, count=n)
    return labels, len(index)


def _finite(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(values, dtype=float)
    if a.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} has NaN or infinite values; drop those conversations first")
    return a


def _group_means(values: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    counts = np.bincount(labels, minlength=k).astype(float)
    return np.bincount(labels, weights=values, minlength=k) / counts, counts


# --------------------------------------------------------------------------- paired effect of one variant


@dataclass(frozen=True)
class PairedEffect:
    """Task-weighted paired difference (variant - baseline) with its task-clustered t inference.

    ``baseline_mean`` and ``variant_mean`` are computed on exactly the same pairs and with the same task
    weights as ``diff``, so ``variant_mean - baseline_mean == diff``. ``p`` is two-sided and unadjusted;
    claims use the family-adjusted p (``claim_family``).
    """

    n_pairs: int
    n_tasks: int
    baseline_mean: float | None
    variant_mean: float | None
    diff: float | None
    se: float | None
    df: int | None
    ci_low: float | None
    ci_high: float | None
    p: float | None
    confidence: float
    method: str = METHOD
    degenerate: str | None = None  # why there is no interval/p although there are tasks (see ``no_claim_reason``)

    @property
    def relative_pct(self) -> float | None:
        """Difference relative to the baseline mean, in percent (tau-Trait's 'average drop')."""
        if self.diff is None or not self.baseline_mean:
            return None
        return 100.0 * self.diff / self.baseline_mean

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "relative_pct": self.relative_pct}


def paired_effect(
    baseline: Sequence[float] | np.ndarray,
    variant: Sequence[float] | np.ndarray,
    clusters: Sequence[Hashable],
    *,
    confidence: float = CONFIDENCE,
) -> PairedEffect:
    """Effect of a variant on matched pairs: ``baseline[i]`` and ``variant[i]`` ran the same (task, trial).

    ``clusters[i]`` is the pair's task (use (domain, task) when several domains are pooled). Rewards may be
    0/1 or fractional. Returns the task-weighted mean difference with the task-clustered t interval and p.
    """
    a = _finite(baseline, "baseline")
    b = _finite(variant, "variant")
    if a.shape != b.shape:
        raise ValueError(f"baseline and variant must have the same length ({a.size} != {b.size})")
    n = int(a.size)
    if n == 0:
        return PairedEffect(0, 0, None, None, None, None, None, None, None, None, confidence)
    labels, k = _labels(clusters, n)
    base_means, _ = _group_means(a, labels, k)
    var_means, _ = _group_means(b, labels, k)
    t = task_t(var_means - base_means, confidence=confidence)
    return PairedEffect(
        n_pairs=n,
        n_tasks=k,
        baseline_mean=float(base_means.mean()),
        variant_mean=float(var_means.mean()),
        diff=t.mean,
        se=t.se,
        df=t.df,
        ci_low=t.ci_low,
        ci_high=t.ci_high,
        p=t.p,
        confidence=confidence,
        degenerate=t.degenerate,
    )


def no_claim_reason(effect: PairedEffect, *, min_tasks: int = MIN_TASKS, min_pairs: int = MIN_PAIRS) -> str | None:
    """Why an effect cannot carry a claim, in words a reader can act on (``None`` when it can).

    Zero spread is explained by where the tasks sit: every pair at the floor (nothing to lose), at the ceiling
    on both sides (nothing was lost), or every task moved by exactly the same amount (no spread to measure
    the uncertainty from). Below the minimum design the counts are named.
    """
    if effect.n_pairs == 0:
        return "no matched pairs"
    if effect.n_tasks < min_tasks or effect.n_pairs < min_pairs:
        return f"{effect.n_tasks} tasks and {effect.n_pairs} pairs; a claim needs >= {min_tasks} tasks and >= {min_pairs} pairs"
    if effect.degenerate == ZERO_SPREAD:
        b, v = effect.baseline_mean, effect.variant_mean
        if b == 0 and v == 0:
            return "every task failed on both sides (all at the floor): the data cannot show a drop"
        if b == 1 and v == 1:
            return "every task succeeded on both sides (all at the ceiling): the data cannot show a change"
        if effect.diff == 0:
            return (
                "every task's mean difference is exactly 0: with no spread between tasks the uncertainty cannot be "
                "estimated, so no interval or p is given"
            )
        return (
            f"every task changed by exactly {effect.diff:+.3g}: with no spread between tasks the uncertainty cannot be "
            "estimated, so no interval or p is given"
        )
    if effect.p is None:
        return "not estimable (one task)"
    return None
