"""Task-clustered inference (``moodbench.analysis._inference``) against statsmodels/scipy and hand-worked examples."""

from __future__ import annotations

import math
from collections.abc import Hashable

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import stats
from statsmodels.stats.multitest import multipletests

from moodbench.analysis._inference import (
    ALPHA,
    CLAIMS,
    MIN_PAIRS,
    MIN_TASKS,
    PairedEffect,
    aa_split,
    adjust_pvalues,
    claim,
    claim_family,
    dose_response,
    manipulation_test,
    no_claim_reason,
    paired_effect,
    pass_hat_k_paired,
    task_t,
)


def _unbalanced(seed: int = 3, g: int = 14):
    rng = np.random.default_rng(seed)
    cl = np.repeat(np.arange(g), 3)
    keep = rng.random(cl.size) > 0.25
    keep[::3] = True  # every task keeps at least one pair
    cl = cl[keep]
    b = (rng.random(cl.size) < 0.6).astype(float)
    v = (rng.random(cl.size) < 0.45).astype(float)
    return b, v, cl


# --------------------------------------------------------------------------- paired_effect


def test_hand_worked_example():
    # task A: pairs (1,0), (1,1) -> mean diff -0.5; B: (0,0), (1,0) -> -0.5; C: (0,1) -> +1
    e = paired_effect([1, 1, 0, 1, 0], [0, 1, 0, 0, 1], ["A", "A", "B", "B", "C"])
    assert (e.n_pairs, e.n_tasks, e.df) == (5, 3, 2)
    assert e.baseline_mean == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert e.variant_mean == pytest.approx((0.5 + 0.0 + 1.0) / 3)
    assert e.diff == pytest.approx(0.0, abs=1e-12)
    assert e.se == pytest.approx(math.sqrt(0.75) / math.sqrt(3))  # sd of (-0.5, -0.5, 1) is sqrt(0.75)
    assert e.se is not None
    half = 4.302652729911275 * e.se  # t(2) 97.5% quantile
    assert (e.ci_low, e.ci_high) == pytest.approx((-half, half))
    assert e.p == pytest.approx(1.0)


def test_matches_statsmodels_cluster_robust_wls_and_scipy_t_unbalanced():
    b, v, cl = _unbalanced()
    e = paired_effect(b, v, cl)
    d = v - b
    weights = 1.0 / np.bincount(cl)[cl]  # task-weighted mean = WLS intercept with weights 1/pairs-per-task
    fit = sm.WLS(d, np.ones_like(d), weights=weights).fit(cov_type="cluster", cov_kwds={"groups": cl}, use_t=True)
    assert fit.df_resid_inference == e.df == e.n_tasks - 1
    assert e.diff == pytest.approx(fit.params[0])
    assert e.se == pytest.approx(fit.bse[0])
    assert e.p == pytest.approx(fit.pvalues[0])
    assert (e.ci_low, e.ci_high) == pytest.approx(tuple(fit.conf_int()[0]))
    task_means = np.array([d[cl == k].mean() for k in np.unique(cl)])
    ref = stats.ttest_1samp(task_means, 0.0)
    assert e.p == pytest.approx(ref.pvalue)
    ci = ref.confidence_interval(0.95)
    assert (e.ci_low, e.ci_high) == pytest.approx((ci.low, ci.high))
    assert e.variant_mean is not None and e.baseline_mean is not None
    assert e.variant_mean - e.baseline_mean == pytest.approx(e.diff)


def test_balanced_design_equals_pooled_ols_cluster():
    rng = np.random.default_rng(5)
    cl = np.repeat(np.arange(20), 3)
    b = (rng.random(cl.size) < 0.7).astype(float)
    v = (rng.random(cl.size) < 0.5).astype(float)
    e = paired_effect(b, v, cl.tolist())
    fit = sm.OLS(v - b, np.ones(cl.size)).fit(cov_type="cluster", cov_kwds={"groups": cl}, use_t=True)
    assert (e.diff, e.se, e.p) == pytest.approx((fit.params[0], fit.bse[0], fit.pvalues[0]))


