"""Model-call faults against the real scripted server: retries, Retry-After, timeouts, dead endpoints.

Two levels. The model client is driven in-process over real HTTP, where the server's request log
tells exactly how many requests each call made (so retries that multiply, e.g. litellm's or the
openai SDK's own, show up as extra log lines). Whole runs are real ``moodbench run`` subprocesses
whose stores are read back with SQLite.

Backoff is shortened through MOODBENCH_BACKOFF_BASE_S so the faults cost milliseconds; nothing
here asserts how fast anything is, only what was requested and what was stored.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from moodbench.testing.scripts import MOCK_EXAMPLE_AGENT, MOCK_EXAMPLE_USER
from scripted import CLI, ScriptedServer, scripted_client, start_scripted_server

MOODBENCH = CLI

# The working mock example: create_task_1 succeeds, update_task_1 fails (the agent creates instead).
AGENT = MOCK_EXAMPLE_AGENT
USER = MOCK_EXAMPLE_USER
MESSAGES = [{"role": "system", "content": "You grade things."}, {"role": "user", "content": "hi"}]


def script(**extra: Any) -> dict[str, Any]:
    return {"roles": {"agent": AGENT, "user": USER}, **extra}


def run_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"MOODBENCH_BACKOFF_BASE_S": "0.01", "MOODBENCH_BACKOFF_MAX_S": "0.05", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def run_cmd(
    srv: ScriptedServer | str,
    out: Path,
    *extra: str,
    tasks: str = "create_task_1,update_task_1",
    variants: str = "control,frustration",
    trials: int = 1,
) -> list[str]:
    base_url = srv if isinstance(srv, str) else srv.base_url
    return [
        *MOODBENCH,
        "run",
        "--domain",
        "mock",
        "--task-ids",
        tasks,
        "--variants",
        variants,
        "--trials",
        str(trials),
        "--agent-model",
        "openai/scripted",
        "--agent-base-url",
        base_url,
        "--out",
        str(out),
        "--skip-preflight",
        *extra,
    ]


def moodbench(cmd: list[str], timeout: float = 180, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, check=False, capture_output=True, text=True, timeout=timeout, env=run_env(**env), stdin=subprocess.DEVNULL
    )


def flat(text: str) -> str:
    """Messages with rich's line wrapping (80 columns when not on a terminal) undone."""
    return " ".join(text.split())


def rows(out: Path) -> list[dict[str, Any]]:
    con = sqlite3.connect(out / "results.sqlite")
    con.row_factory = sqlite3.Row
    try:
        return [
            dict(r) for r in con.execute("SELECT id, cell_key, attempt, exit_reason, reward, error FROM simulations ORDER BY id")
        ]
    finally:
        con.close()


def finished(rs: list[dict[str, Any]]) -> list[str]:
    return [r["cell_key"] for r in rs if r["exit_reason"] not in ("llm_error", "harness_error")]


# --------------------------------------------------------------------------- the model client


@pytest.fixture(params=["auto", "litellm"], ids=["direct", "litellm"])
def transport(request: pytest.FixtureRequest) -> str:
    """Both ways a request can leave: the light OpenAI-compatible transport used for local servers
    ("auto" picks it here), and litellm (hosted APIs, other providers; forced through ModelSpec)."""
    return str(request.param)


def _client(srv: ScriptedServer, health: Any = None, **spec: Any) -> Any:
    return scripted_client(srv.base_url, health, **spec)


@pytest.mark.parametrize(
    ("faults", "spec", "expect"),
    [
        ({"first_n_fail": 100}, {}, "InternalServerError"),
        ({"drop_rate": 1.0}, {}, "Connection"),
        ({"timeout_rate": 1.0, "timeout_s": 5}, {"timeout_s": 0.3}, "Timeout"),
    ],
    ids=["http500", "dropped-connection", "timeout"],
)
def test_a_failing_call_makes_exactly_max_retries_plus_one_requests(
    tmp_path: Path, transport: str, faults: dict, spec: dict, expect: str
) -> None:
    """litellm's and the openai SDK's own retries (max_retries=2 by default) are off: only ours count
    (with them on, the log would show 9 requests here)."""
    from moodbench.llm import EndpointHealth, LLMCallError

    health = EndpointHealth(100)
    with start_scripted_server({"faults": faults}, tmp_path) as srv:
        client = _client(srv, health, max_retries=2, transport=transport, **spec)
        with pytest.raises(LLMCallError) as info:
            client.complete(MESSAGES)
        logged = srv.requests()
    assert len(logged) == 3, [(r["status"], r["fault"]) for r in logged]
    assert "after 3 attempt(s)" in str(info.value) and expect in str(info.value)
    assert health.last_error is not None and health.down is None


