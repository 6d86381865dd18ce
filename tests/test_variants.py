"""Variants reach the simulated customer, and control is tau2's own customer, byte for byte.

The system this project replaces never checked that its emotional text reached the model (it did
not). So these tests read what the scripted server *received*: the user-role system prompt of every
cell, compared with the variant files' text, with tau2's own ``UserSimulator.system_prompt`` built
here for the same task, and with what ``moodbench variants --show`` prints. Expected level texts are
read straight from the YAML data files, not through moodbench's catalog.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from test_run_e2e import (
    RunOutcome,
    db_rows,
    explain,
    message_texts,
    moodbench,
    scripted_model,
    shared_run,
    squashed,
    stored_prompt,
    system_prompt,
    words,
)

DATA_DIR = Path(__file__).resolve().parent.parent / "src" / "moodbench" / "emotions" / "data"
BUILTIN = {p.stem: yaml.safe_load(p.read_text(encoding="utf-8")) for p in sorted(DATA_DIR.glob("*.yaml"))}
LEVELS = ("mild", "moderate", "severe")

CUSTOM_VARIANT = """\
name: stoic
description: Calm and terse; answers in as few words as possible.
levels:
  mild: |
    STOIC-MILD-TEXT: keep your answers short.
  severe: |
    STOIC-SEVERE-TEXT: answer in as few words as possible and never show any emotion.
"""
SPECS = ["control", "anxiety:mild", "anxiety:severe", "anxiety:mild+confusion", "stoic:severe+anger:mild"]
TASKS = {"mock": "create_task_1", "retail": "0"}  # the first task of each domain (--num-tasks 1)

SCRIPT: dict[str, Any] = {
    "roles": {
        "agent": {
            "turns": [{"content": "unused greeting turn"}, {"content": "How can I help you?"}],
            "after": {"content": "OK."},
        },
        "user": {
            "turns": [{"content": "Hello, I need some help."}, {"content": "###STOP###"}],
            "after": {"content": "###STOP###"},
        },
    }
}


def level_text(variant: str, level: str) -> str:
    return BUILTIN[variant]["levels"][level].strip()


def _variant_run_args(url: str, out: Path) -> list[Any]:  # moodbench() str()s them
    custom = out.parent / "stoic.yaml"
    custom.write_text(CUSTOM_VARIANT, encoding="utf-8")
    return [
        "run",
        "--domain",
        "mock,retail",
        "--num-tasks",
        1,
        "--variants",
        ",".join(SPECS),
        "--variants-file",
        custom,
        "--max-retries",
        0,
        "--out",
        out,
        *scripted_model(url),
    ]


@pytest.fixture(scope="module")
def variant_run(tmp_path_factory: pytest.TempPathFactory) -> RunOutcome:
    return shared_run(tmp_path_factory, "variants", SCRIPT, _variant_run_args)


@pytest.fixture(scope="module")
def received(variant_run: RunOutcome) -> dict[tuple[str, str], str]:
    """(domain, spec) -> the user system prompt the server received for that cell."""
    assert variant_run.returncode == 0, explain(variant_run)
    systems = {system_prompt(b) for b in variant_run.bodies("user")}
    rows = db_rows(variant_run.run_dir)
    assert len(rows) == len(SPECS) * len(TASKS)
    out: dict[tuple[str, str], str] = {}
    for r in rows:
        assert TASKS[r["domain"]] == r["task_id"]
        prompt = stored_prompt(variant_run.run_dir, r["user_prompt_sha256"])
        assert prompt in systems, f"{r['cell_key']}: the stored prompt is not what the server received"
        out[(r["domain"], r["variant"])] = prompt
    assert len(systems) == len(out) == len(SPECS) * len(TASKS), "one distinct prompt per cell, nothing else"
    return out


def tau2_prompt(domain: str, task_id: str) -> str:
    """tau2's own simulated customer's system prompt for the task, built with tau2's classes only."""
    from tau2.registry import registry
    from tau2.run import load_tasks
    from tau2.user.user_simulator import UserSimulator

    task = next(t for t in load_tasks(domain) if t.id == task_id)
    env = registry.get_env_constructor(domain)()
    try:
        user_tools = env.get_user_tools()
    except Exception:  # tau2 raises for domains whose customer has no tools
        user_tools = None
    return UserSimulator(tools=user_tools or None, instructions=str(task.user_scenario)).system_prompt


# --------------------------------------------------------------------------- what the server received


