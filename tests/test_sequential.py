"""The group-sequential design's math (analysis/_sequential.py) against published tables and independent methods."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from moodbench.analysis import paired_effect
from moodbench.analysis._sequential import (
    SequentialPlan,
    decide_look,
    efficacy_bounds,
    futility_level,
    look_z,
    operating_characteristics,
    plan_sequential,
    repeated_p,
    spend_obf,
    stage_sizes,
)
from scripted import run_cli

# Lan-DeMets O'Brien-Fleming-type bounds, equally spaced looks, two-sided alpha 0.05 (symmetric): DeMets and Lan
# (1994, Stat Med 13:1341) Table I, the same numbers gsDesign (sfLDOF, test.type=2) and ldbounds print.
PUBLISHED = {
    2: (2.963, 1.969),
    3: (3.710, 2.511, 1.993),
    4: (4.333, 2.963, 2.359, 2.014),
    5: (4.877, 3.357, 2.680, 2.290, 2.031),
}


def _equal(k: int) -> tuple[float, ...]:
    return tuple((i + 1) / k for i in range(k))


def _corr(t: tuple[float, ...]) -> np.ndarray:
    a = np.asarray(t)
    return np.sqrt(np.minimum.outer(a, a) / np.maximum.outer(a, a))


@pytest.mark.parametrize("k", sorted(PUBLISHED))
def test_obf_bounds_match_the_published_tables(k):
    assert efficacy_bounds(_equal(k), 0.05) == pytest.approx(PUBLISHED[k], abs=0.01)
    assert efficacy_bounds(_equal(k), 0.05) == pytest.approx(PUBLISHED[k], abs=0.0015)


@pytest.mark.parametrize("t", [(0.5, 1.0), (0.3, 0.7, 1.0), (0.2, 0.45, 0.8, 1.0)])
def test_bounds_spend_exactly_under_scipys_joint_normal(t):
    """The recursion's boundaries, fed to scipy's multivariate normal (an independent integrator), spend the
    planned alpha at every look: P(no crossing through look k) = 1 - alpha(t_k)."""
    bounds = np.asarray(efficacy_bounds(t, 0.05))
    spent = spend_obf(np.asarray(t), 0.05)
    cov = _corr(t)
    for k in range(1, len(t) + 1):
        mvn = stats.multivariate_normal(mean=np.zeros(k), cov=cov[:k, :k], seed=1)
        stay = mvn.cdf(bounds[:k], lower_limit=-bounds[:k]) if k > 1 else 1 - 2 * stats.norm.sf(bounds[0])
        assert stay == pytest.approx(1 - spent[k - 1], abs=2e-4)
    assert spent[-1] == pytest.approx(0.05)


def test_type_one_error_and_power_by_simulation():
    """A Monte Carlo of the canonical joint normal agrees with the recursion's alpha and power."""
    t = _equal(4)
    plan = SequentialPlan(tasks=40, stages=stage_sizes(40, 4), alpha=0.05, family_size=1, smallest_effect=None)
    rng = np.random.default_rng(3)
    n = 200_000
    inc = rng.normal(size=(n, 4)) * math.sqrt(0.25)
    drift = stats.norm.isf(0.025) + stats.norm.isf(0.2)
    for theta, key in ((0.0, "alpha"), (drift, "power")):
        s = np.cumsum(inc + theta * 0.25, axis=1)
        z = s / np.sqrt(np.asarray(t))
        crossed = (np.abs(z) >= np.asarray(plan.bounds)).any(axis=1).mean()
        oc = operating_characteristics(plan, theta)
        assert oc["power"] == pytest.approx(crossed, abs=0.004), key
        assert sum(oc["stop"]) == pytest.approx(1.0, abs=1e-6)
    assert operating_characteristics(plan, 0.0)["power"] == pytest.approx(0.05, abs=1e-4)
    # with only efficacy bounds the OBF design loses < 0.01 power against the fixed design (0.80)
    assert 0.79 < operating_characteristics(plan, drift)["power"] < 0.80