def test_hashable_clusters_and_fractional_rewards():
    e = paired_effect(
        [0.5, 1.0, 0.25, 0.0], [0.25, 1.0, 0.0, 0.5], [("retail", 1), ("retail", 1), ("airline", 1), ("airline", 2)]
    )
    assert e.n_tasks == 3
    assert e.diff == pytest.approx(np.mean([-0.125, -0.25, 0.5]))


def test_degenerate_inputs():
    empty = paired_effect([], [], [])
    assert (empty.n_pairs, empty.diff, empty.p) == (0, None, None)
    one = paired_effect([1, 0], [0, 0], ["t", "t"])
    assert (one.n_tasks, one.diff, one.se, one.p) == (1, -0.5, None, None)
    # zero spread: no zero-width interval, no p of exactly 0 or 1, and a reason a reader can act on
    same = paired_effect([1] * 12, [0] * 12, list(range(12)))  # every task lost exactly one success
    assert (same.diff, same.se, same.ci_low, same.ci_high, same.p, same.degenerate) == (
        -1.0,
        0.0,
        None,
        None,
        None,
        "zero_spread",
    )
    zero = paired_effect([1, 0] * 6, [1, 0] * 6, list(range(12)))
    assert (zero.diff, zero.p, zero.ci_low) == (0.0, None, None)
    floor = paired_effect([0] * 40, [0] * 40, list(range(40)))
    floor_reason = no_claim_reason(floor)
    assert floor_reason is not None and "floor" in floor_reason and claim_family([floor])[0].claim == "too_few"
    ceiling = paired_effect([1] * 40, [1] * 40, list(range(40)))
    ceiling_reason = no_claim_reason(ceiling)
    assert ceiling_reason is not None and "ceiling" in ceiling_reason
    minus_one_reason = no_claim_reason(paired_effect([1] * 40, [0] * 40, list(range(40))))
    assert minus_one_reason is not None and "exactly -1" in minus_one_reason
    noise = paired_effect([0.3] * 40, [0.3 + 1e-17 * (i % 3) for i in range(40)], list(range(40)))  # floating-point residue
    assert noise.p is None and noise.degenerate == "zero_spread"
    assert no_claim_reason(paired_effect([1, 0] * 20, [0, 0] * 20, list(range(40)))) is None
    with pytest.raises(ValueError):
        paired_effect([1, 0], [1], ["a", "b"])
    with pytest.raises(ValueError):
        paired_effect([1, 0], [1, 0], ["a"])
    with pytest.raises(ValueError):
        paired_effect([1, float("nan")], [1, 0], ["a", "b"])


def test_to_dict_and_relative():
    e = paired_effect([1, 1, 0, 1], [0, 1, 0, 1], ["a", "b", "c", "d"])
    d = e.to_dict()
    assert d["relative_pct"] == pytest.approx(100 * (-0.25) / 0.75)
    assert d["method"].startswith("task-clustered t")
    with pytest.raises(AttributeError):
        e.diff = 0.0  # type: ignore[misc]


def test_task_t_confidence_level():
    x = np.array([0.1, -0.2, 0.3, 0.05, 0.0])
    r = task_t(x, confidence=0.9)
    ci = stats.ttest_1samp(x, 0.0).confidence_interval(0.9)
    assert (r.ci_low, r.ci_high) == pytest.approx((ci.low, ci.high))


# --------------------------------------------------------------------------- multiplicity and claims


def test_holm_hand_example_and_none():
    # sorted 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 -> running max 0.06
    assert adjust_pvalues([0.04, None, 0.01, 0.03]) == pytest.approx([0.06, None, 0.03, 0.06])
    assert adjust_pvalues([None, None]) == [None, None]
    assert adjust_pvalues([]) == []
    with pytest.raises(ValueError):
        adjust_pvalues([1.5])