def test_variant_level_text_reaches_the_customer(received: dict[tuple[str, str], str]) -> None:
    every_level = {(v, lv): level_text(v, lv) for v, data in BUILTIN.items() for lv in data.get("levels") or {}}
    for domain in TASKS:
        mild, severe = received[(domain, "anxiety:mild")], received[(domain, "anxiety:severe")]
        assert level_text("anxiety", "mild") in mild and level_text("anxiety", "severe") not in mild
        assert level_text("anxiety", "severe") in severe and level_text("anxiety", "mild") not in severe
        assert mild != severe
        both = received[(domain, "anxiety:mild+confusion")]
        assert level_text("anxiety", "mild") in both and level_text("confusion", "moderate") in both
        assert level_text("confusion", "mild") not in both and level_text("anxiety", "moderate") not in both
        stoic = received[(domain, "stoic:severe+anger:mild")]  # a user's variant composes with the shipped ones
        assert "STOIC-SEVERE-TEXT" in stoic and "STOIC-MILD-TEXT" not in stoic
        assert stoic.index("STOIC-SEVERE-TEXT") < stoic.index(level_text("anger", "mild"))  # in spec order
        control = received[(domain, "control")]
        assert "<emotional_state>" not in control and "STOIC" not in control
        assert not [key for key, text in every_level.items() if text in control]
        # every emotional prompt names exactly the levels of its spec
        for spec, expect in (
            ("anxiety:mild", {("anxiety", "mild")}),
            ("anxiety:severe", {("anxiety", "severe")}),
            ("anxiety:mild+confusion", {("anxiety", "mild"), ("confusion", "moderate")}),
        ):
            assert {key for key, text in every_level.items() if text in received[(domain, spec)]} == expect, spec


def test_the_persona_never_reaches_the_agent(variant_run: RunOutcome, received: dict[tuple[str, str], str]) -> None:
    agent_bodies = variant_run.bodies("agent")
    assert len(agent_bodies) >= len(received), "every conversation should have called the agent"
    sent_to_agent = "\n".join(t for b in agent_bodies for t in message_texts(b))
    assert "Hello, I need some help." in sent_to_agent  # the customer's words do reach the agent
    assert "<emotional_state>" not in sent_to_agent and "STOIC" not in sent_to_agent
    for variant, data in BUILTIN.items():
        for level in data.get("levels") or {}:
            assert level_text(variant, level) not in sent_to_agent, (variant, level)


def test_control_is_tau2s_prompt_byte_for_byte(received: dict[tuple[str, str], str]) -> None:
    for domain, task_id in TASKS.items():
        theirs = tau2_prompt(domain, task_id)
        assert received[(domain, "control")] == theirs
        assert "###STOP###" in theirs and "<scenario>" in theirs
        for spec in SPECS[1:]:
            ours = received[(domain, spec)]
            # tau2's prompt (task instructions, stop tokens) is an unchanged prefix; the persona only follows it
            assert ours.startswith(theirs + "\n\n<emotional_state>"), (domain, spec)
            assert ours.endswith("</emotional_state>")


# --------------------------------------------------------------------------- the variants command


def _table_rows(stdout: str) -> dict[str, list[str]]:
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) >= 2 and cells[0]:
            rows[cells[0]] = cells
    return rows


def test_variants_lists_every_variant_with_its_levels(tmp_path: Path) -> None:
    listed = moodbench("variants")
    assert listed.returncode == 0, explain(listed)
    rows = _table_rows(listed.stdout)
    assert set(rows) == set(BUILTIN) and len(rows) == 8
    for name, data in BUILTIN.items():
        expected = ", ".join(lv for lv in LEVELS if lv in (data.get("levels") or {})) or "-"
        assert rows[name][1] == expected, name
    assert rows["control"][1] == "-"
    assert sum(rows[n][1] == "mild, moderate, severe" for n in rows) == 7

    custom = tmp_path / "stoic.yaml"
    custom.write_text(CUSTOM_VARIANT, encoding="utf-8")
    with_custom = moodbench("variants", "--variants-file", custom)
    assert with_custom.returncode == 0, explain(with_custom)
    rows = _table_rows(with_custom.stdout)
    assert set(rows) == set(BUILTIN) | {"stoic"}
    assert rows["stoic"][1] == "mild, severe"


def test_show_prints_exactly_what_the_customer_receives(received: dict[tuple[str, str], str], tmp_path: Path) -> None:
    custom = tmp_path / "stoic.yaml"
    custom.write_text(CUSTOM_VARIANT, encoding="utf-8")
    shown = moodbench(
        "variants", "--show", "stoic:severe+anger:mild", "--variants-file", custom, "--domain", "retail", "--task-id", "0"
    )
    assert shown.returncode == 0, explain(shown)
    assert shown.stdout == received[("retail", "stoic:severe+anger:mild")] + "\n"