def test_futility_level_spends_its_beta_at_the_smallest_effect():
    """Under a true drop of exactly delta the futility bound is crossed at some interim look with probability beta:
    one interim look is the plain one-sided quantile; four looks are checked against a Monte Carlo of the
    standardised Brownian motion; the recursion's power at delta loses at most beta to futility."""
    assert futility_level(_equal(2), 0.01) == pytest.approx(1 - 2 * 0.01)
    conf = futility_level(_equal(4), 0.01)
    z = stats.norm.isf((1 - conf) / 2)
    rng = np.random.default_rng(11)
    w = np.cumsum(rng.normal(size=(400_000, 3)) * 0.5, axis=1) / np.sqrt([0.25, 0.5, 0.75])
    assert (w.min(axis=1) < -z).mean() == pytest.approx(0.01, abs=0.0008)
    assert futility_level(_equal(4), 0.02) < conf < futility_level(_equal(8), 0.01)  # fewer looks or more beta: lower
    plan = plan_sequential(80, 4, smallest_effect=0.1)
    drift = stats.norm.isf(0.025) + stats.norm.isf(0.2)
    without, with_futility = (
        operating_characteristics(plan, drift)["power"],
        operating_characteristics(plan, drift, drift)["power"],
    )
    assert 0.001 < without - with_futility <= 0.01
    # under no effect the one-sided rule stops far earlier than the two-sided rule of stored plans
    both = SequentialPlan.from_dict({**plan.to_dict(), "futility": "both"})
    early = operating_characteristics(plan, 0.0, drift)["expected_fraction"]
    assert early < operating_characteristics(both, 0.0, drift)["expected_fraction"] - 0.1


def test_the_drop_rule_rules_out_drops_and_the_stored_rule_both_directions():
    plan = plan_sequential(80, 4, family_size=1, smallest_effect=0.3)
    both = SequentialPlan.from_dict({**plan.to_dict(), "futility": "both"})
    assert plan.is_futile(-0.2, 0.5) and not both.is_futile(-0.2, 0.5)  # rules out a drop of 0.3, not a rise of 0.3
    assert plan.is_futile(-0.2, 0.2) and both.is_futile(-0.2, 0.2)
    assert not plan.is_futile(-0.35, 0.1) and not plan.is_futile(None, 0.1)
    with pytest.raises(ValueError, match="futility must be one of"):
        SequentialPlan.from_dict({**plan.to_dict(), "futility": "rise"})


def test_repeated_p_is_exact_at_the_holm_levels_and_monotone():
    t = _equal(4)
    for level in (0.05, 0.025, 0.05 / 3):
        c = efficacy_bounds(t, level)
        assert repeated_p([c[0] * 1.0001], t) <= level < repeated_p([c[0] * 0.999], t)
        assert repeated_p([0.0, 0.0, c[2] * 1.0001], t) <= level < repeated_p([0.0, 0.0, c[2] * 0.999], t)
    # the running minimum over looks; more extreme z, smaller p; z = 0 at every look is p ~ 1
    assert repeated_p([3.0, 0.5], t) == repeated_p([3.0], t)
    assert repeated_p([0.0, 2.5], t) > repeated_p([0.0, 3.0], t)
    assert repeated_p([0.0, 0.0, 0.0, 0.0], t) > 0.99
    # at the last look of a one-look plan it is the ordinary two-sided normal p
    assert repeated_p([2.2], (1.0,)) == pytest.approx(2 * stats.norm.sf(2.2), rel=0.02)


def test_look_z_maps_the_task_clustered_t_through_its_distribution():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2, 60).astype(float)
    var = np.where(rng.random(60) < 0.3, 0.0, base)
    cl = np.repeat(np.arange(20), 3).tolist()
    e = paired_effect(base, var, cl)
    z = look_z(e)
    assert z is not None and z < 0
    assert 2 * stats.norm.sf(abs(z)) == pytest.approx(e.p, rel=1e-9)


def _effect(shift: float, g: int, rng: np.random.Generator):
    base = rng.normal(0.0, 1.0, (g, 2))
    var = base + shift + rng.normal(0.0, 0.3, (g, 1)) + rng.normal(0, 0.3, (g, 2))
    return paired_effect(base.ravel(), var.ravel(), np.repeat(np.arange(g), 2).tolist())


