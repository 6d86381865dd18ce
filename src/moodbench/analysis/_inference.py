"""Task-clustered inference for matched (baseline, variant) conversations: one method behind every claim.

Each (domain, task, trial) is run under the baseline and under every emotional variant with the same seed,
so conversations form *pairs*; the trials of one task are correlated (an impossible task fails in every
trial, a task may react to an emotion in its own way), so the *task* is the independent unit. Everything
here therefore reduces the data to one number per task first and then does a one-sample t analysis over
the G tasks (df = G - 1):

* estimand: the **task-weighted** mean paired difference, mean over tasks of (mean over that task's pairs
  of variant - baseline). Tasks are what is sampled from the universe of possible tasks; weighting them
  equally keeps a task that lost a trial to an endpoint error from counting less, and it is the weighting
  tau2 uses for pass^k. In a balanced design (every task has the same number of pairs) it equals the
  pooled pair mean.
* standard error: the sample SD of the G task means / sqrt(G). This is exactly the cluster-robust (CR1)
  standard error of Miller (2024, "Adding Error Bars to Evals") for a WLS intercept with weights
  1/pairs-per-task, and the t(G-1) reference is what statsmodels uses for clustered inference
  (``df_resid_inference = G - 1``); ``tests/test_inference.py`` checks both equalities.
* interval, p-value and claim come from that one t statistic, so a claim can never disagree with its p.
* claims are gated by Holm-adjusted p-values over a stated family (every variant x scope of a report) and
  by a minimum design size (``MIN_TASKS``, ``MIN_PAIRS``) below which the t interval was found to
  under-cover in ``benchmarks/calibration.py``.

The constants below are the one home of the thresholds; ``docs/statistics.md`` gives the calibration numbers
behind them. Only numpy, scipy and statsmodels are used so the module can move with the package.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from scipy import special
from statsmodels.stats.multitest import multipletests

__all__ = [
    "ALPHA",
    "CLAIMS",
    "CONFIDENCE",
    "MIN_PAIRS",
    "MIN_TASKS",
    "AASplit",
    "Claim",
    "ManipulationResult",
    "PairedEffect",
    "PassK",
    "TaskT",
    "Trend",
    "aa_split",
    "adjust_pvalues",
    "claim",
    "claim_family",
    "dose_response",
    "eligible",
    "manipulation_test",
    "no_claim_reason",
    "paired_effect",
    "pass_hat_k_paired",
    "pass_k_task_set",
    "task_t",
]

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
            return ("every task's mean difference is exactly 0: with no spread between tasks the uncertainty cannot be "
                    "estimated, so no interval or p is given")
        return (f"every task changed by exactly {effect.diff:+.3g}: with no spread between tasks the uncertainty cannot be "
                "estimated, so no interval or p is given")
    if effect.p is None:
        return "not estimable (one task)"
    return None


# --------------------------------------------------------------------------- multiplicity and claims


def _holm(p: np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values: sorted ascending, the i-th (0-based) times (m - i), running max,
    capped at 1. Same numbers as statsmodels' ``multipletests(method="holm")`` (tested), which however runs
    a full ``gc.collect()`` on every call (tens of ms in a large process; the calibration calls it 10^5 times)."""
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * np.arange(m, 0, -1)))
    out = np.empty(m)
    out[order] = adjusted
    return out


def adjust_pvalues(pvalues: Sequence[float | None], method: str = "holm") -> list[float | None]:
    """Family-adjusted p-values in input order; ``None`` stays ``None`` and is not counted in the family.

    ``None`` marks a comparison that is not in the family (e.g. below the minimum design size): it can
    never be claimed, so counting it would only cost power. Holm (the default) controls the family-wise
    error rate under any dependence, which matters here because every variant shares the same baseline.
    Other ``method`` names are passed to statsmodels ``multipletests``.
    """
    present = [(i, float(p)) for i, p in enumerate(pvalues) if p is not None]
    out: list[float | None] = [None] * len(pvalues)
    if not present:
        return out
    p = np.array([q for _, q in present])
    if np.any((p < 0) | (p > 1)) or not np.all(np.isfinite(p)):
        raise ValueError(f"p-values must lie in [0, 1]: {p.tolist()}")
    adjusted = _holm(p) if method == "holm" else multipletests(p, method=method)[1]
    for (i, _), q in zip(present, adjusted):
        out[i] = float(q)
    return out