def test_retry_after_is_honoured_between_requests(tmp_path: Path, transport: str) -> None:
    """A 429 with Retry-After: 1 is followed by the retry no sooner than 1 s later (server's clock).

    Our own backoff is 1 ms here, so without the header the gap would be a few milliseconds.
    Seed 1 with a 50% rate makes request 0 a 429 and request 1 a success.
    """
    faults = {"error_429_rate": 0.5, "retry_after_s": 1}
    with start_scripted_server({"seed": 1, "faults": faults}, tmp_path) as srv:
        completion = _client(srv, max_retries=3, transport=transport).complete(MESSAGES)
        logged = srv.requests()
    assert [r["status"] for r in logged] == [429, 200], "the seeded fault sequence changed; pick another seed"
    assert completion.attempts == 2
    assert logged[1]["t"] - logged[0]["t"] >= 1.0


def test_breaker_stops_retrying_a_dead_endpoint(tmp_path: Path) -> None:
    """With 3 allowed consecutive failures, a call that may retry 10 times stops after 3 requests."""
    from moodbench.llm import EndpointDownError, EndpointHealth, LLMCallError

    health = EndpointHealth(3)
    with start_scripted_server({"faults": {"down": True}}, tmp_path) as srv:
        client = _client(srv, health, max_retries=10)
        with pytest.raises(LLMCallError):
            client.complete(MESSAGES)
        with pytest.raises(EndpointDownError) as info:  # later calls fail without a request
            client.complete(MESSAGES)
        logged = srv.requests()
    assert len(logged) == 3
    assert health.down == srv.base_url and srv.base_url in str(info.value)


def test_unusable_200_replies_are_retried_not_crashes(tmp_path: Path) -> None:
    """An empty reply is asked again (empty_retries) and then returned for the conversation to judge."""
    with start_scripted_server({"roles": {"judge": {"turns": [{"empty": True}]}}}, tmp_path) as srv:
        completion = _client(srv, empty_retries=2).complete(MESSAGES)
        logged = srv.requests()
    assert completion.is_empty and completion.attempts == 3 and len(logged) == 3


# --------------------------------------------------------------------------- whole runs


def test_transient_faults_never_cost_a_conversation(tmp_path: Path) -> None:
    """500s, 429s, timeouts, dropped connections and malformed tool calls on ~30% of requests:
    every cell still ends exactly once, none as llm_error, and every fault kind really happened."""
    faults = {
        "error_500_rate": 0.1,
        "error_429_rate": 0.08,
        "retry_after_s": 0.05,
        "timeout_rate": 0.04,
        "timeout_s": 3,
        "drop_rate": 0.08,
        "malformed_tool_call_rate": 0.2,
    }
    out = tmp_path / "run"
    with start_scripted_server(script(seed=7, faults=faults), tmp_path) as srv:
        res = moodbench(run_cmd(srv, out, "--trials", "3", "--concurrency", "4", "--timeout", "0.5", "--max-retries", "8"))
        stats = srv.stats()
    assert res.returncode == 0, res.stderr[-3000:]
    rs = rows(out)
    keys = [r["cell_key"] for r in rs]
    assert len(keys) == 12 and len(set(keys)) == 12
    assert not [r for r in rs if r["exit_reason"] in ("llm_error", "harness_error")]
    assert {"error_500", "error_429", "timeout", "drop"} <= set(stats["by_fault"]), stats
    # malformed arguments reach the conversation and are labelled, not crashed on
    reasons = {r["exit_reason"] for r in rs}
    assert reasons <= {"success", "task_failed", "invalid_tool_call"}, reasons
    summary = json.loads((out / "summary.json").read_text())
    assert sum(v["done"] for v in summary["variants"].values()) == 12


