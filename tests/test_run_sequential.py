"""``moodbench run --sequential`` through the real CLI against the scripted server, real SQLite, real events.

The domain is a plugin written here: tau2's mock domain with 40 tasks, alternating copies of ``create_task_1`` (the
scripted agent's gold call: success) and ``update_task_1`` (the same call is wrong: failure), so a look at 20 tasks
x 2 trials reaches the minimum design for a claim. The emotional customer (its prompt has ``<emotional_state>``)
gets its own script:

* **claim design**: it hangs up at once, so every variant conversation fails; the control succeeds on the create
  copies. The effect is -0.5 with spread across tasks: look 1 of 2 crosses the boundary and the run stops there,
  half of the matrix never runs;
* **null design**: it asks for the update, which the agent then makes: the variant wins the update copies and loses
  the create copies (+1 / -1 alternating, mean 0). With ``--smallest-effect 0.6`` the look-1 interval rules out
  every effect of that size: stopped for futility at look 1.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from moodbench.testing.scripts import MOCK_EXAMPLE_AGENT, MOCK_EXAMPLE_USER
from scripted import SRC_DIR, cli_env, start_scripted_server

PLUGIN = '''
"""40 mock tasks for the sequential tests: alternating copies of create_task_1 and update_task_1."""
from tau2.domains.mock.environment import get_environment, get_tasks
from tau2.registry import registry


def _tasks(task_split_name=None):
    base = {t.id: t for t in get_tasks()}
    out = []
    for i in range(40):
        kind = "create_task_1" if i % 2 == 0 else "update_task_1"
        task = base[kind].model_copy(deep=True)
        task.id = f"{kind[0]}{i:02d}"
        out.append(task)
    return out


if "seqmock" not in registry.get_domains():
    registry.register_domain(get_environment, "seqmock")
    registry.register_tasks(_tasks, "seqmock")
'''

UPDATE_CALL = {"tool_calls": [{"name": "update_task_status", "arguments": {"task_id": "task_1", "status": "completed"}}]}


def _script(emotional_turns: list[dict[str, Any]]) -> dict[str, Any]:
    agent = json.loads(json.dumps(MOCK_EXAMPLE_AGENT))
    create = agent["turns"][1]
    agent["turns"][1] = {"match": [{"if_contains": "UPDATE", "in": "last", "then": UPDATE_CALL}], "else": create}
    return {
        "roles": {
            "emotional": {"detect": "emotional_state", "turns": emotional_turns, "after": {"content": "###STOP###"}},
            "agent": agent,
            "user": json.loads(json.dumps(MOCK_EXAMPLE_USER)),
        }
    }


CLAIM = _script([{"content": "###STOP###"}])
NULL = _script([{"content": "Please UPDATE task_1 to completed."}, {"content": "Thanks! ###STOP###"}])


def _env(tmp_path: Path) -> dict[str, str]:
    plugins = tmp_path / "plugins"
    (plugins / "seqmock").mkdir(parents=True, exist_ok=True)
    (plugins / "seqmock" / "__init__.py").write_text(PLUGIN, encoding="utf-8")
    return cli_env({"PYTHONPATH": os.pathsep.join(str(p) for p in (SRC_DIR, plugins))})


def moodbench(tmp_path: Path, *args: Any, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "moodbench.cli", *[str(a) for a in args]],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(tmp_path),
        cwd=tempfile.gettempdir(),
    )


def run_args(url: str, out: Path, *extra: Any, concurrency: int = 16) -> list[Any]:
    return [
        "run",
        "--plugin",
        "seqmock",
        "--domain",
        "seqmock",
        "--variants",
        "control,frustration",
        "--trials",
        "2",
        "--agent-model",
        "openai/scripted",
        "--agent-base-url",
        url,
        "--skip-preflight",
        "--sequential",
        "--looks",
        "2",
        "--concurrency",
        str(concurrency),
        "--out",
        out,
        *extra,
    ]


def explain(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-5000:]}"


def stored(out: Path) -> list[tuple[str, str, int, str]]:
    con = sqlite3.connect(out / "results.sqlite")
    try:
        return [tuple(r) for r in con.execute("SELECT task_id, variant, trial, exit_reason FROM simulations")]
    finally:
        con.close()


def events(out: Path, kind: str) -> list[dict[str, Any]]:
    lines = (out / "events.jsonl").read_text(encoding="utf-8").splitlines()
    return [e for e in map(json.loads, lines) if e.get("event", e.get("type")) == kind]


def test_a_variant_that_always_fails_is_claimed_at_look_1_and_the_rest_never_runs(tmp_path: Path) -> None:
    out = tmp_path / "claim"
    with start_scripted_server(CLAIM, tmp_path) as srv:
        first = moodbench(tmp_path, *run_args(srv.base_url, out))
        assert first.returncode == 0, explain(first)
        rows = stored(out)
        assert len(rows) == 20 * 2 * 2  # stage 1 only: 20 tasks x 2 trials x 2 variants of the 160 planned
        assert {r[0] for r in rows} == {f"{'c' if i % 2 == 0 else 'u'}{i:02d}" for i in range(20)}
        assert all(r[3] != "success" for r in rows if r[1] == "frustration")
        looks = events(out, "sequential_look")
        assert [e["look"] for e in looks] == [1]
        (d,) = looks[0]["decisions"]
        assert d["variant"] == "frustration" and d["status"] == "claimed" and d["claim"] == "lower"
        # the repeated p: the overall level at which the OBF boundary would just have been crossed at look 1
        assert d["z"] < -2.963 and d["p_repeated"] < 0.05 and d["ci_high"] < 0
        stop = events(out, "sequential_stopped")
        assert stop and stop[0]["look"] == 1 and stop[0]["early"] is True
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
        assert manifest["sequential"]["stopped_at_look"] == 1 and manifest["sequential"]["plan"]["stages"] == [20, 20]

        # resume: the same command replays the looks from the stored records and runs nothing
        again = moodbench(tmp_path, *run_args(srv.base_url, out))
        assert again.returncode == 0, explain(again)
        assert len(stored(out)) == 80
        looks = events(out, "sequential_look")
        assert len(looks) == 2 and looks[1]["ran"] == 0 and looks[1]["decisions"] == looks[0]["decisions"]

        report = moodbench(tmp_path, "report", out, "--json")
        assert report.returncode == 0, explain(report)
        seq = json.loads(report.stdout)["runs"][0]["sequential"]
        assert seq["stopped_at_look"] == 1 and seq["looks_planned"] == 2
        assert "stopped at look 1 of 2" in seq["summary"]
        effect = next(
            e
            for e in json.loads(report.stdout)["effects"]
            if e["variant"] == "frustration" and e["domain"] == "all" and e["subset"] == "all"
        )
        assert effect["claim"] == "lower" and effect["p"] == d["p_repeated"] and effect["ci"] == [d["ci_low"], d["ci_high"]]
        assert effect["sequential"]["look"] == 1
        assert "sequential: stopped at look 1 of 2 (frustration: claimed lower)" in " ".join(again.stdout.split())
        assert json.loads((out / "summary.json").read_text(encoding="utf-8"))["sequential"]["stopped_at_look"] == 1

    # merge: one sequential run is copied with its looks; with another run it is refused (its looks were its own)
    copy = tmp_path / "copy"
    merged = moodbench(tmp_path, "merge", copy, out)
    assert merged.returncode == 0, explain(merged)
    again_report = moodbench(tmp_path, "report", copy, "--json")
    assert json.loads(again_report.stdout)["runs"][0]["sequential"]["summary"] == seq["summary"]
    refused = moodbench(tmp_path, "merge", tmp_path / "both", out, copy)
    assert refused.returncode == 2 and "cannot be merged" in " ".join(refused.stderr.split()), explain(refused)


def _store_an_older_plan(out: Path) -> None:
    """Rewrite the stored plan as a version before the drop rule stored it (no "futility": the two-sided rule), at
    a level whose interval is too wide to lie inside +-0.6."""
    con = sqlite3.connect(out / "results.sqlite")
    try:
        (raw,) = con.execute("SELECT value FROM meta WHERE key='sequential'").fetchone()
        state = json.loads(raw)
        assert state["plan"]["futility"] == "drop"
        del state["plan"]["futility"]
        state["plan"]["futility_confidence"] = 0.99999
        con.execute("UPDATE meta SET value=? WHERE key='sequential'", (json.dumps(state),))
        con.commit()
    finally:
        con.close()


def test_a_null_design_stops_for_futility(tmp_path: Path) -> None:
    out = tmp_path / "null"
    with start_scripted_server(NULL, tmp_path) as srv:
        done = moodbench(tmp_path, *run_args(srv.base_url, out, "--smallest-effect", "0.6"))
        assert done.returncode == 0, explain(done)
        rows = stored(out)
        assert len(rows) == 80
        outcome = {(r[0][0], r[1]) for r in rows if r[3] == "success"}
        assert outcome == {("c", "control"), ("u", "frustration")}  # the script did what the docstring says
        (look,) = events(out, "sequential_look")
        (d,) = look["decisions"]
        assert d["status"] == "futile" and d["claim"] is None
        lo, hi = d["futility_ci"]
        assert -0.6 < lo < 0 < hi < 0.6

        # a run whose stored plan is an older one resumes with that plan, not today's: look 1 continues, stage 2 runs
        _store_an_older_plan(out)
        again = moodbench(tmp_path, *run_args(srv.base_url, out, "--smallest-effect", "0.6"))
        assert again.returncode == 0, explain(again)
    assert len(stored(out)) == 160
    looks = events(out, "sequential_look")
    assert [e["look"] for e in looks] == [1, 1, 2] and looks[1]["decisions"][0]["status"] == "continue"
    assert looks[2]["decisions"][0]["status"] == "final"
    report = moodbench(tmp_path, "report", out, "--json")
    seq = json.loads(report.stdout)["runs"][0]["sequential"]
    assert seq["futility"] == "both" and seq["stopped_at_look"] == 2 and "lies inside +-0.6" in seq["futility_text"]


def test_a_damaged_stored_plan_is_exit_2_for_the_report_and_the_resume(tmp_path: Path) -> None:
    """The store's sequential plan is read from a file: an unknown futility rule or a non-number where a level
    belongs is exit 2 naming the damaged entry, for ``report`` and for a resumed ``run``, never a traceback."""
    out = tmp_path / "null"
    with start_scripted_server(NULL, tmp_path) as srv:
        done = moodbench(tmp_path, *run_args(srv.base_url, out, "--smallest-effect", "0.6"))
        assert done.returncode == 0, explain(done)
        for key, value in (("futility", "rise"), ("futility_confidence", "abc")):
            con = sqlite3.connect(out / "results.sqlite")
            try:
                (raw,) = con.execute("SELECT value FROM meta WHERE key='sequential'").fetchone()
                state = json.loads(raw)
                good = dict(state["plan"])
                state["plan"][key] = value
                con.execute("UPDATE meta SET value=? WHERE key='sequential'", (json.dumps(state),))
                con.commit()
                for res in (
                    moodbench(tmp_path, "report", out, "--json"),
                    moodbench(tmp_path, *run_args(srv.base_url, out, "--smallest-effect", "0.6")),
                ):
                    said = " ".join(res.stderr.split())
                    assert res.returncode == 2 and "sequential plan" in said and "damaged" in said, explain(res)
                    assert "Traceback" not in res.stderr, explain(res)
                state["plan"] = good
                con.execute("UPDATE meta SET value=? WHERE key='sequential'", (json.dumps(state),))
                con.commit()
            finally:
                con.close()


def test_sequential_refuses_stray_options(tmp_path: Path) -> None:
    for extra, said in (
        (["--looks-from", "elsewhere"], "add --sequential --shard"),
        (["--smallest-effect", "0"], "smallest_effect"),
    ):
        r = moodbench(tmp_path, *run_args("http://127.0.0.1:9/v1", tmp_path / "x", *extra))
        assert r.returncode == 2 and said in " ".join(r.stderr.split()) and "Traceback" not in r.stderr, explain(r)
    args = [a for a in run_args("http://127.0.0.1:9/v1", tmp_path / "y") if a != "--sequential"]
    r = moodbench(tmp_path, *args)
    assert r.returncode == 2 and "add --sequential" in " ".join(r.stderr.split()), explain(r)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    dry = moodbench(tmp_path, *run_args("http://127.0.0.1:9/v1", tmp_path / "z", "--dry-run"))
    assert dry.returncode == 0, explain(dry)
    assert "sequential: 2 looks, stages of 20, 20 task(s)" in " ".join(dry.stdout.split()) and not (tmp_path / "z").exists()


def test_an_interrupted_stage_resumes_there_and_takes_each_look_once(tmp_path: Path) -> None:
    """Ctrl-C in stage 1: no look is taken; the same command resumes stage 1, looks, runs stage 2 (nothing decided
    at look 1 with a smallest effect of 0.05) and ends at the last look with no claim."""
    out = tmp_path / "resume"
    with start_scripted_server({**NULL, "latency_ms": 40}, tmp_path) as srv:
        args = run_args(srv.base_url, out, "--smallest-effect", "0.05", concurrency=4)
        proc = subprocess.Popen(
            [sys.executable, "-m", "moodbench.cli", *[str(a) for a in args]],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(tmp_path),
            cwd=tempfile.gettempdir(),
        )
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "results.sqlite").is_file() and len(stored(out)) >= 8:
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 130, err[-3000:]
        partial = len(stored(out))
        assert 8 <= partial < 80 and not events(out, "sequential_look")

        done = moodbench(tmp_path, *args)
        assert done.returncode == 0, explain(done)
    rows = stored(out)
    assert len(rows) == 160 and len({(r[0], r[1], r[2]) for r in rows}) == 160
    looks = events(out, "sequential_look")
    assert [e["look"] for e in looks] == [1, 2]
    assert looks[0]["decisions"][0]["status"] == "continue" and looks[0]["ran"] == 80 - partial
    assert looks[1]["decisions"][0]["status"] == "final" and looks[1]["decisions"][0]["claim"] is None


def test_shards_run_a_stage_each_and_look_on_the_merge(tmp_path: Path) -> None:
    """Two shards run their shares of stage 1 and stop; the merge holds stage 1 and its look; each shard run again
    with --looks-from the merge runs its share of stage 2 (nothing was decided at look 1); the second merge's report
    replays both looks: the last look, no claim. A shard asked again after that has nothing left to run."""
    with start_scripted_server(NULL, tmp_path) as srv:

        def shard(i: int, *extra: Any) -> subprocess.CompletedProcess[str]:
            r = moodbench(
                tmp_path, *run_args(srv.base_url, tmp_path / f"s{i}", "--smallest-effect", "0.05", "--shard", f"{i}/2", *extra)
            )
            assert r.returncode == 0, explain(r)
            return r

        first = [shard(i) for i in (1, 2)]
        assert "its share of stage 1 of 2" in " ".join((first[0].stdout + first[0].stderr).split())
        assert sum(len(stored(tmp_path / f"s{i}")) for i in (1, 2)) == 80
        assert moodbench(tmp_path, "merge", tmp_path / "m1", tmp_path / "s1", tmp_path / "s2").returncode == 0
        r1 = json.loads(moodbench(tmp_path, "report", tmp_path / "m1", "--json").stdout)["runs"][0]["sequential"]
        assert r1["looks_run"] == 1 and r1["stopped_at_look"] is None and r1["final"]["frustration"]["status"] == "continue"

        for i in (1, 2):
            shard(i, "--looks-from", tmp_path / "m1")
        assert sum(len(stored(tmp_path / f"s{i}")) for i in (1, 2)) == 160
        assert moodbench(tmp_path, "merge", tmp_path / "m2", tmp_path / "s1", tmp_path / "s2").returncode == 0
        r2 = json.loads(moodbench(tmp_path, "report", tmp_path / "m2", "--json").stdout)["runs"][0]["sequential"]
        assert r2["stopped_at_look"] == 2 and r2["final"]["frustration"]["status"] == "final"
        assert "stopped at look 2 of 2" in r2["summary"]

        last = shard(1, "--looks-from", tmp_path / "m2")
        assert (
            "nothing left for this shard" in " ".join((last.stdout + last.stderr).split()) and len(stored(tmp_path / "s1")) == 80
        )
    refused = moodbench(tmp_path, "merge", tmp_path / "mixed", tmp_path / "s1", tmp_path / "m2")
    assert refused.returncode == 2, explain(refused)
