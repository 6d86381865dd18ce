"""`moodbench import` on real tau2 Results files of several tau2 versions (``tests/data/tau2``, cut from the public
tau2-bench repository; their sources are in its README), and on files built with tau2's own models for the
conventions no real file in the set exercises (a reward a hair off 1, a missing reward, num_trials above the
trials found).

One real import of eleven files (two variants spanning airline and telecom, five other agents, a tau3-era file
with fields newer than the installed tau2, a submission without info/tasks holding an infrastructure error, a
solo run), then `summary --json`, `report --json` and `export` on it: real subprocesses of the CLI, nothing
of moodbench mocked. tau2's own ``compute_metrics`` is the reference for what tau2 reports per file.
"""

from __future__ import annotations

import gzip
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tau2_results import Conv, results_json

CLI = [sys.executable, "-m", "moodbench.cli"]
DATA = Path(__file__).parent / "data" / "tau2"
FT = "ft:gpt-4.1-2025-04-14:sierra:tau2-full-sft:BzrYdMNm"
ITEMS = [  # (file, variant)
    ("gpt-4.1_airline_1trial", "control"),
    ("gpt-4.1_telecom_1trial", "control"),
    ("ft-gpt-4.1_airline_1trial", "ft"),
    ("ft-gpt-4.1_telecom_1trial", "ft"),
    ("claude-sonnet-4-5_airline_1trial", "claude"),
    ("langchain-gpt-oss-120b_airline_1trial", "langchain"),
    ("toolorchestra_airline_1trial", "toolorchestra"),
    ("whissle_airline_tau3", "whissle"),
    ("adaptive-agent_airline_no-info", "adaptive"),
    ("gpt-4.1_telecom_solo_1trial", "solo"),
]


def _env() -> dict[str, str]:
    from scripted import cli_env

    return {**cli_env(), "COLUMNS": "250"}


def _run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=_env(), timeout=timeout)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("real-tau2")
    out = {}
    for gz in sorted(DATA.glob("*.json.gz")):
        path = root / gz.name.removesuffix(".gz")
        path.write_bytes(gzip.decompress(gz.read_bytes()))
        out[path.name.removesuffix(".json")] = path
    return out


