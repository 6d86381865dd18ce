"""The answer under real conditions, on stored conversations whose right answer is known by construction.

Missing conversations (exclusions compared with the baseline, bounds, a claim withdrawn when it depends on what
the exclusions hid), the one family of a report (``ReportFamily``), dose trends among the emotional levels only,
zero spread, pass^k on one task set, and planning across task-effect spreads (``plan_summary``, ``power_design``,
``moodbench power`` and ``run --dry-run``). The calibration of the same rules is ``tests/test_calibration.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from moodbench.analysis import (
    MIN_PAIRS,
    Design,
    ReportFamily,
    descriptive,
    dose_response,
    dose_response_table,
    mde,
    mde_by_spread,
    mde_note,
    missing_bounds,
    paired_effect,
    plan_summary,
    power_at,
    power_design,
    reward_effects,
    trend_reason,
)
from moodbench.analysis._power import task_sd_at
from moodbench.results import ConversationRecord, ConversationStats, ExitReason
from scripted import cli_env


def _conv(task: int, variant: str, trial: int, reward: float | None, *, turns: int = 4) -> ConversationRecord:
    exit_reason = "llm_error" if reward is None else ("success" if reward == 1.0 else "task_failed")
    sim = {"messages": [{"role": "assistant", "content": "Hi!"}, {"role": "user", "content": "Please help me with my order."}]}
    return ConversationRecord(
        cell_key=f"mock|t{task}|{variant}|{trial}",
        domain="mock",
        task_id=f"t{task:02d}",
        variant=variant,
        trial=trial,
        reward=reward,
        exit_reason=ExitReason(exit_reason),
        wall_seconds=1.0,
        simulation=sim,
        stats=ConversationStats(turns=turns),
    )


def _row(out: dict, variant: str, subset: str = "all") -> dict:
    return next(e for e in out["effects"] if e["variant"] == variant and e["subset"] == subset and e["domain"] == "all")


# --------------------------------------------------------------------------- missing conversations


def _excluded_failures_run() -> list[ConversationRecord]:
    """40 tasks x 2 trials. control solves tasks 0-19 only. 'angry' solves trial 0 of tasks 0-29 and trial 1 of tasks
    16-19; trial 1 of tasks 0-15 ended in llm_error after long conversations (16 of 80 excluded, none of control's).
    On the scored pairs angry looks better (+0.125, tasks 20-29 gain a success); with its excluded conversations as
    failures it is worse (-0.075): the claim depends on what the exclusions hid."""
    convs = []
    for t in range(40):
        for trial in range(2):
            convs.append(_conv(t, "control", trial, 1.0 if t < 20 else 0.0))
            if t < 16 and trial == 1:
                convs.append(_conv(t, "angry", trial, None, turns=14))
            elif t < 20:
                convs.append(_conv(t, "angry", trial, 1.0))
            else:
                convs.append(_conv(t, "angry", trial, 1.0 if (t < 30 and trial == 0) else 0.0))
            convs.append(_conv(t, "calm", trial, 1.0 if t < 20 or (t < 30 and trial == 0) else 0.0))  # same gain, nothing lost
    return convs


def test_a_claim_that_depends_on_the_excluded_conversations_is_withdrawn() -> None:
    out = reward_effects(_excluded_failures_run(), "control", ["control", "angry", "calm"], ["mock"])
    angry, calm = _row(out, "angry"), _row(out, "calm")
    assert angry["n_pairs"] == 64 and angry["diff"] == pytest.approx(10 * 0.5 / 40) and angry["p"] < 0.01
    x = angry["exclusions"]
    assert (x["excluded_variant"], x["excluded_baseline"], x["pairs_run"]) == (16, 0, 80)
    assert x["concerns"] == ["exclusions_differ", "exclusions_outcome"] and x["p_rate"] < 0.001 and x["p_turns_longer"] < 0.001
    b = x["bounds"]
    assert b["as_failures"]["diff"] == pytest.approx((10 * 0.5 - 16 * 0.5) / 40)  # the sign flips
    assert b["as_successes"]["diff"] == pytest.approx(10 * 0.5 / 40)
    assert b["ci_bounds"][0] <= b["as_failures"]["ci"][0] and b["ci_bounds"][1] >= b["as_successes"]["ci"][1]
    # the complete-case p alone would claim 'higher'; the family claims only what holds at every value the excluded had
    assert (
        angry["claim"] == "no_difference" and angry["p_bounded"] == 1.0 and "not stated as a finding" in angry["claim_withdrawn"]
    )
    # the same gain with nothing lost is claimed; its MDE is the plain one, angry's adds the exclusion share
    assert calm["claim"] == "higher" and calm["exclusions"] is None and calm["claim_withdrawn"] is None
    assert angry["mde"] is not None and calm["mde"] is not None and angry["mde"] > calm["mde"]


def test_report_caveats_name_the_exclusions() -> None:
    from moodbench.report._builder import _missing_caveats

    out = reward_effects(_excluded_failures_run(), "control", ["control", "angry", "calm"], ["mock"])
    seen: list[tuple[str, str, str]] = []
    _missing_caveats(_row(out, "angry"), lambda level, kind, text: seen.append((level, kind, text)))
    kinds = [k for _, k, _ in seen]
    assert kinds == ["exclusions_differ", "exclusions_outcome", "claim_withdrawn"]
    assert "16/80" in seen[0][2] and "as failures \u2212" in seen[0][2] and "14.0 vs" in seen[1][2]


def test_missing_bounds_bracket_every_imputation() -> None:
    rng = np.random.default_rng(3)
    b = (rng.random(90) < 0.6).astype(float)
    v = (rng.random(90) < 0.5).astype(float)
    cl = np.repeat(np.arange(30), 3)
    b[[1, 7]] = np.nan
    v[[2, 3, 50]] = np.nan
    mb = missing_bounds(b.tolist(), v.tolist(), cl.tolist())
    assert mb is not None and (mb.excluded_baseline, mb.excluded_variant) == (2, 3)
    assert mb.worst.diff is not None and mb.best.diff is not None
    for _ in range(20):  # any values the missing outcomes could have had give an effect between the bounds
        fill_b, fill_v = np.where(np.isnan(b), rng.integers(0, 2, 90), b), np.where(np.isnan(v), rng.integers(0, 2, 90), v)
        filled = paired_effect(fill_b, fill_v, cl.tolist()).diff
        assert filled is not None
        assert mb.worst.diff - 1e-12 <= filled <= mb.best.diff + 1e-12
    assert missing_bounds([1.0, 0.0], [1.0, 1.0], ["a", "b"]) is None


# --------------------------------------------------------------------------- one family per report


def test_one_family_holm_over_every_section_and_descriptive_rows() -> None:
    fam = ReportFamily(0.05)
    rows = [{"id": i} for i in range(4)]
    fam.add("reward/all", rows[0], p=0.01, estimate=-0.2, se=0.05, df=39)
    fam.add("dose/reward", rows[1], p=0.03, estimate=-0.05, se=0.02, df=39)
    fam.add("reward/all", rows[2], p=0.001, estimate=0.1, se=0.03, df=39, reason="10 tasks and 20 pairs; ...")  # too_few
    fam.add_same("reward/unflagged", rows[3], rows[0])
    later = descriptive({"claim": "lower", "p_adjusted": 0.01}, "context only")
    summary = fam.resolve()
    assert summary["size"] == 2 and summary["sections"]["reward/all"] == {"members": 1, "rows": 2}
    # Holm over 2: 0.01 x 2 = 0.02 -> lower; 0.03 x 1, running max 0.03 -> lower
    assert (rows[0]["claim"], rows[0]["p_adjusted"]) == ("lower", pytest.approx(0.02))
    assert (rows[1]["claim"], rows[1]["p_adjusted"]) == ("lower", pytest.approx(0.03))
    assert rows[2]["claim"] == "too_few" and rows[2]["p_adjusted"] is None and rows[2]["no_claim_reason"].startswith("10 tasks")
    assert rows[3]["claim"] == "lower" and rows[3]["p_adjusted"] == rows[0]["p_adjusted"] and rows[3]["same_test_as"]
    assert all(r["family_size"] == 2 and r["claim_family"] == "report" for r in rows)
    lo, hi = rows[0]["ci_family"]
    assert lo < -0.2 < hi < 0
    assert "claim" not in later and later["descriptive"] == "context only"
    with pytest.raises(RuntimeError):
        fam.add("late", {}, p=0.5, estimate=0.0)


def test_bounds_enter_the_p_as_an_intersection_union_test() -> None:
    fam = ReportFamily(0.05)
    keep: dict[str, Any] = {}
    flip: dict[str, Any] = {}
    weak: dict[str, Any] = {}
    fam.add("reward/all", keep, p=0.001, estimate=-0.3, bounds=((-0.35, 0.0005), (-0.25, 0.004)))
    fam.add("reward/all", flip, p=0.001, estimate=-0.3, bounds=((-0.35, 0.0005), (0.02, 0.8)))
    fam.add("reward/all", weak, p=0.001, estimate=-0.3, bounds=((-0.35, 0.0005), (-0.1, 0.2)))
    fam.resolve()
    assert keep["claim"] == "lower" and keep["p_bounded"] == 0.004 and keep["claim_withdrawn"] is None
    assert flip["claim"] == "no_difference" and flip["p_bounded"] == 1.0 and flip["claim_withdrawn"]
    assert weak["claim"] == "no_difference" and weak["p_bounded"] == 0.2 and weak["claim_withdrawn"]


# --------------------------------------------------------------------------- dose trends among the emotional levels


def _dose_run(tasks: int, trials: int, drop_per_level: tuple[float, float, float], seed: int = 1) -> list[ConversationRecord]:
    rng = np.random.default_rng(seed)
    variants = ["control", "frustration:mild", "frustration", "frustration:severe"]
    p = rng.uniform(0.3, 0.9, size=tasks)
    convs = []
    for t in range(tasks):
        for trial in range(trials):
            u = rng.random()
            for v, drop in zip(variants, (0.0, *drop_per_level)):
                convs.append(_conv(t, v, trial, float(u < p[t] - drop)))
    return convs


def test_an_equal_drop_at_every_level_is_no_trend() -> None:
    """The baseline is not level 0 of the slope: -0.3 at mild, moderate and severe is a reward effect, not a trend."""
    variants = ["control", "frustration:mild", "frustration", "frustration:severe"]
    rows = dose_response_table(_dose_run(40, 3, (0.3, 0.3, 0.3)), "control", variants)
    reward = next(r for r in rows if r["outcome"] == "reward")
    assert reward["slope"] == pytest.approx(0.0) and reward["claim"] == "too_few"  # shared draws: no spread at all
    assert "same value at every level" in reward["no_claim_reason"]
    assert reward["levels"][0]["mean"] > reward["levels"][1]["mean"] == reward["levels"][3]["mean"]
    grows = dose_response_table(_dose_run(40, 3, (0.1, 0.3, 0.5)), "control", variants)
    trend = next(r for r in grows if r["outcome"] == "reward")
    assert trend["slope"] < 0 and trend["claim"] == "lower" and trend["n_obs"] == 3 * 120


def test_trend_gate_is_the_reward_claims_minimum() -> None:
    variants = ["control", "frustration:mild", "frustration", "frustration:severe"]
    rows = dose_response_table(_dose_run(25, 1, (0.1, 0.3, 0.5)), "control", variants)  # 25 conversations per level < 40
    reward = next(r for r in rows if r["outcome"] == "reward")
    assert reward["claim"] == "too_few" and f">= {MIN_PAIRS} conversations" in reward["no_claim_reason"]
    # floating-point residue is not a slope: identical values at every level give no p
    t = dose_response([1.0, 2.0, 3.0] * 60, [0.1 + 0.2] * 180, [i // 3 for i in range(180)])
    reason = trend_reason(t)
    assert t.p is None and t.degenerate == "zero_spread" and reason is not None and "no spread" in reason


# --------------------------------------------------------------------------- zero spread and MDE


def test_floor_and_ceiling_never_print_certainty() -> None:
    convs = [_conv(t, v, k, 0.0) for t in range(24) for k in range(2) for v in ("control", "angry")]
    out = reward_effects(convs, "control", ["control", "angry"], ["mock"])
    row = _row(out, "angry")
    assert row["claim"] == "too_few" and row["ci"] == [None, None] and row["p"] is None and "floor" in row["no_claim_reason"]
    assert row["mde"] is None and "floor" in row["mde_note"] and "floor" in out["designs"][0]["mde_note"]
    assert all(p["ci"] == [None, None] and p["p"] is None for p in out["pass_hat_k"])
    assert mde(Design(40, 3, baseline_success=0.5, icc=0.0, outcome_var=0.0, diff_within_var=0.0)) is None
    note = mde_note(Design(40, 3, baseline_success=0.5, icc=0.0, outcome_var=0.0, diff_within_var=0.0))
    assert note is not None and "no variance" in note


# --------------------------------------------------------------------------- planning across spreads


def test_drop_share_variance_matches_monte_carlo() -> None:
    """A drop on half the tasks (each dropping twice as much): the between-task variance task_sd_at adds."""
    d = Design(tasks=40, trials=3, baseline_success=0.6, icc=0.3, pair_corr=0.0, drop_share=0.5)
    rng = np.random.default_rng(0)
    s = 1 / d.icc - 1
    n, drop = 400_000, 0.12
    p = rng.beta(0.6 * s, 0.4 * s, size=n)
    hit = rng.random(n) < 0.5
    q = p * (1 - hit * drop / (0.5 * 0.6))
    within = (p * (1 - p) + q * (1 - q)).mean()
    sim = np.sqrt(np.var(q - p) + within / 3)
    assert task_sd_at(d, -drop) == pytest.approx(sim, rel=0.02)
    spread_mde, uniform_mde = mde(d), mde(replace(d, drop_share=1.0))
    assert spread_mde is not None and uniform_mde is not None
    assert spread_mde > uniform_mde and power_at(d, -spread_mde) == pytest.approx(0.8, abs=1e-4)


def test_plan_summary_states_assumptions_and_spreads() -> None:
    plan = plan_summary(40, 3, ["control", "frustration", "anger"], ["retail"])
    assert plan["mde"] == pytest.approx(mde(plan["design"]))
    assert plan["assumptions"]["assumed"] == ["baseline_success", "icc", "pair_corr", "effect_sd", "drop_share"]
    text = " ".join(plan["lines"])
    assert "pair corr 0" in text and "effect sd 0.05" in text and "icc 0.5" in text and "family of 2" in text
    by = {(r["effect_sd"], r["drop_share"]): r["mde"] for r in plan["by_spread"]}
    assert by[(0.0, 1.0)] < by[(0.05, 1.0)] < by[(0.2, 1.0)] and by[(0.05, 0.5)] > by[(0.05, 1.0)]
    assert rows_equal(mde_by_spread(plan["design"]), plan["by_spread"])
    few = plan_summary(10, 1, 1)
    assert few["mde"] is None and "below the smallest design" in few["lines"][0]


def rows_equal(a: list[dict], b: list[dict]) -> bool:
    return [(r["effect_sd"], r["drop_share"], r["mde"]) for r in a] == [(r["effect_sd"], r["drop_share"], r["mde"]) for r in b]


def test_power_design_given_defaults_and_checks() -> None:
    d, info = power_design(tasks=40, trials=3, variants=2, domains=1, alpha=0.05, power=0.8, icc=0.3, drop_share=0.5)
    assert (d.icc, d.drop_share, d.family_size, d.effect_sd) == (0.3, 0.5, 2, 0.05)
    assert info["defaults_used"] == ["baseline_success", "pair_corr", "effect_sd"] and info["pilot"] is None
    with pytest.raises(ValueError):
        power_design(tasks=40, trials=3, variants=1, domains=1, alpha=0.05, power=0.8, baseline_success=1.0)


def test_power_command_shows_the_spread_table() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "moodbench.cli", "power", "--tasks", "40", "--trials", "3", "--variants", "8", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**cli_env(), "COLUMNS": "200"},
    )
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    rows = data["mde_by_spread"]["rows"]
    d = Design(40, 3, 8, baseline_success=0.5, icc=0.5, effect_sd=0.05)
    assert {(x["effect_sd"], x["drop_share"]) for x in rows} == {(s, h) for s in (0.0, 0.05, 0.1, 0.2) for h in (1.0, 0.5)}
    assert next(x["mde"] for x in rows if x == {**x, "effect_sd": 0.1, "drop_share": 0.5}) == pytest.approx(
        mde(replace(d, effect_sd=0.1, drop_share=0.5))
    )
    text = subprocess.run(
        [sys.executable, "-m", "moodbench.cli", "power", "--tasks", "40", "--trials", "3", "--drop-share", "0.5"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**cli_env(), "COLUMNS": "200"},
    )
    assert text.returncode == 0 and "in 50% of the tasks" in text.stdout and "drop share 0.5" in text.stdout + text.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "moodbench.cli", "power", "--drop-share", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        env=cli_env(),
    )
    assert bad.returncode == 2 and "drop_share" in bad.stderr and "Traceback" not in bad.stderr


def _store_run(path, rows: list[ConversationRecord], variants: list[str], tasks: int, trials: int):
    from moodbench.results import Store, write_summary

    with Store(path / "results.sqlite") as store:
        store.set_meta("config", {"agent_model": "openai/answer", "trials": trials, "domains": ["mock"], "variants": variants})
        store.set_meta(
            "plan", {"planned": {"mock": {v: tasks * trials for v in variants}}, "variants": variants, "domains": ["mock"]}
        )
        for r in rows:
            store.insert(r)
    write_summary(path)
    return path


def test_report_json_end_to_end_floor_and_exclusions(tmp_path) -> None:
    """Through the real CLI on real SQLite stores: a run at the floor says why it cannot claim, and a run whose
    variant lost its failing conversations shows the exclusions, the bounds and the one family."""
    floor = _store_run(
        tmp_path / "floor",
        [_conv(t, v, k, 0.0) for t in range(30) for k in range(2) for v in ("control", "anger")],
        ["control", "anger"],
        30,
        2,
    )
    r = subprocess.run(
        [sys.executable, "-m", "moodbench.cli", "report", str(floor), "--json"],
        capture_output=True,
        text=True,
        timeout=180,
        env=cli_env(),
    )
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    text = data["bottom_lines"][0]["text"]
    assert "No claim possible: anger: every task failed on both sides (all at the floor)" in text and "Too few" not in text
    assert data["designs"][0]["mde"] is None and "floor" in data["designs"][0]["mde_note"]
    assert all(e["p"] is None and e["p_adjusted"] is None and e["ci"] == [None, None] for e in data["effects"])
    runs = _store_run(tmp_path / "excl", _excluded_failures_run(), ["control", "angry", "calm"], 40, 2)
    r = subprocess.run(
        [sys.executable, "-m", "moodbench.cli", "report", str(runs), "--json"],
        capture_output=True,
        text=True,
        timeout=180,
        env=cli_env(),
    )
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    angry = next(e for e in data["effects"] if e["variant"] == "angry" and e["subset"] == "all")
    assert angry["claim"] == "no_difference" and angry["claim_withdrawn"] and angry["exclusions"]["excluded_variant"] == 16
    assert {c["kind"] for c in angry["caveats"]} >= {"exclusions_differ", "exclusions_outcome", "claim_withdrawn"}
    assert data["family"]["name"] == "report" and data["family"]["size"] == 2  # angry and calm; unflagged rows are the same tests
    assert "pass_hat_k" in data["family"]["descriptive"] and all("claim" not in p for p in data["pass_hat_k"])
    assert (
        "Not stated as findings" in data["bottom_lines"][0]["text"]
        and "Higher reward with calm" in data["bottom_lines"][0]["text"]
    )
