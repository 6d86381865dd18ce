"""`moodbench report` and `moodbench view` end to end, on real runs against the scripted server.

The data: a real `moodbench run` on the mock domain, where the scripted customer's wording depends on
its system prompt (frustrated -> "This is ridiculous...", angry -> "This is unacceptable...",
anxious -> *unchanged*, so the manipulation check must flag it), the scripted agent stumbles over
frustrated customers on one task, angry customers on one task hit an HTTP 500 (llm_error, excluded)
and on another speak like the agent (role-confusion flag); seeded malformed tool calls make trials
differ, so there is a noise floor. A second, smaller run with another agent model name is compared
side by side. Both runs and their reports are built once per session and shared by the workers.

Browser tests open the pages in headless Chromium; they skip (saying why) only if it is absent.
"""

from __future__ import annotations

import fcntl
import html
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from scipy.stats import binomtest

try:
    from scripted import start_scripted_server
except ImportError:  # tests/ became a package
    from tests.scripted import start_scripted_server

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
CLI = [sys.executable, "-m", "moodbench.cli"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
EXCLUDED = ("llm_error", "harness_error")

# --------------------------------------------------------------------------- the scripted conversations

GOALS = [  # (phrase in the task's scenario, what the customer asks for)
    ("'Important Meeting' for user_1", "Please create a new task called 'Important Meeting' for user_1 to track this important meeting."),
    ("task_1 be marked", "Please mark my existing task task_1 as completed, I have completed it."),
    ("task with ID task_2", "Continuing our task management discussion: please mark task task_2 as completed."),
    ("delete all your current tasks", "I want to delete all my current tasks."),
]
TRANSFER = "User needs to delete all their current tasks. This is not possible to do with the tools available."


def _first(prefix: str, suffix: str = "") -> dict[str, Any]:
    return {"match": [{"if_contains": m, "in": "system", "then": {"content": prefix + g + suffix}} for m, g in GOALS],
            "else": {"content": prefix + "I need help with my tasks."}}


def _call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"tool_calls": [{"name": name, "arguments": arguments}]}


def _agent_acts() -> dict[str, Any]:
    """The agent does the right thing for whatever the customer asked."""
    return {"match": [
        {"if_contains": "Important Meeting", "in": "last", "then": _call("create_task", user_id="user_1", title="Important Meeting")},
        {"if_contains": "task_1", "in": "last", "then": _call("update_task_status", task_id="task_1", status="completed")},
        {"if_contains": "task_2", "in": "last", "then": _call("update_task_status", task_id="task_2", status="completed")},
        {"if_contains": "delete all", "in": "last", "then": _call("transfer_to_human_agents", summary=TRANSFER)},
    ], "else": {"content": "How can I help?"}}


