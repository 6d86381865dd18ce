"""The calibration's coherence rule on scored replies with a known truth (no model needed).

Each sweep here is generated reply by reply, the way a calibration scores them (per task, seed and turn),
with task-level random effects, so the rule meets the noise that made the old point rule give three
different answers for one design.
"""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from moodbench.steer import THRESHOLDS
from moodbench.steer._coherence import decide, judge_one, suggest_tasks
from moodbench.steer._scale_scores import judge_sweep  # a pure function, tested as a unit

TASKS = ["retail:0", "retail:5", "retail:10", "airline:5"]


def _replies(scale: float, rng: random.Random, *, tasks: list[str] = TASKS, seeds: int = 2, turns: int = 3, flag: float = 0.1,
             stop: float = 0.0, repetition: float = 0.01, goal: float = 0.4, ppl: float = 40.0, vader: float = 0.3,
             spread: float = 0.05) -> list[dict[str, Any]]:  # fmt: skip
    """One scale's scored replies: each task gets its own offset (clustered data), each reply its own noise."""
    rows = []
    for task in tasks:
        bump = rng.gauss(0, spread)
        for seed in range(1, seeds + 1):
            stopped = rng.random() < stop
            goal_c = min(1.0, max(0.0, goal + bump + rng.gauss(0, 0.1)))
            for turn in range(turns):
                flagged = rng.random() < min(1.0, max(0.0, flag + bump))
                rows.append({
                    "task": task, "seed": seed, "turn": turn, "reply": "x", "role_confusion": flagged, "echo": False,
                    "empty": False, "refusal": False, "self_repeat": False, "error": None, "stop": stopped and turn == turns - 1,
                    "vader": vader + bump + rng.gauss(0, 0.15), "marker_rate": 0.0, "markers": 0, "words": 12,
                    "repetition": max(0.0, repetition + rng.gauss(0, 0.02)), "goal_overlap": goal_c,
                    "perplexity": ppl * math.exp(rng.gauss(0, 0.2) + bump),
                })  # fmt: skip
    return rows


def _sweep(rng: random.Random, spec: dict[float, dict[str, float]], **kw: Any) -> dict[float, list[dict[str, Any]]]:
    return {scale: _replies(scale, rng, **{**kw, **params}) for scale, params in spec.items()}


def _levels(per_scale: dict[float, list[dict[str, Any]]]) -> tuple[dict[str, float] | None, dict[str, Any], list[str]]:
    n_tasks = len({r["task"] for r in per_scale[0.0]})
    seeds = len({r["seed"] for r in per_scale[0.0]})
    _table, levels, evidence, warnings = judge_sweep(per_scale, n_tasks * seeds, THRESHOLDS, n_tasks=n_tasks, seeds=seeds,
                                                     grid=sorted(per_scale))  # fmt: skip
    return levels, evidence, warnings


def test_one_noisy_scale_no_longer_ends_a_sweep_that_is_coherent_above_it() -> None:
    # the third run: 0.5 flagged 42% vs 20% at 0, 1.0 at 25% and emotional, 1.5 and up word salad
    per_scale = {
        0.0: _replies(0.0, random.Random(1), flag=0.20),
        0.5: _replies(0.5, random.Random(8), flag=0.42, vader=0.0, spread=0.15),
        1.0: _replies(1.0, random.Random(3), flag=0.25, vader=-0.1),
        1.5: _replies(1.5, random.Random(4), flag=0.9, repetition=0.4, ppl=900.0, goal=0.05, vader=-0.3),
        2.0: _replies(2.0, random.Random(5), flag=0.95, repetition=0.5, ppl=5000.0, goal=0.0, vader=-0.4),
    }
    levels, evidence, warnings = _levels(per_scale)
    assert levels is not None and levels["severe"] == 1.0
    assert evidence["bounded_by"]["scale"] == 1.5 and evidence["bounded_by"]["checks"]
    assert [m["scale"] for m in evidence["manipulation"]] == [0.5, 1.0, 1.5, 2.0]
    # the old point rule would have stopped at 0.5 (flagged +22 points > 20): the note says why it did not
    assert any("scale 0.5" in w and "not credibly" in w for w in warnings)


def test_a_coherent_scale_above_an_incoherent_one_is_named_and_counted_incoherent() -> None:
    rng = random.Random(7)
    per_scale = _sweep(rng, {0.0: {}, 0.5: {}, 1.0: {"repetition": 0.5, "ppl": 2000.0}, 1.5: {}})
    d = decide(per_scale, THRESHOLDS)
    assert d.onset == 1.0 and not d.coherent[1.5]
    assert any("scale 1.5 passed on its own" in n for n in d.notes)


