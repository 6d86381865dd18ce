"""`moodbench report` and `moodbench view` end to end, on real runs against the scripted server.

The data: a real `moodbench run` on the mock domain, where the scripted customer's wording depends on
its system prompt (frustrated -> "This is ridiculous...", angry -> "This is unacceptable...",
anxious -> *unchanged*, so the manipulation check must flag it), the scripted agent stumbles over
frustrated customers on one task, angry customers on one task hit an HTTP 500 (llm_error, excluded)
and on another speak like the agent (role-confusion flag); seeded malformed tool calls make trials
differ, so the baseline's A/A split has something to measure. A second, smaller run with another agent
model name is compared side by side. A third run holds three intensity levels of frustration (mild,
moderate, severe) against a fault-free scripted server whose customers and agent react to the level, for
the dose-response table. Four tasks is below the calibrated minimum for a claim (20 tasks, 40 pairs), so
every effect here is `too_few`: claims themselves are asserted on imported tau2 files (test_import.py).
All runs and their reports are built once per session and shared by the workers.

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
import time
import urllib.request
from collections import defaultdict
from html.parser import HTMLParser
from pathlib import Path
from statistics import stdev
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from scipy.stats import binomtest
from scipy.stats import t as t_dist

from scripted import CLI, cli_env, start_scripted_server

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
EXCLUDED = ("llm_error", "harness_error")

# --------------------------------------------------------------------------- the scripted conversations

GOALS = [  # (phrase in the task's scenario, what the customer asks for)
    (
        "'Important Meeting' for user_1",
        "Please create a new task called 'Important Meeting' for user_1 to track this important meeting.",
    ),
    ("task_1 be marked", "Please mark my existing task task_1 as completed, I have completed it."),
    ("task with ID task_2", "Continuing our task management discussion: please mark task task_2 as completed."),
    ("delete all your current tasks", "I want to delete all my current tasks."),
]
TRANSFER = "User needs to delete all their current tasks. This is not possible to do with the tools available."


def _first(prefix: str, suffix: str = "") -> dict[str, Any]:
    return {
        "match": [{"if_contains": m, "in": "system", "then": {"content": prefix + g + suffix}} for m, g in GOALS],
        "else": {"content": prefix + "I need help with my tasks."},
    }


def _call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"tool_calls": [{"name": name, "arguments": arguments}]}


def _agent_acts() -> dict[str, Any]:
    """The agent does the right thing for whatever the customer asked."""
    return {
        "match": [
            {
                "if_contains": "Important Meeting",
                "in": "last",
                "then": _call("create_task", user_id="user_1", title="Important Meeting"),
            },
            {"if_contains": "task_1", "in": "last", "then": _call("update_task_status", task_id="task_1", status="completed")},
            {"if_contains": "task_2", "in": "last", "then": _call("update_task_status", task_id="task_2", status="completed")},
            {"if_contains": "delete all", "in": "last", "then": _call("transfer_to_human_agents", summary=TRANSFER)},
        ],
        "else": {"content": "How can I help?"},
    }


JUDGE_HIGH = json.dumps({"frustration": 8, "anger": 2, "anxiety": 0, "confusion": 0, "impatience": 5, "skepticism": 0})
JUDGE_LOW = json.dumps({f: 0 for f in ("frustration", "anger", "anxiety", "confusion", "impatience", "skepticism")})
SCRIPT: dict[str, Any] = {
    "models": ["scripted", "scripted-b", "judge"],
    "seed": 7,
    "faults": {"malformed_tool_call_rate": 0.12, "roles": ["agent"]},
    "roles": {
        # the report's optional emotion judge (model name "judge"): 'ridiculous' reads as frustrated
        "emotion_judge": {
            "model": "judge",
            "turns": [
                {
                    "match": [{"if_contains": "ridiculous", "in": "last", "then": {"content": JUDGE_HIGH}}],
                    "else": {"content": "Here you go: " + JUDGE_LOW},
                }
            ],
        },
        "agent": {
            "turns": [
                {"content": "unused (tau2 sends its own greeting)"},
                {
                    "match": [
                        # a frustrated customer asking to create a task throws the agent off: it asks instead of acting
                        {
                            "if_contains": "ridiculous",
                            "in": "last",
                            "then": {
                                "match": [
                                    {
                                        "if_contains": "Important Meeting",
                                        "in": "last",
                                        "then": {
                                            "content": "I'm sorry about the wait. Could you tell me again exactly what you need?"
                                        },
                                    }
                                ],
                                "else": _agent_acts(),
                            },
                        },
                    ],
                    "else": _agent_acts(),
                },
                {"content": "Done, your request has been handled."},
            ],
            "after": {"content": "Is there anything else?"},
        },
        "user": {
            "turns": [
                {
                    "match": [
                        {
                            "if_contains": "frustrated customer",
                            "in": "system",
                            "then": _first("This is ridiculous, I've been waiting forever. "),
                        },
                        {
                            "if_contains": "angry customer",
                            "in": "system",
                            "then": {
                                "match": [
                                    {
                                        "if_contains": "task_1 be marked",
                                        "in": "system",
                                        "then": {"status": 500, "error": "scripted outage"},
                                    },
                                    {
                                        "if_contains": "task with ID task_2",
                                        "in": "system",
                                        "then": _first(
                                            "This is unacceptable! I demand a manager right now. ", " How can I help you today?"
                                        ),
                                    },
                                ],
                                "else": _first("This is unacceptable! I demand a manager right now. "),
                            },
                        },
                    ],
                    "else": _first(""),
                },  # control and anxiety: identical words
                {
                    "match": [
                        {
                            "if_contains": "frustrated customer",
                            "in": "system",
                            "then": {"content": "Ugh, finally. Why is this so complicated? ###STOP###"},
                        },
                        {
                            "if_contains": "angry customer",
                            "in": "system",
                            "then": {"content": "About time. Terrible service. ###STOP###"},
                        },
                    ],
                    "else": {"content": "Thank you, that is all. ###STOP###"},
                },
            ],
            "after": {"content": "###STOP###"},
        },
    },
}
RUN_A = [
    "--domain",
    "mock",
    "--task-ids",
    "create_task_1,update_task_1,update_task_with_initialization_data,impossible_task_1",
    "--variants",
    "control,frustration,anger,anxiety",
    "--trials",
    "3",
    "--agent-model",
    "openai/scripted",
]
RUN_B = [
    "--domain",
    "mock",
    "--task-ids",
    "create_task_1,update_task_1",
    "--variants",
    "control,frustration",
    "--trials",
    "2",
    "--agent-model",
    "openai/scripted-b",
]
DOSE_OPENINGS = (
    ("a little frustrated", "Hm, this is taking so long. "),
    ("frustrated customer", "This is ridiculous, I've been waiting forever. "),
    ("very frustrated and fed up", "Ugh! Ridiculous! I am fed up, so much time wasted, every single time! "),
)
DOSE_SCRIPT: dict[str, Any] = {
    "models": ["scripted-dose"],
    "roles": {
        "agent": {
            "turns": [
                {"content": "unused (tau2 sends its own greeting)"},
                {
                    "match": [
                        # severe: the agent is thrown off on every task; moderate: on the create task only; mild: never
                        {
                            "if_contains": "fed up",
                            "in": "last",
                            "then": {"content": "I'm sorry. Could you tell me again exactly what you need?"},
                        },
                        {
                            "if_contains": "ridiculous",
                            "in": "last",
                            "then": {
                                "match": [
                                    {
                                        "if_contains": "Important Meeting",
                                        "in": "last",
                                        "then": {"content": "I'm sorry about the wait. What do you need?"},
                                    }
                                ],
                                "else": _agent_acts(),
                            },
                        },
                    ],
                    "else": _agent_acts(),
                },
                {"content": "Done, your request has been handled."},
            ],
            "after": {"content": "Is there anything else?"},
        },
        "user": {
            "turns": [
                {
                    "match": [
                        {"if_contains": marker, "in": "system", "then": _first(opening)} for marker, opening in DOSE_OPENINGS
                    ],
                    "else": _first(""),
                },
                {"content": "Thank you, that is all. ###STOP###"},
            ],
            "after": {"content": "###STOP###"},
        },
    },
}
RUN_DOSE = [
    "--domain",
    "mock",
    "--task-ids",
    "create_task_1,update_task_1,update_task_with_initialization_data",
    "--variants",
    "control,frustration:mild,frustration,frustration:severe",
    "--trials",
    "2",
    "--agent-model",
    "openai/scripted-dose",
]
# One conversation at a time: the scripted server draws its seeded faults in request order, so only a
# sequential run gives every conversation the same faults on every machine (and the asserted effects).
COMMON = ["--concurrency", "1", "--max-retries", "0", "--skip-preflight"]


def _generate(root: Path) -> None:
    """Three real runs (in parallel) and their reports (the comparison one with the LLM judge) under ``root``."""
    # one server per run: a server draws its seeded faults in request order, so two runs sharing one would
    # split the faults by timing (seen: a transcript page count that differed once in a loaded ./test)
    srv = start_scripted_server(SCRIPT, root / "server")
    srv_b = start_scripted_server(SCRIPT, root / "server-b")
    dose = start_scripted_server(DOSE_SCRIPT, root / "server-dose")  # no faults
    try:
        procs = []
        for name, args, url in (
            ("run-a", RUN_A, srv.base_url),
            ("run-b", RUN_B, srv_b.base_url),
            ("run-dose", RUN_DOSE, dose.base_url),
        ):
            log = (root / f"{name}.log").open("w")
            procs.append(
                (
                    name,
                    log,
                    subprocess.Popen(
                        CLI + ["run", *args, *COMMON, "--agent-base-url", url, "--out", str(root / name)],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=cli_env(),
                        cwd=root,
                    ),
                )
            )
        for name, log, p in procs:
            rc = p.wait(timeout=300)
            log.close()
            assert rc == 0, f"{name} exited {rc}:\n" + (root / f"{name}.log").read_text()[-4000:]
        judge = ["--judge-model", "openai/judge", "--judge-base-url", srv.base_url]
        for out, runs, extra in (
            ("report", ["run-a"], []),
            ("report-multi", ["run-a", "run-b"], judge),
            ("report-dose", ["run-dose"], []),
        ):
            r = subprocess.run(
                CLI + ["report", *[str(root / x) for x in runs], "--out", str(root / out), *extra],
                capture_output=True,
                text=True,
                env={**cli_env(), "COLUMNS": "220"},
                timeout=120,
                cwd=root,
            )
            (root / f"{out}.stdout").write_text(r.stdout)
            (root / f"{out}.stderr").write_text(r.stderr)
            assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    finally:
        srv.stop()
        srv_b.stop()
        dose.stop()


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
    for name in (
        "report.html",
        "report.md",
        "report.json",
        "plots/effects.png",
        "plots/exit_reasons.png",
        "plots/manipulation.png",
        "transcripts/index.html",
    ):
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
    assert html_text.count('src="data:image/png;base64,') == 4  # effects, exit reasons, manipulation, failure anatomy


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
    seen: defaultdict[str, dict[str, int]] = defaultdict(dict)
    for attrs, _text in parsed.anchors:
        if "data-reason" in attrs and "run=" in attrs.get("href", ""):
            found = re.search(r"variant=([^&]+)", html.unescape(attrs["href"]))
            assert found, attrs
            variant = found.group(1)
            seen[variant][attrs["data-reason"]] = int(attrs["data-count"])
    assert dict(seen) == {v: s["exit_reasons"] for v, s in summary["variants"].items()}
    # the headline table shows the *paired* means (the same pairs as the difference), not the run table's
    head = parsed.tables["headline"]
    head_cols = [t for t, _ in head[0]]
    effects = {e["variant"]: e for e in report["effects"] if e["domain"] == "all" and e["subset"] == "all"}
    for row in head[2:]:
        e = effects[row[head_cols.index("variant")][0]]
        assert row[head_cols.index("baseline (paired)")][0] == f"{e['baseline_mean']:.3f}"
        assert row[head_cols.index("variant (paired)")][0] == f"{e['variant_mean']:.3f}"
    # anger lost update_task_1 to llm_errors: its paired baseline mean is over the three tasks it has, unlike summary.json's
    assert effects["anger"]["baseline_mean"] != pytest.approx(summary["variants"]["control"]["avg_reward"])


def _independent_pairs(db: Path, baseline: str, variant: str) -> list[tuple[float, float]]:
    """Pairs computed straight from SQLite, without moodbench code: final rows, same (domain, task, trial)."""
    con = sqlite3.connect(db)
    rows = con.execute(
        "SELECT cell_key, domain, task_id, variant, trial, reward, exit_reason FROM simulations ORDER BY id"
    ).fetchall()
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


def _independent_task_diffs(db: Path, baseline: str, variant: str) -> dict[tuple[str, str], list[float]]:
    """Per task, the pairs' (variant - baseline) rewards, straight from SQLite."""
    out: dict[tuple[str, str], list[float]] = defaultdict(list)
    con = sqlite3.connect(db)
    rows = con.execute(
        "SELECT cell_key, domain, task_id, variant, trial, reward, exit_reason FROM simulations ORDER BY id"
    ).fetchall()
    final: dict[str, tuple] = {}
    for r in rows:
        if r[0] not in final or final[r[0]][6] in EXCLUDED:
            final[r[0]] = r
    by: dict[str, dict[tuple, float]] = defaultdict(dict)
    for r in final.values():
        if r[6] not in EXCLUDED and r[5] is not None:
            by[r[3]][(r[1], r[2], r[4])] = r[5]
    for k in sorted(set(by[baseline]) & set(by[variant])):
        out[k[:2]].append(by[variant][k] - by[baseline][k])
    return out