JUDGE_HIGH = json.dumps({"frustration": 8, "anger": 2, "anxiety": 0, "confusion": 0, "impatience": 5, "skepticism": 0})
JUDGE_LOW = json.dumps({f: 0 for f in ("frustration", "anger", "anxiety", "confusion", "impatience", "skepticism")})
SCRIPT: dict[str, Any] = {
    "models": ["scripted", "scripted-b", "judge"],
    "seed": 7,
    "faults": {"malformed_tool_call_rate": 0.12, "roles": ["agent"]},
    "roles": {
        # the report's optional emotion judge (model name "judge"): 'ridiculous' reads as frustrated
        "emotion_judge": {"model": "judge", "turns": [{"match": [{"if_contains": "ridiculous", "in": "last", "then": {"content": JUDGE_HIGH}}],
                                                       "else": {"content": "Here you go: " + JUDGE_LOW}}]},
        "agent": {"turns": [
            {"content": "unused (tau2 sends its own greeting)"},
            {"match": [
                # a frustrated customer asking to create a task throws the agent off: it asks instead of acting
                {"if_contains": "ridiculous", "in": "last", "then": {"match": [
                    {"if_contains": "Important Meeting", "in": "last",
                     "then": {"content": "I'm sorry about the wait. Could you tell me again exactly what you need?"}}],
                    "else": _agent_acts()}},
            ], "else": _agent_acts()},
            {"content": "Done, your request has been handled."},
        ], "after": {"content": "Is there anything else?"}},
        "user": {"turns": [
            {"match": [
                {"if_contains": "frustrated customer", "in": "system", "then": _first("This is ridiculous, I've been waiting forever. ")},
                {"if_contains": "angry customer", "in": "system", "then": {"match": [
                    {"if_contains": "task_1 be marked", "in": "system", "then": {"status": 500, "error": "scripted outage"}},
                    {"if_contains": "task with ID task_2", "in": "system",
                     "then": _first("This is unacceptable! I demand a manager right now. ", " How can I help you today?")},
                ], "else": _first("This is unacceptable! I demand a manager right now. ")}},
            ], "else": _first("")},  # control and anxiety: identical words
            {"match": [
                {"if_contains": "frustrated customer", "in": "system", "then": {"content": "Ugh, finally. Why is this so complicated? ###STOP###"}},
                {"if_contains": "angry customer", "in": "system", "then": {"content": "About time. Terrible service. ###STOP###"}},
            ], "else": {"content": "Thank you, that is all. ###STOP###"}},
        ], "after": {"content": "###STOP###"}},
    },
}
RUN_A = ["--domain", "mock", "--task-ids", "create_task_1,update_task_1,update_task_with_initialization_data,impossible_task_1",
         "--variants", "control,frustration,anger,anxiety", "--trials", "3", "--agent-model", "openai/scripted"]
RUN_B = ["--domain", "mock", "--task-ids", "create_task_1,update_task_1", "--variants", "control,frustration", "--trials", "2",
         "--agent-model", "openai/scripted-b"]
# One conversation at a time: the scripted server draws its seeded faults in request order, so only a
# sequential run gives every conversation the same faults on every machine (and the asserted effects).
COMMON = ["--concurrency", "1", "--max-retries", "0", "--skip-preflight"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), env.get("PYTHONPATH", "")) if p)
    env.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    env.setdefault("MPLBACKEND", "Agg")
    return env