def test_the_first_scale_already_incoherent_suggests_smaller_scales_not_cannot_be_steered() -> None:
    rng = random.Random(11)
    per_scale = _sweep(rng, {0.0: {}, 1.0: {"repetition": 0.6, "ppl": 3000.0}, 2.0: {"repetition": 0.7, "ppl": 9000.0}})
    levels, _evidence, warnings = _levels(per_scale)
    assert levels is None
    text = " ".join(warnings)
    assert "--scales 0,0.25,0.5" in text and "cannot be steered" not in text


def test_one_task_is_too_small_to_decide_and_says_what_would_be() -> None:
    rng = random.Random(3)
    per_scale = _sweep(rng, {0.0: {}, 1.0: {"flag": 0.9}}, tasks=["retail:0"])
    levels, evidence, warnings = _levels(per_scale)
    assert levels == {"mild": round(1 / 3, 3), "moderate": round(2 / 3, 3), "severe": 1.0}  # nothing credible with one task
    assert any("too small to decide" in w for w in warnings)
    assert evidence["suggested_design"]["tasks"] >= 2


@pytest.mark.parametrize(
    ("change", "check"),
    [({"flag": 0.9}, "flagged"), ({"stop": 1.0}, "stop"), ({"repetition": 0.5}, "repetition"), ({"goal": 0.0}, "goal_overlap"),
     ({"ppl": 1000.0}, "perplexity")],
)  # fmt: skip
def test_each_check_can_credibly_fail_a_scale_and_only_that_one(change: dict[str, Any], check: str) -> None:
    rng = random.Random(5)
    base = _replies(0.0, rng, tasks=[f"retail:{i}" for i in range(8)])
    same = _replies(1.0, rng, tasks=[f"retail:{i}" for i in range(8)])
    bad = _replies(1.0, rng, tasks=[f"retail:{i}" for i in range(8)], **change)
    assert judge_one(same, base, THRESHOLDS) == (True, [])
    ok, why = judge_one(bad, base, THRESHOLDS)
    assert not ok
    assert len(why) == 1 and (check.split("_")[0] in why[0])


def test_the_manipulation_not_detected_gives_the_design_that_would_detect_it() -> None:
    rng = random.Random(9)
    per_scale = _sweep(rng, {0.0: {}, 1.0: {"vader": 0.28}})
    levels, evidence, warnings = _levels(per_scale)
    assert levels is not None
    assert any("not detectable" in w and "tasks x 2 seeds" in w for w in warnings)
    assert evidence["suggested_design"]["tasks"] > len(TASKS)
    assert suggest_tasks(4, 0.05, 0.1) == 8  # (2.80 * 0.05 / 0.1)^2 * 4 = 7.8 -> 8
    assert suggest_tasks(4, None, 0.1) is None


def test_the_chosen_severe_scale_repeats_itself_across_seeds() -> None:
    """Stability on a known truth: coherent (and emotional) up to 1.0, harm growing from 1.5. Over 30
    repetitions with fresh noise the chosen severe is 1.0 or an adjacent grid scale in >= 80% (the issue's bar)."""
    grid = [0.5, 1.0, 1.5, 2.0, 3.0]
    truth = {0.0: {"flag": 0.15}, 0.5: {"flag": 0.18, "vader": 0.1}, 1.0: {"flag": 0.2, "vader": -0.1},
             1.5: {"flag": 0.5, "repetition": 0.2, "ppl": 120.0, "goal": 0.2, "vader": -0.3},
             2.0: {"flag": 0.7, "repetition": 0.35, "ppl": 600.0, "goal": 0.1},
             3.0: {"flag": 0.8, "repetition": 0.5, "ppl": 3000.0, "goal": 0.05}}  # fmt: skip
    chosen = []
    for rep in range(30):
        levels, _e, _w = _levels(_sweep(random.Random(1000 + rep), truth, spread=0.1))
        chosen.append(levels["severe"] if levels else None)
    near = sum(c is not None and abs(grid.index(c) - grid.index(1.0)) <= 1 for c in chosen)
    assert near / len(chosen) >= 0.8, chosen


def test_a_scale_that_mostly_stopped_is_not_judged_on_a_handful() -> None:
    rng = random.Random(2)
    base = _replies(0.0, rng)
    few = [r for r in _replies(1.0, rng) if r["turn"] == 0]  # a third of the replies
    ok, why = judge_one(few, base, THRESHOLDS)
    assert not ok and any("only 8 scored replies vs 24" in w for w in why)


# ------------------------------------------------------------------ the adaptive scale search (measure_scales)
SALAD: dict[str, Any] = {"flag": 0.9, "repetition": 0.4, "ppl": 900.0, "goal": 0.05, "vader": -0.3}