def _effects(
    report: dict[str, Any], run: str | None = None, domain: str = "all", subset: str = "all"
) -> dict[str, dict[str, Any]]:
    return {
        e["variant"]: e
        for e in report["effects"]
        if e["domain"] == domain and e["subset"] == subset and (run is None or e["run"] == run)
    }


def test_effects_match_an_independent_computation(data_dir: Path) -> None:
    """Task-weighted mean of per-task mean differences, t(G-1) interval over tasks; McNemar only as a labelled extra."""
    report = _report(data_dir)
    effects = _effects(report)
    db = data_dir / "run-a" / "results.sqlite"
    for v in ("frustration", "anger", "anxiety"):
        per_task = _independent_task_diffs(db, "control", v)
        task_means = [sum(d) / len(d) for d in per_task.values()]
        e = effects[v]
        assert e["n_pairs"] == sum(len(d) for d in per_task.values()) and e["n_tasks"] == len(per_task)
        assert e["diff"] == pytest.approx(sum(task_means) / len(task_means))
        assert e["variant_mean"] - e["baseline_mean"] == pytest.approx(e["diff"])
        if len(set(task_means)) > 1:
            half = t_dist.ppf(0.975, len(task_means) - 1) * stdev(task_means) / len(task_means) ** 0.5
            assert e["ci"] == pytest.approx([e["diff"] - half, e["diff"] + half])
        # four tasks: below the calibrated minimum, so no claim whatever the p, and not counted in the family
        assert e["claim"] == "too_few" and e["p_adjusted"] is None
        m = e["mcnemar"]
        assert (
            "McNemar on these pairs" in m["label"]
            and m["baseline_only"] + m["variant_only"] + m["both_success"] + m["both_fail"] == e["n_pairs"]
        )
        discordant = m["baseline_only"] + m["variant_only"]
        assert m["p"] == pytest.approx(binomtest(m["baseline_only"], discordant, 0.5).pvalue if discordant else 1.0)
    assert effects["frustration"]["diff"] < 0  # the scripted agent fails every frustrated create_task_1
    fam = next(f for f in report["families"] if f["name"] == "reward/all")
    assert (fam["size"], fam["planned"]) == (0, 3)
    # llm_error conversations are excluded and counted
    con = sqlite3.connect(db)
    n_err = con.execute(
        "SELECT COUNT(DISTINCT cell_key) FROM simulations WHERE variant='anger' AND exit_reason='llm_error'"
    ).fetchone()[0]
    assert n_err == 3 and report["runs"][0]["excluded"]["anger"] == 3 and effects["anger"]["n_pairs"] == 9
    assert any("anger=3" in w["text"] for w in report["warnings"])
    assert "Too few for a claim: frustration (4 tasks, 12 pairs)" in report["bottom_lines"][0]["text"]
    # the MDE and the A/A split replace the noise floor
    design = report["designs"][0]
    assert (
        design["mde"] is None and design["aa"]["n_tasks"] == 4 and design["aa"]["trials_a"] == 8 and design["aa"]["trials_b"] == 4
    )
    assert "noise" not in json.dumps(report["effects"]) + json.dumps(report["designs"])


