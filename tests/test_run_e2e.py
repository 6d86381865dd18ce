"""``moodbench run`` end to end: real CLI subprocesses against the scripted server, real SQLite.

What issue 2 promises and these tests check, from the outside: exit reasons are right for each kind
of ending, ``<think>`` text never reaches the simulated customer (but is kept in the record),
``tool_choice=required`` really sends ``required`` and turns ``respond_to_user`` into speech, a dead
endpoint stops the run with exit code 4, the summary's numbers are the stored rows' numbers, and the
tau2 export opens with tau2's own loader.

Each ``moodbench run`` costs seconds of imports, so one run feeds several tests. The helpers at the
top are shared with the other end-to-end test files (they import them from here); a run that several
tests read is made once per pytest session, even across xdist workers (see :func:`shared_run`).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import sqlite3
import subprocess
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from math import comb
from pathlib import Path
from typing import Any

import pytest

from scripted import CLI, cli_env, start_scripted_server

EXCLUDED = {"llm_error", "harness_error"}


# =========================================================================== shared helpers


def moodbench(*args: Any, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the real CLI (``python -m moodbench.cli``) and capture its output."""
    return subprocess.run(
        [*CLI, *[str(a) for a in args]],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(env),
        cwd=tempfile.gettempdir(),
    )


def popen_moodbench(*args: Any) -> subprocess.Popen[str]:
    """Start the CLI without waiting (for shards that run side by side)."""
    return subprocess.Popen(
        [*CLI, *[str(a) for a in args]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
        cwd=tempfile.gettempdir(),
    )


def scripted_model(base_url: str) -> list[str]:
    """Flags pointing every role at the scripted server; preflight off so only conversations hit it."""
    return ["--agent-model", "openai/scripted", "--agent-base-url", base_url, "--skip-preflight"]


def words(text: str) -> str:
    """Whitespace-normalised text: rich wraps long error lines at the terminal width."""
    return " ".join(text.split())


def squashed(text: str) -> str:
    """All whitespace removed, for finding paths that rich may have folded mid-word."""
    return re.sub(r"\s+", "", text)


def explain(proc: subprocess.CompletedProcess[str] | RunOutcome) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-6000:]}"


def message_texts(body: dict[str, Any], role: str | None = None) -> list[str]:
    """The text of every message in a logged request body (optionally only messages of one role)."""
    out = []
    for m in body.get("messages", []):
        if role is not None and m.get("role") != role:
            continue
        content = m.get("content")
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        out.append(content or "")
    return out


def system_prompt(body: dict[str, Any]) -> str:
    systems = message_texts(body, "system")
    assert len(systems) == 1, f"expected one system message, got {len(systems)}"
    return systems[0]


def db_rows(run_dir: Path, *, final_only: bool = True) -> list[dict[str, Any]]:
    """Stored simulations read with plain sqlite3 (not moodbench's Store), JSON columns decoded.

    ``final_only``: per cell, the finished row if there is one, else its latest failed attempt.
    """
    conn = sqlite3.connect(run_dir / "results.sqlite")
    conn.row_factory = sqlite3.Row
    try:
        rows = [dict(r) for r in conn.execute("SELECT * FROM simulations ORDER BY id")]
    finally:
        conn.close()
    for r in rows:
        for col in ("simulation", "stats", "flags", "reward_info"):
            if r.get(col):
                r[col] = json.loads(r[col])
    if not final_only:
        return rows
    final: dict[str, dict[str, Any]] = {}
    for r in rows:
        prev = final.get(r["cell_key"])
        if prev is None or prev["exit_reason"] in EXCLUDED:
            final[r["cell_key"]] = r
    return list(final.values())


def stored_prompt(run_dir: Path, digest: str) -> str:
    conn = sqlite3.connect(run_dir / "results.sqlite")
    try:
        row = conn.execute("SELECT text FROM prompts WHERE sha256=?", (digest,)).fetchone()
    finally:
        conn.close()
    assert row is not None, f"prompt {digest} not stored"
    return row[0]


