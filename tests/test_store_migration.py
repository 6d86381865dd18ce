"""Run directories written by the first release (hand-written table, untyped rows) still open, summarise,
report, merge and resume: the store adds the columns it lacks and reads old rows into typed records."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

from moodbench.results import ConversationRecord, ExitReason, Store, summary_for_run
from scripted import CLI

# The first release's table, as results.sqlite files on users' disks have it.
V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE prompts (sha256 TEXT PRIMARY KEY, role TEXT NOT NULL, text TEXT NOT NULL);
CREATE TABLE simulations (
    id INTEGER PRIMARY KEY AUTOINCREMENT, cell_key TEXT NOT NULL, domain TEXT NOT NULL, task_id TEXT NOT NULL,
    variant TEXT NOT NULL, trial INTEGER NOT NULL, seed INTEGER, attempt INTEGER NOT NULL DEFAULT 1, reward REAL,
    exit_reason TEXT NOT NULL, termination_reason TEXT, reward_info TEXT, simulation TEXT, agent_prompt_sha256 TEXT,
    user_prompt_sha256 TEXT, agent_model TEXT, user_model TEXT, agent_prompt_tokens INTEGER DEFAULT 0,
    agent_completion_tokens INTEGER DEFAULT 0, user_prompt_tokens INTEGER DEFAULT 0, user_completion_tokens INTEGER DEFAULT 0,
    cost_usd REAL DEFAULT 0, wall_seconds REAL, started_at TEXT, finished_at TEXT, stats TEXT, flags TEXT, error TEXT, shard TEXT
);
CREATE UNIQUE INDEX one_finished_row_per_cell ON simulations(cell_key) WHERE exit_reason NOT IN ('llm_error', 'harness_error');
CREATE INDEX by_variant ON simulations(variant, domain);
"""
MESSAGES = [
    {"role": "assistant", "content": "Hi! How can I help you today?"},
    {"role": "user", "content": "Please create a task called Buy milk for user_1. ###STOP###"},
]


def _v1_run(run_dir: Path) -> None:
    run_dir.mkdir(parents=True)
    con = sqlite3.connect(run_dir / "results.sqlite")
    con.executescript(V1_SCHEMA)
    config = {
        "agent_model": "openai/scripted",
        "domains": ["mock"],
        "task_ids": ["create_task_1"],
        "trials": 1,
        "variants": ["control", "frustration"],
    }
    plan = {
        "planned": {"mock": {"control": 1, "frustration": 1}},
        "variants": ["control", "frustration"],
        "domains": ["mock"],
        "cells": 2,
        "all_cells": 2,
    }
    con.executemany("INSERT INTO meta VALUES (?, ?)", [("config", json.dumps(config)), ("plan", json.dumps(plan))])
    stats = {
        "agent": {"llm_calls": 2, "tool_calls": 1, "recovered_text_calls": 1},
        "user": {"llm_calls": 1},
        "turns": 1,
        "messages": 2,
        "judge": None,
        "respond_tool_uses": 0,
    }
    flags = {
        "user_role_confusion": False,
        "user_echo": False,
        "user_premature_stop": False,
        "user_goal_not_stated": False,
        "user_leaks_instructions": False,
        "any": False,
        "evidence": {"echo_turns": 0},
    }
    rows = [
        ("mock|create_task_1|control|0", "control", 1.0, "success", json.dumps(stats), json.dumps(flags)),
        # an old harness_error row: NULL tokens, no stats, no flags, no simulation
        ("mock|create_task_1|frustration|0", "frustration", None, "harness_error", None, None),
    ]
    for key, variant, reward, reason, st, fl in rows:
        con.execute(
            "INSERT INTO simulations (cell_key, domain, task_id, variant, trial, seed, reward, exit_reason, simulation, "
            "agent_prompt_tokens, stats, flags, wall_seconds) VALUES (?, 'mock', 'create_task_1', ?, 0, 301, ?, ?, ?, ?, ?, ?, 1.5)",
            (key, variant, reward, reason, json.dumps({"messages": MESSAGES}) if st else None, 120 if st else None, st, fl),
        )
    con.commit()
    con.close()


def test_a_first_release_store_reads_as_typed_records_and_summarises(tmp_path: Path) -> None:
    run = tmp_path / "old-run"
    _v1_run(run)
    with Store(run / "results.sqlite") as store:
        records = {r.variant: r for r in store.records(with_payload=True)}
        assert store.get_meta("schema_version") == 2
        assert store.finished_keys() == {"mock|create_task_1|control|0"}  # the harness_error cell is re-run
    ok, crashed = records["control"], records["frustration"]
    assert isinstance(ok, ConversationRecord) and ok.exit_reason is ExitReason.SUCCESS and ok.success
    assert ok.stats.agent.recovered_text_calls == 1 and ok.agent_prompt_tokens == 120 and ok.steering is None
    assert ok.user_texts == ["Please create a task called Buy milk for user_1."]
    assert crashed.exit_reason.excluded and crashed.agent_prompt_tokens == 0 and not crashed.flags.any
    summary = summary_for_run(run)
    assert summary["variants"]["control"]["done"] == 1 and summary["variants"]["frustration"]["excluded"] == 1
    assert summary["variants"]["control"]["recovered_text_tool_calls"] == 1


def test_a_first_release_store_takes_new_records_and_merges(tmp_path: Path) -> None:
    run = tmp_path / "old-run"
    _v1_run(run)
    with Store(run / "results.sqlite") as store:
        retry = ConversationRecord(
            cell_key="mock|create_task_1|frustration|0",
            domain="mock",
            task_id="create_task_1",
            variant="frustration",
            trial=0,
            reward=0.0,
            exit_reason=ExitReason.TASK_FAILED,
            attempt=2,
        )
        assert store.insert(retry) is True
        assert store.finished_keys() == {"mock|create_task_1|control|0", "mock|create_task_1|frustration|0"}
    merged = tmp_path / "merged"
    env_cmd = list(CLI)
    res = subprocess.run([*env_cmd, "merge", str(merged), str(run)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    res = subprocess.run([*env_cmd, "summary", str(merged), "--json"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["variants"]["frustration"]["done"] == 1


def test_attempts_is_an_index_lookup_in_new_and_first_release_stores(tmp_path: Path) -> None:
    """The run loop asks ``attempts`` once per finished conversation; as a table scan that grew with every row and
    was the main process's largest cost at 256 in flight. An old store gains the index when a writer opens it."""
    old = tmp_path / "old-run"
    _v1_run(old)
    for path in (tmp_path / "new.sqlite", old / "results.sqlite"):
        with Store(path) as store:
            plan = " ".join(
                str(row[-1])
                for row in store.conn.execute("EXPLAIN QUERY PLAN SELECT COUNT(*) AS n FROM simulations WHERE cell_key=?", ("k",))
            )
            assert "USING COVERING INDEX by_cell" in plan, plan
            assert store.attempts("mock|create_task_1|control|0") == (1 if path.parent == old else 0)