def test_manipulation_check_scores_early_turns_with_a_task_minimum(data_dir: Path) -> None:
    report = _report(data_dir)
    checks = {m["variant"]: m for m in report["manipulation"]}
    assert {m["domain"] for m in report["manipulation"]} == {"all"}
    assert all(m["status"] == "too_few" and m["n_tasks"] <= 4 for m in checks.values())  # 4 tasks < MIN_TASKS
    fr = checks["frustration"]
    assert fr["score"] == "markers_own" and fr["turns"] == "early" and fr["shift"] > fr["min_effect"]
    assert checks["anxiety"]["shift"] == 0  # scripted to say exactly what control says
    effects = _effects(report)
    assert effects["frustration"]["manipulation"] == "too_few"
    assert any(c["kind"] == "manipulation_too_few" for c in effects["anxiety"]["caveats"])
    page = (data_dir / "report" / "report.html").read_text()
    assert "early turns" in page and "manipulation not checkable" in page


def test_fidelity_side_by_side_and_warnings(data_dir: Path) -> None:
    report = _report(data_dir)
    run = report["runs"][0]
    fid = run["fidelity"]["variants"]
    db = data_dir / "run-a" / "results.sqlite"
    con = sqlite3.connect(db)
    for v in ("control", "frustration", "anger", "anxiety"):
        flags = [
            json.loads(f)
            for (f,) in con.execute(
                "SELECT flags FROM simulations WHERE variant=? AND exit_reason NOT IN ('llm_error','harness_error')", (v,)
            )
        ]
        assert fid[v]["n"] == len(flags)
        assert fid[v]["flagged"] == sum(1 for f in flags if f.get("any"))
        assert fid[v]["counts"]["user_role_confusion"] == sum(1 for f in flags if f.get("user_role_confusion"))
    assert fid["anger"]["counts"]["user_role_confusion"] == 3  # "How can I help you today?" on task_2, three trials
    assert fid["frustration"]["counts"]["user_premature_stop"] == 3
    kinds = {(w["variant"], w["kind"]) for w in run["fidelity"]["warnings"]}
    assert ("anger", "fidelity_gap") in kinds and ("frustration", "fidelity_gap") in kinds
    assert not any(w[0] in ("control", "anxiety") for w in kinds)
    allp, unflagged = _effects(report), _effects(report, subset="unflagged")
    assert unflagged["frustration"]["n_pairs"] == allp["frustration"]["n_pairs"] - 3
    assert unflagged["anxiety"]["n_pairs"] == allp["anxiety"]["n_pairs"]
    assert unflagged["frustration"]["family"] == "reward/unflagged"
    # the fidelity warnings travel with the effect as caveats (beside its claim), the worst deciding the trust level
    caveats = {c["kind"] for c in allp["frustration"]["caveats"]}
    assert {k for v, k in kinds if v == "frustration"} <= caveats
    assert allp["frustration"]["trust"] == ("unreliable" if ("frustration", "low_fidelity") in kinds else "caution")
    page = (data_dir / "report" / "report.html").read_text()
    assert "simulator fidelity differs from the baseline" in page


