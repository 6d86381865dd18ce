"""Hardening: what a hostile-but-realistic user did to moodbench, each reproduced against real processes.

Dripping servers, credentials in URLs, two runs on one directory, SIGTERM from a scheduler, killed
worker pools, corrupt stores, foreign directories and malformed files. Every test runs the real CLI
as a subprocess against the scripted OpenAI-compatible server, with real files.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from moodbench.testing.scripts import mock_example_script
from scripted import CLI, ScriptedServer, mock_run_args, start_scripted_server

MOODBENCH = CLI
TASKS = "create_task_1,update_task_1"


def cli(
    *args: Any, timeout: float = 180, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MOODBENCH, *[str(a) for a in args]],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "MOODBENCH_BACKOFF_BASE_S": "0.01", **(env or {})},
        cwd=cwd,
    )


def start(*args: Any, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*MOODBENCH, *[str(a) for a in args]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "MOODBENCH_BACKOFF_BASE_S": "0.01", **(env or {})},
    )


def run_args(url: str, out: Path, *extra: Any, tasks: str = TASKS, variants: str = "control,frustration") -> list[Any]:
    return mock_run_args(url, out, *extra, tasks=tasks, variants=variants)


def wait_for(predicate: Any, limit: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def events(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]


def digest_tree(root: Path) -> dict[str, str]:
    """Every file's hash, except the run lock (moodbench's own; a refused run also takes it briefly)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".moodbench.lock"
    }


def explain(res: subprocess.CompletedProcess[str]) -> str:
    return f"exit {res.returncode}\nstdout:\n{res.stdout[-3000:]}\nstderr:\n{res.stderr[-3000:]}"


# --------------------------------------------------------------------------- 1. a whole-request deadline


def test_a_dripping_server_ends_as_llm_error_within_the_deadline_and_trips_the_breaker(tmp_path: Path) -> None:
    script = mock_example_script(faults={"drip_rate": 1.0, "drip_bytes_per_s": 1})
    with start_scripted_server(script, tmp_path) as srv:
        t0 = time.monotonic()
        res = cli(
            *run_args(
                srv.base_url,
                tmp_path / "run",
                "--timeout",
                "2",
                "--max-retries",
                "0",
                "--max-consecutive-failures",
                "2",
                "--concurrency",
                "1",
            ),
            timeout=120,
        )
        took = time.monotonic() - t0
    assert res.returncode == 4, explain(res)  # the breaker counted the deadline failures
    assert took < 60, took  # two 2-second deadlines and start-up, never a hang
    con = sqlite3.connect(tmp_path / "run" / "results.sqlite")
    errors = [e for (e,) in con.execute("SELECT error FROM simulations WHERE exit_reason='llm_error'")]
    con.close()
    assert errors and all("deadline" in e.lower() or "timed out" in e.lower() for e in errors), errors


# --------------------------------------------------------------------------- 2. no secret in any file or output


def test_credentials_in_a_base_url_never_reach_disk_or_output(tmp_path: Path) -> None:
    key = "sk-urlsecret-" + os.urandom(6).hex()
    with start_scripted_server(mock_example_script(), tmp_path) as srv:
        url = srv.base_url.replace("http://", f"http://moodbench:{key}@")
        ok = cli(*run_args(url, tmp_path / "up", "--variants", "control"), timeout=180)
        down = cli(
            *run_args(
                f"http://moodbench:{key}@127.0.0.1:9/v1",
                tmp_path / "down",
                "--max-retries",
                "0",
                "--max-consecutive-failures",
                "1",
                "--timeout",
                "2",
            ),
            timeout=180,
        )
        checked = [a for a in run_args(url, tmp_path / "preflight", "--variants", "control") if a != "--skip-preflight"]
        preflight = cli(*checked, timeout=180)  # preflight records endpoints and probe replies
    assert ok.returncode == 0, explain(ok)
    assert down.returncode == 4, explain(down)
    assert preflight.returncode in (0, 3), explain(preflight)
    for res, out in ((ok, tmp_path / "up"), (down, tmp_path / "down"), (preflight, tmp_path / "preflight")):
        assert key not in res.stdout + res.stderr
        leaked = [str(p) for p in out.rglob("*") if p.is_file() and key.encode() in p.read_bytes()]
        assert leaked == []
    manifest = json.loads((tmp_path / "up" / "manifest.json").read_text())
    assert manifest["config"]["agent_base_url"][0].startswith("http://***@")


