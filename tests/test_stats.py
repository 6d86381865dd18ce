"""The report's statistics against known answers: hand-computed McNemar and Holm values, bootstrap
intervals that must cover the true paired difference, and the effect/manipulation code on
conversations whose right answer is known by construction."""

from __future__ import annotations

import json
import random
from math import comb

import numpy as np
import pytest
from scipy.stats import binomtest

from moodbench.analysis import MIN_PAIRS, compute_effects, manipulation_check
from moodbench.analysis import _stats as stats
from moodbench.judges import families_of, marker_hits, parse_judge, text_scores
from moodbench.results import ConversationRecord, FidelityFlags, pass_hat_k

# --------------------------------------------------------------------------- McNemar


@pytest.mark.parametrize(
    ("b", "c", "expected"),
    [
        (1, 6, 2 * (1 + 7) / 2**7),  # n=7: P(X<=1) = (C(7,0)+C(7,1))/128 = 8/128; two-sided 0.125
        (0, 5, 2 * 1 / 2**5),  # 0.0625: five discordant pairs all one way is not significant at 0.05
        (2, 10, 2 * (1 + 12 + 66) / 2**12),  # 0.0385742...
        (10, 2, 2 * (1 + 12 + 66) / 2**12),  # symmetric
        (3, 3, 1.0),  # capped at 1
        (0, 0, 1.0),  # no discordant pairs: no evidence
        (0, 1, 1.0),
    ],
)
def test_mcnemar_exact_hand_computed(b: int, c: int, expected: float) -> None:
    assert stats.mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-12)


def test_mcnemar_matches_scipy_binomial_test() -> None:
    for b in range(25):
        for c in range(25):
            if b + c:
                assert stats.mcnemar_exact(b, c) == pytest.approx(binomtest(b, b + c, 0.5).pvalue, rel=1e-9, abs=1e-15)


def test_mcnemar_rejects_negative_counts() -> None:
    with pytest.raises(ValueError):
        stats.mcnemar_exact(-1, 3)


# --------------------------------------------------------------------------- Holm


def test_holm_hand_computed_values_and_order() -> None:
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_keeps_none_caps_at_one_and_is_monotone() -> None:
    adjusted = stats.holm([0.5, None, 0.6, 0.001])
    assert adjusted[1] is None
    assert adjusted == pytest.approx([1.0, None, 1.0, 0.003])
    rng = random.Random(3)
    for _ in range(50):
        ps = [rng.random() ** 3 for _ in range(rng.randint(1, 8))]
        adj = stats.holm(ps)
        order = sorted(range(len(ps)), key=lambda i: ps[i])
        assert all(adj[order[i]] <= adj[order[i + 1]] + 1e-15 for i in range(len(ps) - 1))
        assert all(p <= a <= 1.0 for p, a in zip(ps, adj))
    assert stats.holm([0.04]) == [0.04]  # one test: nothing to correct
    assert stats.holm([]) == []


# --------------------------------------------------------------------------- bootstrap


def _paired_successes(rng: np.random.Generator, n: int, p_base: float, p_var: float) -> tuple[np.ndarray, np.ndarray]:
    """Correlated pairs: one uniform draw per pair decides both outcomes (like a shared task difficulty)."""
    u = rng.random(n)
    return (u < p_base).astype(float), (u < p_var).astype(float)


def test_bootstrap_interval_contains_true_paired_difference() -> None:
    rng = np.random.default_rng(11)
    base, var = _paired_successes(rng, 400, 0.7, 0.5)  # true difference -0.2
    res = stats.paired_bootstrap(base, var, n_resamples=4000, seed=5)
    assert res.n_pairs == 400 and res.n_resamples == 4000
    assert res.mean == pytest.approx(float((var - base).mean()))
    assert res.low < -0.2 < res.high
    assert res.excludes_zero and res.high < 0


def test_bootstrap_is_seeded_and_checks_input() -> None:
    a, b = [1, 0, 1, 1, 0, 1], [0, 0, 1, 0, 0, 1]
    assert stats.paired_bootstrap(a, b, seed=1) == stats.paired_bootstrap(a, b, seed=1)
    assert stats.DEFAULT_RESAMPLES >= 2000
    empty = stats.paired_bootstrap([], [])
    assert empty.n_pairs == 0 and empty.mean is None and not empty.excludes_zero
    with pytest.raises(ValueError):
        stats.paired_bootstrap([1, 0], [1])
    with pytest.raises(ValueError):
        stats.paired_bootstrap([1, 0], [1, 1], clusters=["a"])
    same = stats.paired_bootstrap([1, 0, 1], [1, 0, 1])
    assert (same.low, same.high) == (0.0, 0.0) and not same.excludes_zero


def test_bootstrap_coverage_near_nominal() -> None:
    """Over many synthetic data sets the 95% interval must cover the truth about 95% of the time."""
    rng = np.random.default_rng(2024)
    covered = 0
    reps = 200
    for r in range(reps):
        base, var = _paired_successes(rng, 80, 0.6, 0.45)
        res = stats.paired_bootstrap(base, var, n_resamples=2000, seed=r)
        covered += res.low <= -0.15 <= res.high
    assert 0.88 <= covered / reps <= 0.995