def _search(truth: dict[float, dict[str, Any]], *, adaptive: bool = True, seed: int = 1, lanes: int = 1) -> tuple[
        list[float], dict[float, list[dict[str, Any]]], list[dict[str, Any]]]:  # fmt: skip
    """Run the search with a measure() that draws each scale's replies from ``truth`` (and records the order)."""
    from moodbench.steer._calibrate import measure_scales

    called: list[float] = []

    def measure(scale: float) -> list[dict[str, Any]]:
        called.append(scale)
        return _replies(scale, random.Random(seed * 100 + int(scale * 10)), **truth[scale])

    grid = sorted(truth, key=lambda s: (abs(s), s))
    per_scale, skipped = measure_scales(grid, measure, THRESHOLDS, adaptive=adaptive, lanes=lanes)
    return called, per_scale, skipped


def test_the_search_stops_above_a_credible_onset_and_chooses_what_the_full_sweep_chooses() -> None:
    truth = {0.0: {}, 0.5: {"vader": 0.1}, 1.0: {"vader": -0.1}, 1.5: SALAD, 2.0: SALAD, 3.0: SALAD}
    called, per_scale, skipped = _search(truth)
    assert called == [0.0, 0.5, 1.0, 1.5]  # 2 and 3 are never measured: 1.5 is already credibly incoherent
    assert [x["scale"] for x in skipped] == [2.0, 3.0] and "onset of incoherence at scale 1.5" in skipped[0]["why"]
    full_called, full, full_skipped = _search(truth, adaptive=False)
    assert full_called == [0.0, 0.5, 1.0, 1.5, 2.0, 3.0] and full_skipped == []
    assert _levels(per_scale)[0] == _levels(full)[0] == {"mild": round(1 / 3, 3), "moderate": round(2 / 3, 3), "severe": 1.0}
    assert decide(per_scale, THRESHOLDS).onset == decide(full, THRESHOLDS).onset == 1.5


def test_a_noisy_scale_that_is_not_credibly_incoherent_does_not_stop_the_search() -> None:
    # the third run again: 0.5 flagged 42% vs 20% at 0 is noise, so the search goes on to 1.0 and 1.5
    truth = {0.0: {"flag": 0.20}, 0.5: {"flag": 0.42, "spread": 0.15}, 1.0: {"flag": 0.25, "vader": -0.1}, 1.5: SALAD,
             2.0: SALAD}  # fmt: skip
    called, per_scale, skipped = _search(truth)
    assert called == [0.0, 0.5, 1.0, 1.5] and [x["scale"] for x in skipped] == [2.0]
    levels = _levels(per_scale)[0]
    assert levels is not None and levels["severe"] == 1.0


def test_a_sweep_coherent_everywhere_measures_every_scale_and_negative_scales_are_never_skipped() -> None:
    truth: dict[float, dict[str, Any]] = {0.0: {}, -0.5: {}, 0.5: {}, 1.0: {}, 2.0: {}}
    called, _per_scale, skipped = _search(truth)
    assert sorted(called) == [-0.5, 0.0, 0.5, 1.0, 2.0] and called[0] == 0.0 and skipped == []
    # an onset at the first positive scale skips the other positive ones, not the negative side
    called, _per_scale, skipped = _search({0.0: {}, -0.5: {}, 0.5: SALAD, 1.0: SALAD, -1.0: {}})
    assert sorted(called) == [-1.0, -0.5, 0.0, 0.5] and [x["scale"] for x in skipped] == [1.0]


def test_two_lanes_measure_scales_in_pairs_and_stop_after_the_pair_that_holds_the_onset() -> None:
    import threading

    truth = {0.0: {}, 0.5: {"vader": 0.1}, 1.0: {"vader": -0.1}, 1.5: SALAD, 2.0: SALAD, 3.0: SALAD}
    called, per_scale, skipped = _search(truth, lanes=2)
    assert sorted(called) == [0.0, 0.5, 1.0, 1.5] and set(called[:2]) == {0.0, 0.5}  # pairs: (0, 0.5), (1, 1.5)
    levels = _levels(per_scale)[0]
    assert [x["scale"] for x in skipped] == [2.0, 3.0] and levels is not None and levels["severe"] == 1.0
    # the pair really runs at once: each measure() waits until its partner has started
    started = threading.Barrier(2, timeout=10)

    def measure(scale: float) -> list[dict[str, Any]]:
        started.wait()
        return _replies(scale, random.Random(int(scale * 10)), **truth[scale])

    from moodbench.steer._calibrate import measure_scales

    per_scale, skipped = measure_scales([0.0, 0.5, 1.0, 1.5, 2.0, 3.0], measure, THRESHOLDS, lanes=2)
    assert sorted(per_scale) == [0.0, 0.5, 1.0, 1.5]
