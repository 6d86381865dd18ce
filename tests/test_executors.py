"""``--executor process``: the same rows as threads; resume and sharding unchanged; settings rebuilt in workers."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from executor_helpers import SCRIPT, forget, rows, run
from moodbench.experiment import RunConfig, make_plan
from moodbench.experiment.executors._portable import portable, rebuild
from moodbench.llm import EndpointHealth, ModelClient, ModelSpec
from scripted import start_scripted_server


def test_process_executor_matches_threads_and_resumes(tmp_path: Path, moodbench_bin: list[str]) -> None:
    with start_scripted_server(SCRIPT, tmp_path) as srv:
        run(moodbench_bin, srv.base_url, tmp_path / "threads")
        expected = rows(tmp_path / "threads")
        assert len(expected) == 8 and {r[0] for r in expected.values()} == {"success", "task_failed"}

        run(moodbench_bin, srv.base_url, tmp_path / "proc", "--executor", "process")
        assert rows(tmp_path / "proc") == expected

        # resume: conversations lost before they were stored are re-run, and only those
        lost = sorted(expected)[:3]
        forget(tmp_path / "proc", lost)
        res = run(moodbench_bin, srv.base_url, tmp_path / "proc", "--executor", "process")
        assert "3 conversation(s) to run" in res.stderr + res.stdout
        assert rows(tmp_path / "proc") == expected


def test_default_executor_picks_processes_for_many_conversations_in_flight(tmp_path: Path, moodbench_bin: list[str]) -> None:
    """No --executor flag: 16 in flight on >= 2 cores run in worker processes (pre-started during preflight),
    4 in flight on threads; the rows are the thread executor's either way."""
    import json

    from moodbench.experiment.executors import resolve_executor, usable_cores

    assert resolve_executor("thread", 256) == "thread" and resolve_executor("process", 1) == "process"
    assert resolve_executor("auto", 4) == "thread"
    with start_scripted_server(SCRIPT, tmp_path) as srv:
        # 32 conversations (concurrency is capped by the conversations to run); the preflight is skipped by ARGS
        run(moodbench_bin, srv.base_url, tmp_path / "threads", "--executor", "thread", "--trials", "8")
        expected = rows(tmp_path / "threads")
        run(moodbench_bin, srv.base_url, tmp_path / "auto", "--concurrency", "16", "--trials", "8")
        run(moodbench_bin, srv.base_url, tmp_path / "small", "--trials", "8")
    assert rows(tmp_path / "auto") == expected == rows(tmp_path / "small")
    used = {name: json.loads((tmp_path / name / "manifest.json").read_text())["executor_used"] for name in ("auto", "small")}
    assert used == {"auto": "process" if usable_cores() >= 2 else "thread", "small": "thread"}


@pytest.mark.slow
def test_process_executor_shards_like_threads(tmp_path: Path, moodbench_bin: list[str]) -> None:
    """Shard 2/2 holds the cells the thread executor's shard 2/2 holds, with the same rows."""
    with start_scripted_server(SCRIPT, tmp_path) as srv:
        run(moodbench_bin, srv.base_url, tmp_path / "proc", "--executor", "process", "--shard", "2/2")
        run(moodbench_bin, srv.base_url, tmp_path / "threads", "--shard", "2/2")
        shard = rows(tmp_path / "proc")
        assert shard == rows(tmp_path / "threads") and len(shard) == 4


def test_settings_cross_a_process_boundary_with_fresh_clients(tmp_path: Path) -> None:
    cfg = RunConfig(
        domains=["mock"],
        agent_model="openai/x",
        agent_base_url=["http://127.0.0.1:9/v1", "http://127.0.0.1:10/v1"],
        max_concurrency_per_endpoint=5,
        out=tmp_path,
    )
    plan = make_plan(cfg)
    from moodbench.sim import ConversationSettings

    health = EndpointHealth(7)
    spec = ModelSpec(model="openai/x", base_urls=tuple(cfg.agent_base_url), max_in_flight_per_endpoint=5)
    settings = ConversationSettings(
        catalog=plan.catalog,
        tasks=plan.tasks,
        agent_client=ModelClient(spec, health),
        user_client=ModelClient(spec, health),
        judge_client=None,
        max_steps=17,
    )
    blob = portable(settings, health.max_consecutive_failures)
    pickle.loads(blob)  # plain data only
    again, worker_health = rebuild(blob, share=2)
    assert again.max_steps == 17 and again.tasks.keys() == settings.tasks.keys() and again.judge_client is None
    assert again.agent_client is not settings.agent_client and again.agent_client.health is worker_health
    assert again.user_client.health is worker_health and worker_health.max_consecutive_failures == 7
    assert again.agent_client.spec.max_in_flight_per_endpoint == 3  # 5 split over 2 workers, rounded up