def test_cluster_bootstrap_covers_when_trials_are_correlated() -> None:
    """Trials of one task share its difficulty: resampling tasks keeps coverage, resampling pairs undercovers."""
    rng = np.random.default_rng(7)
    reps, tasks, trials = 150, 25, 4
    cover_cluster = cover_naive = 0
    for r in range(reps):
        effect = rng.normal(-0.1, 0.3, size=tasks)  # per-task effect; truth is the mean over the task population
        diffs = np.repeat(effect, trials) + rng.normal(0, 0.05, size=tasks * trials)
        clusters = np.repeat(np.arange(tasks), trials)
        zeros = np.zeros_like(diffs)
        c = stats.paired_bootstrap(zeros, diffs, clusters.tolist(), n_resamples=2000, seed=r)
        n = stats.paired_bootstrap(zeros, diffs, None, n_resamples=2000, seed=r)
        cover_cluster += c.low <= -0.1 <= c.high
        cover_naive += n.low <= -0.1 <= n.high
        assert c.n_clusters == tasks and n.n_clusters == tasks * trials
    assert cover_cluster / reps >= 0.88
    assert cover_naive < cover_cluster  # the reason the report clusters by task


# --------------------------------------------------------------------------- noise floor, pass^k


def test_noise_floor_hand_computed() -> None:
    rewards = {"A": {0: 1.0, 1: 0.0}, "B": {0: 1.0, 1: 1.0}, "C": {0: 0.0, 1: 0.0}, "D": {0: 1.0, 1: 0.0}}
    nf = stats.noise_floor(rewards)
    assert nf["mean_abs_diff"] == pytest.approx(0.5)  # trial 0 mean 0.75, trial 1 mean 0.25
    assert nf["flip_rate"] == pytest.approx(0.5)  # A and D flip
    three = stats.noise_floor({"A": {0: 1.0, 1: 1.0, 2: 0.0}, "B": {0: 0.0, 1: 0.0, 2: 0.0}})
    # pairs (0,1): 0; (0,2): 0.5; (1,2): 0.5 -> mean 1/3; flips: A in (0,2) and (1,2) = 2 of 6
    assert three["mean_abs_diff"] == pytest.approx(1 / 3)
    assert three["max_abs_diff"] == pytest.approx(0.5)
    assert three["flip_rate"] == pytest.approx(2 / 6)
    assert stats.noise_floor({"A": {0: 1.0}})["mean_abs_diff"] is None  # one trial: no floor


def test_pass_hat_k_hand_computed() -> None:
    by_task = {"a": [True, True, False], "b": [False, False, False], "c": [True, True, True]}
    assert pass_hat_k(by_task, 1) == pytest.approx((2 / 3 + 0 + 1) / 3)
    assert pass_hat_k(by_task, 2) == pytest.approx((comb(2, 2) / comb(3, 2) + 0 + 1) / 3)
    assert pass_hat_k(by_task, 3) == pytest.approx(1 / 3)
    assert pass_hat_k(by_task, 4) is None  # more than the trials run


def test_pass_hat_k_stops_at_the_fewest_trials_like_tau2() -> None:
    # {3/3, 2/2}: with tasks dropped per k this gave 0.5, 0.5, 1.0 (pass^3 above pass^1); tau2 stops at k = 2
    by_task = {"a": [True, True, True], "b": [False, False]}
    assert [pass_hat_k(by_task, k) for k in (1, 2, 3)] == [pytest.approx(0.5), pytest.approx(0.5), None]


# --------------------------------------------------------------------------- effects on known conversations


def _conv(i: int, task: str, variant: str, trial: int, reward: float | None, *, exit_reason: str | None = None,
          flagged: bool = False, user: str = "Please help me with my order.") -> ConversationRecord:
    exit_reason = exit_reason or ("success" if reward == 1.0 else "task_failed")
    sim = {"messages": [{"role": "assistant", "content": "Hi! How can I help you today?"}, {"role": "user", "content": user}]}
    return ConversationRecord(id=i, cell_key=f"mock|{task}|{variant}|{trial}", domain="mock", task_id=task, variant=variant,
                              trial=trial, reward=reward, exit_reason=exit_reason, wall_seconds=1.0, simulation=sim,
                              flags=FidelityFlags(any=flagged, user_echo=flagged))


def _known_run() -> list[ConversationRecord]:
    """12 tasks x 1 trial. 'worse' fails 6 tasks control solves; 'same' mirrors control; 'few' has 3 pairs."""
    convs, i = [], 0
    for t in range(12):
        task = f"t{t}"
        ctrl = 1.0 if t < 9 else 0.0
        convs.append(_conv(i := i + 1, task, "control", 0, ctrl))
        convs.append(_conv(i := i + 1, task, "worse", 0, 0.0 if t < 6 else ctrl, flagged=t < 2))
        convs.append(_conv(i := i + 1, task, "same", 0, ctrl))
        if t < 3:
            convs.append(_conv(i := i + 1, task, "few", 0, ctrl))
        else:
            convs.append(_conv(i := i + 1, task, "few", 0, None, exit_reason="llm_error"))
    return convs