def test_decide_look_claims_futility_and_carry():
    rng = np.random.default_rng(5)
    plan = plan_sequential(80, 4, family_size=2, smallest_effect=0.3)
    big, null = _effect(-0.8, 20, rng), _effect(0.0, 20, rng)
    d1 = decide_look(plan, 1, [big, null], [[], []])
    p, hi = d1[0].p_repeated, d1[0].ci_high
    assert d1[0].status == "claimed" and d1[0].claim == "lower" and p is not None and p < 0.025
    assert hi is not None and hi < 0  # the repeated interval agrees with the claim
    assert d1[1].status in ("continue", "futile")
    # look 2: the claimed comparison stopped (None) and keeps its verdict; a tight null interval is futile
    tight = _effect(0.0, 60, rng)
    d2 = decide_look(plan, 2, [None, tight], [[d1[0].z], [d1[1].z]], d1)
    assert d2[0].status == "claimed" and d2[0].look == 1
    lo, hi = d2[1].futility_ci
    assert lo is not None and hi is not None
    assert (d2[1].status == "futile") == (-0.3 < lo)
    # the last look decides everything: no "continue"
    d4 = decide_look(plan, 4, [None, _effect(0.05, 80, rng)], [[d1[0].z], [d1[1].z, d2[1].z, 0.1]], d2)
    assert all(d.decided for d in d4)
    # a reason (below the minimum design) blocks a claim but not the run
    d = decide_look(plan, 1, [big, null], [[], []], reasons=["10 tasks", None])
    assert d[0].status == "continue" and d[0].p_repeated is None


def test_plan_validation_and_round_trip():
    assert stage_sizes(10, 4) == (3, 3, 2, 2)
    with pytest.raises(ValueError):
        stage_sizes(3, 4)
    with pytest.raises(ValueError):
        plan_sequential(40, 4, smallest_effect=-0.1)
    plan = plan_sequential(40, 4, family_size=3, smallest_effect=0.1)
    again = SequentialPlan.from_dict(plan.to_dict())
    assert again == plan and again.bounds == plan.bounds and plan.futility_confidence == futility_level(_equal(4))
    assert plan.futility == "drop"
    # a plan stored before the drop rule (no "futility" key) replays with the rule it was run with
    old = {k: v for k, v in plan.to_dict().items() if k != "futility"}
    assert SequentialPlan.from_dict(old).futility == "both"
    assert plan.bounds[-1] > plan.bounds_marginal[-1]  # the family's first Holm step alpha/3 is stricter


def test_power_sequential_plans_through_the_cli():
    """``moodbench power --sequential --json``: the plan's looks and bounds, and sequential vs fixed at 0, MDE, 2 x MDE."""
    args = ["power", "--tasks", "80", "--trials", "2", "--variants", "3", "--baseline-success", "0.65", "--icc", "0.5"]
    args += ["--pair-corr", "0.5", "--effect-sd", "0.1", "--sequential", "--json"]
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    seq = json.loads(r.stdout)["sequential"]
    assert [x["tasks"] for x in seq["looks"]] == [20, 40, 60, 80]
    assert [x["z_bound"] for x in seq["looks"]] == pytest.approx(list(efficacy_bounds(_equal(4), 0.05 / 3)))
    assert seq["smallest_effect"] == pytest.approx(seq["mde"]) and seq["max_conversations"] == 80 * 2 * 4
    by = {s["effect"]: s for s in seq["scenarios"]}
    assert by["MDE"]["power_fixed"] == pytest.approx(0.8, abs=1e-3)
    assert by["MDE"]["power_fixed"] - 0.02 <= by["MDE"]["power_sequential"] <= by["MDE"]["power_fixed"]
    assert by["2 x MDE"]["expected_fraction_run"] < 0.7 and by["0"]["expected_fraction_run"] < 0.8
    assert by["0"]["power_sequential"] <= 0.05 / 3 + 1e-9
    text = run_cli(*args[:-1])
    assert text.returncode == 0 and "run --sequential: 4 looks over 80 tasks" in text.stdout + text.stderr
    assert "sequential vs fixed" in text.stdout
    bad_args = (
        (["--tasks", "10", "--sequential"], "cannot make a claim"),
        (["--tasks", "40", "--sequential", "--smallest-effect", "2"], "smallest"),
    )
    for bad, why in bad_args:
        r = run_cli("power", *bad)
        assert r.returncode == 2 and why in r.stderr and "Traceback" not in r.stderr
