"""Failure anatomy, information delivery, flipping tasks and side-by-side pages, on scripted conversations with known answers.

One real ``moodbench run`` on tau2's mock domain (3 tasks x 5 variants x 1 trial) against the scripted server, where
each emotion triggers one known failure:

* control: the agent does the right thing for every task (create_task_1 and update_task_1 succeed; impossible_task_1
  is transferred, which is its gold action);
* frustration: on update_task_1 the customer **withholds the task id** ("just mark my task as completed"); the agent
  asks which task, the customer leaves (task undone, no tool call);
* anger: the agent **transfers** every angry customer to a human (right only for impossible_task_1);
* confusion: on create_task_1 the agent **invents an id**: create_task(user_id="user_42"), a user nobody mentioned
  (the tool raises: user not found);
* impatience: on update_task_1 the agent makes the gold call, then an **unrequested write** that sets the task back
  to pending (ids all seen; the database ends wrong).

The tests check each measure per conversation against these answers, the paired task-clustered differences,
the delivery caveat, the flipping tasks with their side-by-side pages, report.md, and the viewer's pair route.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from moodbench.analysis import anatomy_effects, conversation_anatomy, delivery, flipping_tasks
from moodbench.analysis._anatomy import hallucinated_ids, is_identifier
from moodbench.report._anatomy_section import first_divergence, pair_pages
from moodbench.report._viewer import start_server
from moodbench.results import ConversationRecord, load_run
from scripted import cli_env, start_scripted_server

CLI = [sys.executable, "-m", "moodbench.cli"]
TASKS = ("create_task_1", "update_task_1", "impossible_task_1")
VARIANTS = ("control", "frustration", "anger", "confusion", "impatience")
GOALS = {  # phrase of the task's scenario -> what the customer asks for
    "'Important Meeting' for user_1": "Please create a new task called 'Important Meeting' for user_1.",
    "task_1 be marked": "Please mark my existing task task_1 as completed.",
    "delete all your current tasks": "I want to delete all my current tasks.",
}
OPENINGS = {
    "frustrated customer": "Ugh, this is ridiculous. ",
    "angry customer": "This is unacceptable! ",
    "confused customer": "Sorry, I'm confused. ",
    "impatient customer": "Quick, I have no time. ",
}
TRANSFER = "User needs to delete all their current tasks. This is not possible to do with the tools available."


def _call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"tool_calls": [{"name": name, "arguments": arguments}]}


def _opening(prefix: str) -> dict[str, Any]:
    return {
        "match": [{"if_contains": k, "in": "system", "then": {"content": prefix + g}} for k, g in GOALS.items()],
        "else": {"content": prefix + "I need help."},
    }


SCRIPT: dict[str, Any] = {
    "models": ["scripted"],
    "roles": {
        "agent": {
            "turns": [
                {"content": "unused (tau2 sends its own greeting)"},
                {
                    "match": [
                        {
                            "if_contains": "unacceptable",
                            "in": "last",
                            "then": _call("transfer_to_human_agents", summary="Angry customer, escalating."),
                        },
                        {
                            "if_regex": "confused.*Important Meeting",
                            "in": "last",
                            "then": _call("create_task", user_id="user_42", title="Important Meeting"),
                        },
                        {
                            "if_contains": "Important Meeting",
                            "in": "last",
                            "then": _call("create_task", user_id="user_1", title="Important Meeting"),
                        },
                        {
                            "if_contains": "task_1",
                            "in": "last",
                            "then": _call("update_task_status", task_id="task_1", status="completed"),
                        },
                        {"if_contains": "delete all", "in": "last", "then": _call("transfer_to_human_agents", summary=TRANSFER)},
                    ],
                    "else": {"content": "I'm sorry, which task do you mean? Please give me its id."},
                },
                {
                    "match": [
                        {
                            "if_regex": "no time.*task_1",
                            "in": "all",
                            "then": _call("update_task_status", task_id="task_1", status="pending"),
                        }
                    ],
                    "else": {"content": "Done, your request has been handled. I understand this matters to you."},
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
                            "then": {
                                "match": [
                                    {
                                        "if_contains": "task_1 be marked",
                                        "in": "system",
                                        "then": {"content": "Ugh, this is ridiculous. Just mark my task as completed already."},
                                    }
                                ],
                                "else": _opening(OPENINGS["frustrated customer"]),
                            },
                        },
                        *[
                            {"if_contains": k, "in": "system", "then": _opening(p)}
                            for k, p in OPENINGS.items()
                            if k != "frustrated customer"
                        ],
                    ],
                    "else": _opening(""),
                },
                {"content": "Thank you, that is all. ###STOP###"},
            ],
            "after": {"content": "###STOP###"},
        },
    },
}
RUN = [
    "--domain",
    "mock",
    "--task-ids",
    ",".join(TASKS),
    "--variants",
    ",".join(VARIANTS),
    "--trials",
    "1",
    "--agent-model",
    "openai/scripted",
    "--concurrency",
    "1",
    "--max-retries",
    "0",
    "--skip-preflight",
]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("anatomy")
    with start_scripted_server(SCRIPT, root / "server") as srv:
        r = subprocess.run(
            CLI + ["run", *RUN, "--agent-base-url", srv.base_url, "--out", str(root / "run")],
            capture_output=True,
            text=True,
            env=cli_env(),
            timeout=300,
            cwd=root,
        )
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    r = subprocess.run(
        CLI + ["report", str(root / "run"), "--out", str(root / "report")],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=300,
        cwd=root,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return root


@pytest.fixture(scope="module")
def records(built: Path) -> dict[tuple[str, str], ConversationRecord]:
    return {(c.variant, c.task_id): c for c in load_run(built / "run").records}


@pytest.fixture(scope="module")
def report(built: Path) -> dict[str, Any]:
    return json.loads((built / "report" / "report.json").read_text())


def test_every_conversation_ran_and_carries_task_facts(records: dict[tuple[str, str], ConversationRecord]) -> None:
    assert set(records) == {(v, t) for v in VARIANTS for t in TASKS}
    outcomes = {k: c.success for k, c in records.items()}
    assert outcomes == {
        k: k
        in {(v, "impossible_task_1") for v in VARIANTS}
        | {
            ("control", "create_task_1"),
            ("control", "update_task_1"),
            ("frustration", "create_task_1"),
            ("confusion", "update_task_1"),
            ("impatience", "create_task_1"),
        }
        for k in records
    }
    facts = records[("control", "create_task_1")].task_facts
    assert facts is not None
    assert [(g.name, g.write) for g in facts.gold_actions] == [("create_task", True)]
    assert [f.kind for f in facts.facts] == ["identity", "value", "change"]
    assert records[("control", "impossible_task_1")].task_facts.facts == []  # type: ignore[union-attr]


def test_agent_that_transfers(records: dict[tuple[str, str], ConversationRecord]) -> None:
    for task in TASKS:
        assert conversation_anatomy(records[("anger", task)])["transferred"] == 1.0
        assert conversation_anatomy(records[("control", task)])["transferred"] == (1.0 if task == "impossible_task_1" else 0.0)
    angry = conversation_anatomy(records[("anger", "update_task_1")])
    assert angry["actions"] == 0.0 and angry["db"] == 0.0  # the gold update never happened
    assert angry["customer_exit"] == 1.0  # the customer said ###STOP### with the task undone
    assert conversation_anatomy(records[("control", "update_task_1")])["customer_exit"] == 0.0


def test_agent_that_invents_an_id(records: dict[tuple[str, str], ConversationRecord]) -> None:
    confused = conversation_anatomy(records[("confusion", "create_task_1")])
    assert hallucinated_ids(records[("confusion", "create_task_1")].messages) == ["user_42"]
    assert confused["hallucinated_ids"] == 1.0
    assert confused["tool_errors"] == 1.0  # mock's create_task raises: user not found
    assert confused["invalid_argument_calls"] == 0.0  # a wrong id is not a malformed call
    assert confused["off_gold_writes"] == 1.0  # the write does not match the gold create_task(user_1, ...)
    for task in TASKS:  # ids the customer said are not invented
        assert conversation_anatomy(records[("control", task)])["hallucinated_ids"] == 0.0


def test_agent_that_issues_an_unrequested_write(records: dict[tuple[str, str], ConversationRecord]) -> None:
    c = records[("impatience", "update_task_1")]
    a = conversation_anatomy(c)
    assert a["off_gold_writes"] == 1.0 and a["hallucinated_ids"] == 0.0 and a["tool_calls"] == 2.0
    assert [(w.name, w.gold) for w in c.task_facts.write_calls] == [("update_task_status", True), ("update_task_status", False)]  # type: ignore[union-attr]
    assert a["db"] == 0.0 and a["actions"] == 1.0  # the gold call was made, but the database ended wrong
    assert conversation_anatomy(records[("control", "update_task_1")])["off_gold_writes"] == 0.0


def test_customer_that_withholds_the_id(records: dict[tuple[str, str], ConversationRecord]) -> None:
    d = delivery(records[("frustration", "update_task_1")])
    assert d["share"] == pytest.approx(2 / 3) and d["complete"] is False
    assert d["missing"] == ["task_id task_1"] and d["missing_kinds"] == ["id"]
    for task in ("create_task_1", "update_task_1"):
        assert delivery(records[("control", task)])["share"] == 1.0
    assert delivery(records[("control", "impossible_task_1")])["share"] is None  # no facts: nothing to withhold
    a = conversation_anatomy(records[("frustration", "update_task_1")])
    assert a["tool_calls"] == 0.0 and a["customer_exit"] == 1.0 and a["apologies"] == 1.0


def test_paired_differences_and_flips(records: dict[tuple[str, str], ConversationRecord]) -> None:
    recs = list(records.values())
    rows = {(r["variant"], r["measure"]): r for r in anatomy_effects(recs, "control", list(VARIANTS))}
    assert rows[("anger", "transferred")]["diff"] == pytest.approx(2 / 3)
    assert rows[("anger", "transferred")]["n_pairs"] == 3 and rows[("anger", "transferred")]["n_tasks"] == 3
    assert rows[("confusion", "hallucinated_ids")]["diff"] == pytest.approx(1 / 3)
    assert rows[("impatience", "off_gold_writes")]["diff"] == pytest.approx(1 / 3)
    assert all("claim" not in r and r["status"].startswith("descriptive") for r in rows.values())
    flips = {(f["variant"], f["task_id"]): f for f in flipping_tasks(recs, "control", list(VARIANTS))}
    assert set(flips) == {
        ("frustration", "update_task_1"),
        ("anger", "create_task_1"),
        ("anger", "update_task_1"),
        ("confusion", "create_task_1"),
        ("impatience", "update_task_1"),
    }
    assert all(f["direction"] == "lost" and f["lost"] == 1 for f in flips.values())


def test_report_section(built: Path, report: dict[str, Any]) -> None:
    an = report["anatomy"]
    assert an["status"] == "descriptive, not part of the report's family"
    assert "sorry" in an["definitions"]["apology_lexicon"]
    d = {x["variant"]: x for x in an["delivery"]}
    assert d["frustration"]["delivered_less"] and d["frustration"]["caveat"]
    assert d["frustration"]["share"]["diff"] == pytest.approx(-1 / 6)  # tasks with facts: create 0, update -1/3
    assert d["frustration"]["reward_all"]["n_pairs"] == 3 and d["frustration"]["reward_all_delivered"]["n_pairs"] == 2
    assert d["frustration"]["reward_all_delivered"]["diff"] == pytest.approx(0.0)  # where every fact was said, no drop
    assert d["frustration"]["reward_all"]["diff"] == pytest.approx(-1 / 3)
    assert not d["anger"]["delivered_less"]
    assert any("stated less of the task's facts" in w["text"] for w in report["warnings"])
    headline = next(
        e for e in report["effects"] if e["variant"] == "frustration" and e["domain"] == "all" and e["subset"] == "all"
    )
    assert "delivered_less" in [c["kind"] for c in headline["caveats"]] and headline["trust"] != "ok"
    assert "claim" in headline  # the caveat sits beside the claim, which the anatomy never changes
    angry = next(e for e in report["effects"] if e["variant"] == "anger" and e["domain"] == "all" and e["subset"] == "all")
    assert "delivered_less" not in [c["kind"] for c in angry["caveats"]]
    flip = next(f for f in an["flipping_tasks"] if f["variant"] == "frustration")
    page = built / "report" / flip["flips"][0]["page"]
    html = page.read_text()
    assert 'id="diverge"' in html and "frustration" in html and "control" in html and "update_task_status" in html
    md = (built / "report" / "report.md").read_text()
    assert "## How the agent failed" in md and "### Did the customer deliver the task?" in md and flip["flips"][0]["page"] in md
    page_html = (built / "report" / "report.html").read_text()
    assert 'id="anatomy-table"' in page_html and 'id="plot-anatomy"' in page_html and 'class="pair-link"' in page_html
    assert (built / "report" / "plots" / "anatomy.png").stat().st_size > 1000


def test_report_json_on_stdout_has_the_anatomy(built: Path, report: dict[str, Any]) -> None:
    r = subprocess.run(
        CLI + ["report", str(built / "run"), "--json"], capture_output=True, text=True, env=cli_env(), timeout=300, cwd=built
    )
    assert r.returncode == 0, r.stderr[-2000:]
    printed = json.loads(r.stdout)
    assert printed["anatomy"]["effects"] == report["anatomy"]["effects"]
    assert printed["anatomy"]["flipping_tasks"] == report["anatomy"]["flipping_tasks"]


def test_first_divergence(records: dict[tuple[str, str], ConversationRecord]) -> None:
    base, var = records[("control", "update_task_1")].messages, records[("frustration", "update_task_1")].messages
    i = first_divergence(base, var)
    assert i == 1  # tau2's greeting is shared; the customers' first words differ
    assert first_divergence(base, base) is None


def test_viewer_renders_any_pair(built: Path, records: dict[tuple[str, str], ConversationRecord]) -> None:
    server = start_server(built / "report", 0, pair_page=pair_pages([built / "run"]))
    try:
        port = server.server_address[1]
        slug = json.loads((built / "report" / "report.json").read_text())["runs"][0]["slug"]
        b, v = records[("control", "create_task_1")], records[("frustration", "create_task_1")]  # not a flip: no static page
        assert not (built / "report" / "transcripts" / slug / f"pair-{b.id}-{v.id}.html").exists()
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://127.0.0.1:{port}/transcripts/{slug}/pair-{b.id}-{v.id}.html", timeout=10) as resp:
            body = resp.read().decode()
        assert resp.status == 200 and "side by side" in body and "create_task" in body
        other = records[("frustration", "update_task_1")]  # another task: not a pair
        with pytest.raises(urllib.error.HTTPError) as err:
            opener.open(f"http://127.0.0.1:{port}/transcripts/{slug}/pair-{b.id}-{other.id}.html", timeout=10)
        assert err.value.code == 404
    finally:
        server.shutdown()
        server.server_close()


def test_identifier_pattern() -> None:
    assert all(is_identifier(s) for s in ("user_1", "#W2378156", "1151293680", "credit_card_9513926", "HAT170", "task_2"))
    assert not any(is_identifier(s) for s in ("2024-05-15", "completed", "Important Meeting", "10:30", "a1"))
    msgs: list[dict[str, Any]] = [
        {"role": "user", "content": "My order is #W1234567"},
        {"role": "assistant", "tool_calls": [{"name": "get_order_details", "arguments": {"order_id": "#W1234567"}}]},
        {"role": "tool", "content": '{"user_id": "mei_lee_1"}'},
        {"role": "assistant", "tool_calls": [{"name": "x", "arguments": {"user_id": "mei_lee_1", "item_ids": ["99887766"]}}]},
    ]
    assert hallucinated_ids(msgs) == ["99887766"]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (./test installs it with apt-get when run as root)")
def test_pair_page_renders_in_chromium(built: Path, report: dict[str, Any], tmp_path: Path) -> None:
    flip = next(f for f in report["anatomy"]["flipping_tasks"] if f["variant"] == "impatience")
    page = built / "report" / flip["flips"][0]["page"]
    r = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert not [line for line in r.stderr.splitlines() if "CONSOLE" in line]
    dom = r.stdout
    # baseline left, variant right; the impatient pair diverges at the customer's first words, and the unrequested
    # write shows as "not in gold" on the variant's side
    assert dom.index("baseline: control") < dom.index("variant: impatience")
    assert 'id="diverge"' in dom and "not in gold" in dom and '"status": "pending"' in dom