def test_failed_calls_end_as_llm_error_excluded_and_rerun_on_resume(tmp_path: Path) -> None:
    """The first conversation's first call fails twice (max 1 retry): that cell alone is stored as
    llm_error with the error text, left out of the averages, and is the only one a resume re-runs."""
    out = tmp_path / "run"
    with start_scripted_server(script(faults={"first_n_fail": 2}), tmp_path) as srv:
        first = moodbench(run_cmd(srv, out, "--concurrency", "1", "--max-retries", "1"))
        n_first = len(srv.requests())
        summary1 = json.loads((out / "summary.json").read_text())
        second = moodbench(run_cmd(srv, out, "--concurrency", "1", "--max-retries", "1"))
        resumed_requests = srv.requests()[n_first:]
    assert first.returncode == 0, first.stderr[-3000:]
    assert "llm_error" in first.stderr and "re-run" in flat(first.stderr)
    rs1 = rows(out)[:4]
    failed = [r for r in rs1 if r["exit_reason"] == "llm_error"]
    assert len(failed) == 1 and len(rs1) == 4
    assert "after 2 attempt(s)" in failed[0]["error"] and "first_n_fail" in failed[0]["error"]
    assert failed[0]["reward"] is None
    assert sum(v["excluded"] for v in summary1["variants"].values()) == 1
    assert sum(v["scored"] for v in summary1["variants"].values()) == 3

    assert second.returncode == 0, second.stderr[-3000:]
    assert "1 conversation(s) to run, 3 already stored" in flat(second.stderr)
    # the resume started exactly one conversation (one user opening turn) ...
    assert sum(1 for r in resumed_requests if r["role"] == "user" and r["turn"] == 0) == 1
    rs = rows(out)
    retried = [r for r in rs if r["cell_key"] == failed[0]["cell_key"]]
    assert [r["exit_reason"] != "llm_error" for r in retried] == [False, True]
    assert [r["attempt"] for r in retried] == [1, 2]
    assert sorted(finished(rs)) == sorted({r["cell_key"] for r in rs})  # ... and every cell is finished once
    summary2 = json.loads((out / "summary.json").read_text())
    assert sum(v["done"] for v in summary2["variants"].values()) == 4


def test_dead_endpoint_stops_the_run_with_exit_4_and_resume_completes(tmp_path: Path) -> None:
    """The server dies mid-run: moodbench stops starting conversations, stores what finished, exits 4
    naming the endpoint; once a server answers on the same address again, a resume completes."""
    out = tmp_path / "run"
    slow = script(latency_ms=60)
    srv = start_scripted_server(slow, tmp_path)
    port, base_url = srv.port, srv.base_url
    cmd = run_cmd(base_url, out, "--trials", "4", "--concurrency", "2", "--max-retries", "1", "--max-consecutive-failures", "4")
    # through litellm this time, so a refused connection is seen the way hosted-API users see it
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=run_env(MOODBENCH_LITELLM="1"),
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while len(srv.requests()) < 16 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        srv.process.kill()  # the endpoint is gone: connections are refused from now on
        srv.process.wait()
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        srv.stop()
    assert proc.returncode == 4, stderr[-3000:]
    assert base_url in flat(stderr) and "failed 4 requests in a row" in flat(stderr) and "resume" in stderr
    rs = rows(out)
    assert len(set(finished(rs))) >= 2  # conversations finished before the failure are stored
    # it stopped starting conversations: without the breaker all 16 cells would have been tried
    assert len({r["cell_key"] for r in rs}) < 16
    assert {r["exit_reason"] for r in rs} <= {"success", "task_failed", "llm_error"}
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert any(e["event"] == "endpoint_down" and e["endpoint"] == base_url for e in events)

    with start_scripted_server(script(), tmp_path, extra_args=["--port", str(port)]) as again:
        assert again.base_url == base_url
        res = moodbench(cmd)
    assert res.returncode == 0, res.stderr[-3000:]
    rs = rows(out)
    assert len(finished(rs)) == 16 and len(set(finished(rs))) == 16


# --------------------------------------------------------------------------- malformed model output

