"""Resuming, refusing a changed experiment, and sharding: the store is the source of truth.

A long run on rented GPUs gets killed, loses its endpoint, or is split across machines; finished
conversations must never be paid for twice and unfinished ones must never be lost. Every claim is
checked from the outside: the scripted server's request log says which conversations were really
run, and the SQLite file is read with plain ``sqlite3``.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from moodbench.testing.scripts import mock_example_script
from scripted import start_scripted_server
from test_run_e2e import (
    db_rows,
    explain,
    moodbench,
    popen_moodbench,
    scripted_model,
    stored_prompt,
    words,
)

# The preamble's working example: create_task_1 succeeds, update_task_1 fails (wrong tool).
SCRIPT: dict[str, Any] = mock_example_script()
TASKS = ["create_task_1", "update_task_1"]
VARIANTS = ["control", "frustration"]
EXPECTED_EXIT = {"create_task_1": "success", "update_task_1": "task_failed"}


def experiment(out: Path, base_url: str, *extra: Any, trials: int = 2) -> list[Any]:
    return [
        "run",
        "--domain",
        "mock",
        "--task-ids",
        ",".join(TASKS),
        "--variants",
        ",".join(VARIANTS),
        "--trials",
        trials,
        "--max-retries",
        0,
        "--out",
        out,
        *scripted_model(base_url),
        *extra,
    ]


def cells(trials: int) -> set[tuple[str, str, int]]:
    return {(t, v, k) for t in TASKS for v in VARIANTS for k in range(trials)}


def cell_set(rows: list[dict[str, Any]]) -> set[tuple[str, str, int]]:
    return {(r["task_id"], r["variant"], r["trial"]) for r in rows}


def conversations_started(log: list[dict[str, Any]]) -> int:
    """Each conversation's first model call is the customer's turn 0; retries are counted too."""
    return sum(1 for e in log if e["role"] == "user" and e["turn"] == 0)


def test_resume_runs_only_what_is_missing_and_refuses_a_changed_experiment(tmp_path: Path) -> None:
    """One run directory through its life: failures, a lost row, resumes, a config change."""
    out = tmp_path / "run"
    # the customer's first two requests fail: with --max-retries 0 two conversations end in llm_error
    script = {**SCRIPT, "faults": {"first_n_fail": 2, "roles": ["user"]}}
    with start_scripted_server(script, tmp_path) as srv:
        first = moodbench(*experiment(out, srv.base_url))
        assert first.returncode == 0, explain(first)
        rows = db_rows(out, final_only=False)
        failed = [r for r in rows if r["exit_reason"] == "llm_error"]
        finished = [r for r in rows if r["exit_reason"] != "llm_error"]
        assert len(failed) == 2 and len(finished) == 6, [r["exit_reason"] for r in rows]
        assert all("injected fault" in (r["error"] or "") for r in failed)  # the server's error text is kept
        summary = json.loads((out / "summary.json").read_text())
        assert sum(v["excluded"] for v in summary["variants"].values()) == 2
        assert sum(v["done"] for v in summary["variants"].values()) == 6

        # A conversation that finished but was never written (SIGKILL mid-run) is simply absent.
        lost = finished[0]
        conn = sqlite3.connect(out / "results.sqlite")
        with conn:
            conn.execute("DELETE FROM simulations WHERE id=?", (lost["id"],))
        conn.close()

        # 1. Resume: the two failed cells and the lost one are run, nothing else.
        started = conversations_started(srv.requests())
        resumed = moodbench(*experiment(out, srv.base_url))
        assert resumed.returncode == 0, explain(resumed)
        assert "3 conversation(s) to run, 5 already stored" in words(resumed.stderr)
        assert conversations_started(srv.requests()) - started == 3
        final = db_rows(out)
        assert cell_set(final) == cells(2)
        assert all(r["exit_reason"] == EXPECTED_EXIT[r["task_id"]] for r in final)
        assert len(db_rows(out, final_only=False)) == 2 + 5 + 3  # failed attempts stay as history, + kept, + re-run
        retried = {r["cell_key"] for r in failed}
        assert {r["attempt"] for r in final if r["cell_key"] in retried} == {2}
        summary = (out / "summary.json").read_text()
        for variant in VARIANTS:
            block = json.loads(summary)["variants"][variant]
            assert block["done"] == block["planned"] == 4 and block["excluded"] == 0

        # 2. The same command again: nothing to do, nothing sent, nothing changed.
        n_requests = len(srv.requests())
        ids = [r["id"] for r in db_rows(out, final_only=False)]
        again = moodbench(*experiment(out, srv.base_url))
        assert again.returncode == 0, explain(again)
        assert "0 conversation(s) to run, 8 already stored" in words(again.stderr)
        assert len(srv.requests()) == n_requests
        assert [r["id"] for r in db_rows(out, final_only=False)] == ids
        assert json.loads((out / "summary.json").read_text()) == json.loads(summary)

        # 3. A different experiment in the same directory: refused, with the difference shown.
        changed = moodbench(*experiment(out, srv.base_url, trials=3))
        assert changed.returncode == 2, explain(changed)
        said = words(changed.stderr)
        assert "different configuration" in said and "trials: 2 -> 3" in said and "--force-config" in said
        assert len(srv.requests()) == n_requests
        assert [r["id"] for r in db_rows(out, final_only=False)] == ids

        # 4. --force-config continues: only the new trial's cells are run.
        forced = moodbench(*experiment(out, srv.base_url, "--force-config", trials=3))
        assert forced.returncode == 0, explain(forced)
        assert "4 conversation(s) to run, 8 already stored" in words(forced.stderr)
        assert conversations_started(srv.requests()) - conversations_started(srv.requests()[:n_requests]) == 4
    after = db_rows(out)
    assert cell_set(after) == cells(3)
    assert {r["id"] for r in after} >= {r["id"] for r in final}  # the old rows are kept, not redone
    conn = sqlite3.connect(out / "results.sqlite")
    stored_config = json.loads(conn.execute("SELECT value FROM meta WHERE key='config'").fetchone()[0])
    conn.close()
    assert stored_config["trials"] == 3
    assert json.loads((out / "summary.json").read_text())["variants"]["control"]["done"] == 6


@pytest.mark.slow
def test_shards_partition_the_cells_and_merge_back(tmp_path: Path) -> None:
    n = 3
    dirs = [tmp_path / f"shard{i}" for i in range(1, n + 1)]
    with start_scripted_server(SCRIPT, tmp_path) as srv:
        procs = [
            popen_moodbench(*experiment(d, srv.base_url, "--shard", f"{i}/{n}", "--concurrency", 2))
            for i, d in enumerate(dirs, start=1)
        ]
        results = [(p, *p.communicate(timeout=300)) for p in procs]
    for p, stdout, stderr in results:
        assert p.returncode == 0, f"exit {p.returncode}\n{stdout}\n{stderr}"

    shard_rows = [db_rows(d) for d in dirs]
    shard_cells = [cell_set(rows) for rows in shard_rows]
    sizes = [len(c) for c in shard_cells]
    assert sum(sizes) == len(cells(2)) and max(sizes) - min(sizes) <= 1
    assert set().union(*shard_cells) == cells(2)  # every cell is in a shard ...
    assert sum(len(c) for c in shard_cells) == len(set().union(*shard_cells))  # ... in exactly one
    for i, rows in enumerate(shard_rows, start=1):
        assert {r["shard"] for r in rows} == {f"{i}/{n}"}

    merged = tmp_path / "merged"
    res = moodbench("merge", merged, *dirs)
    assert res.returncode == 0, explain(res)
    merged_rows = db_rows(merged)
    assert cell_set(merged_rows) == cells(2)
    by_key = {r["cell_key"]: r for rows in shard_rows for r in rows}
    for r in merged_rows:
        src = by_key[r["cell_key"]]
        assert (r["reward"], r["exit_reason"], r["simulation"]) == (src["reward"], src["exit_reason"], src["simulation"])
        assert stored_prompt(merged, r["user_prompt_sha256"]) and stored_prompt(merged, r["agent_prompt_sha256"])
    summary = json.loads((merged / "summary.json").read_text())
    for variant in VARIANTS:
        block = summary["variants"][variant]
        assert block["planned"] == block["done"] == 4
        assert block["exit_reasons"] == {"success": 2, "task_failed": 2}

    into_existing = moodbench("merge", dirs[0], dirs[1], dirs[2])
    assert into_existing.returncode == 2 and "already holds a run" in words(into_existing.stderr)

    from moodbench import UsageError
    from moodbench.results import merge_runs

    with pytest.raises(UsageError, match="same shard"):
        merge_runs(tmp_path / "twice", [dirs[0], dirs[1], dirs[0]])
    assert not (tmp_path / "twice" / "results.sqlite").exists()
