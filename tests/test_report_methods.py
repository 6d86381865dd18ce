"""Prompted vs steered side by side in `moodbench report`: the comparison section, steered dose-response, transcripts.

A steered customer needs a real local model, so the steered conversations here are made the way the
store would hold them: a real `moodbench run` against the scripted server (control and three prompted
levels of frustration, the scripted agent failing more as the customer gets angrier), then its real
`ConversationRecord`s stored again through `moodbench.results.Store` under steered variant names with a
`steering` value (vector sha256, scale, layers, method), as a steered run writes them. A steered variant
copies the conversations of a *stronger* prompted level (steering moves this customer more), its prompt is
the control prompt (no persona block, the vector carries the emotion) except for `@both`; anger is steered
only and copies control (the vector did nothing: its manipulation check must fail).

Two runs are stored: `small` (3 tasks: every check and claim is `too_few`) and `big` (every task copied
under 7 task ids: 21 tasks, 42 pairs, so the checks pass or fail and reward claims are made). The report is
built as a subprocess (`moodbench report RUN --json`, and with pages); the comparison's numbers are checked
against values computed here straight from SQLite.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import sqlite3
import subprocess
from collections import defaultdict
from pathlib import Path
from statistics import stdev
from typing import Any

import pytest
from scipy.stats import t as t_dist

from moodbench.analysis import comparison_summary, early_user_texts
from moodbench.judges import text_scores
from moodbench.results import ConversationRecord, Steering, Store
from scripted import CLI, cli_env, start_scripted_server

REPO = Path(__file__).resolve().parent.parent
EXCLUDED = ("llm_error", "harness_error")

# --------------------------------------------------------------------------- the scripted prompted run

GOALS = [
    (
        "'Important Meeting' for user_1",
        "Please create a new task called 'Important Meeting' for user_1 to track this important meeting.",
    ),
    ("task_1 be marked", "Please mark my existing task task_1 as completed, I have completed it."),
    ("task with ID task_2", "Continuing our task management discussion: please mark task task_2 as completed."),
]
OPENINGS = (
    ("a little frustrated", "Hm, this is taking so long. "),
    ("frustrated customer", "This is ridiculous, I've been waiting forever. "),
    ("very frustrated and fed up", "Ugh! Ridiculous! I am fed up, so much time wasted, every single time! "),
)


def _first(prefix: str) -> dict[str, Any]:
    return {
        "match": [{"if_contains": m, "in": "system", "then": {"content": prefix + g}} for m, g in GOALS],
        "else": {"content": prefix + "I need help with my tasks."},
    }


def _call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"tool_calls": [{"name": name, "arguments": arguments}]}


ACTS = {
    "match": [
        {
            "if_contains": "Important Meeting",
            "in": "last",
            "then": _call("create_task", user_id="user_1", title="Important Meeting"),
        },
        {"if_contains": "task_1", "in": "last", "then": _call("update_task_status", task_id="task_1", status="completed")},
        {"if_contains": "task_2", "in": "last", "then": _call("update_task_status", task_id="task_2", status="completed")},
    ],
    "else": {"content": "How can I help?"},
}
SCRIPT: dict[str, Any] = {
    "models": ["scripted-methods"],
    "roles": {
        "agent": {
            "turns": [
                {"content": "unused (tau2 sends its own greeting)"},
                {
                    "match": [  # severe: thrown off on every task; moderate: on the create task only; mild: never
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
                                "else": ACTS,
                            },
                        },
                    ],
                    "else": ACTS,
                },
                {"content": "Done, your request has been handled."},
            ],
            "after": {"content": "Is there anything else?"},
        },
        "user": {
            "turns": [
                {
                    "match": [{"if_contains": marker, "in": "system", "then": _first(opening)} for marker, opening in OPENINGS],
                    "else": _first(""),
                },
                {"content": "Thank you, that is all. ###STOP###"},
            ],
            "after": {"content": "###STOP###"},
        },
    },
}
PROMPTED = ["control", "frustration:mild", "frustration", "frustration:severe"]
RUN = [
    "--domain",
    "mock",
    "--task-ids",
    "create_task_1,update_task_1,update_task_with_initialization_data",
    "--variants",
    ",".join(PROMPTED),
    "--trials",
    "2",
    "--agent-model",
    "openai/scripted-methods",
    "--concurrency",
    "1",
    "--max-retries",
    "0",
    "--skip-preflight",
]

# --------------------------------------------------------------------------- the steered copies

FRUSTRATION_SHA = hashlib.sha256(b"frustration control vector").hexdigest()
ANGER_SHA = hashlib.sha256(b"anger control vector").hexdigest()
# steered variant -> (prompted variant whose conversations it copies, vector sha256, scale)
STEERED = {
    "frustration@steer:mild": ("frustration", FRUSTRATION_SHA, 0.4),
    "frustration@steer": ("frustration:severe", FRUSTRATION_SHA, 0.8),
    "frustration@steer:severe": ("frustration:severe", FRUSTRATION_SHA, 1.6),
    "frustration@both:severe": ("frustration:severe", FRUSTRATION_SHA, 1.6),
    "anger@steer:mild": ("control", ANGER_SHA, 0.5),
    "anger@steer:severe": ("control", ANGER_SHA, 1.5),
}
LAYERS = (6, 18)
ALL = PROMPTED + list(STEERED)
COPIES = {"small": 1, "big": 7}


def _copy(
    r: ConversationRecord,
    *,
    variant: str,
    task: str,
    user_prompt: str | None,
    steering: Steering | None,
    flag_role_confusion: bool = False,
) -> ConversationRecord:
    data = r.model_dump(mode="python", exclude={"id"})
    data.update(variant=variant, task_id=task, cell_key=f"{r.domain}|{task}|{variant}|{r.trial}", steering=steering)
    if user_prompt is not None:
        data["user_prompt_sha256"] = user_prompt
    if flag_role_confusion:
        data["flags"] = {**data["flags"], "user_role_confusion": True, "any": True}
    return ConversationRecord.model_validate(data)


def _store_steered(source: Path, out: Path, copies: int) -> None:
    """``source``'s prompted records plus their steered copies, each task under ``copies`` task ids, in a new store."""
    with Store(source / "results.sqlite", readonly=True) as src:
        records = list(src.records(with_payload=True))
        config, plan = src.get_meta("config"), src.get_meta("plan")
        prompts = {d: src.prompt(d) for r in records for d in (r.user_prompt_sha256, r.agent_prompt_sha256) if d}
    by = {(r.variant, r.pair_key): r for r in records}
    tasks = sorted({r.task_id for r in records})
    planned: dict[str, int] = defaultdict(int)
    with Store(out / "results.sqlite") as store:
        for k in range(copies):
            for r in records:
                task = r.task_id if k == 0 else f"{r.task_id}~{k}"
                stored = [_copy(r, variant=r.variant, task=task, user_prompt=None, steering=None)]
                if r.variant == "control":
                    for steered, (src_variant, sha, scale) in STEERED.items():
                        original = by[(src_variant, r.pair_key)]
                        emotion, method = steered.partition(":")[0].split("@")
                        vector = Steering(
                            emotion=emotion,
                            vector_sha256=sha,
                            scale=scale,
                            layers=LAYERS,
                            method="mean",
                            vector=f"/cache/vectors/local-{emotion}-mean-L6-18.gguf",
                        )
                        # steered only: the customer got the control prompt; both: the prompted one. Steering at the
                        # mild scale also breaks the customer's role on the first trial (a coherence cost)
                        stored.append(
                            _copy(
                                original,
                                variant=steered,
                                task=task,
                                steering=vector,
                                user_prompt=None if method == "both" else r.user_prompt_sha256,
                                flag_role_confusion=steered == "frustration@steer:mild" and r.trial == 0,
                            )
                        )
                for c in stored:
                    store.insert(
                        c,
                        {
                            role: text
                            for role, d in (("user", c.user_prompt_sha256), ("agent", c.agent_prompt_sha256))
                            if d is not None and (text := prompts.get(d)) is not None
                        },
                    )
                    planned[c.variant] += 1
        store.set_meta(
            "config", {**config, "variants": ALL, "task_ids": [f"{t}~{k}" if k else t for k in range(copies) for t in tasks]}
        )
        store.set_meta(
            "plan",
            {
                **plan,
                "variants": ALL,
                "planned": {"mock": dict(planned)},
                "cells": sum(planned.values()),
                "all_cells": sum(planned.values()),
            },
        )


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The prompted scripted run, the two stored steered runs, ``report --json`` of both and the pages of both."""
    root = tmp_path_factory.mktemp("methods")
    srv = start_scripted_server(SCRIPT, root / "server")
    try:
        r = subprocess.run(
            CLI + ["run", *RUN, "--agent-base-url", srv.base_url, "--out", str(root / "prompted")],
            capture_output=True,
            text=True,
            env=cli_env(),
            timeout=300,
            cwd=root,
        )
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    finally:
        srv.stop()
    out: dict[str, Any] = {"root": root}
    for name, copies in COPIES.items():
        _store_steered(root / "prompted", root / name, copies)
        r = subprocess.run(
            CLI + ["report", str(root / name), "--json"], capture_output=True, text=True, env=cli_env(), timeout=120
        )
        assert r.returncode == 0, r.stderr[-3000:]
        out[name] = json.loads(r.stdout)
        r = subprocess.run(
            CLI + ["report", str(root / name), "--out", str(root / f"report-{name}")],
            capture_output=True,
            text=True,
            env={**cli_env(), "COLUMNS": "200"},
            timeout=180,
        )
        assert r.returncode == 0, r.stderr[-3000:]
    return out


# --------------------------------------------------------------------------- independent numbers, straight from SQLite


def _final_rows(db: Path) -> list[dict[str, Any]]:
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    final: dict[str, dict[str, Any]] = {}
    for r in con.execute(
        "SELECT id, cell_key, domain, task_id, variant, trial, reward, exit_reason, flags, steering, simulation "
        "FROM simulations ORDER BY id"
    ):
        if r["cell_key"] not in final or final[r["cell_key"]]["exit_reason"] in EXCLUDED:
            final[r["cell_key"]] = dict(r)
    return [r for r in final.values()]


def _scored(rows: list[dict[str, Any]]) -> dict[str, dict[tuple[str, str, int], dict[str, Any]]]:
    by: dict[str, dict[tuple[str, str, int], dict[str, Any]]] = defaultdict(dict)
    for r in rows:
        if r["exit_reason"] not in EXCLUDED and r["reward"] is not None:
            by[r["variant"]][(r["domain"], r["task_id"], r["trial"])] = r
    return by


def _early_markers(row: dict[str, Any], family: str) -> float:
    messages = json.loads(row["simulation"])["messages"]
    return float(text_scores(early_user_texts(messages))["marker_rate"][family])


def _paired(by: dict[str, dict[tuple, dict[str, Any]]], variant: str, value: Any) -> tuple[float, list[float], int]:
    """Task-weighted mean paired difference, the task means and the number of pairs (variant - control)."""
    per_task: dict[tuple[str, str], list[float]] = defaultdict(list)
    keys = sorted(set(by["control"]) & set(by[variant]))
    for k in keys:
        per_task[k[:2]].append(value(by[variant][k]) - value(by["control"][k]))
    means = [sum(d) / len(d) for d in per_task.values()]
    return sum(means) / len(means), means, len(keys)


def _ci(mean: float, task_means: list[float]) -> list[float]:
    half = t_dist.ppf(0.975, len(task_means) - 1) * stdev(task_means) / len(task_means) ** 0.5
    return [mean - half, mean + half]


def _flag_rate(by: dict[str, dict[tuple, dict[str, Any]]], variant: str) -> float:
    rows = list(by[variant].values())
    return sum(1 for r in rows if json.loads(r["flags"])["any"]) / len(rows)


def _entry(report: dict[str, Any], emotion: str) -> dict[str, Any]:
    return next(m for m in report["methods_comparison"] if m["emotion"] == emotion)


def _row(entry: dict[str, Any], variant: str) -> dict[str, Any]:
    return next(r for r in entry["rows"] if r["variant"] == variant)


# --------------------------------------------------------------------------- the comparison section


@pytest.mark.parametrize("name", list(COPIES))
def test_comparison_numbers_match_an_independent_computation(runs: dict[str, Any], name: str) -> None:
    report = runs[name]
    by = _scored(_final_rows(runs["root"] / name / "results.sqlite"))
    assert [m["emotion"] for m in report["methods_comparison"]] == ["frustration", "anger"]  # anger: steered only
    fr = _entry(report, "frustration")
    assert fr["methods"] == ["prompt", "steer", "both"] and fr["levels"] == ["mild", "moderate", "severe"]
    assert fr["matched_levels"] == ["mild", "moderate", "severe"]
    assert [(r["level_name"], r["method"]) for r in fr["rows"]] == [
        ("mild", "prompt"),
        ("mild", "steer"),
        ("moderate", "prompt"),
        ("moderate", "steer"),
        ("severe", "prompt"),
        ("severe", "steer"),
        ("severe", "both"),
    ]
    effects = {e["variant"]: e for e in report["effects"] if e["domain"] == "all" and e["subset"] == "all"}
    checks = {m["variant"]: m for m in report["manipulation"] if m["domain"] == "all"}
    base_rate = _flag_rate(by, "control")
    for entry, family in ((fr, "frustration"), (_entry(report, "anger"), "anger")):
        assert entry["baseline_flagged_rate"] == pytest.approx(base_rate)
        for row in entry["rows"]:
            v = row["variant"]
            # reward: the task-weighted paired difference and its t(G-1) interval over tasks, the claim from the report's family
            diff, task_means, n_pairs = _paired(by, v, lambda r: r["reward"])
            rw = row["reward"]
            assert rw["diff"] == pytest.approx(diff) and rw["n_pairs"] == n_pairs and rw["n_tasks"] == len(task_means)
            if len(set(task_means)) > 1:
                assert rw["ci"] == pytest.approx(_ci(diff, task_means))
            assert (rw["claim"], rw["p_adjusted"], rw["trust"]) == (
                effects[v]["claim"],
                effects[v]["p_adjusted"],
                effects[v]["trust"],
            )
            # manipulation: the early-turn marker rate of the emotion's own family, paired
            shift, task_means, n_pairs = _paired(by, v, lambda r, f=family: _early_markers(r, f))
            m = row["manipulation"]
            assert m["shift"] == pytest.approx(shift) and m["n_pairs"] == n_pairs and m["status"] == checks[v]["status"]
            if len(set(task_means)) > 1:
                assert m["ci"] == pytest.approx(_ci(shift, task_means))
            assert (
                m["lower_bound"] == pytest.approx(checks[v]["lower_bound"])
                if m["lower_bound"] is not None
                else checks[v]["lower_bound"] is None
            )
            # fidelity: flagged share over scored conversations and its gap to the baseline's
            f = row["fidelity"]
            assert f["flagged_rate"] == pytest.approx(_flag_rate(by, v)) and f["n"] == len(by[v])
            assert f["gap"] == pytest.approx(_flag_rate(by, v) - base_rate)
            # steering: straight from the stored column
            stored = {json.dumps(json.loads(r["steering"]), sort_keys=True) for r in by[v].values() if r["steering"]}
            if v in STEERED:
                (one,) = stored
                st = json.loads(one)
                assert row["steering"]["scale"] == st["scale"] == STEERED[v][2]
                assert (
                    row["steering"]["vector_sha256"] == st["vector_sha256"]
                    and row["steering"]["vector_short"] == st["vector_sha256"][:12]
                )
                assert row["steering"]["layers"] == st["layers"] == list(LAYERS) and row["steering"]["vector_method"] == "mean"
                assert row["steering"]["consistent"] and row["steering"]["n_records"] == len(by[v])
            else:
                assert not stored and row["steering"] is None


def test_too_few_design_says_so_and_claims_nothing(runs: dict[str, Any]) -> None:
    report = runs["small"]
    for entry in report["methods_comparison"]:
        assert all(r["manipulation"]["status"] == "too_few" and r["reward"]["claim"] == "too_few" for r in entry["rows"])
        text = entry["summary"]
        assert "Too few to check whether the emotion reached the customer or to claim a reward effect (3 tasks, 6 pairs)" in text
        assert "every number here is a point estimate only" in text and "No reward claim" in text
        assert "passed" not in text and "moved the customer" not in text and "larger" not in text
    fr = _entry(report, "frustration")
    # the coherence cost, in numbers from the fidelity table: the steered mild customer also broke its role on trial 0
    assert "At mild early-turn shifts prompted +" in fr["summary"]
    mild = _row(fr, "frustration@steer:mild")["fidelity"]
    assert mild["flagged_rate"] == pytest.approx(4 / 6) and mild["warnings"] == ["fidelity_gap", "low_fidelity"]
    assert (
        "flagged prompted 0% (+0 points), steered 67% (+67 points, over the 20% limit and the 10-point gap limit)"
        in fr["summary"]
    )
    assert "coherence cost = the share of conversations with a simulator flag (control 0%)" in fr["summary"]


def test_checked_design_says_which_method_moved_the_customer(runs: dict[str, Any]) -> None:
    report = runs["big"]
    fr = _entry(report, "frustration")
    status = {r["variant"]: r["manipulation"]["status"] for r in fr["rows"]}
    shifts = {r["variant"]: r["manipulation"]["shift"] for r in fr["rows"]}
    # steering copies a stronger prompted level, so at mild and moderate it moves the customer further; at severe they tie
    assert shifts["frustration@steer:mild"] > shifts["frustration:mild"] and shifts["frustration@steer"] > shifts["frustration"]
    assert shifts["frustration@steer:severe"] == pytest.approx(shifts["frustration:severe"])
    assert set(status.values()) == {"passed"}
    text = fr["summary"]
    assert "At mild prompted and steered both passed the manipulation check, steered with the larger shift (prompted +" in text
    assert "At moderate prompted and steered both passed the manipulation check, steered with the larger shift" in text
    assert "At severe prompted, steered and prompted+steered all passed the manipulation check, with equal shifts" in text
    assert text.endswith(
        "A larger shift between methods that both passed is a point estimate: methods are not tested against each other."
    )
    # every reward claim of the section is the report's own (Holm over the primary family), none invented
    claims = {e["variant"]: e["claim"] for e in report["effects"] if e["domain"] == "all" and e["subset"] == "all"}
    # prompted mild changes no task at all: zero spread, so no interval, no p and no claim (too_few, with the reason)
    assert claims["frustration:severe"] == claims["frustration@steer:mild"] == "lower" and claims["frustration:mild"] == "too_few"
    assert "Reward (claims of the report's primary family, Holm): lower with steered at mild (-0.333)" in text
    assert "too few for a claim: prompted at mild" in text
    # anger was steered only and its vector changed nothing, in every task alike: zero spread, so the check gives no
    # verdict (never "failed" or "passed" from an interval of width 0), says why, and there is nothing to compare
    anger = _entry(report, "anger")
    assert anger["methods"] == ["steer"] and anger["matched_levels"] == []
    assert {r["manipulation"]["status"] for r in anger["rows"]} == {"too_few"}
    assert all(r["manipulation"]["p"] is None for r in anger["rows"])
    assert anger["summary"].startswith("Anger: only steered at mild and severe, so no level can be compared across methods")
    assert (
        "The manipulation check gives no verdict: in every task the customer's early turns shifted by the same"
        in (anger["summary"])
    )
    assert "At mild early-turn shifts steered +0.00" in anger["summary"]
    assert "larger shift" not in anger["summary"]


def test_steered_dose_response_carries_its_scales(runs: dict[str, Any]) -> None:
    report = runs["big"]
    groups = {(d["emotion"], d["method"], d["outcome"]): d for d in report["dose_response"]}
    assert set(groups) == {
        (e, m, o)
        for e, m in (("frustration", "prompt"), ("frustration", "steer"), ("anger", "steer"))
        for o in ("reward", "markers_own")
    }
    steer = groups[("frustration", "steer", "reward")]
    assert steer["scales"] == {"mild": 0.4, "moderate": 0.8, "severe": 1.6} and steer["vector_sha256"] == FRUSTRATION_SHA
    assert [(lv["variant"], lv["scale"]) for lv in steer["levels"]] == [
        ("control", 0.0),
        ("frustration@steer:mild", 0.4),
        ("frustration@steer", 0.8),
        ("frustration@steer:severe", 1.6),
    ]
    assert groups[("anger", "steer", "reward")]["scales"] == {"mild": 0.5, "severe": 1.5}
    assert groups[("frustration", "prompt", "reward")]["scales"] is None
    assert all(lv["scale"] is None for lv in groups[("frustration", "prompt", "reward")]["levels"])
    by = _scored(_final_rows(runs["root"] / "big" / "results.sqlite"))
    sev = steer["levels"][3]
    assert sev["diff"] == pytest.approx(_paired(by, "frustration@steer:severe", lambda r: r["reward"])[0])
    page = (runs["root"] / "report-big" / "report.html").read_text()
    table = re.search(
        r'<table class="dose-table" data-emotion="frustration" data-method="steer" data-outcome="reward".*?</table>', page, re.S
    )
    assert table and '<th class="num">scale</th>' in table.group(0)
    cells = [html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", table.group(0), re.S)]
    assert "0.4" in cells and "0.8" in cells and "1.6" in cells


def test_a_variant_steered_with_two_scales_has_no_scale_and_a_warning(runs: dict[str, Any], tmp_path: Path) -> None:
    """Merged runs can hold one variant steered at two scales: the report must not print one dose for it."""
    run = tmp_path / "mixed"
    run.mkdir()
    with sqlite3.connect(runs["root"] / "small" / "results.sqlite") as src, sqlite3.connect(run / "results.sqlite") as dst:
        src.backup(dst)
    con = sqlite3.connect(run / "results.sqlite")
    rows = con.execute("SELECT id, steering FROM simulations WHERE variant='frustration@steer' AND trial=1").fetchall()
    for rid, steering in rows:
        con.execute("UPDATE simulations SET steering=? WHERE id=?", (json.dumps({**json.loads(steering), "scale": 1.2}), rid))
    con.commit()
    con.close()
    r = subprocess.run(CLI + ["report", str(run), "--json"], capture_output=True, text=True, env=cli_env(), timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout)
    st = _row(_entry(report, "frustration"), "frustration@steer")["steering"]
    assert not st["consistent"] and st["scale"] is None and st["vector_sha256"] == FRUSTRATION_SHA
    assert sorted((d["scale"], d["n_records"]) for d in st["distinct"]) == [(0.8, len(rows)), (1.2, len(rows))]
    dose = next(
        d for d in report["dose_response"] if (d["emotion"], d["method"], d["outcome"]) == ("frustration", "steer", "reward")
    )
    assert dose["scales"]["moderate"] is None and dose["scales"]["mild"] == 0.4
    assert any(
        "frustration@steer: its conversations were steered with 2 different vectors or scales" in w["text"]
        for w in report["warnings"]
    )


# --------------------------------------------------------------------------- the pages


def _text(fragment: str) -> str:
    """What a reader sees of an HTML fragment: tags dropped, entities decoded, whitespace folded."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def _section(page: str, ident: str) -> str:
    m = re.search(rf'<h2 id="{ident}">.*?(?=<h2 )', page, re.S)
    assert m, ident
    return m.group(0)


