"""The shipped steering calibrations are the committed measurements, and still apply to the current data.

``benchmarks/steering.py`` measured prompted vs steered emotions on real local models, and
``benchmarks/calibration_stability.py`` repeats the calibration with fresh seeds (benchmarks/README.md); the
calibrations they found detectable ship in ``src/moodbench/steer/data/`` so ``EMOTION@steer`` runs without a
calibration sweep (the stability benchmark ships its repetition 0, the default seeds). Two ways that can
silently go wrong, both checked here without a model:

* a shipped file edited by hand, or measured by a run whose results were not committed: regenerating it from
  ``benchmarks/results/*.json`` (the scripts' ``--from-json``, a real subprocess) must give the same bytes;
* the emotion's contrastive pairs edited after the measurement: the shipped file's ``pairs_sha256`` no longer
  matches, so no vector would ever find it (``shipped_calibration`` matches on it) and the emotion would need
  a fresh calibration while the README still quotes the old one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from moodbench.steer import pairs_sha256, steering_for

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "src" / "moodbench" / "steer" / "data"
RESULTS = sorted((ROOT / "benchmarks" / "results").glob("steering-*.json"))
SHIPPED = sorted(DATA.glob("*.calibration.json"))


STABILITY = ROOT / "benchmarks" / "results" / "calibration-stability.json"


def _from_benchmark(path: Path, script: str = "benchmarks/steering.py") -> bool:
    return script in json.loads(path.read_text()).get("source", "")


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_calibration_matches_the_current_contrastive_pairs(path: Path) -> None:
    data = json.loads(path.read_text())
    assert data["pairs_sha256"] == pairs_sha256(steering_for(data["emotion"], None)), (
        f"{path.name}: the {data['emotion']} pairs changed since this calibration was measured; rerun "
        f"benchmarks/steering.py (or moodbench steer calibrate) and replace it"
    )
    assert data["levels"] and 0 < data["levels"]["mild"] < data["levels"]["moderate"] < data["levels"]["severe"]


def test_every_shipped_calibration_comes_from_a_committed_benchmark_result() -> None:
    for path in SHIPPED:
        assert _from_benchmark(path) or _from_benchmark(path, "benchmarks/calibration_stability.py"), path.name


def test_the_stability_results_regenerate_the_shipped_calibrations_byte_for_byte(tmp_path: Path) -> None:
    from_stability = [p for p in SHIPPED if _from_benchmark(p, "benchmarks/calibration_stability.py")]
    if not from_stability:
        pytest.skip("no shipped calibration comes from benchmarks/calibration_stability.py")
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "calibration_stability.py"), "--from-json", str(STABILITY),
                          "--shipped-dir", str(tmp_path)], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    for path in from_stability:
        regenerated = tmp_path / path.name
        assert regenerated.exists(), f"{path.name} ships but repetition 0 of the committed stability result does not detect it"
        assert regenerated.read_bytes() == path.read_bytes(), f"{path.name} differs from its committed measurement"
        data = json.loads(path.read_text())
        assert data["evidence"]["manipulation"] and data["levels"]["severe"] in [r["scale"] for r in data["scales"]]
    assert "| emotion | severe per repetition" in out.stdout  # the README table, from the same file


def test_benchmark_results_regenerate_the_shipped_calibrations_byte_for_byte(tmp_path: Path) -> None:
    from_bench = [p for p in SHIPPED if _from_benchmark(p)]
    assert RESULTS, "benchmarks/results/steering-*.json are committed"
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "steering.py"), "--from-json", *map(str, RESULTS),
                          "--shipped-dir", str(tmp_path)], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    for path in from_bench:
        regenerated = tmp_path / path.name
        assert regenerated.exists(), f"{path.name} ships but no committed benchmark result detects it"
        assert regenerated.read_bytes() == path.read_bytes(), f"{path.name} differs from its committed measurement"
    # the printed tables carry every measured dose of every block, steered and prompted
    blocks = [b for p in RESULTS for b in json.loads(p.read_text())["blocks"]]
    for b in blocks:
        assert f"#### {b['model']} / {b['emotion']}" in out.stdout
    assert out.stdout.count("| steered |") == sum(len(b["steered"]) for b in blocks)
    assert out.stdout.count("| prompted |") == sum(len(b["prompted"]) for b in blocks)


def test_stability_counts_equal_or_adjacent_severe_scales_on_the_grid_and_a_missing_level_as_a_miss() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from calibration_stability import stability
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    grid = [0.5, 1.0, 1.5, 2.0, 3.0]
    assert stability([1.0, 1.5, 1.0, 2.0, None], grid) == (1.0, 0.6)  # 2.0 is two steps away, None never counts
    assert stability([2.0, 3.0, 3.0, 1.0, 2.0], grid) == (2.0, 0.8)  # a tie goes to the smaller (conservative) scale
    assert stability([None, None], grid) == (None, 0.0)
