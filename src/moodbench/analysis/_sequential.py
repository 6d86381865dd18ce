"""Group-sequential claims: looks at whole blocks of tasks, Lan-DeMets alpha spending, repeated p and intervals.

A sequential run (``moodbench run --sequential``) runs its tasks in K stages; after each stage (a *look*) every
planned comparison (one per variant: its pooled, task-clustered paired reward effect) is tested, and the run
stops when every comparison is decided. The method, in the order it is used:

* **Information fraction** t_k = tasks planned up to look k / tasks planned (fixed when the run is planned, so
  the boundaries do not depend on the data).
* **Boundaries**: Lan-DeMets alpha spending with the O'Brien-Fleming-type function
  alpha(t) = 2 - 2 Phi(z_{1-alpha/2} / sqrt(t)) (two-sided), solved exactly for the canonical joint normal of
  the look statistics (Brownian motion: corr(Z_i, Z_j) = sqrt(t_i / t_j)). The crossing probabilities are
  computed by the recursive numerical integration of Armitage, McPherson and Rowe (Jennison and Turnbull 2000,
  ch. 19), deterministic and accurate to ~1e-9; ``scipy.stats.multivariate_normal`` gives the same numbers
  (the unit tests compare them) but integrates by randomised quasi-Monte Carlo, 30-200 ms and a few 1e-6 of
  noise per call at four or five looks, too slow and not reproducible for a boundary search.
* **Statistic**: the report's own task-clustered paired t (``paired_effect``) mapped to the normal scale
  through its t(G-1) distribution: z = Phi^-1(F_t(T)) (the "significance level" approach of Jennison and
  Turnbull ch. 3.8), so a look with few tasks is not over-confident.
* **Repeated p-value** P_k = the smallest level a at which the level-a spending boundary was crossed at some
  look <= k. For every a, P(P_k <= a for some k <= K) <= a under the null, whatever rule stopped sampling, so
  the p at the look where a comparison stopped is a valid p-value; **Holm over the variants** applied to these
  p's keeps the family-wise error <= alpha (Holm needs only valid p-values, under any dependence). A variant
  therefore stops getting conversations once it is decided without touching the others' validity.
* **Repeated confidence interval** at look k and level 1 - a: estimate +- c_k(a) se_k; all K intervals cover
  the truth together with probability >= 1 - a, so the interval printed at the stopping look keeps coverage.
* **Futility** (non-binding, so it cannot raise the error rate): before the last look, an undecided comparison
  stops when its futility interval (estimate +- t quantile x se at level 1 - alpha / m, the family's level) lies
  above -delta, delta the smallest drop of interest: the data rule out every drop the user said matters
  (``futility="drop"``, the rule of plans made now). Plans stored before it (no ``futility`` key) used
  ``"both"``, the interval inside (-delta, +delta), and replay with it: requiring the data to rule out an
  equally large *improvement* as well kept a null comparison running, costing a quarter more conversations
  under the null at the same power (docs/statistics.md). An improvement is still claimed when it crosses the
  efficacy boundary before it is ruled futile.

The boundary math itself is in :mod:`moodbench.analysis._boundaries`. Operating characteristics (power, expected size, stop probabilities) come from the same recursion with a
drift; ``benchmarks/calibration.py`` measures them on simulated experiments through :func:`decide_look`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import special

from moodbench.analysis._boundaries import (
    _MAX_Z,
    _Recursion,
    bound_at,
    efficacy_bounds,
    norm,
    repeated_p,
    spend_obf,
)
from moodbench.analysis._effect import ALPHA, PairedEffect
from moodbench.analysis._inference import adjust_pvalues
from moodbench.analysis._power import Design, mde, power_at, task_sd_at

__all__ = [
    "DEFAULT_LOOKS",
    "FUTILITY_CONFIDENCE",
    "FUTILITY_BETA",
    "FUTILITY_RULES",
    "LookDecision",
    "SequentialPlan",
    "SequentialResult",
    "decide_look",
    "efficacy_bounds",
    "futility_level",
    "futility_text",
    "look_z",
    "operating_characteristics",
    "plan_sequential",
    "repeated_p",
    "replay",
    "sequential_design",
    "spend_obf",
    "stage_fractions",
    "stage_sizes",
]

DEFAULT_LOOKS = 4
FUTILITY_RULES = ("drop", "both")  # what a futility interval must rule out: drops >= delta; or drops and rises


# Confidence of the futility interval when none is given: ``futility_level(fractions, FUTILITY_BETA)``, the level
# at which a comparison whose true drop is exactly the smallest effect of interest is stopped for futility at some
# look with probability FUTILITY_BETA (so futility costs at most that much power there, in the normal model). The
# family's level 1 - alpha / m (the rule before) lost 0.03 power at the MDE with the one-sided rule; a fixed 90%
# interval lost 0.04-0.06 with the two-sided one (benchmarks/calibration.py, docs/statistics.md).
FUTILITY_CONFIDENCE: float | None = None
FUTILITY_BETA = 0.01


def look_z(effect: PairedEffect) -> float | None:
    """The look statistic on the normal scale: the task-clustered t mapped through its t(G-1) distribution."""
    if effect.diff is None or effect.se is None or effect.df is None or effect.p is None or effect.se == 0:
        return None
    t = effect.diff / effect.se
    return float(-special.ndtri(special.stdtr(effect.df, -t)))


def _t_scale(z: float, df: int) -> float:
    """The t(df) quantile with the same tail probability as the normal quantile z."""
    if not math.isfinite(z):
        return z
    return float(special.stdtrit(df, special.ndtr(z)))


# --------------------------------------------------------------------------- the plan


def stage_fractions(stages: Sequence[int]) -> tuple[float, ...]:
    """Information fraction at each look: tasks planned up to it / tasks planned."""
    cum = np.cumsum(stages)
    return tuple(float(x) for x in cum / cum[-1])


def stage_sizes(tasks: int, looks: int) -> tuple[int, ...]:
    """Tasks per stage: as equal as possible, earlier stages one larger when they do not divide."""
    if looks < 1 or tasks < looks:
        raise ValueError(f"{looks} looks need at least {looks} tasks (got {tasks})")
    q, r = divmod(tasks, looks)
    return tuple(q + (1 if i < r else 0) for i in range(looks))


@dataclass(frozen=True)
class SequentialPlan:
    """Everything a look needs, fixed before the first conversation: stages, fractions, boundaries, futility."""

    tasks: int
    stages: tuple[int, ...]  # tasks per stage (each stage runs every variant x trial of its tasks)
    alpha: float
    family_size: int
    smallest_effect: float | None  # delta: the smallest drop of interest (futility)
    futility_confidence: float = 0.95  # plan_sequential sets 1 - alpha / family_size
    futility: str = "drop"  # "drop": the interval lies above -delta; "both" (stored plans before it): inside (-delta, delta)
    spending: str = "Lan-DeMets O'Brien-Fleming"
    fractions: tuple[float, ...] = field(init=False)
    bounds: tuple[float, ...] = field(init=False)  # two-sided z boundaries at the family's first Holm step alpha/m
    bounds_marginal: tuple[float, ...] = field(init=False)  # at alpha: the repeated 95% intervals

    def __post_init__(self) -> None:
        if sum(self.stages) != self.tasks or any(s < 1 for s in self.stages):
            raise ValueError("stages must be positive and add up to the planned tasks")
        if self.smallest_effect is not None and not self.smallest_effect > 0:
            raise ValueError("the smallest effect of interest must be > 0")
        if not 0 < self.futility_confidence < 1:
            raise ValueError("the futility confidence must lie in (0, 1)")
        if self.futility not in FUTILITY_RULES:
            raise ValueError(f"futility must be one of {', '.join(FUTILITY_RULES)} (got {self.futility!r})")
        fr = stage_fractions(self.stages)
        object.__setattr__(self, "fractions", fr)
        object.__setattr__(self, "bounds", efficacy_bounds(fr, self.alpha / self.family_size))
        object.__setattr__(self, "bounds_marginal", efficacy_bounds(fr, self.alpha))

    @property
    def looks(self) -> int:
        return len(self.stages)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stages"], d["fractions"] = list(self.stages), list(self.fractions)
        d["bounds"], d["bounds_marginal"] = list(self.bounds), list(self.bounds_marginal)
        d["nominal_p"] = [float(2 * norm.sf(c)) for c in self.bounds]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SequentialPlan:
        return cls(
            tasks=int(d["tasks"]),
            stages=tuple(int(s) for s in d["stages"]),
            alpha=float(d["alpha"]),
            family_size=int(d["family_size"]),
            smallest_effect=None if d.get("smallest_effect") is None else float(d["smallest_effect"]),
            futility_confidence=float(d["futility_confidence"]),
            futility=str(d.get("futility", "both")),  # plans stored before the drop rule replay with theirs
        )

    def is_futile(self, low: float | None, high: float | None) -> bool:
        """Whether a futility interval (low, high) on the effect (variant - baseline) rules out the smallest effect."""
        if self.smallest_effect is None or low is None or high is None:
            return False
        if self.futility == "drop":
            return -self.smallest_effect < low
        return -self.smallest_effect < low and high < self.smallest_effect


def futility_level(fractions: Sequence[float], beta: float = FUTILITY_BETA) -> float:
    """The futility interval's (two-sided) confidence that spends ``beta`` of power at the smallest effect.

    Under a true drop of exactly delta, (estimate - delta) / se at the looks is a standardised Brownian motion
    whatever the design, so one constant one-sided bound z over the interim looks, with P(some interim look
    falls below -z) = beta, stops such a comparison for futility with probability ``beta`` in all: a Pocock-type
    beta spending, solved with the same recursion as the efficacy bounds. Returns 2 Phi(z) - 1, the interval whose
    lower end is that bound (four equal looks, beta 0.01: z = 2.64, 99.2%)."""
    t = tuple(float(x) for x in fractions)
    if not 0 < beta < 1:
        raise ValueError("beta must lie in (0, 1)")
    if len(t) < 2:
        return 1.0 - beta  # no interim look: the level is never used

    def spent(z: float) -> float:
        rec, total = _Recursion(), 0.0
        for tk in t[:-1]:
            total += rec.between(tk, -_MAX_Z, -z)
            rec.advance_between(tk, -z, _MAX_Z)
        return total

    from scipy.optimize import brentq  # as efficacy_bounds: only a sequential plan needs it

    z = brentq(lambda z: spent(z) - beta, 0.0, 10.0, xtol=1e-10)
    return float(1.0 - 2.0 * norm.sf(z))


def futility_text(rule: str, confidence: float, delta: float | None) -> str:
    """The futility rule in words, as the report, ``power --sequential`` and ``run --dry-run`` print it."""
    if delta is None:
        return "no futility stop (no smallest effect of interest)"
    if rule == "drop":
        return f"futility when the {confidence:.1%} interval rules out a drop of {delta:.3g} or more"
    return f"futility when the {confidence:.1%} interval lies inside +-{delta:.3g}"


def plan_sequential(
    tasks: int,
    looks: int = DEFAULT_LOOKS,
    *,
    family_size: int = 1,
    smallest_effect: float | None = None,
    alpha: float = ALPHA,
    futility_confidence: float | None = FUTILITY_CONFIDENCE,
) -> SequentialPlan:
    """A plan of ``looks`` equal stages of tasks (the last look is the fixed design's full size); the futility
    interval's confidence defaults to ``futility_level`` (power cost FUTILITY_BETA at the smallest effect)."""
    if family_size < 1:
        raise ValueError("family_size must be >= 1")
    stages = stage_sizes(tasks, looks)
    conf = futility_level(stage_fractions(stages)) if futility_confidence is None else futility_confidence
    return SequentialPlan(tasks, stages, alpha, family_size, smallest_effect, conf)


# --------------------------------------------------------------------------- one look


@dataclass(frozen=True)
class LookDecision:
    """One comparison after one look: its sequential p, repeated interval and status."""

    look: int  # 1-based
    z: float | None
    p_repeated: float | None  # min over looks so far (valid whenever the comparison stops)
    ci_low: float | None  # repeated (1 - alpha) interval at this look: all looks' intervals cover together
    ci_high: float | None
    status: str  # "claimed" | "futile" | "continue" | "final" (last look, not claimed) | "not_estimable"
    claim: str | None  # "lower" / "higher" when claimed
    futility_ci: tuple[float | None, float | None] = (None, None)
    ci_family: tuple[float | None, float | None] = (None, None)  # repeated interval at alpha / m (the family's)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["futility_ci"], d["ci_family"] = list(self.futility_ci), list(self.ci_family)
        return d

    @property
    def decided(self) -> bool:
        return self.status in ("claimed", "futile", "final")


def _interval(effect: PairedEffect, z_bound: float) -> tuple[float | None, float | None]:
    if effect.diff is None or effect.se is None or effect.df is None or effect.p is None:
        return None, None
    half = _t_scale(z_bound, effect.df) * effect.se
    return effect.diff - half, effect.diff + half


def decide_look(
    plan: SequentialPlan,
    look: int,
    effects: Sequence[PairedEffect | None],
    history: Sequence[Sequence[float | None]],
    previous: Sequence[LookDecision | None] | None = None,
    *,
    reasons: Sequence[str | None] | None = None,
) -> list[LookDecision]:
    """Decide every comparison at look ``look`` (1-based).

    ``effects[i]`` is comparison i's effect on all tasks so far (``None`` when it already stopped: its last
    decision in ``previous`` is carried); ``history[i]`` its z at looks 1..look-1. ``reasons[i]`` (the report's
    ``no_claim_reason``) keeps a comparison from being claimed (below the minimum design, zero spread) but not
    from continuing. Claims: Holm at ``plan.alpha`` over the repeated p-values of all comparisons (stopped ones
    keep their last p). Futility before the last look: ``plan.is_futile`` on the futility interval.
    """
    k = look - 1
    if not 0 <= k < plan.looks:
        raise ValueError(f"look {look} is outside the plan's {plan.looks} looks")
    prev = list(previous) if previous is not None else [None] * len(effects)
    why = list(reasons) if reasons is not None else [None] * len(effects)
    zs: list[float | None] = []
    ps: list[float | None] = []
    for i, e in enumerate(effects):
        if e is None:
            d = prev[i]
            zs.append(None if d is None else d.z)
            ps.append(None if d is None else d.p_repeated)
            continue
        z = look_z(e)
        zs.append(z)
        past = [float(x) for x in history[i] if x is not None]
        if z is None or why[i] is not None:
            # no claim from this look; earlier looks' p stays (it is a valid p at any stopping time)
            ps.append(repeated_p(past, plan.fractions, plan.alpha) if past and why[i] is None else None)
            continue
        hist = [x if x is not None else 0.0 for x in history[i]] + [z]
        ps.append(repeated_p(hist, plan.fractions, plan.alpha))
    adjusted = adjust_pvalues([1.0 if p is None else p for p in ps], "holm") if ps else []
    out: list[LookDecision] = []
    q = norm.isf((1.0 - plan.futility_confidence) / 2.0)
    for i, e in enumerate(effects):
        d_prev = prev[i]
        adj = adjusted[i] if ps[i] is not None else None
        claimed = adj is not None and adj <= plan.alpha
        status: str
        claim: str | None
        if e is None and d_prev is not None:  # stopped earlier: its last look stands, Holm may still claim it
            src = d_prev
            if claimed and src.z is not None:
                status, claim = "claimed", ("lower" if src.z < 0 else "higher")
            else:
                status, claim = src.status, src.claim
            out.append(
                LookDecision(src.look, src.z, ps[i], src.ci_low, src.ci_high, status, claim, src.futility_ci, src.ci_family)
            )
            continue
        if e is None:
            raise ValueError(f"comparison {i} has no effect and no earlier decision")
        lo, hi = _interval(e, bound_at(plan.fractions, k, plan.alpha, plan.alpha))
        fam = _interval(e, bound_at(plan.fractions, k, plan.alpha / plan.family_size, plan.alpha))
        f_lo, f_hi = _interval(e, q)
        if claimed and e.diff is not None:
            status, claim = "claimed", ("lower" if e.diff < 0 else "higher")
        elif k == plan.looks - 1:
            status, claim = "final", None
        elif zs[i] is None:
            status, claim = "continue" if e.diff is None or why[i] is not None else "not_estimable", None
        elif plan.is_futile(f_lo, f_hi):
            status, claim = "futile", None
        else:
            status, claim = "continue", None
        if status == "not_estimable":
            status = "continue"
        out.append(LookDecision(look, zs[i], ps[i], lo, hi, status, claim, (f_lo, f_hi), fam))
    return out


# --------------------------------------------------------------------------- operating characteristics


def operating_characteristics(plan: SequentialPlan, drift: float, futility_drift: float | None = None) -> dict[str, Any]:
    """One comparison in the normal model: power and expected information at a true drift.

    ``drift`` is the true effect over the fixed design's standard error (E[Z_K] at the full size);
    ``futility_drift`` is the smallest effect of interest on the same scale (``None``: no futility). The
    comparison is tested at the family's first Holm step (alpha / family_size), as for the fixed design's MDE.
    Returns ``power`` (either boundary; the wrong-sign share is negligible at the drifts that matter),
    ``stop`` (probability of stopping at each look), ``expected_fraction`` (E[t at stop]).
    """
    q = norm.isf((1.0 - plan.futility_confidence) / 2.0)
    rec = _Recursion(drift)
    stop: list[float] = []
    power = 0.0
    for k, (tk, c) in enumerate(zip(plan.fractions, plan.bounds)):
        cc = min(c, _MAX_Z)
        up, down = rec.cross(tk, cc)
        last = k == plan.looks - 1
        power += up + down
        if plan.futility == "drop":  # Z > 0 is a drop: futile below f (the interval lies above -delta)
            f = -cc if futility_drift is None or last else min(max(abs(futility_drift) * math.sqrt(tk) - q, -cc), cc)
            stop.append(1.0 - sum(stop) if last else up + down + rec.between(tk, -cc, f))
            rec.advance_between(tk, f, cc)
            continue
        f = 0.0 if futility_drift is None or last else max(0.0, abs(futility_drift) * math.sqrt(tk) - q)
        f = min(f, cc)
        stop.append(1.0 - sum(stop) if last else up + down + rec.inside(tk, f))
        rec.advance(tk, f, cc)
    return {
        "drift": drift,
        "power": power,
        "stop": stop,
        "expected_fraction": float(np.dot(stop, plan.fractions) / max(sum(stop), 1e-300)),
    }


# --------------------------------------------------------------------------- a whole sequence of looks


@dataclass(frozen=True)
class SequentialResult:
    """Every look's decisions, the look each comparison stopped at and whether the run may stop."""

    looks: tuple[tuple[LookDecision, ...], ...]  # looks[k][i]: comparison i after look k + 1

    @property
    def final(self) -> tuple[LookDecision, ...]:
        return self.looks[-1]

    @property
    def looks_run(self) -> int:
        return len(self.looks)

    @property
    def decided(self) -> bool:
        """Every comparison decided: the run stops here (or it reached its last look)."""
        return all(d.decided for d in self.final)

    def stopped_at(self) -> list[int]:
        """The look (1-based) at which each comparison stopped getting conversations (the last look run if not)."""
        return [d.look if d.decided else self.looks_run for d in self.final]


def replay(
    plan: SequentialPlan,
    n_comparisons: int,
    effect_at: Callable[[int, int], PairedEffect],
    looks_run: int | None = None,
    *,
    reason: Callable[[PairedEffect], str | None] | None = None,
) -> SequentialResult:
    """Decide looks 1.. in order: ``effect_at(i, k)`` is comparison i's effect on the tasks of stages 1..k.

    A comparison decided at a look gets no later effect (its arm stopped); the sequence ends at the first look
    where every comparison is decided, at ``looks_run`` (the stages that have run), or at the plan's last look.
    ``reason`` (the report's :func:`no_claim_reason`) keeps an effect below the minimum design from a claim.
    This one function is what the run's stage driver, the report and ``benchmarks/calibration.py`` call.
    """
    last = plan.looks if looks_run is None else min(plan.looks, looks_run)
    if last < 1 or n_comparisons < 1:
        raise ValueError("replay needs at least one look and one comparison")
    history: list[list[float | None]] = [[] for _ in range(n_comparisons)]
    prev: list[LookDecision] | None = None
    out: list[tuple[LookDecision, ...]] = []
    for look in range(1, last + 1):
        effects = [None if prev is not None and prev[i].decided else effect_at(i, look) for i in range(n_comparisons)]
        why = [None if e is None or reason is None else reason(e) for e in effects]
        decided = decide_look(plan, look, effects, history, prev, reasons=why)
        for i, e in enumerate(effects):
            if e is not None:
                history[i].append(decided[i].z)
        out.append(tuple(decided))
        prev = decided
        if all(d.decided for d in decided):
            break
    return SequentialResult(tuple(out))


# --------------------------------------------------------------------------- planning (moodbench power --sequential)


def _drift(design: Design, effect: float) -> float:
    """The fixed design's E[Z] at a true drop ``effect``: the drift whose normal power equals ``power_at``."""
    if effect == 0:
        return 0.0
    p = power_at(design, -abs(effect))
    if p is None:
        raise ValueError("the design is below the minimum for claims; a sequential plan needs a claimable design")
    p = min(max(p, 1e-12), 1 - 1e-12)
    return float(norm.isf(design.level / 2.0) + norm.ppf(p))


def _run_fraction(plan: SequentialPlan, variants: int, drift: float, futility_drift: float, reps: int, seed: int) -> float:
    """Expected conversations of the whole run / the fixed design's, in the normal model (seeded Monte Carlo).

    Each variant's score shares the control arm (correlation 0.5 between comparisons); a variant's arm stops at its
    decision (boundary at alpha/m, Holm's first step, or futility); the control arm runs while any variant does."""
    rng = np.random.default_rng(seed)
    t = np.asarray(plan.fractions)
    dt = np.diff(np.concatenate([[0.0], t]))
    ctrl = rng.normal(size=(reps, plan.looks)) * np.sqrt(dt / 2)
    arms = rng.normal(size=(reps, variants, plan.looks)) * np.sqrt(dt / 2)
    z = (np.cumsum(arms, axis=2) - np.cumsum(ctrl, axis=1)[:, None, :] + drift * t) / np.sqrt(t)
    q = norm.isf((1.0 - plan.futility_confidence) / 2.0)
    fut = abs(futility_drift) * np.sqrt(t) - q
    fut[-1] = np.inf  # the last look decides everything
    futile = z < fut if plan.futility == "drop" else np.abs(z) < fut  # z > 0: a drop
    stop = (np.abs(z) >= np.asarray(plan.bounds)) | futile
    first = np.where(stop.any(axis=2), stop.argmax(axis=2), plan.looks - 1)  # (reps, variants)
    used = t[first].sum(axis=1) + t[first.max(axis=1)]
    return float(used.mean() / (variants + 1))


def sequential_design(
    design: Design, looks: int = DEFAULT_LOOKS, *, smallest_effect: float | None = None, reps: int = 20_000, seed: int = 22
) -> dict[str, Any]:
    """What ``moodbench power --sequential`` prints: the plan (stages, boundaries per look), and against the fixed
    design of the same maximum size its power and the expected conversations at no effect, the MDE and 2 x MDE.

    The smallest effect of interest defaults to the fixed design's MDE. Power and per-comparison expected size come
    from the exact recursion (one comparison at alpha/m, its drift matched to the fixed design's power); the run's
    expected conversations from a seeded normal-model simulation of all comparisons sharing the control arm. The
    futility threshold is measured in the standard errors of the data at each true effect: with 0/1 rewards a drop
    widens the spread, so under no effect the same delta is more standard errors away than at the MDE."""
    target = mde(design)
    if target is None:
        raise ValueError(
            f"{design.tasks} tasks x {design.trials:g} trials cannot make a claim (or no drop reaches the power), "
            "so there is nothing to plan sequentially; use more tasks"
        )
    delta = target if smallest_effect is None else smallest_effect
    if not 0 < delta <= 1:
        raise ValueError("--smallest-effect is a drop in mean reward and must lie in (0, 1]")
    plan = plan_sequential(design.tasks, looks, family_size=design.family_size, smallest_effect=delta, alpha=design.alpha)
    d_delta, sd_delta = _drift(design, delta), task_sd_at(design, -delta)
    rows = []
    for name, effect in (("0", 0.0), ("MDE", target), ("2 x MDE", min(1.0, 2 * target))):
        drift = _drift(design, effect)
        # the futility threshold delta in standard errors of the data at this true effect (a drop widens the spread)
        sd = task_sd_at(design, -effect)
        d_fut = d_delta * sd_delta / sd if sd > 0 else math.inf
        oc = operating_characteristics(plan, drift, d_fut)
        fixed = design.level if effect == 0 else power_at(design, -effect)
        rows.append(
            {
                "effect": name,
                "drop": effect,
                "power_fixed": fixed,
                "power_sequential": oc["power"],
                "stop_by_look": oc["stop"],
                "expected_fraction_comparison": oc["expected_fraction"],
                "expected_fraction_run": _run_fraction(plan, design.family_size, drift, d_fut, reps, seed),
            }
        )
    per_look = []
    cum = np.cumsum(plan.stages)
    for k in range(plan.looks):
        per_look.append(
            {
                "look": k + 1,
                "tasks": int(cum[k]),
                "fraction": plan.fractions[k],
                "z_bound": plan.bounds[k],
                "nominal_p": float(2 * norm.sf(plan.bounds[k])),
                "alpha_spent": float(spend_obf(plan.fractions[k], design.level)),
            }
        )
    return {
        "plan": plan.to_dict(),
        "mde": target,
        "smallest_effect": delta,
        "max_conversations": int(design.tasks * design.trials * (design.family_size + 1)),
        "looks": per_look,
        "scenarios": rows,
    }