@pytest.mark.parametrize(
    ("spec", "must_list"),
    [
        pytest.param("nosuch", sorted(BUILTIN), id="unknown-variant"),
        pytest.param("anger+nosuch:mild", sorted(BUILTIN), id="unknown-in-composition"),
        pytest.param("anxiety:extreme", list(LEVELS), id="unknown-level"),
    ],
)
def test_show_refuses_unknown_names_and_levels(spec: str, must_list: list[str]) -> None:
    res = moodbench("variants", "--show", spec)
    assert res.returncode == 2, explain(res)
    said = words(res.stderr)
    assert "error" in said
    for name in must_list:
        assert name in said, name
    assert res.stdout == ""


def test_a_run_refuses_an_unknown_variant_while_planning() -> None:
    """The run's plan (built before any model call) applies the same rules as ``variants --show``."""
    from moodbench.experiment import ConfigError, build_config, make_plan

    with pytest.raises(ConfigError, match="unknown level 'furious' for variant 'anger'; valid levels: mild, moderate, severe"):
        make_plan(build_config({"agent_model": "openai/x", "variants": "control,anger:furious"}, {}))
    with pytest.raises(ConfigError, match="valid variants: control, anger, anxiety"):
        make_plan(build_config({"agent_model": "openai/x", "variants": "control,angry"}, {}))


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        pytest.param("name: [unclosed\n", "not valid YAML", id="yaml-syntax"),
        pytest.param("name: calm\ndescription: d\nlevles:\n  mild: be calm\n", "levles", id="typo-key"),
        pytest.param("name: calm\ndescription: d\nlevels:\n  extreme: be calm\n", "extreme", id="unknown-level"),
        pytest.param("name: calm\ndescription: d\nlevels:\n  mild: '   '\n", "empty text", id="empty-level"),
        pytest.param("name: calm\ndescription: d\n", "at least one level", id="no-levels"),
        pytest.param("name: anger\ndescription: d\nlevels:\n  mild: be angry\n", "built in", id="redefines-builtin"),
        pytest.param("name: Very Calm\ndescription: d\nlevels:\n  mild: x\n", "name", id="bad-name"),
        pytest.param("- just a string\n", "mapping", id="not-a-mapping"),
    ],
)
def test_malformed_variants_file_is_a_clear_error(tmp_path: Path, content: str, complaint: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(content, encoding="utf-8")
    res = moodbench("variants", "--variants-file", bad)
    assert res.returncode == 2, explain(res)
    assert complaint in words(res.stderr)
    assert str(bad) in squashed(res.stderr)  # says which file
    assert "Traceback" not in res.stderr


def test_a_variant_defined_in_two_files_is_refused(tmp_path: Path) -> None:
    first, second = tmp_path / "one.yaml", tmp_path / "two.yaml"
    first.write_text(CUSTOM_VARIANT, encoding="utf-8")
    second.write_text(CUSTOM_VARIANT.replace("STOIC-MILD-TEXT", "OTHER"), encoding="utf-8")
    res = moodbench("variants", "--variants-file", first, "--variants-file", second)
    assert res.returncode == 2, explain(res)
    assert "'stoic' is already defined in" in words(res.stderr) and str(first) in squashed(res.stderr)


def test_missing_variants_file_is_a_clear_error(tmp_path: Path) -> None:
    res = moodbench("variants", "--variants-file", tmp_path / "nope.yaml")
    assert res.returncode == 2, explain(res)
    assert "does not exist" in words(res.stderr) and "Traceback" not in res.stderr


# --------------------------------------------------------------------------- spec parsing (in process)


def test_spec_parsing_rules() -> None:
    from moodbench.emotions import UnknownVariantError, load_catalog

    cat = load_catalog()
    assert cat.parse("anger").canonical == cat.parse("anger:moderate").canonical == "anger"
    assert cat.parse(" anxiety : mild + confusion ").canonical == "anxiety:mild+confusion"
    assert cat.parse("control").is_control and cat.persona_block(cat.parse("control")) is None
    for bad in ("control+anger", "control:mild", "anger+anger:severe", "", "anger:"):
        if bad == "anger:":  # an empty level means the default level
            assert cat.parse(bad).canonical == "anger"
            continue
        with pytest.raises(UnknownVariantError):
            cat.parse(bad)
    with pytest.raises(UnknownVariantError, match="listed twice"):
        cat.parse_many("anger,anger:moderate")