def eligible(effect: PairedEffect, *, min_tasks: int = MIN_TASKS, min_pairs: int = MIN_PAIRS) -> bool:
    """Whether the design behind an effect is large enough for a calibrated claim."""
    return effect.p is not None and effect.n_tasks >= min_tasks and effect.n_pairs >= min_pairs


def claim(
    effect: PairedEffect,
    p_adjusted: float | None,
    *,
    alpha: float = ALPHA,
    min_tasks: int = MIN_TASKS,
    min_pairs: int = MIN_PAIRS,
) -> ClaimValue:
    """``lower``/``higher`` when the family-adjusted p is below ``alpha``, else ``no_difference``;
    ``too_few`` below the minimum design (whatever the p), because the interval is not calibrated there."""
    if not eligible(effect, min_tasks=min_tasks, min_pairs=min_pairs) or p_adjusted is None:
        return "too_few"
    if p_adjusted < alpha and effect.diff is not None and effect.diff != 0:
        return "lower" if effect.diff < 0 else "higher"
    return "no_difference"


@dataclass(frozen=True)
class Claim:
    """The verdict on one effect of a family, with the numbers that decided it.

    ``ci_family_*`` is the simultaneous (Bonferroni, level 1 - alpha/family_size) interval: when it excludes
    0 the Holm claim is always ``lower``/``higher`` (Holm rejects at least what Bonferroni rejects).
    """

    claim: ClaimValue
    p: float | None
    p_adjusted: float | None
    family_size: int
    alpha: float
    ci_family_low: float | None
    ci_family_high: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def claim_family(
    effects: Sequence[PairedEffect],
    *,
    alpha: float = ALPHA,
    min_tasks: int = MIN_TASKS,
    min_pairs: int = MIN_PAIRS,
    method: str = "holm",
) -> list[Claim]:
    """Claims for one family of effects (every variant x scope of one report), in input order.

    Effects below the minimum design are ``too_few`` and left out of the family (their p is not adjusted).
    """
    ok = [eligible(e, min_tasks=min_tasks, min_pairs=min_pairs) for e in effects]
    adjusted = adjust_pvalues([e.p if good else None for e, good in zip(effects, ok)], method=method)
    m = sum(ok)
    out = []
    for e, good, q in zip(effects, ok, adjusted):
        lo = hi = None
        if good and e.se is not None and e.df is not None and e.diff is not None:
            half = _t_quantile(1.0 - alpha / (2.0 * m), e.df) * e.se
            lo, hi = e.diff - half, e.diff + half
        verdict = claim(e, q, alpha=alpha, min_tasks=min_tasks, min_pairs=min_pairs)
        out.append(Claim(verdict, e.p, q, m, alpha, lo, hi))
    return out


# --------------------------------------------------------------------------- pass^k, paired


@dataclass(frozen=True)
class PassK:
    """tau2's pass^k for baseline and variant on the same tasks, and their task-clustered difference.

    Descriptive: ``pass^1`` is the reward effect already claimed (for 0/1 rewards), and pass^k intervals
    for k >= 2 under-covered in small designs near the floor/ceiling (0.71 at 5 x 5), so no claim rests on them.
    ``dropped_tasks`` are the paired tasks left out because they have fewer than ``k_max`` pairs.
    """

    k: int
    n_tasks: int
    baseline: float
    variant: float
    diff: float
    se: float | None
    df: int | None
    ci_low: float | None
    ci_high: float | None
    p: float | None
    dropped_tasks: int = 0
    k_max: int = 0
    degenerate: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PASS_K_KEEP = 0.9  # the largest k shown is the largest with at least 90% of the paired tasks having >= k pairs