def _generate(root: Path) -> None:
    """Two real runs (in parallel) and their reports (the comparison one with the LLM judge) under ``root``."""
    srv = start_scripted_server(SCRIPT, root / "server")
    try:
        procs = []
        for name, args in (("run-a", RUN_A), ("run-b", RUN_B)):
            log = (root / f"{name}.log").open("w")
            procs.append((name, log, subprocess.Popen(CLI + ["run", *args, *COMMON, "--agent-base-url", srv.base_url, "--out", str(root / name)],
                                                      stdout=log, stderr=subprocess.STDOUT, env=_env(), cwd=root)))
        for name, log, p in procs:
            rc = p.wait(timeout=240)
            log.close()
            assert rc == 0, f"{name} exited {rc}:\n" + (root / f"{name}.log").read_text()[-4000:]
        judge = ["--judge-model", "openai/judge", "--judge-base-url", srv.base_url]
        for out, runs, extra in (("report", ["run-a"], []), ("report-multi", ["run-a", "run-b"], judge)):
            r = subprocess.run(CLI + ["report", *[str(root / x) for x in runs], "--out", str(root / out), *extra], capture_output=True,
                               text=True, env={**_env(), "COLUMNS": "220"}, timeout=120, cwd=root)
            (root / f"{out}.stdout").write_text(r.stdout)
            (root / f"{out}.stderr").write_text(r.stderr)
            assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built once per session; xdist workers share it through a lock in the common temp root."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    shared = root / "moodbench-report-data"
    with open(root / "moodbench-report-data.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shared / "READY").exists():
            shutil.rmtree(shared, ignore_errors=True)
            shared.mkdir(parents=True)
            _generate(shared)
            (shared / "READY").write_text("ok")
    return shared


def _report(data_dir: Path, name: str = "report") -> dict[str, Any]:
    return json.loads((data_dir / name / "report.json").read_text())


# --------------------------------------------------------------------------- small HTML helpers


class _Tables(HTMLParser):
    """Collects every <table> as rows of (text, attrs) cells, plus all hrefs and img srcs."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[tuple[str, dict[str, str]]]]] = {}
        self.links: list[str] = []
        self.images: list[dict[str, str]] = []
        self._stack: list[str] = []
        self._table: list[list[tuple[str, dict[str, str]]]] | None = None
        self._cell: list[str] | None = None
        self._cell_attrs: dict[str, str] = {}
        self._anchors: list[dict[str, str]] = []
        self.anchors: list[tuple[dict[str, str], str]] = []
        self._anchor_text: list[str] | None = None
        self._n = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "table":
            self._n += 1
            self._table = []
            self.tables[a.get("id") or a.get("class") or f"table{self._n}"] = self._table
            if a.get("data-run"):
                self.tables[f"summary:{a['data-run']}"] = self._table
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell, self._cell_attrs = [], a
        elif tag == "a":
            self.links.append(a.get("href", ""))
            self._anchors.append(a)
            self._anchor_text = []
        elif tag == "img":
            self.images.append(a)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table:
            self._table[-1].append((" ".join("".join(self._cell).split()), self._cell_attrs))
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag == "a" and self._anchors:
            self.anchors.append((self._anchors.pop(), "".join(self._anchor_text or [])))
            self._anchor_text = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._anchor_text is not None:
            self._anchor_text.append(data)


def _parse(path: Path) -> _Tables:
    p = _Tables()
    p.feed(path.read_text(encoding="utf-8"))
    return p


# --------------------------------------------------------------------------- the report's numbers


def test_report_command_prints_headline_and_writes_files(data_dir: Path) -> None:
    out = data_dir / "report"
    for name in ("report.html", "report.md", "report.json", "plots/effects.png", "plots/exit_reasons.png",
                 "plots/manipulation.png", "transcripts/index.html"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for png in (out / "plots").glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stdout = (data_dir / "report.stdout").read_text()
    for text in ("control (baseline)", "frustration", "anger", "anxiety", "95% CI", "trust"):
        assert text in stdout, stdout
    md = (out / "report.md").read_text()
    assert "| frustration |" in md and "Manipulation check" in md
    html_text = (out / "report.html").read_text()
    # self-contained: inline CSS, embedded images, nothing fetched from a network
    assert "<style>" in html_text and not re.search(r"""(src|href)=["']https?://""", html_text)
    assert not re.search(r"<link[^>]+stylesheet", html_text)
    assert html_text.count('src="data:image/png;base64,') == 3


def test_report_numbers_match_summary_json(data_dir: Path) -> None:
    """avg reward, pass^k and exit reasons per variant: report.json, report.html and summary.json agree."""
    summary = json.loads((data_dir / "run-a" / "summary.json").read_text())
    report = _report(data_dir)
    rs = report["runs"][0]["summary"]
    parsed = _parse(data_dir / "report" / "report.html")
    table = parsed.tables["summary:" + report["runs"][0]["slug"]]
    header = [text for text, _ in table[0]]
    html_rows = {row[0][0]: row for row in table[1:]}
    assert set(html_rows) == set(summary["variants"]) == {"control", "frustration", "anger", "anxiety"}
    for v, s in summary["variants"].items():
        assert rs["variants"][v]["avg_reward"] == pytest.approx(s["avg_reward"])
        assert rs["variants"][v]["pass_hat_k"] == pytest.approx(s["pass_hat_k"])
        assert rs["variants"][v]["exit_reasons"] == s["exit_reasons"]
        cells = {h: c for h, c in zip(header, html_rows[v])}
        assert cells["avg reward"][0] == f"{s['avg_reward']:.3f}"
        for k in range(1, summary["trials"] + 1):
            assert cells[f"pass^{k}"][0] == f"{s['pass_hat_k'][str(k)]:.3f}"
        assert cells["done/planned"][0] == f"{s['done']}/{s['planned']}"
    # exit-reason links carry the counts; every one matches summary.json
    seen = defaultdict(dict)
    for attrs, _text in parsed.anchors:
        if "data-reason" in attrs and "run=" in attrs.get("href", ""):
            variant = re.search(r"variant=([^&]+)", html.unescape(attrs["href"])).group(1)
            seen[variant][attrs["data-reason"]] = int(attrs["data-count"])
    assert dict(seen) == {v: s["exit_reasons"] for v, s in summary["variants"].items()}
    # the headline table shows the same average rewards
    head = parsed.tables["headline"]
    head_cols = [t for t, _ in head[0]]
    for row in head[1:]:
        variant = row[head_cols.index("variant")][0].replace(" (baseline)", "")
        assert row[head_cols.index("avg reward")][0] == f"{summary['variants'][variant]['avg_reward']:.3f}"


def _independent_pairs(db: Path, baseline: str, variant: str) -> list[tuple[float, float]]:
    """Pairs computed straight from SQLite, without moodbench code: final rows, same (domain, task, trial)."""
    con = sqlite3.connect(db)
    rows = con.execute("SELECT cell_key, domain, task_id, variant, trial, reward, exit_reason FROM simulations ORDER BY id").fetchall()
    final: dict[str, tuple] = {}
    for r in rows:
        prev = final.get(r[0])
        if prev is None or prev[6] in EXCLUDED:
            final[r[0]] = r
    by: dict[str, dict[tuple, float]] = defaultdict(dict)
    for r in final.values():
        if r[6] not in EXCLUDED and r[5] is not None:
            by[r[3]][(r[1], r[2], r[4])] = r[5]
    keys = sorted(set(by[baseline]) & set(by[variant]))
    return [(by[baseline][k], by[variant][k]) for k in keys]


def test_effects_match_an_independent_computation(data_dir: Path) -> None:
    report = _report(data_dir)
    run = report["runs"][0]
    effects = run["effects"]["scopes"]["all"]["subsets"]["all"]
    db = data_dir / "run-a" / "results.sqlite"
    raw_p = {}
    for v in ("frustration", "anger", "anxiety"):
        pairs = _independent_pairs(db, "control", v)
        e = effects[v]
        assert e["n_pairs"] == len(pairs)
        assert e["diff"]["mean"] == pytest.approx(sum(b - a for a, b in pairs) / len(pairs))
        assert e["diff"]["low"] <= e["diff"]["mean"] <= e["diff"]["high"]
        assert e["diff"]["n_resamples"] >= 2000
        b_only = sum(1 for a, b in pairs if a == 1.0 and b < 1.0)
        v_only = sum(1 for a, b in pairs if b == 1.0 and a < 1.0)
        assert (e["baseline_only_success"], e["variant_only_success"]) == (b_only, v_only)
        raw_p[v] = binomtest(min(b_only, v_only), b_only + v_only, 0.5).pvalue if b_only + v_only else 1.0
        assert e["mcnemar_p"] == pytest.approx(raw_p[v])
        base_mean = sum(a for a, _ in pairs) / len(pairs)
        assert e["relative_pct"] == pytest.approx(100 * (sum(b for _, b in pairs) / len(pairs) - base_mean) / base_mean)
    # Holm by hand over the three variants
    order = sorted(raw_p, key=raw_p.get)
    running, holm = 0.0, {}
    for i, v in enumerate(order):
        running = max(running, min(1.0, (len(order) - i) * raw_p[v]))
        holm[v] = running
    for v in raw_p:
        assert effects[v]["mcnemar_p_holm"] == pytest.approx(holm[v])
    # the scripted agent fails every frustrated create_task_1: a visible drop
    assert effects["frustration"]["diff"]["mean"] < 0
    # llm_error conversations are excluded and counted
    con = sqlite3.connect(db)
    n_err = con.execute("SELECT COUNT(DISTINCT cell_key) FROM simulations WHERE variant='anger' AND exit_reason='llm_error'").fetchone()[0]
    assert n_err == 3
    assert run["effects"]["excluded"]["anger"] == 3
    assert effects["anger"]["n_pairs"] == 9
    assert effects["anger"]["verdict"].startswith("Too few pairs for a conclusion")
    headline = {r["variant"]: r for r in report["headline"]}
    assert headline["anger"]["trust"] in ("inconclusive", "unreliable")
    assert any("anger=3" in w["text"] for w in report["warnings"])
    noise = run["effects"]["scopes"]["all"]["noise_floor"]
    assert noise["trial_pairs"] == 3 and noise["mean_abs_diff"] is not None


def test_manipulation_check_detects_and_flags(data_dir: Path) -> None:
    report = _report(data_dir)
    manip = report["runs"][0]["manipulation"]["variants"]
    assert manip["frustration"]["status"] == "passed"
    assert manip["frustration"]["diffs"]["markers_own"]["low"] > 0
    assert manip["frustration"]["diffs"]["vader_compound"]["high"] < 0
    # the anxious customers were scripted to say exactly what control says: flagged
    assert manip["anxiety"]["status"] == "failed"
    assert manip["anxiety"]["diffs"]["markers_own"]["mean"] == 0
    assert manip["anger"]["status"] == "too_few"  # 9 pairs after the llm_errors
    headline = {r["variant"]: r for r in report["headline"]}
    assert headline["anxiety"]["trust"] == "unreliable"
    assert any(w["level"] == "bad" and w["text"].startswith("anxiety") for w in report["warnings"])
    page = (data_dir / "report" / "report.html").read_text()
    assert "manipulation check failed" in page


def test_fidelity_side_by_side_and_warnings(data_dir: Path) -> None:
    report = _report(data_dir)
    run = report["runs"][0]
    fid = run["fidelity"]["variants"]
    db = data_dir / "run-a" / "results.sqlite"
    con = sqlite3.connect(db)
    for v in ("control", "frustration", "anger", "anxiety"):
        flags = [json.loads(f) for (f,) in con.execute(
            "SELECT flags FROM simulations WHERE variant=? AND exit_reason NOT IN ('llm_error','harness_error')", (v,))]
        assert fid[v]["n"] == len(flags)
        assert fid[v]["flagged"] == sum(1 for f in flags if f.get("any"))
        assert fid[v]["counts"]["user_role_confusion"] == sum(1 for f in flags if f.get("user_role_confusion"))
    assert fid["anger"]["counts"]["user_role_confusion"] == 3  # "How can I help you today?" on task_2, three trials
    assert fid["frustration"]["counts"]["user_premature_stop"] == 3
    kinds = {(w["variant"], w["kind"]) for w in run["fidelity"]["warnings"]}
    assert ("anger", "fidelity_gap") in kinds and ("frustration", "fidelity_gap") in kinds
    assert not any(w[0] in ("control", "anxiety") for w in kinds)
    subsets = run["effects"]["scopes"]["all"]["subsets"]
    assert subsets["unflagged"]["frustration"]["n_pairs"] == subsets["all"]["frustration"]["n_pairs"] - 3
    assert subsets["unflagged"]["anxiety"]["n_pairs"] == subsets["all"]["anxiety"]["n_pairs"]
    page = (data_dir / "report" / "report.html").read_text()
    assert "simulator fidelity differs from the baseline" in page


def test_conversation_stats(data_dir: Path) -> None:
    report = _report(data_dir)
    cs = report["runs"][0]["conversation_stats"]
    db = data_dir / "run-a" / "results.sqlite"
    con = sqlite3.connect(db)
    for v in ("control", "frustration"):
        sims = [json.loads(s) for (s,) in con.execute("SELECT simulation FROM simulations WHERE variant=?", (v,))]
        questions = sum(1 for s in sims for m in s["messages"]
                        if m["role"] == "assistant" and (m.get("content") or "").strip().endswith("?"))
        assert cs[v]["total"]["clarification_questions"] == questions
        assert cs[v]["exit_reasons"] == json.loads((data_dir / "run-a" / "summary.json").read_text())["variants"][v]["exit_reasons"]
    # the frustrated create_task_1 conversations add the agent's "Could you tell me again...?"
    assert cs["frustration"]["total"]["clarification_questions"] == cs["control"]["total"]["clarification_questions"] + 3
    assert cs["anger"]["conversations"] == 12 and cs["anger"]["scored"] == 9


def test_several_runs_side_by_side(data_dir: Path) -> None:
    report = _report(data_dir, "report-multi")
    labels = [r["label"] for r in report["runs"]]
    assert labels == ["openai/scripted", "openai/scripted-b"]
    assert {(r["run"], r["variant"]) for r in report["headline"]} == {
        ("openai/scripted", "frustration"), ("openai/scripted", "anger"), ("openai/scripted", "anxiety"),
        ("openai/scripted-b", "frustration")}
    b = next(r for r in report["headline"] if r["run"] == "openai/scripted-b")
    assert b["n_pairs"] == 4 and not b["enough_pairs"] and b["verdict"].startswith("Too few pairs")
    summary_b = json.loads((data_dir / "run-b" / "summary.json").read_text())
    assert report["runs"][1]["summary"]["variants"]["frustration"]["avg_reward"] == pytest.approx(summary_b["variants"]["frustration"]["avg_reward"])
    stdout = (data_dir / "report-multi.stdout").read_text()
    assert "openai/scripted-b" in stdout
    index = (data_dir / "report-multi" / "transcripts" / "index.html").read_text()
    assert 'id="f-run"' in index  # a run filter appears when runs are compared


def test_report_rejects_bad_input(data_dir: Path, tmp_path: Path) -> None:
    r = subprocess.run(CLI + ["report", str(data_dir / "run-a"), "--baseline", "nope", "--out", str(tmp_path / "x")],
                       capture_output=True, text=True, env=_env(), timeout=60)
    assert r.returncode == 2 and "nope" in r.stdout + r.stderr and "control, frustration" in r.stdout + r.stderr
    assert not (tmp_path / "x" / "report.html").exists()
    r = subprocess.run(CLI + ["report", str(tmp_path)], capture_output=True, text=True, env=_env(), timeout=60)
    assert r.returncode == 2 and "not a run directory" in r.stdout + r.stderr


# --------------------------------------------------------------------------- transcripts


def test_transcript_pages_show_the_conversation(data_dir: Path) -> None:
    out = data_dir / "report"
    con = sqlite3.connect(data_dir / "run-a" / "results.sqlite")
    final = {}
    for rid, key, exit_reason in con.execute("SELECT id, cell_key, exit_reason FROM simulations ORDER BY id"):
        if key not in final or final[key][1] in EXCLUDED:
            final[key] = (rid, exit_reason)
    pages = sorted((out / "transcripts").glob("*/sim-*.html"))
    assert len(pages) == len(final) == 48
    index = _parse(out / "transcripts" / "index.html")
    linked = {h for h in index.links if h.endswith(".html") and "sim-" in h}
    assert linked == {p.relative_to(out / "transcripts").as_posix() for p in pages}
    # a frustrated conversation: the emotional block from the prompts table, the customer's words, the agent's question
    rid = con.execute("SELECT id FROM simulations WHERE variant='frustration' AND task_id='create_task_1' AND trial=0").fetchone()[0]
    page = next(p for p in pages if p.name == f"sim-{rid}.html").read_text()
    prompt = con.execute("SELECT text FROM prompts p JOIN simulations s ON s.user_prompt_sha256 = p.sha256 WHERE s.id=?", (rid,)).fetchone()[0]
    block = re.search(r"<emotional_state>.*?</emotional_state>", prompt, re.DOTALL).group(0)
    assert block in html.unescape(page)
    assert "This is ridiculous, I&#39;ve been waiting forever." in page
    assert "Could you tell me again exactly what you need?" in page
    assert "agent_no_tool_calls" in page and "premature_stop" in page
    assert "Expected actions" in page and "create_task" in page
    # a successful control conversation shows the tool call with its arguments and the tool's result
    rid = con.execute("SELECT id FROM simulations WHERE variant='control' AND task_id='create_task_1' AND exit_reason='success'").fetchone()[0]
    page = next(p for p in pages if p.name == f"sim-{rid}.html").read_text()
    assert "calls <span class=\"name\">create_task</span>" in page
    assert "&#34;title&#34;: &#34;Important Meeting&#34;" in page
    assert "Tool result" in page and "task_2" in page
    assert "Control: tau2's own customer prompt, unchanged" in page
    # links from the report's tables resolve to files that exist
    report = _parse(out / "report.html")
    local = [h.split("?")[0].split("#")[0] for h in report.links if not h.startswith("#")]
    assert local and all((out / h).exists() for h in local if h), [h for h in local if h and not (out / h).exists()]
    assert any("transcripts/index.html?run=" in h and "variant=frustration" in h for h in report.links)


# --------------------------------------------------------------------------- in a real browser


def _chromium(args: list[str], profile: Path, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
           "--no-first-run", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--hide-scrollbars", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


_PROBE = """<script>window.addEventListener("load", function () {
  var imgs = Array.prototype.map.call(document.images, function (i) { return [i.id, i.complete, i.naturalWidth]; });
  var rows = Array.prototype.map.call(document.querySelectorAll("table"), function (t) { return [t.id, t.rows.length]; });
  var hidden = document.querySelectorAll("#sims tbody tr[style*='none']").length;
  document.documentElement.setAttribute("data-probe", JSON.stringify({images: imgs, tables: rows, hidden: hidden,
    count: (document.getElementById("count") || {}).textContent || null}));
});</script>"""


def _probe_page(page: Path, query: str, profile: Path) -> tuple[dict[str, Any], str]:
    """Open a copy of ``page`` (with a load-time probe appended) next to it; return the probe and the console lines."""
    probe = page.with_name(f"{page.stem}.probe-{os.getpid()}.html")  # next to the page, so its relative links work
    probe.write_text(page.read_text().replace("</body>", _PROBE + "</body>"))
    try:
        r = _chromium(["--dump-dom", "--virtual-time-budget=5000", probe.as_uri() + query], profile)
    finally:
        probe.unlink()
    assert r.returncode == 0, r.stderr[-3000:]
    m = re.search(r'data-probe="([^"]*)"', r.stdout)
    assert m, "the page never finished loading:\n" + r.stdout[:2000]
    console = "\n".join(line for line in r.stderr.splitlines() if "CONSOLE" in line)
    return json.loads(html.unescape(m.group(1))), console


def _screenshot(url: str, name: str, profile: Path, size: str = "1400,3200") -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    target = ARTIFACTS / name
    r = _chromium([f"--window-size={size}", f"--screenshot={target}", url], profile)
    assert r.returncode == 0 and target.stat().st_size > 10_000, r.stderr[-2000:]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (./test installs it with apt-get when run as root)")
def test_report_renders_in_chromium(data_dir: Path, tmp_path: Path) -> None:
    page = data_dir / "report" / "report.html"
    probe, console = _probe_page(page, "", tmp_path / "profile")
    assert console == "", "console output while loading the report:\n" + console
    images = {i[0]: i for i in probe["images"]}
    assert set(images) == {"plot-effects", "plot-manipulation", "plot-exit"}
    assert all(i[1] and i[2] > 300 for i in images.values()), images  # decoded, real width
    tables = dict((t[0], t[1]) for t in probe["tables"] if t[0])
    assert tables["headline"] == 1 + 1 + 3  # header, baseline, three variants
    assert tables["manipulation-table"] == 1 + 4 and tables["fidelity-table"] == 1 + 4
    _screenshot(page.as_uri(), "report.png", tmp_path / "profile")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (./test installs it with apt-get when run as root)")
def test_transcript_pages_render_and_filter_in_chromium(data_dir: Path, tmp_path: Path) -> None:
    index = data_dir / "report" / "transcripts" / "index.html"
    probe, console = _probe_page(index, "", tmp_path / "profile")
    assert console == "", console
    assert probe["hidden"] == 0 and probe["count"] == "48 of 48 shown"
    con = sqlite3.connect(data_dir / "run-a" / "results.sqlite")
    failed_frustration = [r for r in con.execute(
        "SELECT cell_key FROM simulations WHERE variant='frustration' AND exit_reason NOT IN ('success','llm_error','harness_error')")]
    probe, console = _probe_page(index, "?variant=frustration&outcome=failed", tmp_path / "profile")
    assert console == "", console
    assert probe["count"] == f"{len(failed_frustration)} of 48 shown"
    assert probe["hidden"] == 48 - len(failed_frustration)
    probe, _ = _probe_page(index, "?variant=anger&outcome=excluded", tmp_path / "profile")
    assert probe["count"] == "3 of 48 shown"
    rid = con.execute("SELECT id FROM simulations WHERE variant='frustration' AND task_id='create_task_1' AND trial=0").fetchone()[0]
    sim = next((data_dir / "report" / "transcripts").glob(f"*/sim-{rid}.html"))
    probe, console = _probe_page(sim, "", tmp_path / "profile")
    assert console == "", console
    assert dict((t[0], t[1]) for t in probe["tables"] if t[0])["outcome"] >= 6
    _screenshot(sim.as_uri(), "transcript.png", tmp_path / "profile", "1200,2000")
    _screenshot(index.as_uri() + "?variant=frustration", "transcripts-index.png", tmp_path / "profile", "1300,1100")


# --------------------------------------------------------------------------- moodbench view


def test_view_builds_missing_pages_and_serves_them(data_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(data_dir / "run-b", run)
    assert not (run / "report").exists()
    proc = subprocess.Popen(CLI + ["view", str(run), "--port", "0", "--no-open"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**_env(), "COLUMNS": "200"})
    try:
        url = None
        deadline = time.monotonic() + 60
        lines = []
        while time.monotonic() < deadline and url is None:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"transcripts: (http://127\.0\.0\.1:\d+/transcripts/index\.html)", line)
            url = m.group(1) if m else None
        assert url, "".join(lines)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url, timeout=10) as resp:
            body = resp.read().decode()
        assert resp.status == 200 and "8 simulation(s)" in body
        sim = re.search(r'href="([^"]+/sim-\d+\.html)"', body).group(1)
        with opener.open(url.rsplit("/", 1)[0] + "/" + sim, timeout=10) as resp:
            assert "Conversation" in resp.read().decode()
        with opener.open(url.replace("transcripts/index.html", "report.html"), timeout=10) as resp:
            assert "The answer" in resp.read().decode()
        assert (run / "report" / "report.html").exists()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
    assert rc == 0


def test_view_rejects_a_non_run_directory(tmp_path: Path) -> None:
    r = subprocess.run(CLI + ["view", str(tmp_path), "--no-open", "--port", "0"], capture_output=True, text=True, env=_env(), timeout=60)
    assert r.returncode == 2 and "not a run directory" in r.stdout + r.stderr


# --------------------------------------------------------------------------- optional LLM judge


def test_llm_judge_scores_customers(data_dir: Path) -> None:
    """The scripted judge rates 'ridiculous' customers 8/10 frustrated and everyone else 0 (report-multi used it)."""
    report = _report(data_dir, "report-multi")
    run_a, run_b = report["runs"]
    assert run_b["judge"]["judged"] == 8 and run_b["judge"]["failed"] == 0
    assert run_a["judge"]["judged"] == 45  # 48 conversations minus the three llm_errors
    d = run_b["manipulation"]["variants"]["frustration"]["diffs"]["judge_own"]
    assert d["mean"] == pytest.approx(8.0) and d["n_pairs"] == 4
    assert run_a["manipulation"]["variants"]["frustration"]["diffs"]["judge_own"]["moved"]
    assert run_a["manipulation"]["variants"]["anxiety"]["diffs"]["judge_own"]["mean"] == 0
    requests = [json.loads(line) for log in (data_dir / "server").glob("*.requests.jsonl") for line in log.read_text().splitlines()]
    judged = [r for r in requests if r["role"] == "emotion_judge"]
    # identical customer texts are judged once per run (cached by prompt hash), at most once per conversation
    distinct = {json.dumps(j["body"]["messages"]) for j in judged}
    # 4 tasks x 3 wordings (control = anxiety, frustration, anger) minus anger on update_task_1 (llm_error); run-b repeats them
    assert len(distinct) == 11
    assert len(distinct) <= len(judged) <= 45 + 8
    # blind: the judge sees the customer's words, never the variant or its prompt
    assert all("emotional_state" not in json.dumps(j["body"]) and "frustrated customer" not in json.dumps(j["body"]) for j in judged)
    assert "LLM judge" in (data_dir / "report-multi" / "report.html").read_text()
    assert "Δ judge" in (data_dir / "report-multi" / "report.html").read_text()
    assert "Δ judge" not in (data_dir / "report" / "report.html").read_text()  # no judge, no column