def test_effects_known_answer() -> None:
    eff = compute_effects(_known_run(), "control", ["control", "worse", "same", "few"], ["mock"], n_resamples=2000)
    allc = eff["scopes"]["all"]["subsets"]["all"]
    w = allc["worse"]
    assert w["n_pairs"] == 12 and w["n_tasks"] == 12
    assert w["diff"]["mean"] == pytest.approx(-0.5)
    assert w["diff"]["high"] < 0
    assert w["relative_pct"] == pytest.approx(100 * (0.25 - 0.75) / 0.75)
    assert (w["baseline_only_success"], w["variant_only_success"]) == (6, 0)
    assert w["mcnemar_p"] == pytest.approx(2 / 2**6)
    raw = [allc[v]["mcnemar_p"] for v in ("worse", "same", "few")]
    assert [allc[v]["mcnemar_p_holm"] for v in ("worse", "same", "few")] == pytest.approx(stats.holm(raw))
    assert w["mcnemar_p_holm"] == pytest.approx(3 * 2 / 2**6)
    assert "Lower reward" in w["verdict"]
    s = allc["same"]
    assert s["diff"]["mean"] == 0 and "No detectable difference" in s["verdict"]
    f = allc["few"]
    assert f["n_pairs"] == 3 < MIN_PAIRS and not f["enough_pairs"]
    assert f["verdict"].startswith("Too few pairs for a conclusion")
    assert eff["excluded"] == {"control": 0, "worse": 0, "same": 0, "few": 9}
    unflagged = eff["scopes"]["all"]["subsets"]["unflagged"]["worse"]
    assert unflagged["n_pairs"] == 10 and unflagged["diff"]["mean"] == pytest.approx(-0.4)
    assert eff["scopes"]["mock"]["subsets"]["all"]["worse"]["diff"]["mean"] == pytest.approx(-0.5)


# --------------------------------------------------------------------------- manipulation scores


def test_marker_lexicon_matches_words_not_substrings() -> None:
    hits = marker_hits("This is ridiculous! I want a MANAGER right now. I'm worried, are you sure?")
    assert hits["frustration"] == 1 and hits["anger"] == 2 and hits["anxiety"] >= 2
    assert marker_hits("against the manageress")["frustration"] == 0  # 'again' inside 'against' is not a hit
    assert marker_hits("against the manageress")["anger"] == 0
    assert marker_hits("I am so frustrated and frustrating")["frustration"] == 2  # stems with '*'


def test_families_of_specs() -> None:
    assert families_of("anger:severe+confusion") == ["anger", "confusion"]
    assert families_of("frustration") == ["frustration"]
    assert set(families_of("my_custom_mood")) >= {"frustration", "anger", "anxiety", "confusion"}


def test_text_scores_see_anger() -> None:
    calm = text_scores(["Hello, I would like to change my address please. Thank you."])
    angry = text_scores(["This is unacceptable and ridiculous! I demand a manager right now, this is terrible service."])
    assert angry["vader_compound"] < calm["vader_compound"]
    assert angry["vader_neg"] > calm["vader_neg"]
    assert angry["marker_rate"]["anger"] > 0 == calm["marker_rate"]["anger"]
    assert text_scores([])["vader_compound"] is None


def test_manipulation_check_passes_and_flags() -> None:
    convs, i = [], 0
    for t in range(12):
        convs.append(_conv(i := i + 1, f"t{t}", "control", 0, 1.0, user="I need to update my order, please."))
        convs.append(_conv(i := i + 1, f"t{t}", "anger", 0, 1.0,
                           user="This is unacceptable! I demand a manager right now. I need to update my order."))
        convs.append(_conv(i := i + 1, f"t{t}", "anxiety", 0, 1.0, user="I need to update my order, please."))
    out = manipulation_check(convs, "control", ["control", "anger", "anxiety"], n_resamples=2000)
    assert out["variants"]["anger"]["status"] == "passed"
    assert out["variants"]["anger"]["diffs"]["markers_own"]["moved"]
    assert out["variants"]["anxiety"]["status"] == "failed"
    assert "do NOT differ" in out["variants"]["anxiety"]["verdict"]
    short = manipulation_check(convs[:9], "control", ["control", "anger"], n_resamples=500)
    assert short["variants"]["anger"]["status"] == "too_few"


def test_parse_judge_reply() -> None:
    assert parse_judge('Sure! {"frustration": 7, "anger": 12, "anxiety": "x"}') == {"frustration": 7.0, "anger": 10.0}
    assert parse_judge("no json here") is None
    assert parse_judge(json.dumps({"other": 3})) is None
    assert parse_judge(None) is None
