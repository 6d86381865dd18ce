"""Run configuration: files and flags are one thing, and every mistake is exit 2 with a useful message.

A typo that silently falls back to a default (``trails: 5``) or a key pasted into ``--agent-args``
wastes a whole experiment or leaks a secret into a results file. The user-facing cases go through
the real CLI (exit code 2, a message that says what to do, and, where a server is running, no request
sent); finer rules of the same loader are checked in process, where a tau2 import is already paid.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from scripted import CLI, start_scripted_server
from test_run_e2e import explain, moodbench, squashed, words

SCRIPT: dict[str, Any] = {
    "roles": {
        "agent": {"turns": [{"content": "unused"}, {"content": "How can I help?"}], "after": {"content": "OK."}},
        "user": {"turns": [{"content": "Hello, I need help."}, {"content": "###STOP###"}], "after": {"content": "###STOP###"}},
    }
}
FAKE_SECRET = "sk-live-DO-NOT-PRINT-1234567890"


def stored_config(run_dir: Path) -> dict[str, Any]:
    conn = sqlite3.connect(run_dir / "results.sqlite")
    try:
        return json.loads(conn.execute("SELECT value FROM meta WHERE key='config'").fetchone()[0])
    finally:
        conn.close()


def _toml(base_url: str, out: Path) -> str:
    # the flags' own spelling (dashes, singular "domain")
    return (
        f'domain = "mock"\ntask-ids = ["create_task_1"]\nvariants = ["control", "anxiety:mild"]\ntrials = 3\n'
        f'agent-model = "openai/scripted"\nagent-base-url = "{base_url}"\nagent-args = {{temperature = 0.0}}\n'
        f'max-retries = 0\nskip-preflight = true\nout = "{out}"\n'
    )


def _yaml(base_url: str, out: Path) -> str:
    # the config model's own spelling (underscores, plural "domains", comma strings); same experiment
    return (
        f"domains: [mock]\ntask_ids: create_task_1\nvariants: control,anxiety:mild\ntrials: 3\n"
        f"agent_model: openai/scripted\nagent_base_url: {base_url}\nagent_args: {{temperature: 0.0}}\n"
        f"max_retries: 0\nskip_preflight: true\nout: {out}\n"
    )


def test_config_file_runs_and_flags_override_it(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with start_scripted_server(SCRIPT, tmp_path) as srv:
        toml = tmp_path / "exp.toml"
        toml.write_text(_toml(srv.base_url, out), encoding="utf-8")
        res = moodbench("run", "--config", toml, "--trials", 1)  # the flag wins over the file's 3
        assert res.returncode == 0, explain(res)
        config = stored_config(out)
        assert config["trials"] == 1
        assert config["domains"] == ["mock"] and config["task_ids"] == ["create_task_1"]
        assert config["variants"] == ["control", "anxiety:mild"] and config["agent_args"] == {"temperature": 0.0}
        turn0 = [e for e in srv.requests("user") if e["turn"] == 0]
        assert len(turn0) == 2  # one conversation per variant, one trial
        assert sorted("<emotional_state>" in e["body"]["messages"][0]["content"] for e in turn0) == [False, True]
        assert srv.requests("agent") and all(e["body"].get("temperature") == 0.0 for e in srv.requests("agent"))


def test_toml_and_yaml_files_describe_the_same_experiment(tmp_path: Path) -> None:
    """Same keys in either format (and either spelling) give the same config, hence a resumable run."""
    from moodbench.experiment import build_config, load_config_file

    url, out = "http://127.0.0.1:8000/v1", tmp_path / "run"
    (tmp_path / "a.toml").write_text(_toml(url, out), encoding="utf-8")
    (tmp_path / "b.yaml").write_text(_yaml(url, out), encoding="utf-8")
    a = build_config(load_config_file(tmp_path / "a.toml"), {})
    b = build_config(load_config_file(tmp_path / "b.yaml"), {})
    assert a == b and a.trials == 3 and a.agent_base_url == [url]
    assert build_config(load_config_file(tmp_path / "b.yaml"), {"trials": 1, "variants": None}).trials == 1


@pytest.mark.parametrize(
    ("name", "content", "bad_key", "suggestion"),
    [
        pytest.param("typo.toml", 'agent-model = "openai/x"\ntrails = 2\n', "trails", "trials", id="toml"),
        pytest.param("typo.yaml", "agent_modle: openai/x\n", "agent_modle", "agent_model", id="yaml"),
        pytest.param("typo.yml", "agent_model: openai/x\nvariant_file: v.yaml\n", "variant_file", "variants_file", id="yml"),
    ],
)
def test_unknown_config_key_names_it_and_suggests_the_closest(
    tmp_path: Path, name: str, content: str, bad_key: str, suggestion: str
) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    res = moodbench("run", "--config", path, "--out", tmp_path / "run")
    assert res.returncode == 2, explain(res)
    said = words(res.stderr)
    assert f"unknown config key '{bad_key}'" in said and f"did you mean '{suggestion}'?" in said
    assert not (tmp_path / "run").exists()  # refused before anything was created


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        pytest.param(["--agent-args", "{temperature: 0}"], ["agent_args", "not valid JSON", "temperature"], id="bad-json"),
        pytest.param(["--user-args", "[1, 2]"], ["user_args", "dictionary"], id="args-not-an-object"),
        pytest.param(
            ["--agent-args", json.dumps({"api_key": FAKE_SECRET})],
            ["'api_key' looks like a secret", "--api-key-env"],
            id="api-key",
        ),
        pytest.param(
            ["--judge-args", json.dumps({"extra_headers": {}, "AuthToken": FAKE_SECRET})],
            ["'AuthToken' looks like a secret"],
            id="token",
        ),
        pytest.param(
            ["--user-args", json.dumps({"extra_headers": {"Authorization": f"Bearer {FAKE_SECRET}"}})],
            ["'Authorization' looks like a secret"],
            id="nested-header",
        ),
        pytest.param(["--num-tasks", "2", "--task-ids", "create_task_1"], ["either task_ids or num_tasks"], id="ids-and-count"),
        pytest.param(["--shard", "0/3"], ["shard", "1 <= I <= N"], id="shard-zero"),
        pytest.param(["--tool-choice", "always"], ["tool_choice", "'auto' or 'required'"], id="tool-choice"),
        pytest.param(["--trials", "0"], ["trials", "greater than or equal to 1"], id="trials-zero"),
    ],
)
def test_bad_values_are_refused_with_a_clear_message(tmp_path: Path, args: list[str], expect: list[str]) -> None:
    res = moodbench("run", "--agent-model", "openai/x", "--out", tmp_path / "run", *args)
    assert res.returncode == 2, explain(res)
    said = words(res.stderr)
    for text in expect:
        assert text in said, text
    assert FAKE_SECRET not in res.stderr + res.stdout  # a refused secret is never echoed back
    assert "Traceback" not in res.stderr


def test_missing_agent_model_and_missing_config_file(tmp_path: Path) -> None:
    res = moodbench("run", "--out", tmp_path / "run")
    assert res.returncode == 2 and "--agent-model" in words(res.stderr)
    res = moodbench("run", "--config", tmp_path / "nope.toml")
    assert res.returncode == 2 and "does not exist" in words(res.stderr)
    bad = tmp_path / "bad.toml"
    bad.write_text("trials = [unclosed\n", encoding="utf-8")
    res = moodbench("run", "--config", bad)
    assert res.returncode == 2 and "cannot parse" in words(res.stderr) and str(bad) in squashed(res.stderr)


def test_unknown_domain_and_task_id_list_the_valid_ones(tmp_path: Path) -> None:
    res = moodbench(
        "run",
        "--domain",
        "mock,retial",
        "--out",
        tmp_path / "a",
        "--agent-model",
        "openai/scripted",
        "--agent-base-url",
        "http://127.0.0.1:9/v1",
        "--skip-preflight",
    )
    assert res.returncode == 2, explain(res)
    said = words(res.stderr)
    assert "unknown domain 'retial'" in said
    assert all(d in said for d in ("mock", "retail", "airline", "telecom"))
    assert not (tmp_path / "a" / "results.sqlite").exists()

    # the same ConfigError -> exit 2 path; checked in process to spare a second tau2 import
    from moodbench.experiment import ConfigError, build_config, make_plan

    with pytest.raises(ConfigError) as err:
        make_plan(build_config({"agent_model": "openai/x", "domains": "mock", "task_ids": "create_task_1,create_task_9"}, {}))
    assert "unknown task id(s) create_task_9 in domain 'mock'; valid ids:" in str(err.value)
    assert "update_task_1" in str(err.value) and "impossible_task_1" in str(err.value)


def test_missing_api_key_variable_stops_before_any_request(tmp_path: Path) -> None:
    with start_scripted_server(SCRIPT, tmp_path) as srv:
        res = moodbench(
            "run",
            "--domain",
            "mock",
            "--num-tasks",
            1,
            "--agent-model",
            "openai/scripted",
            "--agent-base-url",
            srv.base_url,
            "--api-key-env",
            "MOODBENCH_TEST_MISSING_KEY",
            "--out",
            tmp_path / "run",
            env={"MOODBENCH_TEST_MISSING_KEY": ""},
        )
        assert res.returncode == 2, explain(res)
        assert "MOODBENCH_TEST_MISSING_KEY" in words(res.stderr) and "not set" in words(res.stderr)
        assert srv.requests() == []
    assert not (tmp_path / "run" / "results.sqlite").exists()


# --------------------------------------------------------------------------- the loader itself (in process)


def test_config_file_shapes(tmp_path: Path) -> None:
    from moodbench.experiment import ConfigError, build_config, load_config_file

    table = tmp_path / "t.toml"
    table.write_text('[run]\nagent-model = "openai/x"\ndomain = "retail"\ntask-ids = [0, 5]\n', encoding="utf-8")
    cfg = build_config(load_config_file(table), {"trials": None})  # an unset flag does not override
    assert cfg.domains == ["retail"] and cfg.task_ids == ["0", "5"] and cfg.agent_model == "openai/x"

    empty = tmp_path / "e.yaml"
    empty.write_text("", encoding="utf-8")
    assert load_config_file(empty) == {}
    listy = tmp_path / "l.yaml"
    listy.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="mapping"):
        load_config_file(listy)

    a = build_config({"agent_model": "openai/x", "concurrency": 1, "out": "a"}, {})
    b = build_config({"agent_model": "openai/x", "concurrency": 64, "out": "b", "max_retries": 9}, {})
    assert a.identity() == b.identity()  # execution-only knobs never make a different experiment
    c = build_config({"agent_model": "openai/x", "max_tokens": 512}, {})
    assert a.identity() != c.identity()


def test_request_parameters_that_mention_tokens_are_not_secrets() -> None:
    from moodbench.experiment import build_config

    args = {"max_tokens": 64, "max_completion_tokens": 64, "extra_body": {"skip_special_tokens": False, "stop_token_ids": [2]}}
    cfg = build_config({"agent_model": "openai/x", "agent_args": json.dumps(args)}, {})
    assert cfg.agent_args == args


def test_a_variants_file_counts_by_content_not_by_path(tmp_path: Path) -> None:
    """Editing a custom persona makes a different experiment; reaching the same file by another path does not."""
    from moodbench.experiment import build_config

    text = "name: calm\ndescription: d\nlevels:\n  mild: stay calm\n"
    a, b = tmp_path / "a.yaml", tmp_path / "sub" / "b.yaml"
    b.parent.mkdir()
    a.write_text(text, encoding="utf-8")
    b.write_text(text, encoding="utf-8")
    ident = lambda p: build_config({"agent_model": "openai/x", "variants_file": [p]}, {}).identity()  # noqa: E731
    assert ident(a) == ident(b)
    before = ident(a)
    a.write_text(text.replace("stay calm", "stay very calm"), encoding="utf-8")
    assert ident(a)["variants_file"] != before["variants_file"]


def test_repeated_task_ids_are_refused() -> None:
    from moodbench.experiment import ConfigError, build_config, make_plan

    with pytest.raises(ConfigError, match="create_task_1 listed more than once"):
        make_plan(
            build_config(
                {"agent_model": "openai/x", "domains": "mock", "task_ids": "create_task_1,update_task_1,create_task_1"}, {}
            )
        )


def test_dry_run_prints_the_matrix_and_the_mde_and_writes_nothing(tmp_path: Path) -> None:
    import subprocess

    from moodbench.analysis import planned_mde

    out = tmp_path / "run"
    res = subprocess.run(
        [
            *CLI,
            "run",
            "--agent-model",
            "openai/x",
            "--agent-base-url",
            "http://127.0.0.1:9/v1",
            "--domain",
            "retail",
            "--num-tasks",
            "40",
            "--trials",
            "3",
            "--variants",
            "control,frustration,anger",
            "--dry-run",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert res.returncode == 0, res.stderr
    text = " ".join(res.stdout.split())
    assert "360 conversation(s) planned" in text and "frustration" in text and "120" in text
    expected = planned_mde(40, 3, ["frustration", "anger"], ["retail"])
    assert expected is not None and f"Minimum detectable drop in mean reward: {expected:.3f}" in text
    assert not out.exists()  # nothing written, nothing called (the base URL is a closed port)
    small = subprocess.run(
        [*CLI, "run", "--agent-model", "openai/x", "--domain", "mock", "--num-tasks", "3", "--dry-run", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert small.returncode == 0 and "below the smallest design that supports a claim" in " ".join(small.stdout.split())