@pytest.mark.parametrize("header", ["Ocp-Apim-Subscription-Key", "X-Auth", "Cookie", "X-Api-Key", "Proxy-Authorization"])
def test_secret_looking_headers_in_request_args_are_refused(tmp_path: Path, header: str) -> None:
    value = "v-" + os.urandom(6).hex()
    res = cli(
        "run",
        "--agent-model",
        "openai/x",
        "--agent-base-url",
        "http://127.0.0.1:9/v1",
        "--out",
        tmp_path / "run",
        "--agent-args",
        json.dumps({"extra_headers": {header: value}}),
    )
    assert res.returncode == 2 and "looks like a secret" in res.stderr and header in res.stderr
    assert value not in res.stdout + res.stderr and not (tmp_path / "run").exists()


def test_a_key_in_extra_body_is_refused(tmp_path: Path) -> None:
    res = cli(
        "run",
        "--agent-model",
        "openai/x",
        "--agent-base-url",
        "http://127.0.0.1:9/v1",
        "--out",
        tmp_path / "run",
        "--agent-args",
        json.dumps({"extra_body": {"key": "abc123secretvalue"}}),
    )
    assert res.returncode == 2 and "'key' looks like a secret" in res.stderr


def test_a_secret_that_also_sits_in_a_variants_file_is_scrubbed_from_prompts_and_pages(tmp_path: Path) -> None:
    key = "sk-variantsecret-" + os.urandom(6).hex()
    variants = tmp_path / "v.yaml"
    variants.write_text(json.dumps({"name": "leaky", "description": "d", "levels": {"moderate": f"Say the code {key} often."}}))
    with start_scripted_server(mock_example_script(), tmp_path) as srv:
        res = cli(
            *run_args(
                srv.base_url,
                tmp_path / "run",
                "--variants-file",
                variants,
                "--api-key-env",
                "MB_TEST_KEY",
                variants="control,leaky",
                tasks="create_task_1",
            ),
            env={"MB_TEST_KEY": key},
        )
        assert res.returncode == 0, explain(res)
        rep = cli("report", tmp_path / "run", "--out", tmp_path / "report")
    assert rep.returncode == 0, explain(rep)
    for root in (tmp_path / "run", tmp_path / "report"):
        assert [str(p) for p in root.rglob("*") if p.is_file() and key.encode() in p.read_bytes()] == []


# --------------------------------------------------------------------------- 3. one writer per run directory


def test_a_second_run_on_the_same_directory_is_refused_and_a_killed_run_leaves_no_stuck_lock(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with start_scripted_server(mock_example_script(latency_ms=1500), tmp_path) as srv:
        first = start(*run_args(srv.base_url, out, "--concurrency", "1", "--trials", "3"))
        try:
            wait_for(lambda: len(srv.requests()) >= 1, what="the first run's first request")
            second = cli(*run_args(srv.base_url, out))
            assert second.returncode == 2, explain(second)
            assert "being written by another moodbench run" in second.stderr and f"pid {first.pid}" in second.stderr
            n = len(srv.requests())
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=30)
        finally:
            if first.poll() is None:
                first.kill()
        resumed = cli(*run_args(srv.base_url, out, "--trials", "3", "--concurrency", "4"))  # the dead run's lock went with it
    assert resumed.returncode == 0, explain(resumed)
    assert n >= 1


def test_report_and_summary_read_while_a_run_writes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with start_scripted_server(mock_example_script(latency_ms=300), tmp_path) as srv:
        first = cli(*run_args(srv.base_url, out, tasks="create_task_1", variants="control"))
        assert first.returncode == 0, explain(first)
        writer = start(
            *run_args(srv.base_url, out, "--trials", "3", "--concurrency", "1", tasks="create_task_1", variants="control")
        )
        try:
            wait_for(lambda: len(srv.requests()) >= 4, what="the writer's requests")
            summary = cli("summary", out, "--json")
            merged = cli("merge", tmp_path / "merged", out)
        finally:
            writer.wait(timeout=180)
    assert summary.returncode == 0, explain(summary)
    assert json.loads(summary.stdout)["variants"]["control"]["done"] >= 1
    assert merged.returncode == 0, explain(merged)


# --------------------------------------------------------------------------- 4. SIGTERM is a graceful stop