def test_conversation_stats(data_dir: Path) -> None:
    report = _report(data_dir)
    cs = report["runs"][0]["conversation_stats"]
    db = data_dir / "run-a" / "results.sqlite"
    con = sqlite3.connect(db)
    for v in ("control", "frustration"):
        sims = [json.loads(s) for (s,) in con.execute("SELECT simulation FROM simulations WHERE variant=?", (v,))]
        questions = sum(
            1 for s in sims for m in s["messages"] if m["role"] == "assistant" and (m.get("content") or "").strip().endswith("?")
        )
        assert cs[v]["total"]["clarification_questions"] == questions
        assert (
            cs[v]["exit_reasons"] == json.loads((data_dir / "run-a" / "summary.json").read_text())["variants"][v]["exit_reasons"]
        )
    # the frustrated create_task_1 conversations add the agent's "Could you tell me again...?"
    assert cs["frustration"]["total"]["clarification_questions"] == cs["control"]["total"]["clarification_questions"] + 3
    assert cs["anger"]["conversations"] == 12 and cs["anger"]["scored"] == 9


def test_several_runs_side_by_side(data_dir: Path) -> None:
    report = _report(data_dir, "report-multi")
    labels = [r["label"] for r in report["runs"]]
    assert labels == ["openai/scripted", "openai/scripted-b"]
    assert {(e["run"], e["variant"]) for e in report["effects"] if e["subset"] == "all"} == {
        ("openai/scripted", "frustration"),
        ("openai/scripted", "anger"),
        ("openai/scripted", "anxiety"),
        ("openai/scripted-b", "frustration"),
    }
    b = _effects(report, "openai/scripted-b")["frustration"]
    assert b["n_pairs"] == 4 and b["claim"] == "too_few"
    assert [f["run"] for f in report["families"] if f["subset"] == "all"] == labels  # one family per run
    summary_b = json.loads((data_dir / "run-b" / "summary.json").read_text())
    assert report["runs"][1]["summary"]["variants"]["frustration"]["avg_reward"] == pytest.approx(
        summary_b["variants"]["frustration"]["avg_reward"]
    )
    stdout = (data_dir / "report-multi.stdout").read_text()
    assert "openai/scripted-b" in stdout
    index = (data_dir / "report-multi" / "transcripts" / "index.html").read_text()
    assert 'id="f-run"' in index  # a run filter appears when runs are compared