def _pass_k_task(successes: Sequence[bool], k: int) -> float:
    n, c = len(successes), int(sum(bool(s) for s in successes))
    return math.comb(c, k) / math.comb(n, k)


def pass_k_task_set(pairs_per_task: Mapping[Hashable, int], *, keep: float = PASS_K_KEEP) -> tuple[int, list[Hashable]]:
    """(k_max, tasks): one fixed task set, every task in it with >= k_max pairs, for every k = 1 .. k_max.

    ``k_max`` is the largest k whose set keeps at least ``keep`` of the paired tasks, so one lost conversation
    drops one task (counted), not pass^T of every task; the same set serves every k so pass^k cannot rise with
    k by losing hard tasks on the way. Empty when no task has a pair.
    """
    tasks = [t for t, n in pairs_per_task.items() if n > 0]
    if not tasks:
        return 0, []
    k_max = 1
    for k in range(max(pairs_per_task[t] for t in tasks), 0, -1):
        if sum(1 for t in tasks if pairs_per_task[t] >= k) >= keep * len(tasks):
            k_max = k
            break
    return k_max, [t for t in tasks if pairs_per_task[t] >= k_max]


def pass_hat_k_paired(
    base_by_task: Mapping[Hashable, Sequence[bool]],
    var_by_task: Mapping[Hashable, Sequence[bool]],
    *,
    confidence: float = CONFIDENCE,
    keep: float = PASS_K_KEEP,
) -> dict[int, PassK]:
    """pass^k for k = 1 .. k_max on one fixed task set (:func:`pass_k_task_set`), both sides on the same pairs.

    ``base_by_task[t][i]`` and ``var_by_task[t][i]`` are one pair. Per task C(c, k) / C(n, k) (unbiased for the
    task's p^k), averaged over tasks: tau2's rule. The difference is analysed like every other effect (one value
    per task, t(G-1)); zero spread gives no interval (:func:`task_t`).
    """
    counts = {t: min(len(base_by_task[t]), len(var_by_task[t])) for t in base_by_task if t in var_by_task}
    k_max, tasks = pass_k_task_set(counts, keep=keep)
    if not tasks:
        return {}
    dropped = sum(1 for n in counts.values() if n > 0) - len(tasks)
    out: dict[int, PassK] = {}
    for k in range(1, k_max + 1):
        b = np.array([_pass_k_task(base_by_task[t][: counts[t]], k) for t in tasks])
        v = np.array([_pass_k_task(var_by_task[t][: counts[t]], k) for t in tasks])
        t = task_t(v - b, confidence=confidence)
        out[k] = PassK(k, len(tasks), float(b.mean()), float(v.mean()), float(v.mean() - b.mean()), t.se, t.df, t.ci_low,
                       t.ci_high, t.p, dropped, k_max, t.degenerate)
    return out


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
    if e.diff is None or e.se is None or e.df is None:
        return ManipulationResult("too_few", e.n_pairs, e.n_tasks, direction, min_effect, e.baseline_mean, e.variant_mean,
                                  None if e.diff is None else direction * e.diff, None, None, None, None, alpha, family_size)
    shift = direction * e.diff
    bound = shift - _t_quantile(1.0 - level, e.df) * e.se
    if e.se > 0:
        p = float(special.stdtr(e.df, -(shift - min_effect) / e.se))
    else:
        p = 0.0 if shift > min_effect else 1.0
    if e.n_tasks < min_tasks or e.n_pairs < min_pairs:
        status: Literal["passed", "failed", "too_few"] = "too_few"
    else:
        status = "passed" if p < level else "failed"
    return ManipulationResult(status, e.n_pairs, e.n_tasks, direction, min_effect, e.baseline_mean, e.variant_mean, shift,
                              e.se, e.df, bound, p, alpha, family_size)