def test_holm_matches_statsmodels():
    rng = np.random.default_rng(11)
    for m in (1, 2, 7, 40):
        p = rng.random(m) ** 3
        p[: m // 3] = p[0]  # ties
        assert adjust_pvalues(list(p)) == pytest.approx(list(multipletests(p, method="holm")[1]))
    pv = [0.001, 0.02, 0.5]
    assert adjust_pvalues(pv, method="bonferroni") == pytest.approx(list(multipletests(pv, method="bonferroni")[1]))


def _effect(diff: float, p: float, tasks: int = MIN_TASKS, pairs: int = MIN_PAIRS) -> PairedEffect:
    return PairedEffect(pairs, tasks, 0.5, 0.5 + diff, diff, 0.01, tasks - 1, diff - 0.02, diff + 0.02, p, 0.95)


def test_claim_values():
    assert claim(_effect(-0.1, 0.001), 0.01) == "lower"
    assert claim(_effect(0.1, 0.001), 0.01) == "higher"
    assert claim(_effect(-0.1, 0.001), ALPHA) == "no_difference"  # strictly below alpha
    assert claim(_effect(-0.1, 0.001, tasks=MIN_TASKS - 1), 0.001) == "too_few"
    assert claim(_effect(-0.1, 0.001, pairs=MIN_PAIRS - 1), 0.001) == "too_few"
    assert claim(_effect(-0.1, 0.001), None) == "too_few"
    assert set(CLAIMS) == {"lower", "higher", "no_difference", "too_few"}


def test_claim_family_excludes_small_designs_from_the_family():
    effects = [_effect(-0.1, 0.02), _effect(0.1, 0.02, tasks=3), _effect(0.05, 0.3)]
    out = claim_family(effects)
    assert [c.claim for c in out] == ["lower", "too_few", "no_difference"]
    assert [c.family_size for c in out] == [2, 2, 2]
    assert out[0].p_adjusted == pytest.approx(0.04)
    assert out[1].p_adjusted is None
    # Bonferroni interval at level 1 - 0.05/2: t(9) quantile 0.9875 times se
    half = stats.t.ppf(1 - 0.05 / 4, MIN_TASKS - 1) * 0.01
    assert (out[0].ci_family_low, out[0].ci_family_high) == pytest.approx((-0.1 - half, -0.1 + half))
    assert out[0].to_dict()["claim"] == "lower"


def test_significant_effect_is_claimed_whatever_its_size():
    """No noise-floor label can override a significant claim: the claim depends on the adjusted p only."""
    rng = np.random.default_rng(2)
    cl = np.repeat(np.arange(200), 3)
    b = (rng.random(cl.size) < 0.6).astype(float)
    v = np.where(rng.random(cl.size) < 0.1, 0.0, b)  # a small, real drop
    e = paired_effect(b, v, cl.tolist())
    assert claim_family([e])[0].claim == "lower"
    assert e.diff is not None and abs(e.diff) < 0.1


# --------------------------------------------------------------------------- pass^k


def test_pass_hat_k_caps_k_and_keeps_one_task_set():
    base: dict[Hashable, list[bool]] = {"A": [True, True, True], "B": [True, False], "C": [True]}
    var: dict[Hashable, list[bool]] = {"A": [True, False, True], "B": [False, False]}
    out = pass_hat_k_paired(base, var)  # C has no variant side: left out; k capped at 2 (task B)
    assert sorted(out) == [1, 2]
    assert out[1].n_tasks == out[2].n_tasks == 2
    assert out[1].baseline == pytest.approx((1 + 0.5) / 2)
    assert out[2].baseline == pytest.approx((1 + 0) / 2)  # falls with k, never rises
    assert out[1].variant == pytest.approx((2 / 3 + 0) / 2)
    assert out[2].variant == pytest.approx((1 / 3 + 0) / 2)
    diffs = np.array([1 / 3 - 1, 0 - 0]), np.array([2 / 3 - 1, -0.5])
    ref = stats.ttest_1samp(diffs[1], 0.0)
    assert out[1].diff == pytest.approx(diffs[1].mean())
    assert out[1].p == pytest.approx(ref.pvalue)
    assert out[2].diff == pytest.approx(diffs[0].mean())
    assert out[2].to_dict()["k"] == 2


def test_pass_hat_k_issue_example_is_monotone():
    """Dropping tasks with fewer than k trials gave 0.5, 0.5, 1.0; capping k at the fewest trials cannot rise."""
    base: dict[Hashable, list[bool]] = {"A": [False, True, True], "B": [True, False]}
    out = pass_hat_k_paired(base, base)
    values = [out[k].baseline for k in sorted(out)]
    assert values == sorted(values, reverse=True)
    assert all(out[k].diff == 0 for k in out)
    assert pass_hat_k_paired({}, {}) == {}


def test_pass_hat_k_one_lost_conversation_drops_one_task_not_pass_t():
    """One fixed task set for every k: a task with fewer pairs is dropped (counted), the others keep pass^3."""
    base: dict[Hashable, list[bool]] = {t: [True, t % 2 == 0, True] for t in range(30)}
    var: dict[Hashable, list[bool]] = {t: [True, False, t % 3 == 0] for t in range(30)}
    var[7] = var[7][:2]  # one conversation of task 7 excluded on the variant side
    out = pass_hat_k_paired(base, var)
    assert sorted(out) == [1, 2, 3]
    assert all(p.n_tasks == 29 and p.dropped_tasks == 1 and p.k_max == 3 for p in out.values())
    # when too many tasks lack the trials, k stops lower instead of dropping them
    for t in range(5):
        var[t] = var[t][:2]
    out = pass_hat_k_paired(base, var)
    assert sorted(out) == [1, 2] and out[1].n_tasks == 30 and out[1].dropped_tasks == 0


# --------------------------------------------------------------------------- A/A split


def test_aa_split_hand_example():
    r = aa_split({"a": [1, 0, 1, 0], "b": [1, 1, 0], "c": [1]})  # a: 1 - 0, b: 0.5 - 1; c has one trial
    assert (r.n_tasks, r.trials_a, r.trials_b) == (2, 4, 3)
    ref = stats.ttest_1samp([1.0, -0.5], 0.0)
    assert r.diff == pytest.approx(0.25)
    assert r.p == pytest.approx(ref.pvalue)
    assert r.ci_high is not None and r.diff is not None
    assert r.half_width == pytest.approx(r.ci_high - r.diff)
    assert aa_split({"a": [1]}).diff is None


# --------------------------------------------------------------------------- dose-response


def _dose_data(balanced: bool, seed: int = 8):
    rng = np.random.default_rng(seed)
    g, m = 15, 2
    levels, values, clusters = [], [], []
    for task in range(g):
        base = rng.random()
        slope = -0.05 + rng.normal(0, 0.05)
        for lv in range(4):
            if not balanced and task % 4 == 0 and lv == 3:
                continue
            for _ in range(m):
                levels.append(lv)
                values.append(base + slope * lv + rng.normal(0, 0.1))
                clusters.append(f"t{task}")
    return np.array(levels, float), np.array(values), np.array(clusters)


def test_dose_response_balanced_is_mean_of_task_slopes():
    x, y, cl = _dose_data(balanced=True)
    t = dose_response(x, y, cl)
    slopes = np.array([np.polyfit(x[cl == k], y[cl == k], 1)[0] for k in np.unique(cl)])
    ref = stats.ttest_1samp(slopes, 0.0)
    assert t.slope == pytest.approx(slopes.mean())
    assert t.se == pytest.approx(slopes.std(ddof=1) / math.sqrt(slopes.size))
    assert t.p == pytest.approx(ref.pvalue)
    assert (t.n_tasks, t.n_obs, t.df) == (15, 120, 14)
    assert [lv for lv, _, _ in t.per_level] == [0, 1, 2, 3]
    assert t.per_level[0][1] == pytest.approx(y[x == 0].mean())


def test_dose_response_unbalanced_slope_equals_task_dummy_ols():
    x, y, cl = _dose_data(balanced=False)
    t = dose_response(x, y, cl)
    dummies = (cl[:, None] == np.unique(cl)[None, :]).astype(float)
    fit = sm.OLS(y, np.column_stack([x, dummies])).fit(cov_type="cluster", cov_kwds={"groups": cl}, use_t=True)
    assert t.slope == pytest.approx(fit.params[0])  # Frisch-Waugh-Lovell
    # same cluster score; statsmodels' dummy fit counts the G dummies in its (N-1)/(N-K) factor, ours does not
    n, k = y.size, 1 + np.unique(cl).size
    assert t.se == pytest.approx(fit.bse[0] / math.sqrt((n - 1) / (n - k)))


def test_dose_response_degenerate():
    t = dose_response([0, 0, 0], [1, 0, 1], ["a", "b", "c"])
    assert t.slope is None and t.n_tasks == 3
    t = dose_response([0, 1, 0, 1], [1, 0, 1, 1], ["a", "b", "c", "d"])  # no task has two levels
    assert t.slope is None


# --------------------------------------------------------------------------- manipulation check


def _scores(shift: float, g: int = MIN_TASKS, seed: int = 4):
    rng = np.random.default_rng(seed)
    cl = np.repeat(np.arange(g), max(2, math.ceil(MIN_PAIRS / g)))
    base = rng.gamma(2.0, 0.5, size=cl.size)
    var = base + shift + rng.normal(0, 0.3, size=cl.size)
    return base, var, cl


def test_manipulation_one_sided_against_min_effect_matches_scipy():
    base, var, cl = _scores(0.6)
    r = manipulation_test(base, var, cl, direction=1, min_effect=0.2)
    task_diffs = np.array([(var - base)[cl == k].mean() for k in np.unique(cl)])
    ref = stats.ttest_1samp(task_diffs - 0.2, 0.0, alternative="greater")
    assert r.p == pytest.approx(ref.pvalue)
    assert r.shift == pytest.approx(task_diffs.mean())
    lb = ref.confidence_interval(0.95).low + 0.2
    assert r.lower_bound == pytest.approx(lb)
    assert r.status == "passed"
    assert r.lower_bound is not None
    assert (r.lower_bound > r.min_effect) == (r.status == "passed")


def test_manipulation_direction_min_effect_family_and_too_few():
    base, var, cl = _scores(-0.6)
    assert manipulation_test(base, var, cl, direction=1, min_effect=0.0).status == "failed"  # wrong direction
    down = manipulation_test(base, var, cl, direction=-1, min_effect=0.2)
    assert down.status == "passed" and down.shift is not None and down.shift > 0
    assert manipulation_test(base, var, cl, direction=-1, min_effect=1.5).status == "failed"  # moved, but too little
    small = manipulation_test(base[:8], var[:8], cl[:8], direction=-1, min_effect=0.0)
    assert small.status == "too_few" and small.n_tasks == 4
    single = manipulation_test(base, var, cl, direction=-1, min_effect=0.2)
    fam = manipulation_test(base, var, cl, direction=-1, min_effect=0.2, family_size=40)
    assert fam.lower_bound is not None and single.lower_bound is not None
    assert fam.p == single.p and fam.lower_bound < single.lower_bound
    with pytest.raises(ValueError):
        manipulation_test(base, var, cl, direction=0, min_effect=0.1)
    with pytest.raises(ValueError):
        manipulation_test(base, var, cl, direction=1, min_effect=-0.1)


@pytest.mark.parametrize("shift", [0.0, 0.6, -0.6])
def test_manipulation_zero_spread_is_no_verdict_not_certainty(shift: float) -> None:
    """Every task shifted by the same amount: the interval would have width 0 and p would be exactly 0 or 1."""
    base, _, cl = _scores(0.0)
    var = base + shift  # identical shift in every pair of every task
    r = manipulation_test(base, var, cl, direction=1, min_effect=0.2)
    assert r.status == "too_few" and r.p is None and r.lower_bound is None
    assert r.shift == pytest.approx(shift) and r.reason is not None and r.reason.startswith("zero spread")
    small = manipulation_test(base[:8], var[:8], cl[:8], direction=1, min_effect=0.2)
    assert small.status == "too_few" and small.reason is None  # below the minimum design: that is the reason given
