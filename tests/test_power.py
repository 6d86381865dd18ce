"""Power planning (``moodbench.analysis._power``) against statsmodels, closed forms and Monte Carlo."""

from __future__ import annotations

import json
import math
import os
import subprocess
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.power import TTestPower

from moodbench.analysis._inference import MIN_PAIRS, MIN_TASKS, paired_effect
from moodbench.analysis._power import Design, design_from_pilot, mde, power_at, power_table, task_sd_at
from scripted import CLI


def _mde(design: Design) -> float:
    """The MDE of a design the test knows is claimable (``mde`` answers ``None`` below the minimum design)."""
    value = mde(design)
    assert value is not None
    return value


def test_within_and_task_variance_formula():
    d = Design(tasks=40, trials=3, baseline_success=0.6, icc=0.5, pair_corr=0.2, effect_sd=0.1)
    assert d.within_var == pytest.approx(2 * 0.24 * 0.5 * 0.8)
    assert d.task_sd == pytest.approx(math.sqrt(0.01 + 0.192 / 3))
    assert d.level == 0.05
    assert replace(d, family_size=8).level == pytest.approx(0.05 / 8)
    assert replace(d, diff_within_var=0.3).within_var == 0.3


def test_continuous_mde_matches_statsmodels_and_the_normal_formula():
    # outcome_var given: a pure shift, no binary variance growth, so MDE = standardized effect x task sd
    d = Design(tasks=200, trials=2, family_size=4, outcome_var=0.2, icc=0.3, pair_corr=0.4, effect_sd=0.05)
    es = TTestPower().solve_power(effect_size=None, nobs=200, alpha=0.05 / 4, power=0.8)
    assert mde(d) == pytest.approx(es * d.task_sd, rel=1e-5)
    z = stats.norm.ppf(1 - 0.05 / 8) + stats.norm.ppf(0.8)
    assert mde(d) == pytest.approx(z * d.task_sd / math.sqrt(200), rel=0.02)
    assert power_at(d, -_mde(d)) == pytest.approx(0.8, abs=1e-5)
    assert power_at(d, 0.0) == pytest.approx(0.05 / 4, rel=1e-3)


def test_t_power_is_statsmodels_ttest_power():
    """``_t_power`` is statsmodels' ``TTestPower.power`` written with the scipy.special calls it makes (so a report
    need not import statsmodels' power module): the same numbers over tasks, effects and levels, NaN fallback aside."""
    from moodbench.analysis._power import _t_power

    solver = TTestPower()
    for nobs in (2, 3, 5, 8, 20, 50, 200, 1000):
        for es in (0.0, 0.01, 0.1, 0.3, 0.8, 1.5, 4.0):
            for level in (0.05, 0.05 / 4, 0.05 / 40, 0.001):
                ref = float(solver.power(effect_size=es, nobs=nobs, alpha=level))
                if math.isfinite(ref):
                    assert _t_power(es, nobs, level) == pytest.approx(ref, rel=1e-12, abs=1e-15), (nobs, es, level)
    assert _t_power(40.0, 1000, 0.05) == pytest.approx(1.0)  # noncentral-t NaN region: the normal fallback


def test_issue_example_fifty_tasks_three_trials():
    """The issue: 50 tasks x 3 trials at a baseline/variant correlation of 0.5 detects ~10-point drops at best."""
    d = Design(tasks=50, trials=3, baseline_success=0.5, icc=0.0, pair_corr=0.5)
    assert 0.10 < _mde(d) < 0.14


def test_mde_monotone_in_the_design():
    base = Design(tasks=40, trials=3, family_size=8, baseline_success=0.65, icc=0.5, pair_corr=0.3, effect_sd=0.05)
    assert _mde(replace(base, tasks=80)) < _mde(base) < _mde(replace(base, tasks=20))
    assert _mde(replace(base, trials=5)) < _mde(base) < _mde(replace(base, trials=1))
    assert _mde(replace(base, family_size=1)) < _mde(base) < _mde(replace(base, family_size=40))
    assert _mde(replace(base, effect_sd=0.0)) < _mde(base)
    assert _mde(replace(base, power=0.9)) > _mde(base)


