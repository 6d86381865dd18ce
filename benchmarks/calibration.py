"""Calibration of moodbench's statistics on synthetic experiments whose truth is known.

    .venv/bin/python benchmarks/calibration.py            # full run: ~2,000 replications per line, a few minutes
    .venv/bin/python benchmarks/calibration.py --fast     # reduced replications, <= 60 s (tests/test_calibration.py)
    .venv/bin/python benchmarks/calibration.py --json out.json --seed 7

Every simulated experiment goes through the functions the report itself calls, so what is measured here is
what ``moodbench report`` prints: ``claim_effects`` (``paired_effect`` per variant + ``claim_family`` over the
family; the report's ``reward_effects`` calls it), ``manipulation_family`` (the report's manipulation check),
``scope_design`` (``design_from_pilot`` + ``mde``: the report's MDE from the baseline), ``planned_design``
(what ``moodbench power`` and ``run --dry-run`` compute from design parameters), ``dose_response`` and
``aa_split`` (called by the report's dose-response and design sections).

The world (per replication): G tasks with success probabilities p_g ~ Beta (mean ``baseline_success``,
intraclass correlation ``icc`` between the trials of a task); each variant's probability on a task is
q_g = p_g (1 - drop / mean p) + r_g with a task-specific reaction r_g = h U_g min(p', 1 - p'), U_g ~ U(-1, 1):
tasks react in opposite directions, the mean over tasks is exactly -drop. Baseline and variant of one
(task, trial) share the seed: with probability ``coupling`` the variant reuses the baseline's uniform draw.
The truth every interval should cover is the super-population mean effect, -drop.

Printed: per configuration (variants x design), the family-wise false-claim rate under the null, the
coverage of the 95% intervals, the share of ``too_few`` claims, power at the MDE that ``_power`` reports
(one variant with a true drop equal to the MDE among null variants) and the manipulation check's
family-wise false-pass rate, each with its Monte Carlo standard error; then (full run) the coverage-by-
design-size grid that sets MIN_TASKS, the old rules for contrast, dose-response and A/A checks.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as sps

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from moodbench.analysis._claims import Comparison, claim_effects, mde_with_exclusions, missing_bounds, pass_k_rows, scope_design
from moodbench.analysis._dose import trend_reason
from moodbench.analysis._effect import no_claim_reason
from moodbench.analysis._family import ReportFamily
from moodbench.analysis._inference import ALPHA, MIN_PAIRS, MIN_TASKS, aa_split, dose_response, paired_effect
from moodbench.analysis._manipulation import manipulation_family
from moodbench.analysis._planning import planned_design
from moodbench.analysis._power import Design, design_from_pilot, mde, power_at
from moodbench.analysis._sequential import DEFAULT_LOOKS, plan_sequential, replay

# --------------------------------------------------------------------------- the simulated world


@dataclass(frozen=True)
class Scenario:
    """A population of tasks and how a variant changes them."""

    name: str
    baseline_success: float = 0.65
    icc: float = 0.5  # share of the baseline's outcome variance between tasks
    coupling: float = 0.5  # chance that a variant conversation reuses its baseline pair's random draw
    reaction: float = 0.6  # h: size of the zero-mean task-specific reactions (fraction of the room to 0 or 1)
    reaction_kind: str = "uniform"  # U ~ U(-1, 1), or "sign": U = +-1 (every task reacts fully, one way or the other)

    def tasks(self, rng: np.random.Generator, g: int) -> np.ndarray:
        s = 1.0 / self.icc - 1.0
        return rng.beta(self.baseline_success * s, (1.0 - self.baseline_success) * s, size=g)

    def variant(self, rng: np.random.Generator, p: np.ndarray, drop: np.ndarray, share: float = 1.0) -> np.ndarray:
        """Success probabilities of V variants (rows) on the tasks; ``drop`` (V,) is each variant's true mean drop.

        ``share`` < 1 puts each variant's whole drop on a random share of the tasks (each dropping drop / share)."""
        if share < 1.0:
            hit = rng.random((drop.size, p.size)) < share
            shifted = p[None, :] * (1.0 - hit * drop[:, None] / (share * self.baseline_success))
        else:
            shifted = p[None, :] * (1.0 - drop[:, None] / self.baseline_success)
        if self.reaction_kind == "sign":
            u = rng.choice(np.array([-1.0, 1.0]), size=shifted.shape)
        else:
            u = rng.uniform(-1.0, 1.0, size=shifted.shape)
        return shifted + self.reaction * u * np.minimum(shifted, 1.0 - shifted)

    def outcomes(self, rng: np.random.Generator, p: np.ndarray, q: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        """0/1 rewards: baseline (G, m) and variants (V, G, m), pairs coupled through the shared seed."""
        ub = rng.random((p.size, m))
        base = (ub < p[:, None]).astype(float)
        fresh = rng.random((q.shape[0], p.size, m))
        reuse = rng.random((q.shape[0], p.size, m)) < self.coupling
        uv = np.where(reuse, ub[None], fresh)
        return base, (uv < q[:, :, None]).astype(float)

    def design(self, g: int, m: int, family: int, *, n: int = 400_000, seed: int = 12345) -> Design:
        """The true design parameters (for _power) of a null variant, by Monte Carlo over many tasks."""
        rng = np.random.default_rng(seed)
        p = self.tasks(rng, n)
        q = self.variant(rng, p, np.zeros(1))[0]
        within = p * (1 - p) + q * (1 - q) - 2 * self.coupling * (np.minimum(p, q) - p * q)
        return Design(
            tasks=g,
            trials=m,
            family_size=family,
            baseline_success=self.baseline_success,
            icc=self.icc,
            pair_corr=self.coupling,
            effect_sd=float(np.std(q - p)),
            diff_within_var=float(within.mean()),
        )


MAIN = Scenario("main")
OPPOSITE = Scenario("opposite reactions", baseline_success=0.5, icc=0.3, coupling=0.9, reaction=1.0, reaction_kind="sign")
GRID_DROPS = (0.0, 0.1, 0.2)
GRID_SCENARIOS = (
    MAIN,
    Scenario("easy, skewed", baseline_success=0.9, icc=0.6, coupling=0.3, reaction=0.8),
    Scenario("hard", baseline_success=0.3, icc=0.3, coupling=0.3, reaction=0.8),
    Scenario("homogeneous", baseline_success=0.5, icc=0.2, coupling=0.0, reaction=0.0),
)


@dataclass(frozen=True)
class Config:
    """How much to simulate; ``fast`` is what the test runs."""

    reps: int = 2000  # replications per main-table line (null and power experiments each)
    manip_reps: int = 2000
    grid_reps: int = 2000  # replications per coverage-grid cell (0: no grid)
    grid_tasks: tuple[int, ...] = (5, 10, 15, 20, 30, 40, 60)
    grid_trials: tuple[int, ...] = (1, 2, 3, 5)
    contrast_reps: int = 1000  # old rules, dose-response, A/A (0: skip)
    power_reps: int = 2000  # power at the MDE in every grid scenario (0: skip)
    power_designs: tuple[tuple[int, int], ...] = ((20, 3), (40, 3), (40, 1))
    bootstrap_resamples: int = 1000
    variants: tuple[int, ...] = (1, 8, 40)
    designs: tuple[tuple[int, int], ...] = ((5, 3), (40, 3))
    real_reps: int = 2000  # replications per line of the real-conditions table (issue 18); 0: skip
    real_designs: tuple[tuple[int, int], ...] = ((40, 3), (100, 1), (20, 1))
    seq_reps: int = 2000  # replications per line of the sequential-vs-fixed table (issue 22); 0: skip
    seq_designs: tuple[tuple[int, int, int], ...] = ((80, 2, 3), (80, 2, 1))  # tasks, trials, variants


FULL = Config()
ILLUSTRATIVE_DROP = 0.10  # the drop simulated for designs that have no MDE (below MIN_TASKS)
FAST = Config(
    reps=600, manip_reps=600, grid_reps=0, contrast_reps=0, power_reps=0, real_reps=200, real_designs=((40, 3),), seq_reps=600
)


# --------------------------------------------------------------------------- sequential vs fixed (issue 22)

SEQ_EFFECTS = ("null", "mde", "2mde")  # every variant at 0; the first at the MDE, the rest null; every one at 2 x MDE


def sequential_experiment(
    rng: np.random.Generator, scen: Scenario, g: int, m: int, v: int, drops: np.ndarray, reps: int, looks: int, delta: float
) -> dict[str, Any]:
    """``reps`` experiments analysed twice on the same data: the fixed design (``claim_effects`` on every task) and
    the group-sequential design of ``moodbench run --sequential`` (``replay``: stages of g / looks tasks, each
    variant's arm stopping once decided, the control arm running while any variant does).

    Conversations: the fixed design runs (v + 1) x g x m; the sequential one m x (tasks of the control's last
    look + the sum over variants of the tasks up to the look each stopped at)."""
    cl = _clusters(g, m)
    plan = plan_sequential(g, looks, family_size=v, smallest_effect=delta)
    cum = np.cumsum(plan.stages)
    false_seq, false_fixed, hit_seq, hit_fixed, conv, cover, stop_look = [], [], [], [], [], [], []
    for _ in range(reps):
        p = scen.tasks(rng, g)
        base, var = scen.outcomes(rng, p, scen.variant(rng, p, drops), m)
        fixed = [c.verdict.claim for c in claim_effects([Comparison(base.ravel(), var[j].ravel(), cl) for j in range(v)])]

        def effect_at(i: int, k: int, base: np.ndarray = base, var: np.ndarray = var) -> Any:
            n = int(cum[k - 1])
            return paired_effect(base[:n].ravel(), var[i, :n].ravel(), cl[: n * m])

        res = replay(plan, v, effect_at, reason=no_claim_reason)
        final = res.final
        seq = [d.claim if d.status == "claimed" else "no_difference" for d in final]
        wrong = [(c == "higher") if d > 0 else (c in ("lower", "higher")) for c, d in zip(seq, drops)]
        wrong_fixed = [(c == "higher") if d > 0 else (c in ("lower", "higher")) for c, d in zip(fixed, drops)]
        false_seq.append(any(wrong))
        false_fixed.append(any(wrong_fixed))
        hit_seq.append(seq[0] == "lower")
        hit_fixed.append(fixed[0] == "lower")
        stops = res.stopped_at()
        conv.append(m * (int(cum[res.looks_run - 1]) + sum(int(cum[s - 1]) for s in stops)) / ((v + 1) * g * m))
        first = final[0]
        cover.append(None if first.ci_low is None or first.ci_high is None else float(first.ci_low <= -drops[0] <= first.ci_high))
        stop_look.append(res.looks_run)
    return {
        "false_claim_seq": rate(false_seq),
        "false_claim_fixed": rate(false_fixed),
        "power_seq": rate(hit_seq),
        "power_fixed": rate(hit_fixed),
        "power_diff": rate([float(a) - float(b) for a, b in zip(hit_seq, hit_fixed)]),
        "conversations": rate(conv),  # expected conversations / the fixed design's
        "coverage_repeated_ci": rate(cover),
        "mean_looks": rate(stop_look),
        "bounds": list(plan.bounds),
    }


def sequential_table(cfg: Config, seed: int) -> list[dict[str, Any]]:
    """Sequential vs fixed with the same maximum size, main world, smallest effect of interest = the MDE."""
    rows = []
    for g, m, v in cfg.seq_designs:
        target = mde(MAIN.design(g, m, v))
        assert target is not None
        for name in SEQ_EFFECTS:
            rng = np.random.default_rng([seed, 22, g, m, v, SEQ_EFFECTS.index(name)])
            drops = np.zeros(v) if name == "null" else np.full(v, 2 * target) if name == "2mde" else np.eye(1, v)[0] * target
            r = sequential_experiment(rng, MAIN, g, m, v, drops, cfg.seq_reps, DEFAULT_LOOKS, target)
            rows.append({"tasks": g, "trials": m, "variants": v, "looks": DEFAULT_LOOKS, "mde": target, "effect": name, **r})
    return rows


# --------------------------------------------------------------------------- small helpers


def rate(hits: Sequence[float | None]) -> tuple[float, float]:
    """Mean of per-replication values and its Monte Carlo standard error (replications are independent).

    ``None`` entries (a coverage where the report prints no interval: zero spread) are left out, so coverage is
    that of the intervals the report actually shows."""
    x = np.asarray([h for h in hits if h is not None], dtype=float)
    if x.size == 0:
        return float("nan"), float("nan")
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else float("nan")


def _clusters(g: int, m: int) -> np.ndarray:
    return np.repeat(np.arange(g), m)


def _covers(e: Any, truth: float) -> float | None:
    """1/0 whether the printed interval covers ``truth``; ``None`` when the report prints none (zero spread)."""
    if e.ci_low is None or e.ci_high is None:
        return None
    return float(e.ci_low <= truth <= e.ci_high)


def _mean_shown(values: Sequence[float | None]) -> float | None:
    shown = [v for v in values if v is not None]
    return float(np.mean(shown)) if shown else None


# --------------------------------------------------------------------------- main table


def reward_experiment(
    rng: np.random.Generator, scen: Scenario, g: int, m: int, v: int, drops: np.ndarray, reps: int
) -> dict[str, Any]:
    """``reps`` experiments of V variants (true mean drops ``drops``) analysed as one claim family each."""
    cl = _clusters(g, m)
    false_any, cover, cover_first, too_few, detected = [], [], [], [], []
    for _ in range(reps):
        p = scen.tasks(rng, g)
        base, var = scen.outcomes(rng, p, scen.variant(rng, p, drops), m)
        b = base.ravel()
        claimed = claim_effects([Comparison(b, var[j].ravel(), cl) for j in range(v)])
        effects = [c.effect for c in claimed]
        claims = [c.verdict for c in claimed]
        false = [(c.claim == "higher") if d > 0 else (c.claim in ("lower", "higher")) for c, d in zip(claims, drops)]
        false_any.append(any(false))
        cover.append(_mean_shown([_covers(e, -d) for e, d in zip(effects, drops)]))
        cover_first.append(_covers(effects[0], -drops[0]))
        too_few.append(np.mean([c.claim == "too_few" for c in claims]))
        detected.append(claims[0].claim == "lower")
    return {
        "false_claim": rate(false_any),
        "coverage": rate(cover),
        "coverage_first": rate(cover_first),
        "too_few": rate(too_few),
        "detected": rate(detected),
    }


def manip_experiment(
    rng: np.random.Generator, g: int, m: int, v: int, shift: float, min_effect: float, reps: int
) -> tuple[float, float]:
    """Family-wise pass rate of the manipulation check when every variant's true shift is ``shift``.

    Scores are skewed and non-negative like marker rates (lognormal with task and seed components, the
    variant's own conversation draw correlated 0.5 with its baseline pair), plus a zero-mean task-specific
    reaction, so the check faces the same clustering as the reward analysis.
    """
    cl = _clusters(g, m)
    passes = []
    for _ in range(reps):
        task = rng.normal(0.0, 0.5, size=(g, 1))
        z = rng.normal(size=(g, m))
        base = np.exp(task + 0.7 * z - 0.5)
        comparisons = []
        for _ in range(v):
            z2 = 0.5 * z + math.sqrt(0.75) * rng.normal(size=(g, m))
            react = rng.normal(0.0, 0.15, size=(g, 1))
            var = np.exp(task + 0.7 * z2 - 0.5) + shift + react
            comparisons.append(Comparison(base.ravel(), var.ravel(), cl))
        results = manipulation_family(comparisons, direction=1, min_effect=min_effect)
        passes.append(any(r.status == "passed" for r in results))
    return rate(passes)


def main_table(cfg: Config, seed: int) -> list[dict[str, Any]]:
    rows = []
    for g, m in cfg.designs:
        for v in cfg.variants:
            rng = np.random.default_rng([seed, g, m, v])
            design = MAIN.design(g, m, v)
            target = mde(design)
            null = reward_experiment(rng, MAIN, g, m, v, np.zeros(v), cfg.reps)
            row: dict[str, Any] = {
                "tasks": g,
                "trials": m,
                "variants": v,
                "mde": target,
                "false_claim": null["false_claim"],
                "coverage_null": null["coverage"],
                "too_few": null["too_few"],
            }
            drops = np.zeros(v)
            drops[0] = ILLUSTRATIVE_DROP if target is None else target
            alt = reward_experiment(rng, MAIN, g, m, v, drops, cfg.reps)
            row.update(
                drop=float(drops[0]),
                power=alt["detected"],
                coverage_alt=alt["coverage_first"],
                false_claim_alt=alt["false_claim"],
                too_few_alt=alt["too_few"],
                power_formula=None if target is None else power_at(design, -target),
            )
            row["manip_false_pass_null"] = manip_experiment(rng, g, m, v, 0.0, 0.25, cfg.manip_reps)
            row["manip_false_pass_boundary"] = manip_experiment(rng, g, m, v, 0.25, 0.25, cfg.manip_reps)
            rows.append(row)
    return rows


def power_scenarios(cfg: Config, seed: int) -> list[dict[str, Any]]:
    """Power at the reported MDE in every grid scenario (8 variants, one of them dropping by the MDE), and the
    MDE a pilot would estimate: ``design_from_pilot`` on each replication's own baseline and one null variant."""
    rows = []
    v = 8
    for si, scen in enumerate(GRID_SCENARIOS):
        for g, m in cfg.power_designs:
            rng = np.random.default_rng([seed, 33, si, g, m])
            design = scen.design(g, m, v)
            target = mde(design)
            if target is None:  # not even losing every success reaches the power: nothing to simulate
                rows.append(
                    {
                        "scenario": scen.name,
                        "tasks": g,
                        "trials": m,
                        "variants": v,
                        "mde": None,
                        "power": None,
                        "pilot_mde_median": None,
                        "pilot_mde_iqr": None,
                    }
                )
                continue
            drops = np.zeros(v)
            drops[0] = target
            cl = _clusters(g, m)
            hit, pilot = [], []
            for _ in range(cfg.power_reps):
                p = scen.tasks(rng, g)
                base, var = scen.outcomes(rng, p, scen.variant(rng, p, drops), m)
                claimed = claim_effects([Comparison(base.ravel(), var[j].ravel(), cl) for j in range(v)])
                hit.append(claimed[0].verdict.claim == "lower")
                est = design_from_pilot({i: base[i] for i in range(g)}, {i: var[1, i] - base[i] for i in range(g)}, family_size=v)
                pilot.append(mde(est))
            pilot_ok = [x for x in pilot if x is not None]
            rows.append(
                {
                    "scenario": scen.name,
                    "tasks": g,
                    "trials": m,
                    "variants": v,
                    "mde": target,
                    "power": rate(hit),
                    "pilot_mde_median": float(np.median(pilot_ok)) if pilot_ok else None,
                    "pilot_mde_iqr": [float(np.quantile(pilot_ok, 0.25)), float(np.quantile(pilot_ok, 0.75))]
                    if pilot_ok
                    else None,
                }
            )
    return rows


def planning_checks(cfg: Config, seed: int) -> list[dict[str, Any]]:
    """Power at the MDE two user-facing paths print, 40 tasks x 3 trials, 8 variants, main world.

    * ``moodbench power`` / ``run --dry-run``: ``planned_design`` with the world's parameters given as flags
      (``--baseline-success 0.65 --icc 0.5 --pair-corr 0.5 --effect-sd <the world's>``): the planning formula
      without the simulation's exact within-task variance;
    * the report's MDE: ``scope_design`` on each replication's own baseline (no variant information, so it
      assumes independent re-runs: no seed sharing, no task reactions), median over replications.
    """
    g, m, v = 40, 3, 8
    rng = np.random.default_rng([seed, 44])
    truth = MAIN.design(g, m, v)
    planned = planned_design(
        g,
        m,
        v,
        1,
        baseline_success=MAIN.baseline_success,
        icc=MAIN.icc,
        pair_corr=MAIN.coupling,
        effect_sd=round(truth.effect_sd, 3),
    )
    target = mde(planned)
    report_mdes = []
    for _ in range(min(cfg.reps, 400)):
        p = MAIN.tasks(rng, g)
        base = (rng.random((g, m)) < p[:, None]).astype(float)
        report_mdes.append(scope_design({i: list(base[i]) for i in range(g)}, v)[1])
    finite = [x for x in report_mdes if x is not None]
    report_mde = float(np.median(finite)) if finite else None
    rows = []
    for source, drop, formula in (
        ("moodbench power (the world's parameters as flags)", target, planned),
        ("report MDE (baseline alone, median)", report_mde, None),
    ):
        if drop is None:
            rows.append(
                {"source": source, "tasks": g, "trials": m, "variants": v, "mde": None, "power": None, "power_formula": None}
            )
            continue
        drops = np.zeros(v)
        drops[0] = drop
        res = reward_experiment(rng, MAIN, g, m, v, drops, cfg.reps)
        rows.append(
            {
                "source": source,
                "tasks": g,
                "trials": m,
                "variants": v,
                "mde": drop,
                "power": res["detected"],
                "power_formula": None if formula is None else power_at(formula, -drop),
                "mde_iqr": None if formula is not None else [float(np.quantile(finite, 0.25)), float(np.quantile(finite, 0.75))],
            }
        )
    return rows


# --------------------------------------------------------------------------- real conditions (issue 18)
#
# Every replication below is decided the way the report decides it: each comparison's paired_effect (on the pairs
# present), missing_bounds for excluded outcomes, dose_response among the emotional levels with trend_reason, all
# handed to one ReportFamily and resolved together.

FLOOR = Scenario("floor/ceiling", baseline_success=0.5, icc=0.85, coupling=0.5, reaction=0.6)  # most tasks near 0 or 1
HALF = 0.5


def _decide(entries: Sequence[tuple[str, Any, Any]]) -> list[dict[str, Any]]:
    """Hand every test of one simulated report to one ReportFamily; the rows come back with their claims."""
    fam = ReportFamily()
    rows: list[dict[str, Any]] = []
    for kind, obj, bounds in entries:
        row: dict[str, Any] = {}
        if kind == "trend":
            fam.add("dose/reward", row, p=obj.p, estimate=obj.slope, se=obj.se, df=obj.df, reason=trend_reason(obj))
        else:
            fam.add_effect(f"reward/{kind}", row, obj, bounds=bounds)
        rows.append(row)
    fam.resolve()
    return rows


def _exclude(rng: np.random.Generator, values: np.ndarray, mode: str, share: float, fail_rate: float) -> np.ndarray:
    """NaN out excluded outcomes: ``outcome`` excludes failures only (about ``share`` of all), ``random`` any (MCAR)."""
    out = values.astype(float).copy()
    if mode == "outcome":
        hit = (values == 0) & (rng.random(values.shape) < min(1.0, share / max(fail_rate, 1e-9)))
    elif mode == "random":
        hit = rng.random(values.shape) < share
    else:
        return out
    out[hit] = np.nan
    return out


def _bounded(b: np.ndarray, v: np.ndarray, cl: np.ndarray) -> tuple[Any, Any]:
    keep = ~(np.isnan(b) | np.isnan(v))
    e = paired_effect(b[keep], v[keep], cl[keep])
    mb = missing_bounds(b, v, cl)
    return e, mb


def _interval_covers(lo: float | None, hi: float | None, truth: float) -> float | None:
    if lo is None or hi is None:
        return None
    return float(lo <= truth <= hi)


def exclusion_experiment(
    rng: np.random.Generator, scen: Scenario, g: int, m: int, v: int, drops: np.ndarray, reps: int, mode: str, share: float
) -> dict[str, Any]:
    """V variants whose conversations are excluded (``outcome``: failures only; ``random``: MCAR), none of the
    baseline's; one family per replication. Coverage of the complete-case interval and of the bounds interval
    (the lowest and highest end of the two imputed analyses' intervals), false claims, power of the first variant."""
    cl = _clusters(g, m)
    false_any, cover_cc, cover_b, detected, excluded = [], [], [], [], []
    for _ in range(reps):
        p = scen.tasks(rng, g)
        base, var = scen.outcomes(rng, p, scen.variant(rng, p, drops), m)
        b = base.ravel()
        entries, cc, bb = [], [], []
        for j in range(v):
            vv = _exclude(rng, var[j].ravel(), mode, share, 1.0 - (scen.baseline_success - drops[j]))
            excluded.append(float(np.isnan(vv).mean()))
            e, mb = _bounded(b, vv, cl)
            entries.append(("all", e, None if mb is None else (mb.worst, mb.best)))
            cc.append(_covers(e, -drops[j]))
            if mb is None:
                bb.append(_covers(e, -drops[j]))
            else:
                lows = [x for x in (mb.worst.ci_low, mb.best.ci_low) if x is not None]
                highs = [x for x in (mb.worst.ci_high, mb.best.ci_high) if x is not None]
                bb.append(_interval_covers(min(lows, default=None), max(highs, default=None), -drops[j]))  # type: ignore[type-var]
        rows = _decide(entries)
        false_any.append(
            any((r["claim"] == "higher") if d > 0 else (r["claim"] in ("lower", "higher")) for r, d in zip(rows, drops))
        )
        cover_cc.append(_mean_shown(cc))
        cover_b.append(_mean_shown(bb))
        detected.append(rows[0]["claim"] == "lower")
    return {
        "false_claim": rate(false_any),
        "coverage_complete_case": rate(cover_cc),
        "coverage_bounds": rate(cover_b),
        "detected": rate(detected),
        "excluded_share": float(np.mean(excluded)),
    }


def report_mde_with_exclusions(
    rng: np.random.Generator, scen: Scenario, g: int, m: int, v: int, mode: str, rate_: float, n: int
) -> float | None:
    """The MDE the report prints for a variant with these exclusions (median over ``n`` null replications): the
    baseline rows of the pairs present (harmonic-mean trials), plus the exclusion shares (``mde_with_exclusions``)."""
    cl = _clusters(g, m)
    values = []
    for _ in range(n):
        p = scen.tasks(rng, g)
        base, var = scen.outcomes(rng, p, scen.variant(rng, p, np.zeros(1)), m)
        vv = _exclude(rng, var[0].ravel(), mode, rate_, 1.0 - scen.baseline_success)
        keep = ~np.isnan(vv)
        by_task: dict[int, list[float]] = {}
        for t, x in zip(cl[keep], base.ravel()[keep]):
            by_task.setdefault(int(t), []).append(float(x))
        value = scope_design(by_task, v)[1]
        if value is None:
            continue
        values.append(mde_with_exclusions(value, 1.0 - float(keep.mean()), 0.0))
    return float(np.median(values)) if values else None


def exclusion_table(cfg: Config, seed: int) -> list[dict[str, Any]]:
    """Outcome-dependent and random exclusions (8% of each variant, none of the baseline), 40x3, 1 and 8 variants:
    the null (false claims, coverage) and power at the MDE the report prints for such a variant."""
    rows = []
    g, m = 40, 3
    for mode in ("outcome", "random"):
        for v in (1, 8):
            rng = np.random.default_rng([seed, 181, v, mode == "outcome"])
            null = exclusion_experiment(rng, MAIN, g, m, v, np.zeros(v), cfg.real_reps, mode, 0.08)
            target = report_mde_with_exclusions(rng, MAIN, g, m, v, mode, 0.08, min(cfg.real_reps // 2, 200))
            drops = np.zeros(v)
            drops[0] = ILLUSTRATIVE_DROP if target is None else target
            alt = exclusion_experiment(rng, MAIN, g, m, v, drops, cfg.real_reps, mode, 0.08)
            rows.append(
                {
                    "mode": mode,
                    "tasks": g,
                    "trials": m,
                    "variants": v,
                    "excluded_share": null["excluded_share"],
                    "false_claim": null["false_claim"],
                    "coverage_complete_case": null["coverage_complete_case"],
                    "coverage_bounds": null["coverage_bounds"],
                    "mde": target,
                    "power": alt["detected"],
                    "coverage_bounds_alt": alt["coverage_bounds"],
                    "false_claim_alt": alt["false_claim"],
                }
            )
    return rows


def whole_report_experiment(cfg: Config, seed: int) -> list[dict[str, Any]]:
    """The whole report under an exact null (no task reacts either): 4 variants (three levels of one emotion and one
    other) x (all + unflagged, 10% of conversations flagged at random) + the reward dose trend, one family; the
    share of reports claiming anything. Main and floor/ceiling worlds."""
    rows = []
    for si, scen in enumerate(
        (Scenario("main, exact null", reaction=0.0), Scenario("floor/ceiling, exact null", 0.5, 0.85, 0.5, 0.0))
    ):
        for g, m in cfg.real_designs:
            rng = np.random.default_rng([seed, 182, si, g, m])
            cl = _clusters(g, m)
            levels = np.repeat(np.array([1.0, 2.0, 3.0]), g * m)
            anything, sizes, no_interval, exact = [], [], [], []
            for _ in range(cfg.real_reps):
                p = scen.tasks(rng, g)
                base, var = scen.outcomes(rng, p, scen.variant(rng, p, np.zeros(4)), m)
                b = base.ravel()
                flag_b = rng.random(b.size) < 0.1
                entries: list[tuple[str, Any, Any]] = []
                effects = []
                for j in range(4):
                    vv = var[j].ravel()
                    e = paired_effect(b, vv, cl)
                    effects.append(e)
                    entries.append(("all", e, None))
                    keep = ~(flag_b | (rng.random(b.size) < 0.1))
                    entries.append(("unflagged", paired_effect(b[keep], vv[keep], cl[keep]), None))
                trend = dose_response(levels, np.concatenate([var[j].ravel() for j in range(3)]), np.tile(cl, 3))
                entries.append(("trend", trend, None))
                decided = _decide(entries)
                anything.append(any(r["claim"] in ("lower", "higher") for r in decided))
                sizes.append(decided[0]["family_size"])
                no_interval.append(np.mean([e.ci_low is None for e in effects]))
                # certainty from zero spread: a zero-width interval or p = 0 (p = 1 with a spread is an estimate of exactly 0)
                exact.append(any((e.ci_low is not None and e.ci_low == e.ci_high) or e.p == 0.0 for e in effects))
            rows.append(
                {
                    "scenario": scen.name,
                    "tasks": g,
                    "trials": m,
                    "false_report": rate(anything),
                    "family_size": float(np.mean(sizes)),
                    "no_interval": rate(no_interval),
                    "zero_width_or_p0": rate(exact),
                }
            )
    return rows


def dose_table(cfg: Config, seed: int) -> list[dict[str, Any]]:
    """Trend among the emotional levels (1-3) when every level drops by the same 0.10 (flat: no trend) and when the
    drop grows by 0.05 per level (monotone); the 3 level effects and the trend in one family."""
    rows = []
    for si, scen in enumerate((MAIN, FLOOR)):
        for g, m in cfg.real_designs:
            for shape, drops in (("flat", np.array([0.10, 0.10, 0.10])), ("monotone", np.array([0.05, 0.10, 0.15]))):
                rng = np.random.default_rng([seed, 183, si, g, m, shape == "flat"])
                cl = _clusters(g, m)
                levels = np.repeat(np.array([1.0, 2.0, 3.0]), g * m)
                trend_claims, covered, too_few = [], [], []
                truth = -(drops[2] - drops[0]) / 2.0
                for _ in range(cfg.real_reps):
                    p = scen.tasks(rng, g)
                    base, var = scen.outcomes(rng, p, scen.variant(rng, p, drops), m)
                    b = base.ravel()
                    trend = dose_response(levels, var.reshape(3, -1).ravel(), np.tile(cl, 3))
                    entries = [("all", paired_effect(b, var[j].ravel(), cl), None) for j in range(3)] + [("trend", trend, None)]
                    row = _decide(entries)[-1]
                    trend_claims.append(row["claim"] in ("lower", "higher") if shape == "flat" else row["claim"] == "lower")
                    too_few.append(row["claim"] == "too_few")
                    covered.append(_interval_covers(trend.ci_low, trend.ci_high, truth))
                rows.append(
                    {
                        "scenario": scen.name,
                        "tasks": g,
                        "trials": m,
                        "shape": shape,
                        "claims": rate(trend_claims),
                        "too_few": rate(too_few),
                        "coverage": rate(covered),
                    }
                )
    return rows


def concentrated_experiment(cfg: Config, seed: int) -> list[dict[str, Any]]:
    """A drop carried by half the tasks (each dropping twice as much), 40x3, 8 variants: power at the MDE that
    ``moodbench power --drop-share 0.5`` promises (the world's other parameters as flags), and, for contrast, at
    the MDE of the even-drop plan."""
    g, m, v = 40, 3, 8
    truth = MAIN.design(g, m, v)
    rows = []
    for share_planned in (HALF, 1.0):
        rng = np.random.default_rng([seed, 184, int(share_planned * 10)])
        planned = replace(
            planned_design(
                g,
                m,
                v,
                1,
                baseline_success=MAIN.baseline_success,
                icc=MAIN.icc,
                pair_corr=MAIN.coupling,
                effect_sd=round(truth.effect_sd, 3),
            ),
            drop_share=share_planned,
        )
        target = mde(planned)
        if target is None:
            continue
        drops = np.zeros(v)
        drops[0] = target
        cl = _clusters(g, m)
        hit, cover = [], []
        for _ in range(cfg.real_reps):
            p = MAIN.tasks(rng, g)
            base, var = MAIN.outcomes(rng, p, MAIN.variant(rng, p, drops, share=HALF), m)
            claimed = claim_effects([Comparison(base.ravel(), var[j].ravel(), cl) for j in range(v)])
            hit.append(claimed[0].verdict.claim == "lower")
            cover.append(_covers(claimed[0].effect, -target))
        rows.append(
            {
                "planned_drop_share": share_planned,
                "true_drop_share": HALF,
                "tasks": g,
                "trials": m,
                "variants": v,
                "mde": target,
                "power": rate(hit),
                "power_formula": power_at(planned, -target),
                "coverage": rate(cover),
            }
        )
    return rows


def pass_k_experiment(cfg: Config, seed: int) -> list[dict[str, Any]]:
    """Descriptive pass^k under the null: how often an interval is shown (>= MIN_TASKS tasks and MIN_PAIRS pairs, not
    zero spread) and how often the shown interval covers 0, per k; main and floor/ceiling worlds."""
    rows = []
    for si, scen in enumerate((MAIN, FLOOR)):
        for g, m in ((20, 3), (40, 3), (5, 5)):
            rng = np.random.default_rng([seed, 185, si, g, m])
            shown: dict[int, list[float]] = {}
            cover: dict[int, list[float]] = {}
            for _ in range(cfg.real_reps):
                p = scen.tasks(rng, g)
                base, var = scen.outcomes(rng, p, scen.variant(rng, p, np.zeros(1)), m)
                for pk in pass_k_rows({t: list(base[t] == 1) for t in range(g)}, {t: list(var[0, t] == 1) for t in range(g)}):
                    k = pk["k"]
                    shown.setdefault(k, []).append(float(not pk["too_few"]))
                    if not pk["too_few"]:
                        cover.setdefault(k, []).append(_interval_covers(*pk["ci"], 0.0))
            for k in sorted(shown):
                rows.append(
                    {
                        "scenario": scen.name,
                        "tasks": g,
                        "trials": m,
                        "k": k,
                        "shown": rate(shown[k]),
                        "coverage_when_shown": rate(cover[k]) if cover.get(k) else None,
                    }
                )
    return rows


# --------------------------------------------------------------------------- coverage grid (MIN_TASKS)


def percentile_bootstrap(d_task: np.ndarray, rng: np.random.Generator, b: int) -> tuple[float, float]:
    """Today's interval for contrast: percentile cluster bootstrap of the task-mean difference."""
    draw = rng.integers(0, d_task.size, size=(b, d_task.size))
    return tuple(np.quantile(d_task[draw].mean(axis=1), [0.025, 0.975]))  # type: ignore[return-value]


def pair_t(d: np.ndarray) -> tuple[float, float]:
    """Naive interval that treats every pair as independent (ignores the task clusters)."""
    se = d.std(ddof=1) / math.sqrt(d.size)
    h = sps.t.ppf(0.975, d.size - 1) * se
    return d.mean() - h, d.mean() + h


def coverage_grid(cfg: Config, seed: int) -> list[dict[str, Any]]:
    """Coverage of the chosen interval over design sizes, scenarios and true drops (what MIN_TASKS/MIN_PAIRS
    rest on); with 3 trials also today's percentile bootstrap and a pair-level t that ignores the tasks."""
    rows = []
    for si, scen in enumerate(GRID_SCENARIOS):
        for m in cfg.grid_trials:
            for g in cfg.grid_tasks:
                row: dict[str, Any] = {"scenario": scen.name, "trials": m, "tasks": g}
                for drop in GRID_DROPS:
                    rng = np.random.default_rng([seed, 7, si, m, g, round(drop * 100)])
                    cl = _clusters(g, m)
                    compare = m == 3
                    ct, bs, pt = [], [], []
                    for _ in range(cfg.grid_reps):
                        p = scen.tasks(rng, g)
                        base, var = scen.outcomes(rng, p, scen.variant(rng, p, np.array([drop])), m)
                        e = paired_effect(base.ravel(), var[0].ravel(), cl)
                        ct.append(_covers(e, -drop))
                        if compare:
                            lo, hi = percentile_bootstrap((var[0] - base).mean(axis=1), rng, cfg.bootstrap_resamples)
                            bs.append(float(lo <= -drop <= hi))
                            d = (var[0] - base).ravel()
                            lo, hi = pair_t(d) if d.std() > 0 else (d.mean(), d.mean())
                            pt.append(float(lo <= -drop <= hi))
                    row[f"cluster_t_{drop}"] = rate(ct)
                    if compare:
                        row[f"bootstrap_{drop}"] = rate(bs)
                        row[f"pair_t_{drop}"] = rate(pt)
                rows.append(row)
    return rows


def min_design_supported(grid: list[dict[str, Any]], floor: float = 0.93) -> dict[int, int | None]:
    """Per trial count: the smallest task count from which cluster-t coverage >= floor in every scenario and
    drop of the grid (for that task count and all larger ones)."""
    out: dict[int, int | None] = {}
    for m in sorted({r["trials"] for r in grid}):
        ok_from = None
        for g in sorted({r["tasks"] for r in grid}, reverse=True):
            cells = [r for r in grid if r["trials"] == m and r["tasks"] == g]
            if all(r[f"cluster_t_{d}"][0] >= floor for r in cells for d in GRID_DROPS):
                ok_from = g
            else:
                break
        out[m] = ok_from
    return out


# --------------------------------------------------------------------------- contrast, dose-response, A/A


def old_rules(cfg: Config, seed: int) -> dict[str, Any]:
    """Yesterday's verdict rules on null worlds (40x3): any of 8 percentile-bootstrap CIs excluding 0 (main
    world), and the exact McNemar test on pair counts where tasks react strongly in opposite directions."""
    rng = np.random.default_rng([seed, 99])
    g, m, v = 40, 3, 8
    cl = _clusters(g, m)
    any_ci, new_any = [], []
    for _ in range(cfg.contrast_reps):
        p = MAIN.tasks(rng, g)
        base, var = MAIN.outcomes(rng, p, MAIN.variant(rng, p, np.zeros(v)), m)
        hit = False
        for j in range(v):
            lo, hi = percentile_bootstrap((var[j] - base).mean(axis=1), rng, cfg.bootstrap_resamples)
            hit |= lo > 0 or hi < 0
        any_ci.append(hit)
        claimed = claim_effects([Comparison(base.ravel(), var[j].ravel(), cl) for j in range(v)])
        new_any.append(any(c.verdict.claim in ("lower", "higher") for c in claimed))
    mcn, new_one = [], []
    for _ in range(cfg.contrast_reps):
        p = OPPOSITE.tasks(rng, g)
        base, var = OPPOSITE.outcomes(rng, p, OPPOSITE.variant(rng, p, np.zeros(1)), m)
        b_only = int(((base == 1) & (var[0] == 0)).sum())
        v_only = int(((base == 0) & (var[0] == 1)).sum())
        mcn.append(b_only + v_only > 0 and sps.binomtest(b_only, b_only + v_only).pvalue < ALPHA)
        new_one.append(paired_effect(base.ravel(), var[0].ravel(), cl).p < ALPHA)
    return {
        "old_any_ci_excludes_0_8_variants": rate(any_ci),
        "new_false_claim_8_variants": rate(new_any),
        "mcnemar_reject_opposite": rate(mcn),
        "cluster_t_reject_opposite": rate(new_one),
    }


def dose_experiment(cfg: Config, seed: int) -> list[dict[str, Any]]:
    """Trend over levels 0..3 (0 = baseline) with task-specific slopes of zero mean; true slope -slope."""
    out = []
    for slope in (0.0, 0.05):
        rng = np.random.default_rng([seed, 55, int(slope * 100)])
        g, m = 40, 3
        levels = np.repeat(np.arange(4), g * m).astype(float)
        cl = np.tile(_clusters(g, m), 4)
        cover, reject = [], []
        for _ in range(cfg.contrast_reps):
            p = MAIN.tasks(rng, g)
            u = rng.uniform(-1, 1, size=g)
            ub = rng.random((g, m))
            vals = []
            for lv in range(4):
                shifted = p * (1 - slope * lv / MAIN.baseline_success)
                q = shifted + (lv / 3) * MAIN.reaction * u * np.minimum(shifted, 1 - shifted)
                reuse = rng.random((g, m)) < MAIN.coupling
                uu = np.where(reuse | (lv == 0), ub, rng.random((g, m)))
                vals.append((uu < q[:, None]).astype(float).ravel())
            t = dose_response(levels, np.concatenate(vals), cl)
            cover.append(_interval_covers(t.ci_low, t.ci_high, -slope))
            reject.append(float(t.p is not None and t.p < ALPHA))
        out.append({"true_slope": -slope, "coverage": rate(cover), "reject": rate(reject)})
    return out


def aa_experiment(cfg: Config, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng([seed, 77])
    g, m = 40, 4
    reject, half = [], []
    for _ in range(cfg.contrast_reps):
        p = MAIN.tasks(rng, g)
        base = (rng.random((g, m)) < p[:, None]).astype(float)
        r = aa_split({i: base[i] for i in range(g)})
        reject.append(float(r.p is not None and r.p < ALPHA))
        half.append(r.half_width)
    return {"tasks": g, "trials": m, "reject": rate(reject), "mean_half_width": float(np.mean(half))}


# --------------------------------------------------------------------------- printing


def _fmt(x: tuple[float, float] | None, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    return f"{x[0]:.{digits}f} ± {x[1]:.{digits}f}"


def render(result: dict[str, Any]) -> str:
    lines = [
        (
            f"calibration ({result['mode']}, seed {result['seed']}): MIN_TASKS={MIN_TASKS}, MIN_PAIRS={MIN_PAIRS}, "
            f"alpha={ALPHA} family-wise (Holm over the variants); ± = Monte Carlo standard error"
        ),
        "",
    ]
    head = (
        "| tasks x trials | variants | reps | MDE | false-claim rate (null) | 95% CI coverage (null) | true drop | coverage (the dropping variant)"
        " | too_few | claims `lower` at the drop (formula) | manip. false pass (shift 0) | manip. false pass (shift = min) |"
    )
    lines += [head, "|---" * (head.count("|") - 1) + "|"]
    for r in result["main"]:
        formula = "MDE undefined: too_few" if r["power_formula"] is None else f"{r['power_formula']:.3f}"
        mdes = "n/a" if r["mde"] is None else f"{r['mde']:.3f}"
        drop = f"{r['drop']:.3f}" + (" (MDE)" if r["mde"] is not None else "")
        lines.append(
            f"| {r['tasks']}x{r['trials']} | {r['variants']} | {result['config']['reps']} | {mdes} | {_fmt(r['false_claim'])} "
            f"| {_fmt(r['coverage_null'])} | {drop} | {_fmt(r['coverage_alt'])} | {_fmt(r['too_few'], 2)} "
            f"| {_fmt(r['power'])} ({formula}) "
            f"| {_fmt(r['manip_false_pass_null'])} | {_fmt(r['manip_false_pass_boundary'])} |"
        )
    if result.get("planning"):
        lines += [
            "",
            "power at the MDE that the user-facing paths print (40 tasks x 3 trials, 8 variants, main world):",
            "",
            "| source | MDE | claims `lower` at that drop | formula |",
            "|---|---|---|---|",
        ]
        for r in result["planning"]:
            extra = "" if not r.get("mde_iqr") else f" [IQR {r['mde_iqr'][0]:.3f}, {r['mde_iqr'][1]:.3f}]"
            mdes = "n/a" if r["mde"] is None else f"{r['mde']:.3f}{extra}"
            formula = "–" if r["power_formula"] is None else f"{r['power_formula']:.3f}"
            lines.append(f"| {r['source']} | {mdes} | {_fmt(r['power'])} | {formula} |")
    lines += render_real(result)
    lines += render_sequential(result)
    if result.get("grid"):
        drops = " / ".join(f"{d:.1f}" for d in GRID_DROPS)
        reps = result["config"]["grid_reps"]
        lines += [
            "",
            (
                f"coverage of the 95% interval by design size, true drop {drops}; {reps} replications per cell "
                f"(Monte Carlo SE {math.sqrt(0.95 * 0.05 / reps):.3f} at 0.95); bootstrap and pair-level t shown for 3 trials:"
            ),
            "",
            "| scenario | trials | tasks | pairs | task-clustered t (chosen) | percentile cluster bootstrap | pair-level t (no clusters) |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in result["grid"]:
            cells = []
            for k in ("cluster_t", "bootstrap", "pair_t"):
                vals = [r.get(f"{k}_{d}") for d in GRID_DROPS]
                cells.append("" if vals[0] is None else " / ".join(f"{v[0]:.3f}" for v in vals))
            lines.append(
                f"| {r['scenario']} | {r['trials']} | {r['tasks']} | {r['tasks'] * r['trials']} | " + " | ".join(cells) + " |"
            )
        lines += [
            "",
            "smallest task count (per trials) from which task-clustered t coverage >= 0.93 in every scenario and drop: "
            + ", ".join(f"{m} trial(s): {g}" for m, g in result["min_tasks_supported"].items()),
        ]
        lo, hi = result["eligible_coverage"]
        lines.append(
            f"task-clustered t coverage over every cell that may make a claim (tasks >= {MIN_TASKS}, pairs >= {MIN_PAIRS}): "
            f"{lo:.3f} to {hi:.3f}"
        )
    if result.get("power_scenarios"):
        lines += [
            "",
            (
                "power at the reported MDE in every scenario (8 variants, Holm), and the MDE design_from_pilot estimates "
                "from one run's own baseline and one null variant:"
            ),
            "",
            "| scenario | tasks x trials | MDE (true parameters) | claims `lower` at the MDE | pilot MDE median [IQR] |",
            "|---|---|---|---|---|",
        ]
        for r in result["power_scenarios"]:
            pm = (
                "n/a"
                if r["pilot_mde_median"] is None
                else f"{r['pilot_mde_median']:.3f} [{r['pilot_mde_iqr'][0]:.3f}, {r['pilot_mde_iqr'][1]:.3f}]"
            )
            mdes = "none (unreachable)" if r["mde"] is None else f"{r['mde']:.3f}"
            lines.append(f"| {r['scenario']} | {r['tasks']}x{r['trials']} | {mdes} | {_fmt(r['power'])} | {pm} |")
    if result.get("contrast"):
        c = result["contrast"]
        old = (
            f"  main world, 8 variants: any percentile-bootstrap 95% CI excludes 0 (old verdict) "
            f"{_fmt(c['old_any_ci_excludes_0_8_variants'])}; family-wise false-claim rate of the new claims on the same "
            f"data {_fmt(c['new_false_claim_8_variants'])}"
        )
        opposite = (
            f"  tasks reacting fully in opposite directions (zero mean), 1 variant: exact McNemar rejects at 0.05 "
            f"{_fmt(c['mcnemar_reject_opposite'])}; task-clustered t {_fmt(c['cluster_t_reject_opposite'])}"
        )
        lines += ["", "yesterday's rules on null worlds (40 tasks x 3 trials):", old, opposite]
    if result.get("dose"):
        lines += ["", "dose-response (40x3, levels 0-3, task-specific slopes of zero mean):"]
        for d in result["dose"]:
            lines.append(
                f"  true slope {d['true_slope']:+.2f}: CI coverage {_fmt(d['coverage'])}, rejection rate {_fmt(d['reject'])}"
            )
    if result.get("aa"):
        a = result["aa"]
        lines.append(
            f"\nA/A split of the baseline ({a['tasks']}x{a['trials']}): rejection rate {_fmt(a['reject'])}, "
            f"mean CI half-width {a['mean_half_width']:.3f}"
        )
    lines.append(f"\nwall time {result['wall_s']:.1f} s; {result['machine']}")
    return "\n".join(lines)


def render_sequential(result: dict[str, Any]) -> list[str]:
    """The sequential-vs-fixed table: the same data analysed both ways, same maximum size."""
    if not result.get("sequential"):
        return []
    reps = result["config"]["seq_reps"]
    lines = [
        "",
        (
            f"group-sequential (run --sequential: {DEFAULT_LOOKS} looks, Lan-DeMets OBF spending, Holm over repeated p, futility "
            f"when the interval at the futility level rules out a drop of the MDE) vs the fixed design on the same data, main world, "
            f"{reps} replications:"
        ),
        "",
        "| tasks x trials | variants | true effect | false claims seq (fixed) | power seq (fixed) [seq - fixed]"
        " | conversations / fixed | repeated-CI coverage | looks run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["sequential"]:
        eff = {"null": "0 (all)", "mde": f"first at MDE {r['mde']:.3f}", "2mde": f"all at 2 x MDE {2 * r['mde']:.3f}"}[
            r["effect"]
        ]
        lines.append(
            f"| {r['tasks']}x{r['trials']} | {r['variants']} | {eff} | {_fmt(r['false_claim_seq'])} ({r['false_claim_fixed'][0]:.3f}) "
            f"| {_fmt(r['power_seq'])} ({r['power_fixed'][0]:.3f}) [{_fmt(r['power_diff'])}] | {_fmt(r['conversations'])} "
            f"| {_fmt(r['coverage_repeated_ci'])} | {r['mean_looks'][0]:.2f} |"
        )
    return lines


def render_real(result: dict[str, Any]) -> list[str]:
    """The real-conditions tables (exclusions, whole report, dose, concentrated drops, pass^k)."""
    lines: list[str] = []
    if result.get("exclusions"):
        reps = result["config"]["real_reps"]
        lines += [
            "",
            f"exclusions (8% of each variant's conversations, none of the baseline's; {reps} replications per line):",
            "",
            "| exclusions | tasks x trials | variants | excluded | false claims (null, family) | coverage complete-case CI "
            "| coverage bounds CI | report MDE | claims `lower` at it | coverage bounds (drop) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in result["exclusions"]:
            mdes = "n/a" if r["mde"] is None else f"{r['mde']:.3f}"
            lines.append(
                f"| {r['mode']} | {r['tasks']}x{r['trials']} | {r['variants']} | {r['excluded_share']:.3f} | {_fmt(r['false_claim'])} "
                f"| {_fmt(r['coverage_complete_case'])} | {_fmt(r['coverage_bounds'])} | {mdes} | {_fmt(r['power'])} "
                f"| {_fmt(r['coverage_bounds_alt'])} |"
            )
    if result.get("whole_report"):
        lines += [
            "",
            "whole report under an exact null (4 variants x all/unflagged + reward dose trend, one Holm family):",
            "",
            "| world | tasks x trials | reports claiming anything | mean family size | effects without interval (zero spread) "
            "| any zero-width interval or p = 0 |",
            "|---|---|---|---|---|---|",
        ]
        for r in result["whole_report"]:
            lines.append(
                f"| {r['scenario']} | {r['tasks']}x{r['trials']} | {_fmt(r['false_report'])} | {r['family_size']:.1f} "
                f"| {_fmt(r['no_interval'])} | {_fmt(r['zero_width_or_p0'])} |"
            )
    if result.get("dose_trend"):
        lines += [
            "",
            "dose trend among the emotional levels (flat: -0.10 at every level; monotone: -0.05/-0.10/-0.15):",
            "",
            "| world | tasks x trials | shape | trend claims (flat: false; monotone: `lower`) | too_few | slope CI coverage |",
            "|---|---|---|---|---|---|",
        ]
        for r in result["dose_trend"]:
            lines.append(
                f"| {r['scenario']} | {r['tasks']}x{r['trials']} | {r['shape']} | {_fmt(r['claims'])} | {_fmt(r['too_few'], 2)} "
                f"| {_fmt(r['coverage'])} |"
            )
    if result.get("concentrated"):
        lines += [
            "",
            "drop carried by half the tasks (40x3, 8 variants), power at the MDE each plan promises:",
            "",
            "| planned drop share | MDE | claims `lower` at it | formula | coverage |",
            "|---|---|---|---|---|",
        ]
        for r in result["concentrated"]:
            lines.append(
                f"| {r['planned_drop_share']:g} | {r['mde']:.3f} | {_fmt(r['power'])} | {r['power_formula']:.3f} | {_fmt(r['coverage'])} |"
            )
    if result.get("pass_k"):
        lines += [
            "",
            "pass^k (descriptive) under the null: share of rows with an interval, and its coverage when shown:",
            "",
            "| world | tasks x trials | k | interval shown | coverage when shown |",
            "|---|---|---|---|---|",
        ]
        for r in result["pass_k"]:
            cov = "–" if r["coverage_when_shown"] is None else _fmt(r["coverage_when_shown"])
            lines.append(f"| {r['scenario']} | {r['tasks']}x{r['trials']} | {r['k']} | {_fmt(r['shown'], 2)} | {cov} |")
    return lines


def run(cfg: Config, seed: int = 20240917, mode: str = "full", progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every measurement of one invocation (so all ratios come from one run)."""
    say = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    out: dict[str, Any] = {
        "mode": mode,
        "seed": seed,
        "config": asdict(cfg),
        "constants": {"MIN_TASKS": MIN_TASKS, "MIN_PAIRS": MIN_PAIRS, "ALPHA": ALPHA},
    }
    say("main table")
    out["main"] = main_table(cfg, seed)
    say("planning checks")
    out["planning"] = planning_checks(cfg, seed)
    if cfg.real_reps:
        say("real conditions: exclusions")
        out["exclusions"] = exclusion_table(cfg, seed)
        say("real conditions: whole-report family")
        out["whole_report"] = whole_report_experiment(cfg, seed)
        say("real conditions: dose trends")
        out["dose_trend"] = dose_table(cfg, seed)
        say("real conditions: concentrated drops")
        out["concentrated"] = concentrated_experiment(cfg, seed)
        say("real conditions: pass^k")
        out["pass_k"] = pass_k_experiment(cfg, seed)
    if cfg.seq_reps:
        say("sequential vs fixed design")
        out["sequential"] = sequential_table(cfg, seed)
    if cfg.grid_reps:
        say("coverage grid")
        out["grid"] = coverage_grid(cfg, seed)
        out["min_tasks_supported"] = min_design_supported(out["grid"])
        eligible = [
            r[f"cluster_t_{d}"][0]
            for r in out["grid"]
            for d in GRID_DROPS
            if r["tasks"] >= MIN_TASKS and r["tasks"] * r["trials"] >= MIN_PAIRS
        ]
        out["eligible_coverage"] = [min(eligible), max(eligible)] if eligible else [float("nan")] * 2
    if cfg.power_reps:
        say("power across scenarios")
        out["power_scenarios"] = power_scenarios(cfg, seed)
    if cfg.contrast_reps:
        say("contrast, dose-response, A/A")
        out["contrast"] = old_rules(cfg, seed)
        out["dose"] = dose_experiment(cfg, seed)
        out["aa"] = aa_experiment(cfg, seed)
    out["wall_s"] = time.perf_counter() - t0
    out["machine"] = f"{platform.machine()} {platform.processor() or ''} python {platform.python_version()}".strip()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fast", action="store_true", help="reduced replications (<= 60 s)")
    ap.add_argument("--seed", type=int, default=20240917)
    ap.add_argument("--reps", type=int, help="override replications of the main table")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = ap.parse_args(argv)
    cfg = FAST if args.fast else FULL
    if args.reps:
        cfg = Config(**{**asdict(cfg), "reps": args.reps, "manip_reps": args.reps})
    result = run(cfg, args.seed, "fast" if args.fast else "full", progress=lambda s: print(f"... {s}", file=sys.stderr))
    print(render(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["FAST", "FULL", "Config", "Scenario", "render", "run"]
