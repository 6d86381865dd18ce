"""Secrets and process hygiene: API keys never leave the environment; no shell; loopback by default.

The key test plants a sentinel key where it could leak: the provider echoes it in its error
messages (as some do), the endpoint dies with that error as the "last error" shown to the user,
and the model even repeats it in a reply. Then every byte under the run directory, stdout and
stderr (with litellm's and tau2's logs turned up) is searched for it.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import subprocess
from pathlib import Path

import pytest
import yaml

from scripted import CLI, start_scripted_server

MOODBENCH = CLI
OPENING = "Please create a task called 'Important Meeting' for user_1."
CREATE = {"tool_calls": [{"name": "create_task", "arguments": {"user_id": "user_1", "title": "Important Meeting"}}]}


@pytest.mark.parametrize("executor", ["thread", "process"])  # process: tau2's lines logged in worker processes (-v)
def test_api_key_never_reaches_files_logs_or_messages(tmp_path: Path, executor: str) -> None:
    key = "sk-sentinel-" + secrets.token_hex(16)
    variants = tmp_path / "variants.yaml"
    variants.write_text(
        yaml.safe_dump(
            {
                "variants": [
                    {"name": "m-echo", "description": "repeats the key", "levels": {"moderate": "MARKER-echo"}},
                    {"name": "m-fail", "description": "endpoint rejects", "levels": {"moderate": "MARKER-fail"}},
                    {"name": "m-never", "description": "never started", "levels": {"moderate": "MARKER-never"}},
                ]
            }
        )
    )
    script = {
        "roles": {
            "user": {
                "turns": [
                    {
                        "match": [
                            {"if_contains": "MARKER-echo", "in": "system", "then": {"content": f"My key is {key}. {OPENING}"}},
                            {"if_contains": "MARKER-fail", "in": "system", "then": {"content": f"{OPENING} [fail]"}},
                        ],
                        "else": {"content": OPENING},
                    },
                    {"content": "Thanks! ###STOP###"},
                ],
                "after": {"content": "###STOP###"},
            },
            "agent": {
                "turns": [
                    {"content": "unused"},
                    {
                        "match": [
                            {
                                "if_contains": "[fail]",
                                "in": "last",
                                "then": {"status": 500, "error": f"upstream rejected the key {key} (quota)"},
                            }
                        ],
                        "else": CREATE,
                    },
                    {
                        "match": [{"if_contains": "My key is", "in": "all", "then": {"content": f"Done. Noted your key {key}."}}],
                        "else": {"content": "Done."},
                    },
                ],
                "after": {"content": "Anything else?"},
            },
        }
    }
    out = tmp_path / "run"
    env = {
        **os.environ,
        "MOODBENCH_TEST_KEY": key,
        "MOODBENCH_BACKOFF_BASE_S": "0.01",
        "PYTHONUNBUFFERED": "1",
        "LITELLM_LOG": "DEBUG",
    }
    with start_scripted_server(script, tmp_path / "server") as srv:
        cmd = [
            *MOODBENCH,
            "-v",  # tau2's and litellm's own logs shown: their output must be scrubbed too
            "run",
            "--domain",
            "mock",
            "--task-ids",
            "create_task_1",
            "--variants",
            "m-echo,m-fail,m-never",
            "--variants-file",
            str(variants),
            "--agent-model",
            "openai/scripted",
            "--agent-base-url",
            srv.base_url,
            "--api-key-env",
            "MOODBENCH_TEST_KEY",
            "--out",
            str(out),
            "--concurrency",
            "1",
            "--max-retries",
            "3",
            "--max-consecutive-failures",
            "4",
            "--skip-preflight",
            "--executor",
            executor,
        ]
        res = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=180, stdin=subprocess.DEVNULL)
        served = srv.stats()
    # the leak paths were really exercised: the endpoint tripped on errors that carried the key ...
    assert res.returncode == 4, res.stderr[-3000:]
    assert served["by_status"].get("500") == 4
    assert "***" in res.stderr
    assert "tau2.orchestrator" in res.stderr and "My key is ***" in res.stderr  # -v: tau2's lines shown, masked
    con = sqlite3.connect(out / "results.sqlite")
    stored = dict(con.execute("SELECT variant, error FROM simulations WHERE exit_reason='llm_error'").fetchall())
    echoed = con.execute("SELECT simulation FROM simulations WHERE variant='m-echo'").fetchone()[0]
    con.close()
    assert "***" in stored["m-fail"] and "upstream rejected the key" in stored["m-fail"]
    assert "My key is ***" in echoed and "Noted your key ***" in echoed
    # ... and the key is nowhere: not in any file of the run directory (SQLite WAL included), not in
    # stdout or stderr
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {"results.sqlite", "manifest.json", "events.jsonl", "summary.json"} <= {p.name for p in files}
    leaked = [str(p) for p in files if key.encode() in p.read_bytes()]
    assert leaked == []
    assert key not in res.stdout and key not in res.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert "MOODBENCH_TEST_KEY" in json.dumps(manifest)  # the variable's name is recorded, its value is not


def test_a_key_passed_as_a_request_argument_is_refused_without_echo(tmp_path: Path) -> None:
    value = "sk-sentinel-" + secrets.token_hex(8)
    cmd = [
        *MOODBENCH,
        "run",
        "--agent-model",
        "openai/x",
        "--agent-args",
        json.dumps({"api_key": value}),
        "--out",
        str(tmp_path / "run"),
    ]
    res = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert res.returncode == 2
    assert "environment variable" in res.stderr and "--api-key-env" in res.stderr
    assert value not in res.stderr + res.stdout
    assert not (tmp_path / "run").exists() or not any(
        value.encode() in p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()
    )
