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

The constants (in ``_effect.py``, re-exported here) are the one home of the thresholds; ``docs/statistics.md``
gives the calibration numbers behind them. Only numpy, scipy and statsmodels are used so the module can move with the package.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from moodbench.analysis._effect import (
    ALPHA,
    CLAIMS,
    CONFIDENCE,
    MIN_PAIRS,
    MIN_TASKS,
    ClaimValue,
    PairedEffect,
    TaskT,
    _t_quantile,
    no_claim_reason,
    paired_effect,
    task_t,
)
from moodbench.analysis._effect import (
    METHOD as METHOD,  # re-exported (package __init__)
)
from moodbench.analysis._effect import (
    ZERO_SPREAD as ZERO_SPREAD,
)
from moodbench.analysis._pass_k import PASS_K_KEEP as PASS_K_KEEP
from moodbench.analysis._pass_k import PassK, pass_hat_k_paired, pass_k_task_set
from moodbench.analysis._secondary import AASplit, ManipulationResult, Trend, aa_split, dose_response, manipulation_test

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
    if method == "holm":
        adjusted = _holm(p)
    else:  # imported here: statsmodels pulls in pandas and scipy.stats (~0.8 s of start-up) that Holm does not need
        from statsmodels.stats.multitest import multipletests

        adjusted = multipletests(p, method=method)[1]
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