def test_sigterm_lets_running_conversations_finish_and_writes_everything(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with start_scripted_server(mock_example_script(latency_ms=300), tmp_path) as srv:
        proc = start(*run_args(srv.base_url, out, "--trials", "4", "--concurrency", "2"))
        wait_for(lambda: len(srv.requests()) >= 3, what="requests")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert (out / "summary.json").exists()
    names = [e["event"] for e in events(out)]
    assert "interrupt" in names and names[-1] == "run_finished"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["exit_code"] == 143 and manifest["finished_at"]
    con = sqlite3.connect(out / "results.sqlite")
    stored = con.execute("SELECT COUNT(*) FROM simulations").fetchone()[0]
    con.close()
    assert 1 <= stored < 16  # the running ones were finished and stored, nothing new was started


def test_a_second_sigterm_or_the_grace_period_abandons_and_still_writes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with start_scripted_server(mock_example_script(latency_ms=3000), tmp_path) as srv:
        proc = start(*run_args(srv.base_url, out, "--trials", "2", "--concurrency", "2", "--stop-grace", "1"))
        wait_for(lambda: len(srv.requests()) >= 1, what="requests")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        took = time.monotonic() - t0
    assert proc.returncode == 143, err[-2000:]
    assert took < 20, took  # a 1 s grace, not the conversations' length
    names = [e["event"] for e in events(out)]
    assert "abandoned" in names and names[-1] == "run_finished"
    resumed = cli(
        *run_args(
            "http://127.0.0.1:9/v1",
            out,
            "--trials",
            "2",
            "--max-retries",
            "0",
            "--max-consecutive-failures",
            "1",
            "--force-config",
        )
    )  # another base URL: the same experiment, forced
    assert resumed.returncode == 4  # the abandoned cells are still to run (and the endpoint is gone)


# --------------------------------------------------------------------------- 5. workers never outlive the main process


def _workers_of(pid: int) -> list[int]:
    """Processes whose command line names multiprocessing's forkserver or our worker, tagged with ``pid`` in their
    environment (not "started after pid" by number: pids wrap around at pid_max, and a worker forked after the wrap
    has a smaller pid than the test)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == pid:
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if b"multiprocessing" in cmd and f"MB_ORPHAN_TAG={pid}".encode() in env:
            found.append(int(entry.name))
    return found


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_process_workers_die_with_the_main_process(tmp_path: Path, sig: signal.Signals) -> None:
    with start_scripted_server(mock_example_script(latency_ms=500), tmp_path) as srv:
        tag = str(os.getpid())
        proc = start(
            *run_args(
                srv.base_url,
                tmp_path / "run",
                "--trials",
                "4",
                "--concurrency",
                "4",
                "--executor",
                "process",
                "--stop-grace",
                "1",
                "--workers",
                "2",
            ),
            env={"MB_ORPHAN_TAG": tag},
        )
        wait_for(lambda: len(srv.requests()) >= 2, limit=120, what="worker requests")
        assert _workers_of(int(tag)), "no worker processes found"
        proc.send_signal(sig)
        proc.wait(timeout=60)
        wait_for(lambda: not _workers_of(int(tag)), limit=20, what="the workers to exit")


def _ppid(pid: int) -> int | None:
    try:
        return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


@pytest.mark.parametrize("which", ["forked", "leader"])
def test_a_killed_worker_fails_its_conversations_and_the_run_ends(tmp_path: Path, which: str) -> None:
    """The pool is a leader (the forkserver's child) and the workers it forked. A worker of either kind killed
    mid-run (out of memory, say): the conversations it held end as harness_error naming it, the others finish
    theirs, the run ends (no hang), and a second run re-runs only what failed."""
    out = tmp_path / "run"
    with start_scripted_server(mock_example_script(latency_ms=400), tmp_path) as srv:
        tag = str(os.getpid())
        args = run_args(srv.base_url, out, "--trials", "6", "--concurrency", "8", "--executor", "process", "--workers", "4")
        proc = start(*args, env={"MB_ORPHAN_TAG": tag})
        wait_for(lambda: len(srv.requests()) >= 8, limit=120, what="worker requests")
        found = set(_workers_of(int(tag)))
        forked = [p for p in found if _ppid(p) in found and _ppid(_ppid(p) or 0) in found]
        leaders = {_ppid(p) for p in forked}
        assert len(forked) == 3 and len(leaders) == 1, (found, forked)
        victim = forked[0] if which == "forked" else leaders.pop()
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode in (0, 1), stderr[-3000:]
        con = sqlite3.connect(out / "results.sqlite")
        try:
            rows = con.execute("SELECT exit_reason, error FROM simulations").fetchall()
        finally:
            con.close()
        lost = [e for r, e in rows if r == "harness_error"]
        assert lost and all(f"worker process {victim} died" in (e or "") for e in lost), rows
        assert len(rows) - len(lost) > 0
        again = cli(*args)
        assert again.returncode == 0, explain(again)
        assert f"{len(lost)} conversation(s) to run" in again.stdout + again.stderr
        wait_for(lambda: not _workers_of(int(tag)), limit=20, what="the workers to exit")


# --------------------------------------------------------------------------- 6. corrupt or foreign stores


def _good_run(srv: ScriptedServer, out: Path) -> None:
    res = cli(*run_args(srv.base_url, out, tasks="create_task_1", variants="control"))
    assert res.returncode == 0, explain(res)


@pytest.mark.parametrize("damage", ["random-bytes", "truncated", "zero-bytes", "foreign-sqlite"])
def test_a_damaged_store_is_exit_2_everywhere_and_left_as_it_was(tmp_path: Path, damage: str) -> None:
    out = tmp_path / "run"
    with start_scripted_server(mock_example_script(), tmp_path) as srv:
        _good_run(srv, out)
        db = out / "results.sqlite"
        for extra in ("results.sqlite-wal", "results.sqlite-shm"):
            (out / extra).unlink(missing_ok=True)
        data = db.read_bytes()
        if damage == "random-bytes":
            db.write_bytes(os.urandom(len(data)))
        elif damage == "truncated":
            db.write_bytes(data[: len(data) // 3])
        elif damage == "zero-bytes":
            db.write_bytes(b"")
        else:
            db.unlink()
            con = sqlite3.connect(db)
            con.execute("CREATE TABLE notes (id INTEGER, text TEXT)")
            con.execute("INSERT INTO notes VALUES (1, 'mine')")
            con.commit()
            con.close()
        before = digest_tree(out)
        for args in (
            run_args(srv.base_url, out, tasks="create_task_1", variants="control"),
            ["summary", out],
            ["report", out, "--out", tmp_path / "rep"],
            ["export", out, "--out", tmp_path / "x.json"],
            ["merge", tmp_path / "merged", out],
            ["view", out, "--no-open", "--port", "0"],
        ):
            res = cli(*args, timeout=60)
            said = res.stdout + res.stderr
            assert res.returncode == 2, f"{args[0]}: {explain(res)}"
            assert "Traceback" not in said and ("results.sqlite" in said or "run directory" in said), said
        assert digest_tree(out) == before  # nothing of the user's was modified


# --------------------------------------------------------------------------- 8./9. malformed input, foreign directories


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("variants: 5\n", "must be a list"),
        ("variants:\n", "must be a list"),
        (b"name: x\xff\xfe\n", "not UTF-8"),
        ("- just a string\n", "must be a mapping"),
    ],
    ids=["number", "empty", "not-utf8", "not-a-mapping"],
)
def test_malformed_variants_files_are_exit_2(tmp_path: Path, content: str | bytes, expected: str) -> None:
    path = tmp_path / "v.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    for args in (
        ["variants", "--variants-file", path],
        ["run", "--agent-model", "openai/x", "--variants-file", path, "--out", tmp_path / "run"],
    ):
        res = cli(*args, timeout=60)
        assert res.returncode == 2 and expected in res.stderr and "Traceback" not in res.stderr, explain(res)
    assert not (tmp_path / "run").exists()


def test_directories_and_non_utf8_files_given_as_paths_say_so(tmp_path: Path) -> None:
    res = cli("run", "--agent-model", "openai/x", "--variants-file", tmp_path, "--out", tmp_path / "run")
    assert res.returncode == 2 and "is a directory" in res.stderr
    res = cli("run", "--config", tmp_path, "--agent-model", "openai/x", "--out", tmp_path / "run")
    assert res.returncode == 2 and "is a directory" in res.stderr
    bad = tmp_path / "c.toml"
    bad.write_bytes(b"trials = 2\n# \xff\n")
    res = cli("run", "--config", bad, "--agent-model", "openai/x", "--out", tmp_path / "run")
    assert res.returncode == 2 and "not UTF-8" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("url", ["http://[::1", "ftp://host/v1", "http:///v1", "http://127.0.0.1:99999/v1"])
def test_unusable_base_urls_are_exit_2(tmp_path: Path, url: str) -> None:
    res = cli("run", "--agent-model", "openai/x", "--agent-base-url", url, "--out", tmp_path / "run")
    assert res.returncode == 2 and "not a usable base URL" in res.stderr and "Traceback" not in res.stderr, explain(res)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flag", ["--task-ids", "--variants", "--domain"])
def test_empty_lists_are_refused_not_silently_run(tmp_path: Path, flag: str) -> None:
    res = cli("run", "--agent-model", "openai/x", flag, "", "--out", tmp_path / "run")
    assert res.returncode == 2 and "is empty" in res.stderr, explain(res)
    assert not (tmp_path / "run").exists()


def test_a_foreign_non_empty_directory_is_refused_and_untouched(tmp_path: Path) -> None:
    project = tmp_path / "my-project"
    project.mkdir()
    (project / "notes.txt").write_text("mine")
    (project / "events.jsonl").write_text('{"mine": 1}\n{"cut')  # moodbench would trim this line
    (project / "summary.json").write_text("{}")
    before = digest_tree(project)
    res = cli(
        "run", "--agent-model", "openai/x", "--agent-base-url", "http://127.0.0.1:9/v1", "--out", project, "--skip-preflight"
    )
    assert res.returncode == 2 and "not a moodbench run directory" in res.stderr and "notes.txt" in res.stderr, explain(res)
    assert digest_tree(project) == before


def test_an_invalid_manifest_in_the_run_directory_is_exit_2(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with start_scripted_server(mock_example_script(), tmp_path) as srv:
        _good_run(srv, out)
        (out / "manifest.json").write_text("{not json")
        res = cli(*run_args(srv.base_url, out, tasks="create_task_1", variants="control"))
    assert res.returncode == 2 and "manifest.json is not valid JSON" in res.stderr, explain(res)


def test_manifest_writes_from_two_processes_never_tear(tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from moodbench.results import write_manifest\n"
        "for i in range(150): write_manifest(Path(sys.argv[1]), {'writer': sys.argv[2], 'i': i})\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path), name], stderr=subprocess.PIPE, text=True)
        for name in ("a", "b")
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    assert json.loads((tmp_path / "manifest.json").read_text())["i"] == 149
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]  # no temporary file left behind


def _ray_workers(tag: str) -> list[int]:
    """Ray worker processes (actors, idle workers) started by a run tagged with ``tag``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if cmd.startswith((b"ray::_ConversationActor", b"ray::IDLE")) and f"MB_ORPHAN_TAG={tag}".encode() in env:
            found.append(int(entry.name))
    return found


def test_ray_workers_die_with_the_main_process(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    tag = f"ray-{os.getpid()}"
    with start_scripted_server(mock_example_script(latency_ms=800), tmp_path) as srv:
        proc = start(
            *run_args(srv.base_url, tmp_path / "run", "--trials", "3", "--concurrency", "4", "--executor", "ray"),
            env={"MB_ORPHAN_TAG": tag},
        )
        try:
            wait_for(lambda: len(srv.requests()) >= 3, limit=180, what="requests from Ray workers")
            assert _ray_workers(tag), "no Ray worker processes found"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        wait_for(lambda: not _ray_workers(tag), limit=30, what="the Ray workers to exit")


def test_a_long_reply_is_stored_once(tmp_path: Path) -> None:
    """The message text and its raw form were both stored (a 5 MB reply made a 10.5 MB row)."""
    long_text = "All done. " + "x" * 1_000_000
    script = mock_example_script()
    script["roles"]["agent"]["turns"][2] = {"content": long_text}
    with start_scripted_server(script, tmp_path) as srv:
        res = cli(*run_args(srv.base_url, tmp_path / "run", tasks="create_task_1", variants="control"))
    assert res.returncode == 0, explain(res)
    con = sqlite3.connect(tmp_path / "run" / "results.sqlite")
    (size,) = con.execute("SELECT length(simulation) FROM simulations").fetchone()
    con.close()
    assert 1_000_000 < size < 1_300_000, size