def test_below_the_minimum_design_there_is_no_mde():
    d = Design(tasks=MIN_TASKS - 1, trials=3)
    assert mde(d) is None and power_at(d, -0.3) is None and not d.claimable
    assert mde(replace(d, tasks=MIN_TASKS)) is not None
    few_pairs = Design(tasks=MIN_TASKS, trials=max(1, MIN_PAIRS // MIN_TASKS - 1))
    assert few_pairs.tasks * few_pairs.trials < MIN_PAIRS and mde(few_pairs) is None
    unreachable = Design(tasks=MIN_TASKS, trials=3, baseline_success=0.02, icc=0.9, effect_sd=0.3)
    assert unreachable.claimable and unreachable.to_dict()["mde"] is None  # losing every success is not enough


def test_a_large_drop_can_shrink_the_within_variance():
    """Without seed sharing the variant's own Bernoulli variance falls as its success rate falls."""
    d = Design(tasks=40, trials=1, baseline_success=0.5, icc=0.2, pair_corr=0.0)
    p2 = 0.2 * 0.25 + 0.25  # E[p^2]
    q_var = 0.22 * 0.5 - 0.22**2 * p2  # E[q(1-q)] with q = 0.22 p
    between = 0.39**2 * 0.05 / 0.25
    assert task_sd_at(d, -0.39) == pytest.approx(math.sqrt((0.5 - p2) + q_var + between))


def test_binary_variance_growth_matches_monte_carlo():
    """task_sd_at: Beta task rates, a drop proportional to each task's rate, pairs sharing the seed w.p. pair_corr."""
    p_bar, icc, c, m, drop = 0.6, 0.4, 0.3, 3, 0.15
    d = Design(tasks=40, trials=m, baseline_success=p_bar, icc=icc, pair_corr=c)
    rng = np.random.default_rng(0)
    s = 1 / icc - 1
    p = rng.beta(p_bar * s, (1 - p_bar) * s, size=300_000)
    for effect in (0.0, drop):
        q = p * (1 - effect / p_bar)
        ub = rng.random((p.size, m))
        uv = np.where(rng.random((p.size, m)) < c, ub, rng.random((p.size, m)))
        diff = ((uv < q[:, None]).astype(float) - (ub < p[:, None])).mean(axis=1)
        assert diff.mean() == pytest.approx(-effect, abs=0.003)
        assert task_sd_at(d, -effect) == pytest.approx(diff.std(), rel=0.01)
    assert task_sd_at(d, -drop) > d.task_sd  # the growth that ignoring it would overstate power by


def test_power_at_mde_by_simulation_small():
    """A quick version of the calibration benchmark's check: power at the MDE is ~0.8 by simulation."""
    g, m, p_bar, icc, c = 30, 3, 0.6, 0.4, 0.3
    d = Design(tasks=g, trials=m, baseline_success=p_bar, icc=icc, pair_corr=c)
    target = _mde(d)
    rng = np.random.default_rng(1)
    s = 1 / icc - 1
    cl = np.repeat(np.arange(g), m)
    hits, reps = 0, 400
    for _ in range(reps):
        p = rng.beta(p_bar * s, (1 - p_bar) * s, size=g)
        q = p * (1 - target / p_bar)
        ub = rng.random((g, m))
        uv = np.where(rng.random((g, m)) < c, ub, rng.random((g, m)))
        e = paired_effect((ub < p[:, None]).astype(float).ravel(), (uv < q[:, None]).astype(float).ravel(), cl.tolist())
        assert e.p is not None and e.diff is not None
        hits += e.p < 0.05 and e.diff < 0
    se = math.sqrt(0.8 * 0.2 / reps)
    assert abs(hits / reps - 0.8) < 0.05 + 3 * se


def test_design_from_pilot_hand_example():
    base = {"a": [1, 1, 0], "b": [0, 0, 0], "c": [1, 1, 1]}
    d = design_from_pilot(base)
    within = (2 / 3) / 6  # sum of squares 2/3 (task a only) over 3 x (3 - 1) degrees of freedom
    means = np.array([2 / 3, 0, 1])
    between = means.var(ddof=1) - within / 3
    assert d.baseline_success == pytest.approx(means.mean())
    assert d.outcome_var is None  # 0/1 rewards: binary variance model, growth of a real drop included
    assert d.icc == pytest.approx(between / (within + between))
    assert d.within_var == pytest.approx(2 * within)
    assert (d.tasks, d.trials, d.effect_sd, d.pair_corr) == (3, 3, 0.0, 0.0)
    diffs = {"a": [0, -1, 0], "b": [0, 0, 0], "c": [-1, -1, 0]}
    d2 = design_from_pilot(base, diffs, tasks=40, family_size=8)
    d_within = ((2 / 3) + 0 + (2 / 3)) / 6  # sums of squares of a and c, 3 x 2 degrees of freedom
    d_between = max(0.0, float(np.var([-1 / 3, 0, -2 / 3], ddof=1)) - d_within / 3)
    assert d2.within_var == pytest.approx(d_within)
    assert d2.effect_sd == pytest.approx(math.sqrt(d_between))
    assert d2.pair_corr == pytest.approx(max(0.0, 1 - d_within / (2 * within)))
    assert (d2.tasks, d2.family_size) == (40, 8)


def test_design_from_pilot_fractional_rewards_keep_their_variance():
    base = {"a": [0.5, 1.0], "b": [0.0, 0.25]}
    d = design_from_pilot(base)
    within = ((0.25**2 * 2) + (0.125**2 * 2)) / 2
    between = max(0.0, float(np.var([0.75, 0.125], ddof=1)) - within / 2)
    assert d.outcome_var == pytest.approx(within + between)
    assert task_sd_at(d, -0.2) == pytest.approx(d.task_sd)  # continuous: a pure shift, no growth


def test_design_from_pilot_recovers_a_large_simulated_pilot():
    g, m, p_bar, icc, c, tau = 5000, 4, 0.65, 0.5, 0.4, 0.2
    rng = np.random.default_rng(7)
    s = 1 / icc - 1
    p = rng.beta(p_bar * s, (1 - p_bar) * s, size=g)
    shift = rng.choice([-tau, tau], size=g)
    q = np.clip(p + shift, 0, 1)
    ub = rng.random((g, m))
    uv = np.where(rng.random((g, m)) < c, ub, rng.random((g, m)))
    b, v = (ub < p[:, None]).astype(float), (uv < q[:, None]).astype(float)
    d = design_from_pilot({i: b[i] for i in range(g)}, {i: v[i] - b[i] for i in range(g)}, tasks=40, trials=m)
    assert d.baseline_success == pytest.approx(p_bar, abs=0.01)
    assert d.icc == pytest.approx(icc, abs=0.03)
    assert d.effect_sd == pytest.approx(np.std(q - p), rel=0.15)  # a difference of two variances: the noisy part
    truth = ((v - b).mean(axis=1)).std()
    assert d.task_sd == pytest.approx(truth, rel=0.03)


def test_power_table_rows():
    rows = power_table(Design(tasks=10, trials=1, family_size=8), tasks=(MIN_TASKS, 80), trials=(2, 3), effects=(0.1, 0.2))
    assert [(r.tasks, r.trials) for r in rows] == [(MIN_TASKS, 2), (MIN_TASKS, 3), (80, 2), (80, 3)]
    for r in rows:
        assert r.mde == pytest.approx(mde(Design(tasks=r.tasks, trials=r.trials, family_size=8)))
        (e1, p1), (e2, p2) = r.powers
        assert p1 is not None and p2 is not None
        assert (e1, e2) == (0.1, 0.2) and p1 < p2
    assert rows[-1].mde is not None and rows[0].mde is not None
    assert rows[-1].mde < rows[0].mde
    assert rows[-1].to_dict()["powers"]["0.2"] == rows[-1].powers[1][1]


def test_design_validation():
    with pytest.raises(ValueError):
        Design(tasks=10, trials=0)
    with pytest.raises(ValueError):
        Design(tasks=10, trials=1, alpha=1.5)
    with pytest.raises(ValueError):
        Design(tasks=10, trials=1, icc=1.2)
    with pytest.raises(ValueError):
        mde(Design(tasks=10, trials=1), direction=0)


# --------------------------------------------------------------------------- moodbench power (the CLI over the same functions)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "power", *args], capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"}
    )


def test_power_command_prints_the_formula_numbers():
    r = _cli(
        "--tasks",
        "20,40,80",
        "--trials",
        "3",
        "--variants",
        "8",
        "--baseline-success",
        "0.65",
        "--icc",
        "0.5",
        "--pair-corr",
        "0.3",
        "--effect-sd",
        "0.05",
        "--effects",
        "0.1,0.2",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["design"]["family_size"] == 8 and data["defaults_used"] == []
    for row in data["rows"]:
        d = Design(tasks=row["tasks"], trials=3, family_size=8, baseline_success=0.65, icc=0.5, pair_corr=0.3, effect_sd=0.05)
        assert row["mde"] == pytest.approx(mde(d))
        assert row["powers"]["0.1"] == pytest.approx(power_at(d, 0.1))
    by_tasks = {row["tasks"]: row["mde"] for row in data["rows"]}
    assert by_tasks[40] == pytest.approx(0.185, abs=0.0015) and by_tasks[80] == pytest.approx(
        0.118, abs=0.0015
    )  # docs/statistics.md
    # several domains add per-domain comparisons to the family; the human table says the same as the JSON
    two = json.loads(_cli("--tasks", "40", "--trials", "3", "--variants", "2", "--domains", "2", "--json").stdout)
    assert two["design"]["family_size"] == 2 * 3 and set(two["defaults_used"]) == {
        "baseline_success",
        "icc",
        "pair_corr",
        "effect_sd",
    }
    text = _cli("--tasks", "10,40", "--trials", "3")
    assert text.returncode == 0 and "too few" in text.stdout and f"{mde(Design(40, 3, 1, effect_sd=0.05)):.3f}" in text.stdout


def test_power_command_rejects_bad_input(tmp_path):
    for args, words in (
        (["--tasks", "forty"], "--tasks must be whole numbers"),
        (["--baseline-success", "1.5"], "baseline"),
        (["--icc", "2"], "icc"),
        (["--effects", "0"], "--effects"),
        (["--alpha", "1"], "--alpha"),
        (["--pilot", str(tmp_path)], "not a run directory"),
    ):
        r = _cli(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert words in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)


def _pilot_run(path, tasks=24, trials=3, seed=5):
    """A run directory written through the store's own API: a baseline and one variant, known success rates."""
    from moodbench.results import ConversationRecord, ExitReason, Store, write_summary

    rng = np.random.default_rng(seed)
    p = rng.beta(1.5, 1.0, size=tasks)
    with Store(path / "results.sqlite") as store:
        store.set_meta(
            "config", {"agent_model": "openai/pilot", "trials": trials, "domains": ["mock"], "variants": ["control", "anger"]}
        )
        store.set_meta(
            "plan",
            {
                "planned": {"mock": {"control": tasks * trials, "anger": tasks * trials}},
                "variants": ["control", "anger"],
                "domains": ["mock"],
            },
        )
        for g in range(tasks):
            for m in range(trials):
                u = rng.random()
                for v, q in (("control", p[g]), ("anger", p[g] * 0.8)):
                    reward = float(u < q)
                    exit_reason = ExitReason("success" if reward else "task_failed")
                    store.insert(
                        ConversationRecord(
                            cell_key=f"mock|t{g}|{v}|{m}",
                            domain="mock",
                            task_id=f"t{g}",
                            variant=v,
                            trial=m,
                            reward=reward,
                            exit_reason=exit_reason,
                        )
                    )
    write_summary(path)
    return path


def test_power_command_from_a_pilot_run(tmp_path):
    from moodbench.analysis import pilot_design
    from moodbench.results import load_run

    run = _pilot_run(tmp_path / "pilot")
    r = _cli("--pilot", str(run), "--tasks", "40,80", "--trials", "3", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    loaded = load_run(run, with_payload=False)
    est = pilot_design(loaded.records, "control", loaded.variants)
    assert data["pilot"]["tasks"] == 24 and data["pilot"]["variants"] == ["anger"]
    assert data["design"]["baseline_success"] == pytest.approx(est.baseline_success)
    assert data["design"]["icc"] == pytest.approx(est.icc) and data["design"]["pair_corr"] == pytest.approx(est.pair_corr)
    assert data["design"]["pair_corr"] > 0.3  # the pilot's pairs share their random draw
    assert data["rows"][0]["mde"] == pytest.approx(mde(replace(est, tasks=40, trials=3)))
    r = _cli("--pilot", str(run), "--baseline", "nope")
    assert r.returncode == 2 and "nope" in r.stderr and "control" in r.stderr
