"""The analyses of a report that use the same task-clustered t but are not effects of the claim family:
the baseline's A/A split, the dose-response trend over intensity levels, and the manipulation check.

Split from ``_inference.py`` (which re-exports them) so the claim machinery there stays short.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from scipy import special

from moodbench.analysis._effect import (
    _SPREAD_TOL,
    ALPHA,
    CONFIDENCE,
    MIN_PAIRS,
    MIN_TASKS,
    ZERO_SPREAD,
    _finite,
    _group_means,
    _labels,
    _t_p_two_sided,
    _t_quantile,
    paired_effect,
    task_t,
)

# --------------------------------------------------------------------------- A/A split (replaces the noise floor)


@dataclass(frozen=True)
class AASplit:
    """Baseline against itself: trials split alternately into halves A (0, 2, 4, ...) and B (1, 3, ...).

    ``diff`` is mean(A) - mean(B) (task-weighted), analysed with the same t(G-1) method. Its ``half_width``
    is how far apart two re-runs of the baseline land by chance with half the trials each; ``p`` should be
    uniform (a small p points at drift or non-exchangeable trials, not at an emotion).
    """

    n_tasks: int
    trials_a: int
    trials_b: int
    diff: float | None
    se: float | None
    df: int | None
    ci_low: float | None
    ci_high: float | None
    p: float | None
    half_width: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def aa_split(base_by_task: Mapping[Hashable, Sequence[float]], *, confidence: float = CONFIDENCE) -> AASplit:
    """A/A comparison of the baseline's trials (tasks with fewer than 2 trials are left out)."""
    diffs, na, nb = [], 0, 0
    for values in base_by_task.values():
        x = _finite(list(values), "baseline values")
        if x.size < 2:
            continue
        a, b = x[0::2], x[1::2]
        diffs.append(a.mean() - b.mean())
        na += a.size
        nb += b.size
    t = task_t(diffs, confidence=confidence)
    half = None if t.ci_high is None or t.mean is None else t.ci_high - t.mean
    return AASplit(t.n_tasks, na, nb, t.mean, t.se, t.df, t.ci_low, t.ci_high, t.p, half)


# --------------------------------------------------------------------------- dose-response


@dataclass(frozen=True)
class Trend:
    """Slope of a score per intensity level (0 = baseline, 1 mild, 2 moderate, 3 severe).

    From OLS of the score on the level with task fixed effects (within-task demeaning) and a task-clustered
    CR1 standard error, t(G-1) (statsmodels ``cov_type="cluster"``). ``per_level`` is (level, task-weighted
    mean, conversations) for each level.
    """

    slope: float | None
    se: float | None
    df: int | None
    ci_low: float | None
    ci_high: float | None
    p: float | None
    n_tasks: int
    n_obs: int
    per_level: tuple[tuple[float, float, int], ...]
    degenerate: str | None = None  # "zero_spread": no within-task variation to estimate a slope's uncertainty

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def dose_response(
    levels: Sequence[float],
    values: Sequence[float],
    clusters: Sequence[Hashable],
    *,
    confidence: float = CONFIDENCE,
) -> Trend:
    """Task-clustered linear trend of ``values`` over ``levels`` (one entry per conversation).

    Task fixed effects remove task difficulty, so an unbalanced design (a task missing a level) does not
    mix difficulty into the slope; with a balanced design the slope is the mean of per-task slopes.
    """
    import statsmodels.api as sm

    x = _finite(levels, "levels")
    y = _finite(values, "values")
    if x.shape != y.shape:
        raise ValueError("levels and values must have the same length")
    n = int(x.size)
    labels, k = _labels(clusters, n) if n else (np.zeros(0, dtype=np.intp), 0)
    per_level = []
    for lv in np.unique(x):
        sel = x == lv
        tasks_here, inverse = np.unique(labels[sel], return_inverse=True)
        means, _ = _group_means(y[sel], inverse, tasks_here.size)
        per_level.append((float(lv), float(means.mean()), int(sel.sum())))
    empty = Trend(None, None, None, None, None, None, k, n, tuple(per_level))
    if k < 2 or len(per_level) < 2:
        return empty
    xm, _ = _group_means(x, labels, k)
    ym, _ = _group_means(y, labels, k)
    xd, yd = x - xm[labels], y - ym[labels]
    if not np.any(np.abs(xd) > 0):
        return empty  # no task has two different levels: the slope is not identified within tasks
    df = k - 1
    if float(np.max(np.abs(yd))) <= _SPREAD_TOL * max(1.0, float(np.max(np.abs(y)))):
        # every task has the same value at every level (e.g. identical texts): floating-point residue is not a slope
        return Trend(0.0, 0.0, df, None, None, None, k, n, tuple(per_level), ZERO_SPREAD)
    fit = sm.OLS(yd, xd[:, None]).fit(cov_type="cluster", cov_kwds={"groups": labels}, use_t=True)
    slope, se = float(fit.params[0]), float(fit.bse[0])
    if not se > _SPREAD_TOL * max(1.0, abs(slope)):
        return Trend(slope, 0.0, df, None, None, None, k, n, tuple(per_level), ZERO_SPREAD)
    half = _t_quantile(0.5 + confidence / 2.0, df) * se
    return Trend(slope, se, df, slope - half, slope + half, _t_p_two_sided(slope / se, df), k, n, tuple(per_level))


