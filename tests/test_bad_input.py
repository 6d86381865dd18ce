"""Bad input fails fast, with exit code 2, a message that says how to fix it, and no model call.

All cases run as real ``moodbench run`` subprocesses pointed at one scripted server, started
together (they are independent) so the suite pays the import time once in wall-clock terms; the
server's request log must stay empty throughout.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from scripted import CLI, start_scripted_server

MOODBENCH = CLI


def test_bad_input_exits_2_before_any_model_is_called(tmp_path: Path) -> None:
    config = tmp_path / "exp.yaml"
    config.write_text("domain: mock\ntask_ids: create_task_1\ntrails: 2\n")
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("x")
    env = {k: v for k, v in os.environ.items() if k != "MOODBENCH_UNSET_KEY"}

    with start_scripted_server({}, tmp_path / "server") as srv:

        def cmd(name: str, *args: str) -> list[str]:
            base = ["--agent-model", "openai/scripted", "--agent-base-url", srv.base_url, "--skip-preflight"]
            return [*MOODBENCH, "run", *base, "--out", str(tmp_path / name), *args]

        cases: dict[str, tuple[list[str], list[str]]] = {
            "config-key": (cmd("c1", "--config", str(config)), ["'trails'", "did you mean 'trials'"]),
            "flag": (cmd("c3", "--trails", "2"), ["--trails", "--trials"]),
            "task-id": (
                cmd("c4", "--domain", "mock", "--task-ids", "create_task_1,nope_9"),
                ["nope_9", "valid ids", "create_task_1", "update_task_1"],
            ),
            "domain": (cmd("c5", "--domain", "mokc"), ["'mokc'", "valid domains", "mock", "retail"]),
            "variant": (
                cmd("c6", "--domain", "mock", "--variants", "control,frustrashun"),
                ["frustrashun", "frustration", "anger"],
            ),
            "api-key": (cmd("c8", "--api-key-env", "MOODBENCH_UNSET_KEY"), ["MOODBENCH_UNSET_KEY", "not set"]),
            "out-dir": (
                [
                    *MOODBENCH,
                    "run",
                    "--agent-model",
                    "openai/scripted",
                    "--agent-base-url",
                    srv.base_url,
                    "--out",
                    str(not_a_dir / "run"),
                ],
                ["cannot write", str(not_a_dir)],
            ),
        }
        procs = {
            name: subprocess.Popen(
                c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, stdin=subprocess.DEVNULL
            )
            for name, (c, _) in cases.items()
        }
        results = {name: p.communicate(timeout=180) for name, p in procs.items()}
        requests = srv.requests()

    for name, (_, expected) in cases.items():
        out, err = results[name]
        text = " ".join((out + err).split())  # rich wraps long lines
        assert procs[name].returncode == 2, f"{name}: exit {procs[name].returncode}\n{err[-2000:]}"
        assert "Traceback" not in err, f"{name}:\n{err[-2000:]}"
        missing = [e for e in expected if e not in text]
        assert not missing, f"{name}: {missing} not in:\n{text[-2000:]}"
    assert requests == []  # no model was called by any of them
    assert not list(tmp_path.rglob("results.sqlite"))  # and no run directory was started