OPENING = "Please create a task called 'Important Meeting' for user_1."
LONG = "Sure! " + "This is a very long reply. " * 8000  # ~200 kB
MALFORMED_AGENT = {  # the agent's first real turn, selected by a marker the simulated customer says
    "badjson": {"tool_calls": [{"name": "create_task", "arguments": "{bad json"}]},
    "unknowntool": {"tool_calls": [{"name": "delete_everything", "arguments": {"user_id": "user_1"}}]},
    "wrongtypes": {"tool_calls": [{"name": "create_task", "arguments": {"user_id": ["user_1"], "title": {"x": 1}}}]},
    "empty": {"empty": True},
    "long": {"content": LONG, "finish_reason": "length"},
    "asuser": {"content": "Thanks! ###STOP###"},  # the agent speaks as the customer
}
MALFORMED_USER = {  # the simulated customer misbehaves instead
    "userempty": {"empty": True},
    "usertool": {"tool_calls": [{"name": "create_task", "arguments": {"user_id": "user_1", "title": "x"}}]},  # has no tools
}
EXPECTED = {
    "badjson": "invalid_tool_call",
    "unknowntool": "invalid_tool_call",
    "wrongtypes": "task_failed",
    "empty": "agent_error",
    "long": "agent_no_tool_calls",
    "asuser": "agent_no_tool_calls",
    "userempty": "user_error",
    "usertool": "user_error",
    "control": "success",
}


def test_malformed_model_output_is_labelled_never_a_crash(tmp_path: Path) -> None:
    """Each variant (a marker in the customer's prompt) makes one participant misbehave once; every
    conversation ends with the documented exit reason, tool errors go back to the agent as tau2
    would send them, and the raw output is kept."""
    import yaml

    kinds = [*MALFORMED_AGENT, *MALFORMED_USER]
    variants = tmp_path / "variants.yaml"
    variants.write_text(
        yaml.safe_dump(
            {"variants": [{"name": f"m-{k}", "description": k, "levels": {"moderate": f"MARKER-{k}-END"}} for k in kinds]}
        )
    )
    user_first = {
        "match": [
            {"if_contains": f"MARKER-{k}-END", "in": "system", "then": {"content": f"{OPENING} [{k}]"}} for k in MALFORMED_AGENT
        ]
        + [{"if_contains": f"MARKER-{k}-END", "in": "system", "then": v} for k, v in MALFORMED_USER.items()],
        "else": {"content": OPENING},
    }
    agent_first = {
        "match": [{"if_contains": f"[{k}]", "in": "last", "then": v} for k, v in MALFORMED_AGENT.items()],
        "else": AGENT["turns"][1],
    }
    roles = {
        "agent": {**AGENT, "turns": [AGENT["turns"][0], agent_first, *AGENT["turns"][2:]]},
        "user": {**USER, "turns": [user_first, *USER["turns"][1:]]},
    }
    out = tmp_path / "run"
    with start_scripted_server({"roles": roles}, tmp_path) as srv:
        res = moodbench(
            run_cmd(
                srv,
                out,
                "--variants-file",
                str(variants),
                "--concurrency",
                "3",
                tasks="create_task_1",
                variants=",".join(["control", *(f"m-{k}" for k in kinds)]),
            )
        )
    assert res.returncode == 0, res.stderr[-3000:]
    con = sqlite3.connect(out / "results.sqlite")
    stored = {
        v.removeprefix("m-"): (reason, error, json.loads(sim), json.loads(stats))
        for v, reason, error, sim, stats in con.execute("SELECT variant, exit_reason, error, simulation, stats FROM simulations")
    }
    con.close()
    assert {k: v[0] for k, v in stored.items()} == EXPECTED

    def tool_results(kind: str) -> list[str]:
        return [m["content"] for m in stored[kind][2]["messages"] if m["role"] == "tool"]

    def raw(kind: str, key: str) -> list[Any]:
        return [m["raw_data"][key] for m in stored[kind][2]["messages"] if (m.get("raw_data") or {}).get(key)]

    assert raw("badjson", "invalid_json_arguments") == [["{bad json"]]
    assert stored["badjson"][3]["agent"]["invalid_json_calls"] == 1 and tool_results("badjson")[0].startswith("Error")
    assert "not found" in tool_results("unknowntool")[0] and stored["unknowntool"][3]["agent"]["unknown_tool_calls"] == 1
    assert tool_results("wrongtypes")[0].startswith("Error")
    assert "empty reply" in stored["empty"][1] and "empty reply" in stored["userempty"][1]
    assert stored["long"][3]["agent"]["truncated_replies"] == 1
    assert any(m.get("content") == LONG for m in stored["long"][2]["messages"])  # kept whole