@pytest.mark.parametrize("name", list(COPIES))
def test_html_and_markdown_show_the_comparison(runs: dict[str, Any], name: str) -> None:
    report, out = runs[name], runs["root"] / f"report-{name}"
    page = (out / "report.html").read_text()
    assert 'href="#methods-comparison"' in page
    section = _section(page, "methods-comparison")
    fr = _entry(report, "frustration")
    table = re.search(r'<table class="methods-table" data-run="[^"]*" data-emotion="frustration">.*?</table>', section, re.S)
    assert table
    rows = re.findall(r'<tr data-variant="([^"]+)"[^>]*>(.*?)</tr>', table.group(0), re.S)
    assert [html.unescape(v) for v, _ in rows] == [r["variant"] for r in fr["rows"]]
    for (_v, cells_html), row in zip(rows, fr["rows"]):
        text = _text(cells_html)
        assert (row["steering"] is None) == (FRUSTRATION_SHA[:12] not in text)
        if row["steering"]:
            assert f"{row['steering']['scale']:g}" in text
        assert f"{100 * row['fidelity']['flagged_rate']:.0f}%" in text
        assert f"{row['reward']['diff']:+.3f}".replace("-", "−") in text
        assert f"{row['manipulation']['shift']:+.2f}".replace("-", "−") in text
    assert html.escape(fr["summary"], quote=False).replace("'", "&#39;") in section
    md = (out / "report.md").read_text()
    assert "## Prompted vs steered at matched levels" in md and FRUSTRATION_SHA[:12] in md


