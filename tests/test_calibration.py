"""The calibration benchmark's ``--fast`` configuration: the claims' error rates, coverage and power bounds.

One seeded run (~15-30 s on a busy core) through the real analysis functions. Every bound is widened by
three Monte Carlo standard errors computed from the binomial variance at the bound with the run's number
of replications, so an implementation that is right fails only if the seed is a > 3-sigma outlier (the run
is seeded, so the outcome is deterministic). For coverage averaged over the V correlated variants of one
replication the binomial SE with n = replications is an upper bound (a mean of correlated Bernoulli(p)
has variance at most p(1 - p)).
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from typing import Any

import pytest

from moodbench.analysis._inference import MIN_TASKS

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "calibration.py"
Z = 3.0


def _load():
    spec = importlib.util.spec_from_file_location("moodbench_calibration", BENCH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def result() -> dict[str, Any]:
    cal = _load()
    return cal.run(cal.FAST, mode="fast")


def _tol(p: float, n: int) -> float:
    return Z * math.sqrt(p * (1 - p) / n)


def _rows(result: dict[str, Any], claimable: bool) -> list[dict[str, Any]]:
    rows = [r for r in result["main"] if (r["tasks"] >= MIN_TASKS) == claimable]
    assert rows
    return rows


def test_family_wise_false_claim_rate(result):
    n = result["config"]["reps"]
    for r in _rows(result, True):
        assert r["false_claim"][0] <= 0.05 + _tol(0.05, n), r
        assert r["false_claim_alt"][0] <= 0.05 + _tol(0.05, n), r


def test_coverage(result):
    n = result["config"]["reps"]
    for r in _rows(result, True):
        for key in ("coverage_null", "coverage_alt"):
            cov = r[key][0]
            assert 0.93 - _tol(0.93, n) <= cov <= 0.97 + _tol(0.97, n), (key, r)


def test_power_at_the_reported_mde(result):
    n = result["config"]["reps"]
    for r in _rows(result, True):
        assert r["mde"] is not None and r["power_formula"] == pytest.approx(0.8, abs=1e-3)
        assert 0.75 - _tol(0.75, n) <= r["power"][0] <= 0.85 + _tol(0.85, n), r


def test_power_at_the_mde_the_user_facing_paths_print(result):
    """``moodbench power`` (the world's parameters given as flags) must deliver its promised 80%; the report's MDE,
    estimated from the baseline alone, must not promise more than the design delivers (it is conservative here)."""
    n = result["config"]["reps"]
    planned, report = result["planning"]
    assert planned["source"].startswith("moodbench power") and planned["power_formula"] == pytest.approx(0.8, abs=1e-3)
    assert 0.75 - _tol(0.75, n) <= planned["power"][0] <= 0.85 + _tol(0.85, n), planned
    assert report["mde"] is not None and report["power"][0] >= 0.75 - _tol(0.75, n), report


def test_manipulation_false_pass(result):
    n = result["config"]["manip_reps"]
    for r in result["main"]:
        for key in ("manip_false_pass_null", "manip_false_pass_boundary"):
            assert r[key][0] <= 0.05 + _tol(0.05, n), (key, r)


def test_small_designs_say_too_few(result):
    for r in _rows(result, False):
        assert r["mde"] is None
        assert r["too_few"][0] == 1.0 and r["too_few_alt"][0] == 1.0
        assert r["false_claim"][0] == 0.0 and r["power"][0] == 0.0
        assert r["manip_false_pass_null"][0] == 0.0 and r["manip_false_pass_boundary"][0] == 0.0


def test_render_mentions_every_configuration(result):
    cal = sys.modules["moodbench_calibration"]
    text = cal.render(result)
    for r in result["main"]:
        assert f"| {r['tasks']}x{r['trials']} | {r['variants']} |" in text