@pytest.fixture(scope="module")
def run(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    run_dir = tmp_path_factory.mktemp("real") / "run"
    r = _run("import", "--out", str(run_dir), *[f"{files[f]}={v}" for f, v in ITEMS])
    assert r.returncode == 0, r.stdout + r.stderr
    summary = _run("summary", str(run_dir), "--json")
    assert summary.returncode == 0, summary.stderr
    report = _run("report", str(run_dir), "--json")
    assert report.returncode == 0, report.stderr
    return {"dir": run_dir, "import": r, "summary": json.loads(summary.stdout), "report": json.loads(report.stdout)}


def test_files_are_small_and_documented() -> None:
    gz = list(DATA.glob("*.json.gz"))
    assert len(gz) >= 10 and sum(p.stat().st_size for p in gz) < 300_000
    readme = (DATA / "README.md").read_text()
    assert all(p.name in readme for p in gz)


def test_one_variant_spans_domains_and_newer_files_import(run: dict[str, Any]) -> None:
    stderr = run["import"].stderr
    assert "imported 17 simulation(s)" in stderr and "control=3" in stderr and "ft=3" in stderr
    assert "adaptive-agent_airline_no-info.json: no tau2 `info` block" in stderr and "installed tau2's 'airline' tasks" in stderr
    s = run["summary"]
    assert s["domains"] == ["airline", "telecom"] and s["trials"] == 1
    assert s["by_domain"]["telecom"]["control"]["done"] == 1 and s["by_domain"]["airline"]["ft"]["done"] == 2
    con = sqlite3.connect(run["dir"] / "results.sqlite")
    rows = dict(
        con.execute("SELECT variant || '/' || task_id, termination_reason FROM simulations WHERE variant IN ('adaptive', 'solo')")
    )
    assert rows["adaptive/7"] == "infrastructure_error" and set(rows.values()) == {
        "infrastructure_error",
        "user_stop",
        "agent_stop",
    }


def test_infrastructure_error_is_not_run_and_never_re_runnable(run: dict[str, Any]) -> None:
    a = run["summary"]["variants"]["adaptive"]
    assert a["exit_reasons"] == {"infrastructure_error": 1, "success": 1} and a["excluded"] == 1 and a["not_run"] == 1
    assert a["scored"] == 1 and a["avg_reward"] == 1.0
    warn = next(w["text"] for w in run["report"]["warnings"] if "excluded from all effects" in w["text"])
    assert "cannot be re-run" in warn and "re-run to retry" not in warn and "adaptive=1 (infrastructure_error=1)" in warn


def _tau2_compute(path: Path) -> Any:
    from tau2.data_model.simulation import Results
    from tau2.metrics.agent_metrics import compute_metrics

    return compute_metrics(Results.model_validate(json.loads(path.read_text())))


def test_summary_reproduces_tau2s_own_metrics_per_file(run: dict[str, Any], files: dict[str, Path]) -> None:
    rows = {(f["variant"], f["domain"]): f for f in run["summary"]["tau2_files"]}
    assert len(rows) == len(ITEMS) and all(f["matches"] and not f["differences"] for f in rows.values())
    for name, _ in ITEMS:
        if name.startswith("adaptive"):  # no info block: the installed tau2 cannot read it at all
            continue
        row = next(f for f in rows.values() if f["file"].endswith(name + ".json"))
        m = _tau2_compute(files[name])  # the installed tau2's own numbers for the same file
        assert row["tau2"]["avg_reward"] == pytest.approx(m.avg_reward), name
        assert row["moodbench"]["avg_reward"] == pytest.approx(m.avg_reward), name
        assert {int(k): v for k, v in row["moodbench"]["pass_hat_k"].items()} == pytest.approx(dict(m.pass_hat_ks)), name
    adaptive = rows[("adaptive", "airline")]["tau2"]
    assert adaptive["not_run"] == 1 and adaptive["simulations"] == 1 and adaptive["pass_hat_k"] == {"1": 1.0}
    table = _run("summary", str(run["dir"]))
    assert (
        "control / telecom" in table.stdout
        and ": reproduced" in table.stdout
        and "1 not run (infrastructure error" in table.stdout
    )


def test_each_variant_carries_its_own_models(run: dict[str, Any], tmp_path: Path) -> None:
    v = run["summary"]["variants"]
    assert v["ft"]["agent_models"] == [FT] and v["control"]["agent_models"] == ["gpt-4.1"]
    assert v["langchain"]["agent_models"] == ["openai/gpt-oss-120b"] and v["langchain"]["user_models"] == ["openai/gpt-oss-120b"]
    assert v["claude"]["user_models"] == ["gpt-4.1"] and v["whissle"]["user_models"] == ["gpt-4o"]
    assert {s["tau2_git_commit"] for s in v["ft"]["sources"]} == {"b02b509367e8436f956c334741ac7cf7c9f5dabe"}
    assert run["report"]["runs"][0]["label"] == "run"  # several agents: named after the directory, not the first file's agent
    models = next(a for a in run["report"]["runs"])["models"]
    assert models["ft"]["agent"] == [FT] and models["whissle"]["tau2"] == ["121283b87f0e5e14917e9fea3a6411e90408a6e1"]
    out = tmp_path / "ft.json"
    r = _run("export", str(run["dir"]), "--out", str(out), "--variant", "ft")
    assert r.returncode == 0, r.stderr
    exported = json.loads(out.read_text())
    assert exported["info"]["agent_info"]["llm"] == FT and exported["info"]["user_info"]["llm"] == "gpt-4.1"
    assert len(exported["simulations"]) == 3
    r = _run("export", str(run["dir"]), "--out", str(tmp_path / "a.json"), "--variant", "adaptive")
    assert r.returncode == 0, r.stderr
    exported = json.loads((tmp_path / "a.json").read_text())
    sims = exported["simulations"]
    assert exported["info"]["agent_info"]["llm"] == "claude-opus-4-6" and exported["info"]["user_info"]["llm"] is None  # unknown
    assert sorted(s["termination_reason"] for s in sims) == ["infrastructure_error", "user_stop"]  # kept as tau2 wrote it


def test_agent_comparisons_are_not_framed_as_emotions(run: dict[str, Any], tmp_path: Path) -> None:
    rep = run["report"]
    assert rep["framing"] == "variant" and rep["manipulation"] == []
    na = rep["runs"][0]["manipulation"]["not_applicable"]
    assert {x["variant"] for x in na} == {v for _, v in ITEMS} - {"control"} and all("not an emotion" in x["reason"] for x in na)
    assert {e["manipulation"] for e in rep["effects"]} == {"not_applicable"}
    assert not any(c["kind"].startswith("manipulation") for e in rep["effects"] for c in e["caveats"])
    r = _run("report", str(run["dir"]), "--out", str(tmp_path / "rep"))
    assert r.returncode == 0, r.stderr
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "how each variant changes the agent's reward against the baseline" in html and "customer's emotion changes" not in html
    assert 'id="manipulation-not-applicable"' in html and "n/a (not an emotion)" in html
    assert "effect of each variant on reward" in (tmp_path / "rep" / "report.md").read_text()
    pages = [p.read_text() for p in (tmp_path / "rep" / "transcripts").glob("*/sim-*.html")]
    assert len(pages) == 17 and sum(FT in p for p in pages) == 3  # each transcript names its own conversation's agent


def test_pairing_is_checked_and_explained(run: dict[str, Any]) -> None:
    rep = run["report"]
    pairing = {p["variant"]: p for p in rep["runs"][0]["pairing"]}
    # toolorchestra's conversations never mention their task's user or reservation ids (1 of 50 in the full file)
    t = pairing["toolorchestra"]["facts"]["variant"]
    assert (t["checked"], t["missing"], t["suspect"]) == (2, 2, True)
    assert not pairing["claude"]["facts"]["variant"]["suspect"] and not pairing["toolorchestra"]["facts"]["baseline"]["suspect"]
    effect = {e["variant"]: e for e in rep["effects"] if e["domain"] == "all" and e["subset"] == "all"}
    assert (
        "pairing_suspect" in {c["kind"] for c in effect["toolorchestra"]["caveats"]}
        and effect["toolorchestra"]["trust"] == "unreliable"
    )
    # different customer simulators: gpt-oss-120b behind langchain, gpt-4.1 behind the baseline
    assert pairing["langchain"]["customer"]["differs"] and not pairing["ft"]["customer"]["differs"]
    assert "customer_differs" in {c["kind"] for c in effect["langchain"]["caveats"]}
    assert "customer_differs" not in {c["kind"] for c in effect["ft"]["caveats"]}
    assert pairing["adaptive"]["customer"]["unknown"] and "customer_differs" in {c["kind"] for c in effect["adaptive"]["caveats"]}
    # unpaired tasks per variant, and "share no task" said plainly
    assert pairing["claude"]["only_variant"]["tasks"] == ["airline/40"] and pairing["claude"]["only_baseline"]["n"] == 2
    assert pairing["whissle"]["no_shared_task"] and pairing["whissle"]["shared_tasks"] == 0
    line = rep["bottom_lines"][0]["text"]
    assert "whissle and the baseline control share no task" in line and "whissle (0 tasks" not in line
    texts = [w["text"] for w in rep["warnings"]]
    assert any("claude vs control: 1 task(s) only in claude, left unpaired: airline/40" in x for x in texts)


def test_solo_runs_skip_customer_fidelity_rules(run: dict[str, Any]) -> None:
    con = sqlite3.connect(run["dir"] / "results.sqlite")
    flags = [json.loads(f) for (f,) in con.execute("SELECT flags FROM simulations WHERE variant='solo'")]
    assert flags and all(not f["any"] and not f["user_goal_not_stated"] and "solo" in f["evidence"]["skipped"] for f in flags)
    assert run["summary"]["variants"]["solo"]["fidelity"]["flagged"] == 0


def test_files_that_cannot_be_paired_are_refused_plainly(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "r"
    r = _run("import", "--out", str(out), f"{files['toolorchestra_airline_no-task-id']}=x")
    assert r.returncode == 2 and "has no task_id" in r.stderr and "Traceback" not in r.stderr
    assert "re-save" not in r.stderr and not out.exists()
    r = _run(
        "import", "--out", str(out), f"{files['gpt-4.1_airline_1trial']}=a", f"{files['claude-sonnet-4-5_airline_1trial']}=a"
    )
    assert r.returncode == 2 and "given two files of domain 'airline'" in r.stderr and not out.exists()
    r = _run(
        "import",
        "--emotions",
        "--out",
        str(out),
        f"{files['gpt-4.1_airline_1trial']}=control",
        f"{files['ft-gpt-4.1_airline_1trial']}=ft",
    )
    assert r.returncode == 2 and "'ft' is not an emotion spec" in r.stderr and "without --emotions" in r.stderr


def test_a_domain_added_to_an_existing_variant(files: dict[str, Path], tmp_path: Path) -> None:
    from moodbench.sim._interchange import import_tau2

    run_dir = tmp_path / "run"
    import_tau2(run_dir, [(files["gpt-4.1_airline_1trial"], "control"), (files["ft-gpt-4.1_airline_1trial"], "ft")])
    result = import_tau2(run_dir, [(files["gpt-4.1_telecom_1trial"], "control"), (files["ft-gpt-4.1_telecom_1trial"], "ft")])
    assert result.counts == {"control": 1, "ft": 1} and result.domains == ["airline", "telecom"]
    data = json.loads(_run("summary", str(run_dir), "--json").stdout)
    assert list(data["variants"]) == ["control", "ft"] and data["variants"]["ft"]["done"] == 3


# --------------------------------------------------------------------------- tau2's conventions, files built with tau2's models


def test_tau2_conventions_on_built_files(tmp_path: Path) -> None:
    """Success within 1e-6 of 1 (tau2's rule); a missing reward a failure, shown against tau2's mean; trials as found."""
    from moodbench.sim._interchange import import_tau2

    ids = [f"t{i}" for i in range(4)]
    convs = [Conv("t0", 0, 0.9999995), Conv("t1", 0, 0.999998), Conv("t2", 0, None), Conv("t3", 0, 1.0)]
    path = tmp_path / "a.json"
    path.write_text(results_json(convs, ids, num_trials=4))
    result = import_tau2(tmp_path / "run", [(path, "control")])
    assert result.trials == 1 and any("num_trials 4" in n and "1 trial(s) are counted" in n for n in result.notes)
    con = sqlite3.connect(tmp_path / "run" / "results.sqlite")
    rows = dict(con.execute("SELECT task_id, exit_reason FROM simulations"))
    assert rows["t0"] == "success" and rows["t1"] != "success" and rows["t2"] != "success"
    error = con.execute("SELECT error, reward FROM simulations WHERE task_id='t2'").fetchone()
    assert "counted as a failure (reward 0)" in error[0] and error[1] == 0.0
    data = json.loads(_run("summary", str(tmp_path / "run"), "--json").stdout)
    assert data["trials"] == 1 and list(data["variants"]["control"]["pass_hat_k"]) == ["1"]
    f = data["tau2_files"][0]
    assert f["tau2"]["no_reward"] == 1 and f["tau2"]["pass_hat_k"] == {"1": 0.5} and f["moodbench"]["pass_hat_k"] == {"1": 0.5}
    mean = (0.9999995 + 0.999998 + 1.0) / 3
    assert f["tau2"]["avg_reward"] == pytest.approx(mean) and f["moodbench"]["avg_reward"] == pytest.approx((mean * 3) / 4)
    assert not f["matches"] and "1 simulation(s) without a reward count as 0 here" in f["differences"][0]