def test_transcript_of_a_steered_conversation_names_its_vector(runs: dict[str, Any]) -> None:
    out = runs["root"] / "report-small"
    rows = _final_rows(runs["root"] / "small" / "results.sqlite")
    steered = next(r for r in rows if r["variant"] == "frustration@steer:mild")
    page = next((out / "transcripts").glob(f"*/sim-{steered['id']}.html")).read_text()
    block = re.search(r'<div class="steering" id="steering">.*?</div>', page, re.S)
    assert block, "no steering block"
    text = _text(block.group(0))
    assert FRUSTRATION_SHA in text and "scale 0.4" in text and "layers 6–18" in text and "mean" in text
    assert "no persona block" in text  # steered only: the control prompt, the emotion is in the vector
    both = next(r for r in rows if r["variant"] == "frustration@both:severe")
    page = next((out / "transcripts").glob(f"*/sim-{both['id']}.html")).read_text()
    assert 'id="emotion-block"' in page and 'id="steering"' in page and "scale 1.6" in _text(page)
    control = next(r for r in rows if r["variant"] == "control")
    assert 'id="steering"' not in next((out / "transcripts").glob(f"*/sim-{control['id']}.html")).read_text()
    index = (out / "transcripts" / "index.html").read_text()  # the index marks steered rows with their scale
    row_of = {m.group(1): m.group(0) for m in re.finditer(r'<tr data-run="[^"]*" data-variant="([^"]*)".*?</tr>', index, re.S)}
    assert "steered ×0.4" in row_of["frustration@steer:mild"] and FRUSTRATION_SHA[:12] in row_of["frustration@steer:mild"]
    assert "steered" not in _text(row_of["control"])