@dataclass
class RunOutcome:
    """A finished ``moodbench run``: its exit, output, directory and everything the server received."""

    returncode: int
    stdout: str
    stderr: str
    run_dir: Path
    base_url: str
    log: list[dict[str, Any]]

    def requests(self, role: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.log if role is None or e["role"] == role]

    def bodies(self, role: str | None = None) -> list[dict[str, Any]]:
        return [e["body"] for e in self.requests(role)]


def run_against_script(workdir: Path, script: dict[str, Any], args: Callable[[str, Path], list[Any]]) -> RunOutcome:
    """Start a scripted server, run ``moodbench`` with ``args(base_url, run_dir)``, stop the server."""
    workdir.mkdir(parents=True, exist_ok=True)
    run_dir = workdir / "run"
    with start_scripted_server(script, workdir / "server") as srv:
        proc = moodbench(*args(srv.base_url, run_dir))
        log = srv.requests()
        base_url = srv.base_url
    return RunOutcome(proc.returncode, proc.stdout, proc.stderr, run_dir, base_url, log)


def shared_run(
    tmp_path_factory: pytest.TempPathFactory, name: str, script: dict[str, Any], args: Callable[[str, Path], list[Any]]
) -> RunOutcome:
    """:func:`run_against_script` once per pytest session, whichever xdist worker asks first.

    Module fixtures are per worker under xdist, so two workers would each pay for the same run; a
    file lock in the session's shared temp directory makes the second one read the first's result.
    """
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    workdir = root / f"shared-{name}"
    workdir.mkdir(parents=True, exist_ok=True)
    result_file = workdir / "outcome.json"
    with open(workdir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not result_file.exists():
            o = run_against_script(workdir, script, args)
            result_file.write_text(
                json.dumps(
                    {
                        "returncode": o.returncode,
                        "stdout": o.stdout,
                        "stderr": o.stderr,
                        "run_dir": str(o.run_dir),
                        "base_url": o.base_url,
                        "log": o.log,
                    }
                )
            )
    data = json.loads(result_file.read_text())
    return RunOutcome(data["returncode"], data["stdout"], data["stderr"], Path(data["run_dir"]), data["base_url"], data["log"])


def by_scenario(rules: dict[str, dict[str, Any]], default: dict[str, Any]) -> dict[str, Any]:
    """A user-side response chosen by a phrase of the task's scenario (in the user's system prompt)."""
    return {"match": [{"if_contains": k, "in": "system", "then": v} for k, v in rules.items()], "else": default}


def by_marker(rules: dict[str, dict[str, Any]], default: dict[str, Any]) -> dict[str, Any]:
    """An agent-side response chosen by a marker the scripted customer put in its first message."""
    return {"match": [{"if_contains": k, "in": "all", "then": v} for k, v in rules.items()], "else": default}


# Phrases unique to one mock task's user scenario.
SCENARIO = {
    "create_task_1": "Create a new task called 'Important Meeting' for user_1",
    "update_task_1": "Request that task_1 be marked as completed",
    "impossible_task_1": "delete all your current tasks",
    "update_task_with_initialization_data": "with ID task_2. Now you want to mark",
}


def pass_hat_k(successes: dict[str, list[bool]], k: int) -> float | None:
    """tau2's pass^k, written out independently of moodbench.results."""
    vals = [comb(sum(v), k) / comb(len(v), k) for v in successes.values() if len(v) >= k]
    return sum(vals) / len(vals) if vals else None


# =========================================================================== behaviours (tool_choice auto)

SECRET_CLOSED = "SECRET-CLOSED-REASONING"
SECRET_UNCLOSED = "SECRET-UNCLOSED-REASONING"
SECRET_LEADING = "SECRET-LEADING-REASONING"
SPOKEN_AFTER_CLOSED = "I'm sorry, I cannot change tasks."
SPOKEN_AFTER_LEADING = "Done. Your task is created."

BEHAVIOUR_TASKS = ["create_task_1", "update_task_1", "update_task_with_initialization_data", "impossible_task_1"]
BEHAVIOUR_EXPECTED = {
    "create_task_1": "success",  # right tool call; reasoning in unclosed and leading think blocks
    "update_task_1": "agent_no_tool_calls",  # the agent only talks (closed think block) on a write task
    "update_task_with_initialization_data": "invalid_tool_call",  # arguments "{bad"
    "impossible_task_1": "user_out_of_scope",  # wrong write, then the customer says ###OUT-OF-SCOPE###
}
BEHAVIOUR_SCRIPT: dict[str, Any] = {
    "roles": {
        "agent": {
            "turns": [
                {"content": "turn 0 is tau2's fixed greeting and never requested"},
                by_marker(
                    {
                        "[T-SUCCESS]": {
                            "content": f"<think>I should call create_task {SECRET_UNCLOSED}",
                            "tool_calls": [
                                {"name": "create_task", "arguments": {"user_id": "user_1", "title": "Important Meeting"}}
                            ],
                        },
                        "[T-TALK]": {"think": f"{SECRET_CLOSED} the user wants an update", "content": SPOKEN_AFTER_CLOSED},
                        "[T-BADARGS]": {"tool_calls": [{"name": "update_task_status", "arguments": "{bad"}]},
                        "[T-OOS]": {
                            "tool_calls": [{"name": "create_task", "arguments": {"user_id": "user_1", "title": "Wrong Title"}}]
                        },
                    },
                    {"content": "How can I help?"},
                ),
                by_marker(
                    {
                        "[T-SUCCESS]": {"content": f"{SECRET_LEADING} done</think>{SPOKEN_AFTER_LEADING}"},
                        "[T-BADARGS]": {"content": "Sorry, something went wrong."},
                    },
                    {"content": "Is there anything else?"},
                ),
            ],
            "after": {"content": "Anything else?"},
        },
        "user": {
            "turns": [
                by_scenario(
                    {
                        SCENARIO["create_task_1"]: {
                            "content": "[T-SUCCESS] Please create a task called 'Important Meeting' for user_1."
                        },
                        SCENARIO["update_task_1"]: {"content": "[T-TALK] Please mark task_1 as completed."},
                        SCENARIO["update_task_with_initialization_data"]: {
                            "content": "[T-BADARGS] Please mark task_2 as completed."
                        },
                        SCENARIO["impossible_task_1"]: {"content": "[T-OOS] Please delete all my tasks."},
                    },
                    {"content": "###STOP###"},
                ),
                by_scenario(
                    {
                        SCENARIO["create_task_1"]: {"content": "Thanks! ###STOP###"},
                        SCENARIO["impossible_task_1"]: {"content": "###OUT-OF-SCOPE###"},
                    },
                    {"content": "###STOP###"},
                ),
            ],
            "after": {"content": "###STOP###"},
        },
    }
}
BEHAVIOUR_VARIANTS = ["control", "frustration"]
BEHAVIOUR_TRIALS = 2


@pytest.fixture(scope="module")
def behaviour(tmp_path_factory: pytest.TempPathFactory) -> RunOutcome:
    return shared_run(
        tmp_path_factory,
        "behaviour",
        BEHAVIOUR_SCRIPT,
        lambda url, out: [
            "run",
            "--domain",
            "mock",
            "--task-ids",
            ",".join(BEHAVIOUR_TASKS),
            "--variants",
            ",".join(BEHAVIOUR_VARIANTS),
            "--trials",
            BEHAVIOUR_TRIALS,
            "--concurrency",
            4,
            "--max-retries",
            0,
            "--out",
            out,
            *scripted_model(url),
        ],
    )


def test_exit_reasons_under_tool_choice_auto(behaviour: RunOutcome) -> None:
    assert behaviour.returncode == 0, explain(behaviour)
    rows = db_rows(behaviour.run_dir)
    assert len(rows) == len(BEHAVIOUR_TASKS) * len(BEHAVIOUR_VARIANTS) * BEHAVIOUR_TRIALS
    got = defaultdict(set)
    for r in rows:
        got[r["task_id"]].add(r["exit_reason"])
    assert dict(got) == {t: {e} for t, e in BEHAVIOUR_EXPECTED.items()}
    for r in rows:
        assert r["reward"] == (1.0 if r["exit_reason"] == "success" else 0.0), r["cell_key"]
        if r["task_id"] == "update_task_with_initialization_data":
            bad = [
                m["raw_data"]["invalid_json_arguments"]
                for m in r["simulation"]["messages"]
                if m["role"] == "assistant" and (m.get("raw_data") or {}).get("invalid_json_arguments")
            ]
            assert bad == [["{bad"]], r["cell_key"]
        if r["task_id"] == "update_task_1":
            assert r["stats"]["agent"]["tool_calls"] == 0
    # auto mode: tau2's tools only, no respond_to_user, tool_choice "auto"
    agent_bodies = behaviour.bodies("agent")
    assert agent_bodies
    for body in agent_bodies:
        assert body.get("tool_choice") == "auto"
        assert "respond_to_user" not in {t["function"]["name"] for t in body["tools"]}


def test_think_text_never_reaches_the_customer_but_is_stored(behaviour: RunOutcome) -> None:
    user_bodies = behaviour.bodies("user")
    seen = "\n".join(t for body in user_bodies for t in message_texts(body))
    # The spoken parts did reach the customer, so the absence checks below are not vacuous.
    assert SPOKEN_AFTER_CLOSED in seen and SPOKEN_AFTER_LEADING in seen
    for secret in (SECRET_CLOSED, SECRET_UNCLOSED, SECRET_LEADING):
        assert secret not in seen
    assert "think>" not in seen.lower()

    raw_by_task: dict[str, list[str]] = defaultdict(list)
    for r in db_rows(behaviour.run_dir):
        for m in r["simulation"]["messages"]:
            raw = m.get("raw_data") or {}
            if m["role"] == "assistant" and raw.get("raw_content"):
                raw_by_task[r["task_id"]].append(raw["raw_content"])
                if "think>" in raw["raw_content"]:
                    assert raw["think_stripped"] is True
                    assert "think>" not in (m.get("content") or "")
    success_raw = "\n".join(raw_by_task["create_task_1"])
    assert f"<think>I should call create_task {SECRET_UNCLOSED}" in success_raw
    assert f"{SECRET_LEADING} done</think>{SPOKEN_AFTER_LEADING}" in success_raw
    assert f"<think>{SECRET_CLOSED} the user wants an update</think>{SPOKEN_AFTER_CLOSED}" in "\n".join(
        raw_by_task["update_task_1"]
    )


def test_summary_numbers_match_the_stored_rows(behaviour: RunOutcome) -> None:
    summary = json.loads((behaviour.run_dir / "summary.json").read_text())
    rows = db_rows(behaviour.run_dir)
    assert list(summary["variants"]) == BEHAVIOUR_VARIANTS
    assert summary["trials"] == BEHAVIOUR_TRIALS
    for variant in BEHAVIOUR_VARIANTS:
        mine = [r for r in rows if r["variant"] == variant]
        scored = [r for r in mine if r["exit_reason"] not in EXCLUDED and r["reward"] is not None]
        successes: dict[str, list[bool]] = defaultdict(list)
        for r in scored:
            successes[f"{r['domain']}|{r['task_id']}"].append(r["reward"] >= 1.0)
        block = summary["variants"][variant]
        assert block["planned"] == len(BEHAVIOUR_TASKS) * BEHAVIOUR_TRIALS
        assert block["done"] == sum(r["exit_reason"] not in EXCLUDED for r in mine) == len(mine)
        assert block["scored"] == len(scored)
        assert block["avg_reward"] == pytest.approx(sum(r["reward"] for r in scored) / len(scored))
        assert block["avg_reward"] == pytest.approx(0.25)  # 1 of 4 tasks succeeds in every trial
        for k in range(1, BEHAVIOUR_TRIALS + 1):
            assert block["pass_hat_k"][str(k)] == pytest.approx(pass_hat_k(successes, k))
        assert block["exit_reasons"] == dict(Counter(r["exit_reason"] for r in mine))
        for col in ("agent_prompt_tokens", "agent_completion_tokens", "user_prompt_tokens", "user_completion_tokens"):
            assert block["tokens"][col] == sum(r[col] for r in mine)
        assert block["tokens"]["agent_prompt_tokens"] > 0
        assert block["fidelity"]["flagged"] == sum(bool(r["flags"]["any"]) for r in mine)
        assert summary["by_domain"]["mock"][variant]["exit_reasons"] == block["exit_reasons"]

    printed = moodbench("summary", behaviour.run_dir, "--json")
    assert printed.returncode == 0, explain(printed)
    assert json.loads(printed.stdout) == summary


def test_tau2_export_loads_with_tau2(behaviour: RunOutcome, tmp_path: Path) -> None:
    from tau2.data_model.simulation import Results

    from moodbench import UsageError
    from moodbench.sim import export_tau2

    everything = tmp_path / "all.json"
    res = moodbench("export", behaviour.run_dir, "--format", "tau2", "--out", everything)
    assert res.returncode == 0, explain(res)
    rows = db_rows(behaviour.run_dir)
    loaded = Results.load(everything)
    assert len(loaded.simulations) == len(rows)
    assert {t.id for t in loaded.tasks} == set(BEHAVIOUR_TASKS)
    rewards = sorted((s.task_id, s.trial, s.reward_info.reward) for s in loaded.simulations)
    assert rewards == sorted((r["task_id"], r["trial"], r["reward"]) for r in rows)

    # one variant per file (tau2's Results describe one user configuration)
    frustrated = tmp_path / "frustration.json"
    assert export_tau2(behaviour.run_dir, frustrated, variant="frustration") == len(BEHAVIOUR_TASKS) * BEHAVIOUR_TRIALS
    stored = {r["simulation"]["id"] for r in rows if r["variant"] == "frustration"}
    assert {s.id for s in Results.load(frustrated).simulations} == stored

    with pytest.raises(UsageError, match="its variants: control, frustration"):
        export_tau2(behaviour.run_dir, tmp_path / "x.json", variant="anger")
    with pytest.raises(UsageError, match="not a run directory"):
        export_tau2(tmp_path / "no-such-run", tmp_path / "y.json")
    assert not (tmp_path / "no-such-run").exists()  # nothing created on the way
    assert not (tmp_path / "x.json").exists() and not (tmp_path / "y.json").exists()
    bad = moodbench("export", behaviour.run_dir, "--format", "csv", "--out", tmp_path / "x.csv")
    assert bad.returncode == 2 and "tau2" in bad.stderr


# =========================================================================== tool_choice required

SPOKEN_VIA_TOOL = "RESPOND-TOOL-TEXT: your task has been updated."
CHAT_REPLY = "CHAT-REPLY: could you tell me more?"


def _say(message: str) -> dict[str, Any]:
    return {"tool_calls": [{"name": "respond_to_user", "arguments": {"message": message}}]}


REQUIRED_EXPECTED = {
    "update_task_1": "task_failed",  # wrong write, then speaks through respond_to_user
    "create_task_1": "max_steps",  # agent and customer chat forever
    "impossible_task_1": "user_transfer",  # wrong write, transfer, customer says ###TRANSFER###
}
REQUIRED_MAX_STEPS = 10
REQUIRED_SCRIPT: dict[str, Any] = {
    "roles": {
        "agent": {
            "turns": [
                {"content": "turn 0 is tau2's fixed greeting and never requested"},
                by_marker(
                    {
                        "[T-WRONG]": {
                            "tool_calls": [{"name": "create_task", "arguments": {"user_id": "user_1", "title": "Wrong"}}]
                        },
                        "[T-XFER]": {
                            "tool_calls": [{"name": "create_task", "arguments": {"user_id": "user_1", "title": "Wrong"}}]
                        },
                    },
                    _say(CHAT_REPLY),
                ),
                by_marker(
                    {
                        "[T-WRONG]": _say(SPOKEN_VIA_TOOL),
                        "[T-XFER]": {
                            "tool_calls": [{"name": "transfer_to_human_agents", "arguments": {"summary": "cannot do it"}}]
                        },
                    },
                    _say(CHAT_REPLY),
                ),
                by_marker({"[T-XFER]": _say("You are being transferred to a human agent.")}, _say(CHAT_REPLY)),
            ],
            "after": _say(CHAT_REPLY),
        },
        "user": {
            "turns": [
                by_scenario(
                    {
                        SCENARIO["create_task_1"]: {"content": "[T-CHAT] Let's chat first."},
                        SCENARIO["update_task_1"]: {"content": "[T-WRONG] Please mark task_1 as completed."},
                        SCENARIO["impossible_task_1"]: {"content": "[T-XFER] Please delete all my tasks."},
                    },
                    {"content": "###STOP###"},
                ),
                by_scenario(
                    {
                        SCENARIO["create_task_1"]: {"content": "Tell me more."},
                        SCENARIO["impossible_task_1"]: {"content": "###TRANSFER###"},
                    },
                    {"content": "Thanks! ###STOP###"},
                ),
            ],
            "after": by_scenario({SCENARIO["create_task_1"]: {"content": "Tell me more."}}, {"content": "###STOP###"}),
        },
    }
}


@pytest.fixture(scope="module")
def required(tmp_path_factory: pytest.TempPathFactory) -> RunOutcome:
    return shared_run(
        tmp_path_factory,
        "required",
        REQUIRED_SCRIPT,
        lambda url, out: [
            "run",
            "--domain",
            "mock",
            "--task-ids",
            ",".join(REQUIRED_EXPECTED),
            "--variants",
            "control",
            "--tool-choice",
            "required",
            "--max-steps",
            REQUIRED_MAX_STEPS,
            "--max-retries",
            0,
            "--out",
            out,
            *scripted_model(url),
        ],
    )


def test_tool_choice_required_and_respond_to_user(required: RunOutcome) -> None:
    assert required.returncode == 0, explain(required)
    agent_bodies = required.bodies("agent")
    assert agent_bodies
    for body in agent_bodies:
        assert body["tool_choice"] == "required"
        names = {t["function"]["name"] for t in body["tools"]}
        assert {"respond_to_user", "create_task", "update_task_status"} <= names

    # The respond_to_user call reached the customer as plain text, never as a tool call.
    user_bodies = required.bodies("user")
    spoken = [m for body in user_bodies for m in body["messages"] if (m.get("content") or "") == SPOKEN_VIA_TOOL]
    assert spoken, "the respond_to_user message never reached the customer"
    assert all(not m.get("tool_calls") for m in spoken)
    assert "respond_to_user" not in json.dumps([b["messages"] for b in user_bodies])

    rows = {r["task_id"]: r for r in db_rows(required.run_dir)}
    assert {t: r["exit_reason"] for t, r in rows.items()} == REQUIRED_EXPECTED
    wrong = rows["update_task_1"]
    as_text = [m for m in wrong["simulation"]["messages"] if m["role"] == "assistant" and m.get("content") == SPOKEN_VIA_TOOL]
    assert len(as_text) == 1 and not as_text[0].get("tool_calls")
    assert wrong["stats"]["respond_tool_uses"] == 1
    chat = rows["create_task_1"]
    assert chat["termination_reason"] == "max_steps"
    assert chat["stats"]["respond_tool_uses"] >= 3
    transfer = rows["impossible_task_1"]
    assert any(
        tc["name"] == "transfer_to_human_agents" for m in transfer["simulation"]["messages"] for tc in (m.get("tool_calls") or [])
    )


# =========================================================================== endpoint down


def test_dead_endpoint_stops_the_run_with_exit_4(tmp_path: Path) -> None:
    outcome = run_against_script(
        tmp_path,
        {"faults": {"down": True}},
        lambda url, out: [
            "run",
            "--domain",
            "mock",
            "--task-ids",
            "create_task_1,update_task_1",
            "--variants",
            "control,frustration",
            "--concurrency",
            1,
            "--max-retries",
            0,
            "--max-consecutive-failures",
            2,
            "--out",
            out,
            *scripted_model(url),
        ],
    )
    assert outcome.returncode == 4, explain(outcome)
    said = words(outcome.stderr)
    assert "stopped (exit 4)" in said
    assert outcome.base_url in squashed(outcome.stderr)  # the message names the endpoint
    assert "resume" in said
    # no retries, and no new conversation once two requests in a row failed
    assert len(outcome.log) == 2 and all(e["status"] == 503 for e in outcome.log)
    rows = db_rows(outcome.run_dir, final_only=False)
    assert len(rows) == 2 and {r["exit_reason"] for r in rows} == {"llm_error"}
    assert all(outcome.base_url in r["error"] for r in rows)
    summary = json.loads((outcome.run_dir / "summary.json").read_text())
    assert sum(v["done"] for v in summary["variants"].values()) == 0
    assert sum(v["excluded"] for v in summary["variants"].values()) == 2
    assert all(v["avg_reward"] is None for v in summary["variants"].values())
