"""Power planning for the task-clustered paired design: minimum detectable effects and power tables.

The analysis (``_inference``) reduces each task to its mean paired difference d_g and runs a t(G-1) test
over the G tasks at level alpha / family_size for the effect that matters (Holm's first step is Bonferroni,
so this is the power for one real effect among otherwise null comparisons). The variance of d_g is

    Var(d_g) = effect_sd**2 + within_var / trials,
    within_var = 2 * outcome_var * (1 - icc) * (1 - pair_corr),

with ``outcome_var`` the variance of one conversation's reward (p(1-p) for success), ``icc`` the share of
it that lies between tasks (task difficulty; it cancels in a paired difference, which is why pairing pays),
``pair_corr`` the within-task correlation of the baseline and variant conversation that share a seed, and
``effect_sd`` the spread of the true effect across tasks (tasks that react differently to an emotion; it
does not shrink with more trials, only with more tasks). Power then is the noncentral-t power of a
one-sample t test of G observations with standardized effect effect / sd(d_g) (statsmodels ``TTestPower``'s formula).

A drop need not be spread evenly: ``drop_share`` < 1 puts the whole drop on that share of the tasks (each of
them dropping by effect / drop_share, the others not at all), which adds effect**2 * (1 - s) / s to the
between-task variance at the alternative (for 0/1 rewards, with the proportional-to-success model below).
Planning with ``drop_share`` 1 when the drop sits in half the tasks promised 0.80 and delivered 0.65-0.77.

``benchmarks/calibration.py`` checks these numbers against simulation (power at the reported MDE).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from scipy import special
from scipy.optimize import brentq

from ._inference import ALPHA, MIN_PAIRS, MIN_TASKS

__all__ = ["POWER", "Design", "PowerRow", "design_from_pilot", "mde", "mde_note", "power_at", "power_table", "task_sd_at"]

POWER = 0.80  # target power of the minimum detectable effect


@dataclass(frozen=True)
class Design:
    """Design parameters of one run, enough to compute its minimum detectable effect.

    ``family_size`` is the number of comparisons the claims are corrected over (the report's family).
    ``diff_within_var``, when given (e.g. measured from a pilot's pair differences), replaces the
    ``within_var`` derived from ``baseline_success``/``outcome_var``, ``icc`` and ``pair_corr``.
    ``trials`` may be fractional: the harmonic mean of the pairs per task when tasks lost conversations.
    ``drop_share``: the share of tasks that carry the drop (1 = every task drops alike).
    """

    tasks: int
    trials: float
    family_size: int = 1
    alpha: float = ALPHA
    power: float = POWER
    baseline_success: float = 0.5
    icc: float = 0.5
    pair_corr: float = 0.0
    effect_sd: float = 0.0
    outcome_var: float | None = None
    diff_within_var: float | None = None
    drop_share: float = 1.0

    def __post_init__(self) -> None:
        if self.tasks < 0 or self.trials < 1 or self.family_size < 1:
            raise ValueError("tasks must be >= 0, trials and family_size >= 1")
        if not 0 < self.drop_share <= 1:
            raise ValueError("drop_share (the share of tasks carrying the drop) must lie in (0, 1]")
        if not (0 < self.alpha < 1 and 0 < self.power < 1):
            raise ValueError("alpha and power must lie in (0, 1)")
        if not (0 <= self.icc <= 1 and -1 <= self.pair_corr <= 1 and self.effect_sd >= 0):
            raise ValueError("icc must lie in [0, 1], pair_corr in [-1, 1], effect_sd >= 0")

    @property
    def within_var(self) -> float:
        """Variance of one pair difference within a task."""
        if self.diff_within_var is not None:
            return self.diff_within_var
        v = self.outcome_var if self.outcome_var is not None else self.baseline_success * (1 - self.baseline_success)
        return 2.0 * v * (1.0 - self.icc) * (1.0 - self.pair_corr)

    @property
    def task_sd(self) -> float:
        """Standard deviation of one task's mean paired difference."""
        return math.sqrt(self.effect_sd**2 + self.within_var / self.trials)

    @property
    def claimable(self) -> bool:
        """Whether the design reaches the minimum for claims (MIN_TASKS tasks and MIN_PAIRS pairs)."""
        return self.tasks >= MIN_TASKS and self.tasks * self.trials >= MIN_PAIRS - 1e-9

    @property
    def level(self) -> float:
        """Per-comparison two-sided level: Bonferroni, Holm's first step."""
        return self.alpha / self.family_size

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "within_var": self.within_var, "task_sd": self.task_sd, "mde": mde(self)}


def _binary_within(k: float, mean: float, second: float, c: float) -> float:
    """E over tasks of Var(v - b | task) when the losing outcome's rate p drops to k p (q = k p <= p) and the
    pair shares its seed with probability c: p(1-p) + q(1-q) - 2c (q - p q), averaged with E[p], E[p^2]."""
    return (1 + k - 2 * c * k) * mean - (1 + k * k - 2 * c * k) * second


def task_sd_at(design: Design, effect: float) -> float:
    """SD of one task's mean paired difference when the true mean effect is ``effect`` (variant - baseline).

    For rewards that are 0/1 (``outcome_var`` not given) a real effect also widens the spread: a drop is
    modelled as proportional to each task's success rate (a task that never succeeds cannot drop; a raise,
    symmetrically, in proportion to its failure rate), which adds effect**2 * Var(p_task) / mean**2 to the
    between-task variance, and it turns concordant pairs into discordant ones, which raises the within-task
    variance (exact under a Beta spread of task success rates and seed sharing with probability
    ``pair_corr``; ``effect_sd`` is held fixed). Ignoring this growth overstates power (0.8 planned, ~0.6
    simulated at 40x3 in the calibration benchmark). With ``drop_share`` s < 1 the drop sits on a share s
    of the tasks (each dropping by effect / s): between-task variance grows by
    effect**2 * ((1 + Var(p)/mean**2) / s - 1) and the within-task variance mixes dropped and untouched tasks.
    """
    between = design.effect_sd**2
    within = design.within_var
    share = design.drop_share
    if design.outcome_var is None and effect != 0:
        mean = design.baseline_success if effect < 0 else 1.0 - design.baseline_success
        var_p = design.icc * design.baseline_success * (1.0 - design.baseline_success)
        if mean > 0:
            k = max(0.0, 1.0 - abs(effect) / (share * mean))
            c = min(1.0, max(0.0, design.pair_corr))
            second = var_p + mean * mean
            grow = share * (_binary_within(k, mean, second, c) - _binary_within(1.0, mean, second, c))
            # can be negative: with little seed sharing a large drop makes the variant's outcomes less variable
            within = max(0.0, within + grow)
            between += effect * effect * ((1.0 + var_p / (mean * mean)) / share - 1.0)
    elif effect != 0 and share < 1:
        between += effect * effect * (1.0 - share) / share
    return math.sqrt(between + within / design.trials)


def power_at(design: Design, effect: float) -> float | None:
    """Probability that a true mean effect ``effect`` (variant - baseline, reward units) gives a claim.

    ``None`` below the minimum design (MIN_TASKS, MIN_PAIRS): such a design never makes a claim.
    """
    if not design.claimable:
        return None
    sd = task_sd_at(design, effect)
    if sd == 0:
        return 1.0 if effect != 0 else design.level
    return _t_power(abs(effect) / sd, design.tasks, design.level)


def _t_power(es: float, nobs: int, level: float) -> float:
    """Two-sided one-sample t power: statsmodels' ``ttest_power`` (what ``TTestPower.power`` computes), written with
    the same scipy.special functions it calls (``stdtrit`` for the critical t, ``nctdtr`` for the noncentral-t
    tails; ``tests/test_power.py`` checks the two agree), because importing statsmodels' power module pulls in
    scipy.stats and pandas, ~0.4 s of CPU on every ``report``. The noncentral-t tail returns NaN for some very
    large noncentralities, where the normal approximation is exact to many digits."""
    df, nc = nobs - 1, es * math.sqrt(nobs)
    crit = -float(special.stdtrit(df, level / 2))  # stats.t.isf(level / 2, df)
    if math.isnan(crit):
        p = math.nan
    else:
        p = float((1 - special.nctdtr(df, nc, crit)) + special.nctdtr(df, nc, -crit))
    if math.isfinite(p):
        return p
    z = -float(special.ndtri(level / 2))  # norm.ppf(1 - level / 2)
    return float(special.ndtr(-(z - nc)) + special.ndtr(-z - nc))  # norm.sf(z - nc) + norm.cdf(-z - nc)


def mde(design: Design, direction: int = -1) -> float | None:
    """Smallest absolute effect (a drop by default; ``direction=+1`` for a rise) detected with probability
    ``design.power``.

    ``None`` below the minimum design (MIN_TASKS, MIN_PAIRS), when not even the largest possible effect
    (every success lost) reaches the power, or when the design has no room or no variance to plan from (every
    task at the floor; no variance even under the alternative): an MDE of 0 would promise certainty, and
    :func:`mde_note` says why. Solved at the alternative (:func:`task_sd_at`), so the variance growth of a real
    effect is included.
    """
    if direction not in (1, -1):
        raise ValueError("direction must be +1 or -1")
    if not design.claimable:
        return None
    value = _solve_mde(design, direction)
    return None if value is None or value < _MDE_FLOOR else value


_MDE_FLOOR = 1e-6  # an MDE below this is the formula dividing by a variance of zero, not a detectable effect


def _solve_mde(design: Design, direction: int) -> float | None:
    room = design.baseline_success if direction < 0 else 1.0 - design.baseline_success
    top = room if design.outcome_var is None else 10.0 * max(design.task_sd, 1e-12) * math.sqrt(design.tasks)
    if top <= 0:
        return None
    if task_sd_at(design, direction * top) == 0 and design.task_sd == 0:
        return 0.0

    def gap(effect: float) -> float:
        p = power_at(design, direction * effect)
        return (p if p is not None else 0.0) - design.power

    if gap(top) < 0:
        return None
    return float(brentq(gap, 1e-12, top, xtol=1e-7))


def mde_note(design: Design, direction: int = -1) -> str | None:
    """Why a design large enough for claims has no MDE (``None`` when it has one, or is below the minimum)."""
    if not design.claimable or direction not in (1, -1):
        return None
    room = design.baseline_success if direction < 0 else 1.0 - design.baseline_success
    if room <= 0:
        return (
            "every baseline conversation failed (all tasks at the floor): no drop is possible, so no MDE"
            if direction < 0
            else "every baseline conversation succeeded: no rise is possible, so no MDE"
        )
    value = _solve_mde(design, direction)
    if value is None:
        return "not even losing every success reaches the power: no MDE"
    if value < _MDE_FLOOR:
        return (
            "the baseline has no variance within or between tasks: there is no spread to plan from, so no MDE; "
            "plan with `moodbench power` and assumed values"
        )
    return None


@dataclass(frozen=True)
class PowerRow:
    """One line of a power table: the MDE of a design and its power at some effects of interest."""

    tasks: int
    trials: float
    family_size: int
    mde: float | None
    powers: tuple[tuple[float, float | None], ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "tasks": self.tasks,
            "trials": self.trials,
            "family_size": self.family_size,
            "mde": self.mde,
            "powers": {str(e): p for e, p in self.powers},
        }


def power_table(
    design: Design,
    tasks: Sequence[int] = (10, 20, 40, 80, 160),
    trials: Sequence[int] = (1, 2, 3, 5),
    effects: Sequence[float] = (0.05, 0.10, 0.20),
) -> list[PowerRow]:
    """MDE and power over a grid of task and trial counts, other parameters taken from ``design``."""
    rows = []
    for g in tasks:
        for m in trials:
            d = replace(design, tasks=int(g), trials=int(m))
            rows.append(PowerRow(d.tasks, d.trials, d.family_size, mde(d), tuple((float(e), power_at(d, e)) for e in effects)))
    return rows


# --------------------------------------------------------------------------- from a pilot


def _components(by_task: Mapping[Any, Sequence[float]]) -> tuple[float, float, float, int, float]:
    """One-way ANOVA moments: (grand task-weighted mean, pooled within var, between var of true task means,
    tasks, mean trials). The between component subtracts the within noise of the task means."""
    groups = [np.asarray(list(v), dtype=float) for v in by_task.values() if len(v)]
    if not groups:
        raise ValueError("the pilot has no outcomes")
    means = np.array([g.mean() for g in groups])
    sizes = np.array([g.size for g in groups], dtype=float)
    dof = float((sizes - 1).sum())
    within = float(sum(((g - g.mean()) ** 2).sum() for g in groups) / dof) if dof > 0 else float("nan")
    if means.size > 1:
        noise = within * float(np.mean(1.0 / sizes)) if dof > 0 else 0.0
        between = max(0.0, float(means.var(ddof=1)) - noise)
    else:
        between = 0.0
    return float(means.mean()), within, between, int(means.size), float(sizes.mean())


def design_from_pilot(
    base_by_task: Mapping[Any, Sequence[float]],
    pair_diffs_by_task: Mapping[Any, Sequence[float]] | None = None,
    *,
    tasks: int | None = None,
    trials: int | None = None,
    family_size: int = 1,
    alpha: float = ALPHA,
    power: float = POWER,
) -> Design:
    """Design parameters estimated from a pilot (or from the run itself, for its own MDE).

    ``base_by_task``: each task's baseline rewards across trials; gives ``baseline_success``,
    ``outcome_var`` and ``icc`` (one-way ANOVA). Without pair differences the variant is assumed to be an
    independent re-run of the baseline with the same within-task variance (``pair_corr`` 0, ``effect_sd``
    0): the MDE of the design from the baseline's own variance. ``pair_diffs_by_task`` (variant - baseline
    per trial) measures the within-task variance of a difference and the spread of task effects directly.
    ``tasks``/``trials`` default to the pilot's own (tasks, rounded mean trials). 0/1 rewards keep
    ``outcome_var`` unset so that :func:`task_sd_at` models how a real drop widens a binary difference
    (``pair_corr`` is then estimated from the pair differences, 0 without them).
    """
    mean, within, between, g, m = _components(base_by_task)
    if math.isnan(within):
        within, between = between, 0.0  # one trial per task: cannot split, treat all variance as within (conservative)
    outcome_var = within + between
    icc = between / outcome_var if outcome_var > 0 else 0.0
    binary = all(float(x) in (0.0, 1.0) for values in base_by_task.values() for x in values)
    effect_sd, pair_corr, diff_within = 0.0, 0.0, 2.0 * within
    if pair_diffs_by_task is not None:
        _, d_within, d_between, _, _ = _components(pair_diffs_by_task)
        if math.isnan(d_within):  # one trial per task: the spread of task means is all we have
            d_within, d_between = d_between, 0.0
        effect_sd, diff_within = math.sqrt(d_between), d_within
        if within > 0:  # seed sharing: how much smaller a pair difference's variance is than two independent runs'
            pair_corr = min(1.0, max(0.0, 1.0 - d_within / (2.0 * within)))
    return Design(
        tasks=g if tasks is None else tasks,
        trials=max(1, round(m)) if trials is None else trials,
        family_size=family_size,
        alpha=alpha,
        power=power,
        baseline_success=mean,
        icc=min(1.0, max(0.0, icc)),
        pair_corr=pair_corr,
        effect_sd=effect_sd,
        outcome_var=None if binary else outcome_var,
        diff_within_var=diff_within,
    )