# --------------------------------------------------------------------------- the summary's wording on hand-made numbers


def _hand_row(
    level: str,
    method: str,
    status: str,
    shift: float,
    flagged: float,
    *,
    warnings: tuple[str, ...] = (),
    claim: str = "no_difference",
    n_tasks: int = 24,
) -> dict[str, Any]:
    return {
        "level_name": level,
        "method": method,
        "variant": f"x@{method}:{level}",
        "manipulation": {"status": status, "shift": shift, "min_effect": 1.0, "n_tasks": n_tasks, "n_pairs": 2 * n_tasks},
        "fidelity": {"flagged_rate": flagged, "baseline_flagged_rate": 0.05, "gap": flagged - 0.05, "warnings": list(warnings)},
        "reward": {"claim": claim, "diff": -0.1},
    }


def test_summary_never_ranks_methods_beyond_the_checks() -> None:
    both_passed = {
        "emotion": "fear",
        "baseline": "control",
        "methods": ["prompt", "steer"],
        "levels": ["mild"],
        "matched_levels": ["mild"],
        "rows": [
            _hand_row("mild", "prompt", "passed", 2.0, 0.05),
            _hand_row("mild", "steer", "passed", 3.5, 0.40, warnings=("fidelity_gap", "low_fidelity")),
        ],
    }
    text = comparison_summary(both_passed)
    assert (
        "At mild prompted and steered both passed the manipulation check, steered with the larger shift (prompted +2.00, steered +3.50)"
        in text
    )
    assert text.endswith("methods are not tested against each other.")
    assert "flagged prompted 5% (+0 points), steered 40% (+35 points, over the 20% limit and the 10-point gap limit)" in text
    assert "(control 5%)" in text
    one_failed = {
        **both_passed,
        "rows": [
            _hand_row("mild", "prompt", "failed", 0.4, 0.05),
            _hand_row("mild", "steer", "passed", 3.5, 0.05, claim="lower"),
        ],
    }
    text = comparison_summary(one_failed)
    assert (
        "At mild only steered moved the customer by more than the minimum 1 (manipulation check passed; prompted failed" in text
    )
    assert "lower with steered at mild (-0.100); no difference claimed for prompted at mild" in text
    assert "point estimate" not in text  # nothing was ranked by point estimate
    few = {
        **both_passed,
        "rows": [
            _hand_row("mild", "prompt", "too_few", 0.4, 0.0, claim="too_few", n_tasks=5),
            _hand_row("mild", "steer", "too_few", 3.5, 0.0, claim="too_few", n_tasks=5),
        ],
    }
    text = comparison_summary(few)
    assert "(5 tasks, 10 pairs)" in text and "At mild early-turn shifts prompted +0.40, steered +3.50" in text
    assert "larger" not in text and "moved the customer" not in text and "No reward claim" in text
    mixed = {
        **both_passed,
        "rows": [_hand_row("mild", "prompt", "passed", 2.0, 0.05), _hand_row("mild", "steer", "too_few", 3.5, 0.0, n_tasks=5)],
    }
    text = comparison_summary(mixed)
    assert "At mild prompted moved the customer (manipulation check passed, shift +2.00); steered too few to check" in text