# --------------------------------------------------------------------------- manipulation check


@dataclass(frozen=True)
class ManipulationResult:
    """Did the declared primary score move in the emotion's direction by more than ``min_effect``?

    ``shift`` is the task-weighted paired difference signed so that positive = the emotion's direction.
    The test is one-sided, H0: shift <= min_effect, at level alpha / family_size (Bonferroni over the
    variants checked in one report): ``passed`` means the one-sided lower confidence bound of the shift
    exceeds ``min_effect``. ``too_few`` below MIN_TASKS / MIN_PAIRS, as for claims.
    """

    status: Literal["passed", "failed", "too_few"]
    n_pairs: int
    n_tasks: int
    direction: int
    min_effect: float
    baseline_mean: float | None
    variant_mean: float | None
    shift: float | None
    se: float | None
    df: int | None
    lower_bound: float | None  # one-sided bound at level 1 - alpha / family_size
    p: float | None  # one-sided, H0: shift <= min_effect
    alpha: float
    family_size: int
    # Why a ``too_few`` check cannot say more although the design is large enough (e.g. zero spread).
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def manipulation_test(
    baseline_scores: Sequence[float],
    variant_scores: Sequence[float],
    clusters: Sequence[Hashable],
    *,
    direction: int,
    min_effect: float,
    family_size: int = 1,
    alpha: float = ALPHA,
    min_tasks: int = MIN_TASKS,
    min_pairs: int = MIN_PAIRS,
) -> ManipulationResult:
    """Manipulation check on one declared score (pairs as in :func:`paired_effect`).

    ``direction`` is +1 when the emotion should raise the score (marker rate, judge rating) and -1 when it
    should lower it (VADER compound). ``min_effect`` (>= 0, in the score's units) is the smallest shift that
    counts as the emotion having reached the customer; requiring the lower bound above it, rather than a p
    against 0, keeps a trivially small but 'significant' shift on a large run from passing.
    """
    if direction not in (1, -1):
        raise ValueError("direction must be +1 or -1")
    if min_effect < 0:
        raise ValueError("min_effect must be >= 0")
    if family_size < 1:
        raise ValueError("family_size must be >= 1")
    e = paired_effect(baseline_scores, variant_scores, clusters)
    level = alpha / family_size

    def result(status: Literal["passed", "failed", "too_few"], shift: float | None, **test: Any) -> ManipulationResult:
        """The check's numbers; ``test``: se, df, lower_bound, p and reason where the data allow a test."""
        return ManipulationResult(
            status, e.n_pairs, e.n_tasks, direction, min_effect, e.baseline_mean, e.variant_mean, shift,
            test.get("se"), test.get("df"), test.get("lower_bound"), test.get("p"), alpha, family_size,
            reason=test.get("reason"),
        )  # fmt: skip

    if e.diff is None or e.se is None or e.df is None:
        return result("too_few", None if e.diff is None else direction * e.diff)
    shift = direction * e.diff
    small = e.n_tasks < min_tasks or e.n_pairs < min_pairs
    if not e.se > 0:  # every task shifted by exactly the same amount: an interval of width 0 is no evidence
        zero = (
            f"zero spread: every one of the {e.n_tasks} tasks shifted the score by the same amount, so the "
            "data give no uncertainty to test against; vary the tasks or score more conversations per task"
        )
        # below the minimum design, that is the reason, as for any small check
        return result("too_few", shift, se=e.se, df=e.df, reason=None if small else zero)
    bound = shift - _t_quantile(1.0 - level, e.df) * e.se
    p = float(special.stdtr(e.df, -(shift - min_effect) / e.se))
    status: Literal["passed", "failed", "too_few"] = "too_few" if small else ("passed" if p < level else "failed")
    return result(status, shift, se=e.se, df=e.df, lower_bound=bound, p=p)
