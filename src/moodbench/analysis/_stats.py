"""Small, checkable statistics for paired designs: bootstrap CIs, exact McNemar, Holm, pass^k.

Every variant is run on the same tasks and trials (with the same seed) as the baseline, so each
(task, trial) gives a *pair* of conversations. Paired tests use that; unpaired tests (the previous
harness used t-tests) throw most of the power away.

Trials of one task are not independent (an impossible task fails in every trial), so the bootstrap
resamples whole *clusters* (tasks) when clusters are given, not single pairs: resampling pairs
would pretend three trials of one task were three tasks and give intervals that are too narrow.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import combinations
from math import comb
from typing import Any

import numpy as np

from moodbench.results import pass_hat_k

__all__ = [
    "DEFAULT_RESAMPLES",
    "DEFAULT_SEED",
    "BootstrapResult",
    "holm",
    "mcnemar_exact",
    "noise_floor",
    "paired_bootstrap",
    "pass_hat_k",
]

DEFAULT_RESAMPLES = 5000  # >= 2,000: percentile intervals need enough tail draws to be stable
DEFAULT_SEED = 20240917  # fixed so a report regenerated from the same store prints the same intervals
_CHUNK_CELLS = 4_000_000  # resamples x clusters per numpy block: bounds memory on big runs


@dataclass(frozen=True)
class BootstrapResult:
    """Mean paired difference (variant - baseline) and its percentile interval."""

    mean: float | None
    low: float | None
    high: float | None
    n_pairs: int
    n_clusters: int
    n_resamples: int
    confidence: float

    @property
    def excludes_zero(self) -> bool:
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "excludes_zero": self.excludes_zero}


def paired_bootstrap(
    baseline: Sequence[float],
    variant: Sequence[float],
    clusters: Sequence[Hashable] | None = None,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    confidence: float = 0.95,
) -> BootstrapResult:
    """Percentile bootstrap CI of ``mean(variant - baseline)`` over pairs.

    ``clusters`` (e.g. the task id of each pair) makes it a cluster bootstrap: whole clusters are
    drawn with replacement and the statistic is the pooled mean of their pairs' differences.
    With no clusters every pair is its own cluster. Seeded, so the same data give the same interval.
    """
    a = np.asarray(baseline, dtype=float)
    b = np.asarray(variant, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"baseline and variant must have the same length ({a.shape} != {b.shape})")
    n = int(a.size)
    if n == 0:
        return BootstrapResult(None, None, None, 0, 0, n_resamples, confidence)
    diffs = b - a
    if clusters is None:
        sums, counts = diffs, np.ones(n)
    else:
        if len(clusters) != n:
            raise ValueError("clusters must have one label per pair")
        index: dict[Hashable, int] = {}
        labels = np.array([index.setdefault(c, len(index)) for c in clusters])
        sums = np.bincount(labels, weights=diffs)
        counts = np.bincount(labels).astype(float)
    k = int(sums.size)
    rng = np.random.default_rng(seed)
    stats = np.empty(n_resamples)
    block = max(1, _CHUNK_CELLS // max(k, 1))
    for start in range(0, n_resamples, block):
        stop = min(n_resamples, start + block)
        draw = rng.integers(0, k, size=(stop - start, k))
        stats[start:stop] = sums[draw].sum(axis=1) / counts[draw].sum(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(stats, [tail, 1.0 - tail])
    return BootstrapResult(float(diffs.mean()), float(low), float(high), n, k, n_resamples, confidence)


def mcnemar_exact(baseline_only: int, variant_only: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pair counts.

    ``baseline_only``: pairs where only the baseline succeeded; ``variant_only``: only the variant.
    Under H0 each discordant pair is a fair coin, so p = min(1, 2 * P(Binom(b + c, 1/2) <= min(b, c))).
    Concordant pairs carry no information about the difference and do not enter.
    """
    b, c = int(baseline_only), int(variant_only)
    if b < 0 or c < 0:
        raise ValueError("counts must be non-negative")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2.0 * tail / 2**n)


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values, in the input order (``None`` stays ``None``, not counted).

    Sorted ascending, the i-th smallest (0-based) is multiplied by (m - i); a running maximum
    keeps the adjusted values monotone, and they are capped at 1. Controls the family-wise error
    rate across the variants compared with one baseline, without assuming independence.
    """
    present = [(p, i) for i, p in enumerate(pvalues) if p is not None]
    m = len(present)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(present)):
        running = max(running, min(1.0, (m - rank) * float(p)))
        out[i] = running
    return out


def noise_floor(rewards_by_task: Mapping[Any, Mapping[int, float]], success_threshold: float = 1.0 - 1e-9) -> dict[str, Any]:
    """How much the baseline disagrees with *itself* across trials.

    ``rewards_by_task``: {task: {trial: reward}}. For every pair of trials (i, j) the mean reward
    of trial i and of trial j are compared over the tasks that have both; ``mean_abs_diff`` is the
    average of those gaps (how far two runs of the same setup land apart), ``max_abs_diff`` the
    largest. ``flip_rate`` is the share of (task, trial pair) comparisons whose success differs.
    An effect smaller than ``mean_abs_diff`` is indistinguishable from re-running the baseline.
    """
    trials = sorted({t for per in rewards_by_task.values() for t in per})
    gaps: list[float] = []
    flips = comparisons = 0
    for i, j in combinations(trials, 2):
        common = [per for per in rewards_by_task.values() if i in per and j in per]
        if not common:
            continue
        gaps.append(abs(sum(per[i] - per[j] for per in common) / len(common)))
        for per in common:
            comparisons += 1
            flips += (per[i] >= success_threshold) != (per[j] >= success_threshold)
    if not gaps:
        return {"trials": len(trials), "trial_pairs": 0, "mean_abs_diff": None, "max_abs_diff": None,
                "flip_rate": None, "comparisons": 0}
    return {"trials": len(trials), "trial_pairs": len(gaps), "mean_abs_diff": sum(gaps) / len(gaps),
            "max_abs_diff": max(gaps), "flip_rate": flips / comparisons, "comparisons": comparisons}
