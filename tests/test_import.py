"""`moodbench import --format tau2` end to end: tau2 Results files in, `summary`, `report --json` and `report` out.

The files are written with tau2's own models (``tau2_results.py``), one per variant, 24 tasks x 3 trials:

* control: each task has its own success rate (seeded), so tasks differ in difficulty and trials differ;
* frustration: an emotional opening, and 14 of the 24 tasks fail in every trial (a real drop); one task
  lost its third trial (pass^k must stop at k = 2 for this variant, on the same task set for both sides);
  one customer talks like the agent (role-confusion flag, recomputed from the messages on import);
* anxiety: the same outcomes as control, neutral words (the manipulation check: zero spread, no verdict); one sample tau2 skipped;
* anger:severe: the same outcomes as control; angry words only in the closing turn, after the agent acted
  (all-turn markers rise; the early-turn check sees no shift and zero spread, so no verdict);
* impatience: only 10 tasks (too_few); its paired baseline mean is that of its own 10 tasks.

Real subprocesses of the CLI; nothing of moodbench is mocked.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from scripted import CLI
from tau2_results import Conv, results_json, write

IDS = [f"t{i:02d}" for i in range(24)]
ANGRY = "This is unacceptable, I want a manager right now. ###STOP###"
FRUSTRATED = "This is ridiculous, I've been waiting forever."


def _env() -> dict[str, str]:
    return {**os.environ, "COLUMNS": "200"}


def _run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=_env(), timeout=timeout)


def _outcomes() -> dict[tuple[str, int], float]:
    rng = random.Random(11)
    rates = {t: rng.choice([0.0, 0.34, 0.67, 1.0, 1.0]) for t in IDS}
    return {(t, j): float(rng.random() < rates[t]) for t in IDS for j in range(3)}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tau2-files")
    base = _outcomes()
    drop = set(IDS[:14])
    convs = {
        "control": [Conv(t, j, base[t, j]) for t in IDS for j in range(3)],
        "frustration": [
            Conv(
                t,
                j,
                0.0 if t in drop else base[t, j],
                opening=FRUSTRATED,
                first="How can I help you today? I need a new task called 'Important Meeting' for user_1."
                if (t, j) == ("t20", 0)
                else Conv.first,
            )
            for t in IDS
            for j in range(3)
            if (t, j) != ("t05", 2)
        ],
        "anxiety": [Conv(t, j, base[t, j], skipped=(t, j) == ("t07", 1)) for t in IDS for j in range(3)],
        "anger": [Conv(t, j, base[t, j], closing=ANGRY) for t in IDS for j in range(3)],
        "impatience": [Conv(t, j, base[t, j]) for t in IDS[:10] for j in range(3)],
    }
    return {name: write(root / f"{name}.json", c, IDS) for name, c in convs.items()}


@pytest.fixture(scope="module")
def imported(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    run = tmp_path_factory.mktemp("imported") / "run"
    r = _run(
        "import",
        "--format",
        "tau2",
        "--emotions",
        "--out",
        str(run),
        f"{files['control']}=control",
        f"{files['frustration']}=frustration",
        f"{files['anxiety']}=anxiety",
        f"{files['anger']}=anger:severe",
        f"{files['impatience']}=impatience",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    t0 = time.perf_counter()
    rep = _run("report", str(run), "--json")
    seconds = time.perf_counter() - t0
    assert rep.returncode == 0, rep.stderr
    return {"run": run, "report": json.loads(rep.stdout), "seconds": seconds, "stderr": rep.stderr, "import": r}


def _effect(report: dict[str, Any], variant: str, subset: str = "all") -> dict[str, Any]:
    return next(e for e in report["effects"] if e["variant"] == variant and e["subset"] == subset and e["domain"] == "all")


def test_import_writes_a_run_directory_that_summary_reads(imported: dict[str, Any]) -> None:
    run = imported["run"]
    assert "imported 317 simulation(s)" in imported["import"].stderr and "2 prompt(s) reconstructed" in imported["import"].stderr
    summary = _run("summary", str(run), "--json")
    assert summary.returncode == 0, summary.stderr
    data = json.loads(summary.stdout)
    assert list(data["variants"]) == ["control", "frustration", "anxiety", "anger:severe", "impatience"]
    assert data["trials"] == 3 and data["variants"]["control"]["planned"] == 72 and data["variants"]["frustration"]["done"] == 71
    assert (
        data["variants"]["anxiety"]["exit_reasons"].get("infrastructure_error") == 1
    )  # tau2's skipped sample: not run, excluded
    assert data["variants"]["anxiety"]["excluded"] == 1 and data["variants"]["anxiety"]["scored"] == 71
    con = sqlite3.connect(run / "results.sqlite")
    rows = con.execute(
        "SELECT exit_reason, termination_reason, flags, agent_model, seed FROM simulations WHERE variant='frustration'"
    ).fetchall()
    assert {r[1] for r in rows} == {"user_stop"} and {r[3] for r in rows} == {"openai/agent-x"}
    assert {r[0] for r in rows} <= {"success", "task_failed"} and "task_failed" in {r[0] for r in rows}
    flagged = [json.loads(r[2]) for r in rows if json.loads(r[2]).get("user_role_confusion")]
    assert len(flagged) == 1  # recomputed from the messages: "How can I help you today?"
    prompts = dict(con.execute("SELECT role, text FROM prompts").fetchall())
    assert "Mock policy" in prompts["agent"] and "<scenario>" in prompts["user"] and "Simulate a customer." in prompts["user"]


def test_report_json_claims_and_paired_means(imported: dict[str, Any]) -> None:
    report = imported["report"]
    base = _outcomes()
    per_task = {t: sum(base[t, j] for j in range(3)) / 3 for t in IDS}
    fr = _effect(report, "frustration")
    # paired: task t05 has two pairs, every task still weighs 1/24; drop = mean over the 14 tasks of their baseline rate
    assert (fr["n_pairs"], fr["n_tasks"]) == (71, 24)
    assert fr["baseline_mean"] == pytest.approx(sum(per_task.values()) / 24)
    expected_diff = -sum(per_task[t] for t in IDS[:14]) / 24 + (per_task["t05"] - (base["t05", 0] + base["t05", 1]) / 2) / 24
    assert fr["diff"] == pytest.approx(expected_diff)
    assert fr["variant_mean"] - fr["baseline_mean"] == pytest.approx(fr["diff"])
    assert fr["claim"] == "lower" and fr["p_adjusted"] < 0.05 and fr["ci"][1] < 0 and fr["manipulation"] == "passed"
    assert fr["trust"] == "ok" and fr["caveats"] == []
    for v in ("anxiety", "anger:severe"):
        e = _effect(report, v)
        # every task's difference is exactly 0: no spread, so no interval, no p and no claim (never "p = 1, no difference")
        assert (
            e["claim"] == "too_few" and e["diff"] == pytest.approx(0) and e["p"] is None and "exactly 0" in e["no_claim_reason"]
        )
        # the customers' early turns are word for word the baseline's in every task: zero spread, so the check
        # gives no verdict either (an interval of width 0 is no evidence) and says why, beside the claim
        assert e["manipulation"] == "too_few"
        assert e["caveats"][0]["kind"] == "manipulation_too_few" and "zero spread" in e["caveats"][0]["text"]
    few = _effect(report, "impatience")
    assert few["claim"] == "too_few" and few["n_tasks"] == 10 and few["p_adjusted"] is None
    assert few["baseline_mean"] == pytest.approx(sum(per_task[t] for t in IDS[:10]) / 10)  # its own 10 tasks, not all 24
    summary = report["runs"][0]["summary"]["variants"]
    assert summary["control"]["avg_reward"] == pytest.approx(
        sum(base.values()) / 72
    )  # the unpaired number stays in the run table
    fam = next(f for f in report["families"] if f["name"] == "reward/all")
    assert (fam["size"], fam["planned"], fam["method"]) == (1, 4, "holm") and report["family"]["size"] >= 1
    assert {k for k in fr} >= {
        "run",
        "variant",
        "domain",
        "subset",
        "n_pairs",
        "n_tasks",
        "baseline_mean",
        "variant_mean",
        "diff",
        "ci",
        "p",
        "p_adjusted",
        "claim",
        "trust",
        "caveats",
    }
    assert report["schema"] == "moodbench-report/2" and report["thresholds"]["min_tasks"] == 20
    assert "Lower reward with frustration" in report["bottom_lines"][0]["text"]


def test_report_json_pass_hat_k_is_capped_and_paired(imported: dict[str, Any]) -> None:
    pk = imported["report"]["pass_hat_k"]
    fr = [p for p in pk if p["variant"] == "frustration"]
    # t05 has two pairs: one task set for every k, t05 dropped and counted (not pass^3 lost for all 24 tasks)
    assert [p["k"] for p in fr] == [1, 2, 3] and all(p["n_tasks"] == 23 and p["dropped_tasks"] == 1 for p in fr)
    anger = [p for p in pk if p["variant"] == "anger:severe"]
    assert [p["k"] for p in anger] == [1, 2, 3] and all(p["diff"] == pytest.approx(0) for p in anger)
    for variant in ("frustration", "anger:severe"):
        values = [p["baseline_mean"] for p in pk if p["variant"] == variant]
        assert values == sorted(values, reverse=True)  # same tasks for every k: pass^k cannot rise
    base = _outcomes()
    from math import comb

    want = sum(comb(int(sum(base[t, j] for j in range(3))), 3) for t in IDS) / 24
    assert anger[2]["baseline_mean"] == pytest.approx(want)


def test_report_json_manipulation_and_design(imported: dict[str, Any]) -> None:
    report = imported["report"]
    checks = {m["variant"]: m for m in report["manipulation"]}
    assert checks["frustration"]["status"] == "passed" and checks["anxiety"]["status"] == "too_few"
    assert checks["anxiety"]["p"] is None and checks["anxiety"]["lower_bound"] is None  # zero spread: no certainty
    anger = checks["anger:severe"]
    assert anger["status"] == "too_few" and anger["shift"] == 0 and anger["reason"].startswith("zero spread")
    late = next(s for s in anger["secondary"] if s["score"] == "markers_own" and s["turns"] == "all")
    # the emotion words came after the agent acted, the same words in every task: no spread, so no interval is printed
    assert late["diff"] > 5 and late["ci"] == [None, None]
    assert checks["impatience"]["status"] == "too_few"
    design = report["designs"][0]
    assert design["tasks"] == 24 and design["min_trials"] == 3 and design["mde"] is not None and design["aa"]["n_tasks"] == 24
    primary = [e["mde"] for e in report["effects"] if e["subset"] == "all" and e["mde"] is not None]
    assert design["mde"] == max(primary)  # the promise that holds for every variant, on the pairs each has
    assert not any("noise" in json.dumps(x).lower() for x in (report["effects"], report["designs"]))


def test_report_json_is_fast_and_writes_no_pages(imported: dict[str, Any]) -> None:
    run = imported["run"]
    assert not (run / "report" / "report.html").exists() and not (run / "report" / "transcripts").exists()
    assert imported["seconds"] < 60, imported["seconds"]  # measured ~2.5 s for 317 records on a 2-core VM
    print(f"report --json on 317 records: {imported['seconds']:.2f} s")


def test_full_report_on_imported_files(imported: dict[str, Any], tmp_path: Path) -> None:
    r = _run("report", str(imported["run"]), "--out", str(tmp_path / "rep"))
    assert r.returncode == 0, r.stderr
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "imported (tau2 import)" in html and "McNemar on these pairs" in html
    assert len(list((tmp_path / "rep" / "transcripts").glob("*/sim-*.html"))) == 317
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert [e["claim"] for e in data["effects"]] == [e["claim"] for e in imported["report"]["effects"]]


# --------------------------------------------------------------------------- bad input: exit 2, nothing half-written


def test_import_refuses_what_is_not_tau2_results(files: dict[str, Path], tmp_path: Path) -> None:
    summary_like = tmp_path / "x_results.json"
    summary_like.write_text(json.dumps({"avg_reward": 0.5, "pass_hat_ks": {"1": 0.5}}))
    out = tmp_path / "new"
    r = _run("import", "--out", str(out), f"{files['control']}=control", f"{summary_like}=frustration")
    assert (
        r.returncode == 2
        and str(summary_like) in r.stderr
        and "not a tau2 Results file" in r.stderr
        and "Traceback" not in r.stderr
    )
    assert not out.exists() and not list(tmp_path.glob(".new.import-*"))  # nothing half-written
    r = _run("import", "--format", "csv", "--out", str(out), f"{files['control']}=control")
    assert r.returncode == 2 and "valid formats: tau2" in r.stderr


def _refused(run: Path, items: list[tuple[Path, str]]) -> str:
    """The library call the command makes (in this process: tau2 is imported once, not per case)."""
    from moodbench import UsageError
    from moodbench.sim._interchange import import_tau2

    with pytest.raises(UsageError) as info:
        import_tau2(run, items)
    return str(info.value)


def test_import_bad_input_cases(files: dict[str, Path], tmp_path: Path) -> None:
    from moodbench import UsageError
    from moodbench.sim._interchange import parse_import_items

    out = tmp_path / "new"
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert "is not JSON" in _refused(out, [(broken, "control")])
    listed = tmp_path / "list.json"
    listed.write_text("[]")
    assert "not a tau2 Results file" in _refused(out, [(listed, "control")])
    assert "no such file" in _refused(out, [(tmp_path / "nope.json", "control")])
    assert "given two files of domain 'mock'" in _refused(out, [(files["control"], "control"), (files["anxiety"], "control")])
    assert "named more than once" in _refused(out, [(files["control"], "control"), (files["control"], "anxiety")])
    bad = tmp_path / "missing-task.json"
    bad.write_text(results_json([Conv("t00", 0, 1.0), Conv("zz", 0, 1.0)], ["t00"]))
    msg = _refused(out, [(bad, "control")])
    assert str(bad) in msg and "'zz'" in msg and "not among the file's 1 task(s)" in msg
    twice = tmp_path / "twice.json"
    twice.write_text(results_json([Conv("t00", 0, 1.0), Conv("t00", 0, 0.0)], ["t00"]))
    assert "trial 0 appears twice" in _refused(out, [(twice, "control")])
    not_a_run = tmp_path / "stuff"
    not_a_run.mkdir()
    (not_a_run / "notes.txt").write_text("x")
    assert "not a run directory" in _refused(not_a_run, [(files["control"], "control")])
    assert not out.exists() and not list(tmp_path.glob(".*import-*"))
    for arg in ("control.json", "=control", "a.json=", "a.json=bad name"):
        with pytest.raises(UsageError):
            parse_import_items([arg])
    assert parse_import_items(["dir=x/a.json=frustration@steer:mild"]) == [(Path("dir=x/a.json"), "frustration@steer:mild")]


def test_import_adds_variants_to_a_run_but_never_twice(files: dict[str, Path], tmp_path: Path) -> None:
    from moodbench.sim._interchange import import_tau2

    run = tmp_path / "run"
    import_tau2(run, [(files["control"], "control")])
    before = (run / "results.sqlite").read_bytes()
    r = _run("import", "--out", str(run), f"{files['frustration']}=frustration", f"{files['anxiety']}=control")
    assert r.returncode == 2 and "'control' already has 'mock' conversations in" in r.stderr and str(files["anxiety"]) in r.stderr
    assert (run / "results.sqlite").read_bytes() == before  # untouched
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    _refused(run, [(files["frustration"], "frustration"), (bad, "anger")])
    assert (run / "results.sqlite").read_bytes() == before
    result = import_tau2(run, [(files["frustration"], "frustration")])
    assert result.counts == {"frustration": 71}
    data = json.loads(_run("summary", str(run), "--json").stdout)
    assert list(data["variants"]) == ["control", "frustration"] and data["variants"]["frustration"]["done"] == 71