def test_report_rejects_bad_input(data_dir: Path, tmp_path: Path) -> None:
    r = subprocess.run(
        CLI + ["report", str(data_dir / "run-a"), "--baseline", "nope", "--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
    )
    assert r.returncode == 2 and "nope" in r.stdout + r.stderr and "control, frustration" in r.stdout + r.stderr
    assert not (tmp_path / "x" / "report.html").exists()
    r = subprocess.run(CLI + ["report", str(tmp_path)], capture_output=True, text=True, env=cli_env(), timeout=60)
    assert r.returncode == 2 and "not a run directory" in r.stdout + r.stderr


# --------------------------------------------------------------------------- transcripts


def test_transcript_pages_show_the_conversation(data_dir: Path) -> None:
    out = data_dir / "report"
    con = sqlite3.connect(data_dir / "run-a" / "results.sqlite")
    final: dict[str, tuple[int, str]] = {}
    for rid, key, exit_reason in con.execute("SELECT id, cell_key, exit_reason FROM simulations ORDER BY id"):
        if key not in final or final[key][1] in EXCLUDED:
            final[key] = (rid, exit_reason)
    pages = sorted((out / "transcripts").glob("*/sim-*.html"))
    assert len(pages) == len(final) == 48
    index = _parse(out / "transcripts" / "index.html")
    linked = {h for h in index.links if h.endswith(".html") and "sim-" in h}
    assert linked == {p.relative_to(out / "transcripts").as_posix() for p in pages}
    # a frustrated conversation: the emotional block from the prompts table, the customer's words, the agent's question
    rid = con.execute(
        "SELECT id FROM simulations WHERE variant='frustration' AND task_id='create_task_1' AND trial=0"
    ).fetchone()[0]
    page = next(p for p in pages if p.name == f"sim-{rid}.html").read_text()
    prompt = con.execute(
        "SELECT text FROM prompts p JOIN simulations s ON s.user_prompt_sha256 = p.sha256 WHERE s.id=?", (rid,)
    ).fetchone()[0]
    emotional = re.search(r"<emotional_state>.*?</emotional_state>", prompt, re.DOTALL)
    assert emotional, prompt
    block = emotional.group(0)
    assert block in html.unescape(page)
    assert "This is ridiculous, I&#39;ve been waiting forever." in page
    assert "Could you tell me again exactly what you need?" in page
    assert "agent_no_tool_calls" in page and "premature_stop" in page
    assert "Expected actions" in page and "create_task" in page
    # a successful control conversation shows the tool call with its arguments and the tool's result
    rid = con.execute(
        "SELECT id FROM simulations WHERE variant='control' AND task_id='create_task_1' AND exit_reason='success'"
    ).fetchone()[0]
    page = next(p for p in pages if p.name == f"sim-{rid}.html").read_text()
    assert 'calls <span class="name">create_task</span>' in page
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
    assert CHROMIUM, "the browser tests skip without chromium"
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        "--hide-scrollbars",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


_PROBE = """<script>window.addEventListener("load", function () {
  /*ACTIONS*/
  var imgs = Array.prototype.map.call(document.images, function (i) { return [i.id, i.complete, i.naturalWidth]; });
  var rows = Array.prototype.map.call(document.querySelectorAll("table"), function (t) { return [t.id, t.rows.length]; });
  var hidden = document.querySelectorAll("#sims tbody tr[style*='none']").length;
  document.documentElement.setAttribute("data-probe", JSON.stringify({images: imgs, tables: rows, hidden: hidden,
    count: (document.getElementById("count") || {}).textContent || null}));
});</script>"""


def _probe_page(page: Path, query: str, profile: Path, actions: str = "") -> tuple[dict[str, Any], str]:
    """Open a copy of ``page`` (with a load-time probe appended) next to it; return the probe and the console lines.

    ``actions``: JavaScript run at load time before the probe reads the page (e.g. change a filter)."""
    probe = page.with_name(f"{page.stem}.probe-{os.getpid()}.html")  # next to the page, so its relative links work
    probe.write_text(page.read_text().replace("</body>", _PROBE.replace("/*ACTIONS*/", actions) + "</body>"))
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
    assert set(images) == {"plot-effects", "plot-manipulation", "plot-exit", "plot-anatomy"}
    assert all(i[1] and i[2] > 300 for i in images.values()), images  # decoded, real width
    tables = dict((t[0], t[1]) for t in probe["tables"] if t[0])
    assert tables["headline"] == 1 + 1 + 3  # header, baseline, three variants
    assert tables["manipulation-table"] == 1 + 3 and tables["fidelity-table"] == 1 + 4  # one check per variant and scope
    _screenshot(page.as_uri(), "report.png", tmp_path / "profile")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (./test installs it with apt-get when run as root)")
def test_transcript_pages_render_and_filter_in_chromium(data_dir: Path, tmp_path: Path) -> None:
    index = data_dir / "report" / "transcripts" / "index.html"
    probe, console = _probe_page(index, "", tmp_path / "profile")
    assert console == "", console
    assert probe["hidden"] == 0 and probe["count"] == "48 of 48 shown"
    con = sqlite3.connect(data_dir / "run-a" / "results.sqlite")
    failed_frustration = [
        r
        for r in con.execute(
            "SELECT cell_key FROM simulations WHERE variant='frustration' AND exit_reason NOT IN ('success','llm_error','harness_error')"
        )
    ]
    probe, console = _probe_page(index, "?variant=frustration&outcome=failed", tmp_path / "profile")
    assert console == "", console
    assert probe["count"] == f"{len(failed_frustration)} of 48 shown"
    assert probe["hidden"] == 48 - len(failed_frustration)
    probe, _ = _probe_page(index, "?variant=anger&outcome=excluded", tmp_path / "profile")
    assert probe["count"] == "3 of 48 shown"
    rid = con.execute(
        "SELECT id FROM simulations WHERE variant='frustration' AND task_id='create_task_1' AND trial=0"
    ).fetchone()[0]
    sim = next((data_dir / "report" / "transcripts").glob(f"*/sim-{rid}.html"))
    probe, console = _probe_page(sim, "", tmp_path / "profile")
    assert console == "", console
    assert dict((t[0], t[1]) for t in probe["tables"] if t[0])["outcome"] >= 6
    _screenshot(sim.as_uri(), "transcript.png", tmp_path / "profile", "1200,2000")
    _screenshot(index.as_uri() + "?variant=frustration", "transcripts-index.png", tmp_path / "profile", "1300,1100")


def _report_links(data_dir: Path) -> list[tuple[dict[str, str], dict[str, list[str]]]]:
    """(anchor attributes, parsed query) of every link from report.html into the transcript index."""
    parsed = _parse(data_dir / "report" / "report.html")
    return [
        (a, parse_qs(urlsplit(a["href"]).query))
        for a, _ in parsed.anchors
        if a.get("href", "").startswith("transcripts/index.html?")
    ]


def test_filter_links_are_not_double_escaped(data_dir: Path) -> None:
    """The flagged and exit-reason links used to carry '&amp;amp;flagged=yes' (a filter called 'amp;flagged')."""
    links = _report_links(data_dir)
    assert links and all(not any(k.startswith("amp;") for k in q) for _, q in links), [a["href"] for a, _ in links]
    flagged = [q for _, q in links if "flagged" in q]
    assert flagged and all(q["flagged"] == ["yes"] and "variant" in q and "run" in q for q in flagged)
    exits = [(a, q) for a, q in links if "data-reason" in a]
    assert exits and all(q["exit"] == [a["data-reason"]] for a, q in exits)
    raw = (data_dir / "report" / "report.html").read_text()
    assert "&amp;amp;" not in raw


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (./test installs it with apt-get when run as root)")
def test_report_filter_links_filter_the_index_in_chromium(data_dir: Path, tmp_path: Path) -> None:
    index = data_dir / "report" / "transcripts" / "index.html"
    con = sqlite3.connect(data_dir / "run-a" / "results.sqlite")
    rows = con.execute("SELECT cell_key, variant, exit_reason, flags FROM simulations ORDER BY id").fetchall()
    final: dict[str, tuple] = {}
    for r in rows:
        if r[0] not in final or final[r[0]][2] in EXCLUDED:
            final[r[0]] = r
    links = _report_links(data_dir)
    href = next(a["href"] for a, q in links if q.get("flagged") == ["yes"] and q["variant"] == ["frustration"])
    flagged = sum(1 for r in final.values() if r[1] == "frustration" and json.loads(r[3] or "{}").get("any"))
    probe, console = _probe_page(index, "?" + urlsplit(href).query, tmp_path / "profile")
    assert console == "", console
    assert flagged > 0 and probe["count"] == f"{flagged} of 48 shown"
    a, q = next((a, q) for a, q in links if q.get("exit") == ["agent_no_tool_calls"] and q["variant"] == ["frustration"])
    probe, _ = _probe_page(index, "?" + urlsplit(a["href"]).query, tmp_path / "profile")
    assert probe["count"] == f"{a['data-count']} of 48 shown"
    # a value a select does not offer must not leave that control dead: changing it afterwards still filters
    change = """var s = document.getElementById("f-exit"); s.value = "llm_error"; s.dispatchEvent(new Event("change"));"""
    probe, _ = _probe_page(index, "?exit=no-such-reason", tmp_path / "profile", actions=change)
    assert probe["count"] == "3 of 48 shown"


def test_markdown_escapes_run_data(data_dir: Path, tmp_path: Path) -> None:
    """A model name with markdown/HTML markup must neither split a table row nor become HTML in report.md."""
    run = tmp_path / "run"
    shutil.copytree(data_dir / "run-b", run)
    evil = "evil|model <img src=x onerror=alert(1)> `tick` *star*\nline2"
    con = sqlite3.connect(run / "results.sqlite")
    config = json.loads(con.execute("SELECT value FROM meta WHERE key='config'").fetchone()[0])
    con.execute("UPDATE meta SET value=? WHERE key='config'", (json.dumps({**config, "agent_model": evil}),))
    con.commit()
    con.close()
    r = subprocess.run(
        CLI + ["report", str(run), "--out", str(tmp_path / "rep")], capture_output=True, text=True, env=cli_env(), timeout=120
    )
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "<img" not in md and "`tick`" not in md and "\nline2" not in md
    assert r"evil\|model &lt;img src=x onerror=alert(1)&gt; \`tick\` \*star\* line2" in md
    for line in md.splitlines():  # every table row has as many unescaped cell separators as its header
        if line.startswith("| ") and "evil" in line:
            header = next(
                h
                for h in reversed(md[: md.index(line)].splitlines())
                if h.startswith("| ") and "---" not in h and "evil" not in h
            )
            assert len(re.findall(r"(?<!\\)\|", line)) == len(re.findall(r"(?<!\\)\|", header)), line
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


def _get(url: str, host: str | None = None) -> int:
    req = urllib.request.Request(url, headers={"Host": host} if host else {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_viewer_answers_only_loopback_hosts_and_lists_no_folders(tmp_path: Path) -> None:
    from moodbench.report import start_server

    (tmp_path / "transcripts").mkdir()
    (tmp_path / "transcripts" / "index.html").write_text("<p>index</p>")
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "a.png").write_bytes(b"png")
    (tmp_path / "report.html").write_text("<p>report</p>")
    server = start_server(tmp_path, 0)
    try:
        port = server.server_address[1]
        base = f"http://127.0.0.1:{port}"
        assert _get(f"{base}/report.html") == 200
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", f"LOCALHOST:{port}"):
            assert _get(f"{base}/report.html", host) == 200, host
        for host in (
            "evil.example",
            f"evil.example:{port}",
            f"127.0.0.1:{port + 1}",
            "127.0.0.1",
            f"127.0.0.1.evil.example:{port}",
        ):
            assert _get(f"{base}/report.html", host) == 421, host  # DNS rebinding: another origin that resolves to 127.0.0.1
        assert _get(f"{base}/transcripts/") == 200 and _get(f"{base}/plots/a.png") == 200
        for path in ("/plots/", "/plots", "/", "/transcripts/../plots/"):
            assert _get(base + path) == 404, path  # folders are never listed
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------- dose-response and tau2 round trip


def test_dose_response_table_on_three_levels(data_dir: Path) -> None:
    """control + frustration mild/moderate/severe: the scripted agent fails more as the customer gets angrier."""
    import numpy as np
    import statsmodels.api as sm

    report = _report(data_dir, "report-dose")
    rows = {r["outcome"]: r for r in report["dose_response"]}
    assert set(rows) == {"reward", "markers_own"}
    reward = rows["reward"]
    assert (reward["emotion"], reward["method"]) == ("frustration", "prompt")
    assert [(lv["level"], lv["variant"]) for lv in reward["levels"]] == [
        (0, "control"),
        (1, "frustration:mild"),
        (2, "frustration"),
        (3, "frustration:severe"),
    ]
    # independent: OLS of reward on level with task dummies, cluster-robust by task, straight from SQLite
    con = sqlite3.connect(data_dir / "run-dose" / "results.sqlite")
    level = {"control": 0, "frustration:mild": 1, "frustration": 2, "frustration:severe": 3}
    # the trend is among the emotional levels (the baseline's comparison is each level's reward effect)
    data = [
        (level[v], r, t)
        for v, r, t, e in con.execute("SELECT variant, reward, task_id, exit_reason FROM simulations")
        if e not in EXCLUDED and r is not None and level[v] > 0
    ]
    tasks = sorted({t for *_, t in data})
    x = np.array([[lv] + [float(t == k) for k in tasks] for lv, _, t in data])
    fit = sm.OLS(np.array([r for _, r, _ in data]), x).fit(
        cov_type="cluster", cov_kwds={"groups": [tasks.index(t) for *_, t in data]}
    )
    assert reward["slope"] == pytest.approx(fit.params[0]) and reward["slope"] < 0
    # the same cluster-robust error once the absorbed task effects are left out of the small-sample factor (N-1)/(N-K), as
    # within (fixed-effects) estimators do
    n, k = len(data), x.shape[1]
    assert reward["se"] == pytest.approx(fit.bse[0] * ((n - k) / (n - 1)) ** 0.5, rel=1e-6)
    assert (
        reward["n_tasks"] == 3 and reward["claim"] == "too_few" and "3 tasks" in reward["no_claim_reason"]
    )  # shown, not claimed
    means = [lv["mean"] for lv in reward["levels"]]
    assert means[0] == means[1] > means[2] > means[3] == 0  # mild changes nothing, moderate fails create_task, severe all
    sev = reward["levels"][3]
    assert sev["diff"] == pytest.approx(-means[0]) and sev["n_pairs"] == 6
    markers = rows["markers_own"]
    marker_means = [lv["mean"] for lv in markers["levels"]]
    assert marker_means[0] == 0 < marker_means[1] < marker_means[2] < marker_means[3] and markers["slope"] > 0
    assert "claim" not in markers and markers["descriptive"]  # the manipulation score's trend is context, not a claim
    page = (data_dir / "report-dose" / "report.html").read_text()
    assert 'id="dose"' in page and 'id="plot-dose"' in page and 'data-outcome="reward"' in page
    md = (data_dir / "report-dose" / "report.md").read_text()
    assert "## Dose-response" in md and "frustration:severe" in md.replace("\\", "")
    print(
        "dose-response:",
        json.dumps(
            [
                {k: r.get(k) for k in ("outcome", "slope", "ci", "p", "claim")} | {"means": [lv["mean"] for lv in r["levels"]]}
                for r in report["dose_response"]
            ]
        ),
    )


def test_export_then_import_gives_the_same_effects(data_dir: Path, tmp_path: Path) -> None:
    """moodbench export -> tau2 Results -> moodbench import: the pairs and their differences survive."""
    files = []
    for v in ("control", "frustration"):
        f = tmp_path / f"{v}.json"
        r = subprocess.run(
            CLI + ["export", str(data_dir / "run-a"), "--variant", v, "--out", str(f)],
            capture_output=True,
            text=True,
            env=cli_env(),
            timeout=120,
        )
        assert r.returncode == 0, r.stderr
        files.append(f"{f}={v}")
    r = subprocess.run(
        CLI + ["import", "--format", "tau2", "--out", str(tmp_path / "run"), *files],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    r = subprocess.run(
        CLI + ["report", str(tmp_path / "run"), "--json"], capture_output=True, text=True, env=cli_env(), timeout=120
    )
    assert r.returncode == 0, r.stderr
    again = _effects(json.loads(r.stdout))["frustration"]
    original = _effects(_report(data_dir))["frustration"]
    for key in ("n_pairs", "n_tasks", "baseline_mean", "variant_mean", "diff", "ci", "claim"):
        assert again[key] == pytest.approx(original[key]), key


# --------------------------------------------------------------------------- moodbench view


def test_view_builds_missing_pages_and_serves_them(data_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(data_dir / "run-b", run)
    assert not (run / "report").exists()
    # started with SIGINT ignored, as a shell starts a background job: Ctrl-C (SIGINT) must still stop it
    proc = subprocess.Popen(
        CLI + ["view", str(run), "--port", "0", "--no-open"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**cli_env(), "COLUMNS": "200"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # noqa: PLW1509
    )
    try:
        url = None
        deadline = time.monotonic() + 60
        lines = []
        while time.monotonic() < deadline and url is None:
            assert proc.stdout is not None
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
        link = re.search(r'href="([^"]+/sim-\d+\.html)"', body)
        assert link, body[:2000]
        sim = link.group(1)
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
    assert rc == 130  # Ctrl-C exits 130 in every command (cli/_exit.py)


def test_view_rejects_a_non_run_directory(tmp_path: Path) -> None:
    r = subprocess.run(
        CLI + ["view", str(tmp_path), "--no-open", "--port", "0"], capture_output=True, text=True, env=cli_env(), timeout=60
    )
    assert r.returncode == 2 and "not a run directory" in r.stdout + r.stderr


# --------------------------------------------------------------------------- optional LLM judge


def test_llm_judge_scores_customers(data_dir: Path) -> None:
    """The scripted judge rates 'ridiculous' customers 8/10 frustrated and everyone else 0 (report-multi used it)."""
    report = _report(data_dir, "report-multi")
    run_a, run_b = report["runs"]
    assert run_b["judge"]["judged"] == 8 and run_b["judge"]["failed"] == 0
    assert run_a["judge"]["judged"] == 45  # 48 conversations minus the three llm_errors

    def judge_diff(run: str, variant: str) -> dict[str, Any]:
        check = next(m for m in report["manipulation"] if m["run"] == run and m["variant"] == variant)
        return next(s for s in check["secondary"] if s["score"] == "judge_own")

    d = judge_diff(run_b["label"], "frustration")
    assert d["diff"] == pytest.approx(8.0) and d["n_pairs"] == 4 and d["turns"] == "all" and not d["primary"]
    assert judge_diff(run_a["label"], "frustration")["diff"] > 0
    assert judge_diff(run_a["label"], "anxiety")["diff"] == 0
    requests = [
        json.loads(line) for log in (data_dir / "server").glob("*.requests.jsonl") for line in log.read_text().splitlines()
    ]
    judged = [r for r in requests if r["role"] == "emotion_judge"]
    # identical customer texts are judged once per run (cached by prompt hash), at most once per conversation
    distinct = {json.dumps(j["body"]["messages"]) for j in judged}
    # 4 tasks x 3 wordings (control = anxiety, frustration, anger) minus anger on update_task_1 (llm_error); run-b repeats them
    assert len(distinct) == 11
    assert len(distinct) <= len(judged) <= 45 + 8
    # blind: the judge sees the customer's words, never the variant or its prompt
    assert all(
        "emotional_state" not in json.dumps(j["body"]) and "frustrated customer" not in json.dumps(j["body"]) for j in judged
    )
    assert "LLM judge" in (data_dir / "report-multi" / "report.html").read_text()
    assert "Δ judge" in (data_dir / "report-multi" / "report.html").read_text()
    assert "Δ judge" not in (data_dir / "report" / "report.html").read_text()  # no judge, no column
