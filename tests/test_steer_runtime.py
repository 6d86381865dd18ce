"""Steered variants in a run: spec syntax, the local-model requirement, routing to a per-variant customer
server, the record naming what was steered, and refusing a resume whose dose changed.

No model here: routing is checked with two scripted OpenAI-compatible servers standing in for the
unsteered and the steered llama.cpp servers (tests/test_steer_localmodel.py runs the real ones).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from moodbench.emotions import UnknownVariantError, load_catalog
from moodbench.experiment import Cell, ConfigError, RunConfig, make_plan

# the runner's steering records are private to experiment; tested as units here
from moodbench.experiment._local_servers import SteeredCustomer
from moodbench.experiment._run import record_steering
from moodbench.llm import EndpointHealth, ModelClient, ModelSpec
from moodbench.results import Steering, Store
from moodbench.testing.scripts import mock_example_script
from scripted import CLI, start_scripted_server

CATALOG = load_catalog()


@pytest.mark.parametrize(
    ("spec", "canonical", "prompted", "steered"),
    [
        ("frustration@steer", "frustration@steer", [], ("frustration", "moderate")),
        ("anger@steer:severe", "anger@steer:severe", [], ("anger", "severe")),
        ("frustration@both:mild", "frustration@both:mild", ["frustration"], ("frustration", "mild")),
        ("frustration@steer+confusion:mild", "frustration@steer+confusion:mild", ["confusion"], ("frustration", "moderate")),
        ("frustration@prompt", "frustration", ["frustration"], None),
        ("frustration:moderate", "frustration", ["frustration"], None),
    ],
)
def test_steered_specs_parse_to_canonical_names(
    spec: str, canonical: str, prompted: list[str], steered: tuple[str, str] | None
) -> None:
    parsed = CATALOG.parse(spec)
    assert parsed.canonical == canonical
    assert [p.name for p in parsed.parts if p.prompted] == prompted
    assert (
        (parsed.steered is not None and (parsed.steered.name, parsed.steered.level) == steered)
        if steered
        else parsed.steered is None
    )
    block = CATALOG.persona_block(parsed)
    assert (block is None) == (not prompted)  # a steered-only customer gets tau2's prompt, byte for byte
    if prompted:
        assert CATALOG.variants[prompted[0]].levels[
            parsed.parts[-1].level if len(parsed.parts) > 1 else parsed.parts[0].level
        ].strip() in (block or "")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("frustration@steer+anger@steer", "steers more than one emotion"),
        ("frustration@both+anger@steer", "steers more than one emotion"),
        ("control@steer", "'control' takes no level or method"),
        ("frustration@vector", "unknown method 'vector'"),
        ("frustration@steer:extreme", "unknown level 'extreme'"),
    ],
)
def test_what_cannot_be_steered_is_refused_with_the_reason(spec: str, message: str) -> None:
    with pytest.raises(UnknownVariantError, match=message):
        CATALOG.parse(spec)


def test_a_user_variant_can_be_steered_only_with_its_own_pairs(tmp_path: Path) -> None:
    pairs = [{"agent": f"Question {i}?", "positive": f"Ugh, fine {i}", "negative": f"Sure {i}"} for i in range(4)]
    path = tmp_path / "v.yaml"
    path.write_text(
        json.dumps(
            [
                {
                    "name": "gloomy",
                    "description": "sad",
                    "steering": {"positive": "You are gloomy.", "negative": "You are cheerful.", "pairs": pairs},
                },
                {"name": "stoic", "description": "calm", "levels": {"moderate": "Stay calm."}},
            ]
        )
    )
    catalog = load_catalog([path])
    assert catalog.parse("gloomy@steer").steered is not None
    with pytest.raises(UnknownVariantError, match="no level 'moderate'"):
        catalog.parse("gloomy")  # steering pairs only: nothing to prompt
    with pytest.raises(UnknownVariantError, match="no 'steering:' pairs"):
        catalog.parse("stoic@steer")


def test_steering_needs_a_local_customer_model(tmp_path: Path) -> None:
    config = RunConfig(agent_model="openai/scripted", variants=["control", "frustration@steer"], out=tmp_path / "run")
    with pytest.raises(ConfigError, match="needs an embedded local/ customer model"):
        make_plan(config)
    res = subprocess.run(
        [
            *CLI,
            "run",
            "--agent-model",
            "hosted_vllm/Qwen/Qwen2.5-7B",
            "--agent-base-url",
            "http://127.0.0.1:9/v1",
            "--variants",
            "control,frustration@steer",
            "--out",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert res.returncode == 2 and "vLLM and hosted APIs have no control vectors" in " ".join(res.stderr.split())
    assert not (tmp_path / "run").exists()


def test_a_steered_variants_customer_talks_to_its_own_server_and_the_record_says_what_was_steered(tmp_path: Path) -> None:
    from moodbench.sim import ConversationSettings, run_cell

    config = RunConfig(
        agent_model="openai/scripted",
        user_model="local/qwen2.5-0.5b",
        domains=["mock"],
        task_ids=["create_task_1"],
        variants=["control", "frustration@steer"],
        out=tmp_path / "run",
    )
    assert config.user_format == "completion"  # the default for a local customer
    plan = make_plan(config)
    steering = Steering(emotion="frustration", vector_sha256="ab" * 32, scale=0.667, layers=(8, 23), method="mean")
    with (
        start_scripted_server(mock_example_script(), tmp_path / "plain") as plain,
        start_scripted_server(mock_example_script(), tmp_path / "steered") as steered,
    ):
        health = EndpointHealth(0)

        def client(url: str) -> ModelClient:
            return ModelClient(ModelSpec(model="openai/scripted", base_urls=(url,), max_retries=0), health)

        settings = ConversationSettings(
            catalog=plan.catalog,
            tasks=plan.tasks,
            agent_client=client(plain.base_url),
            user_client=client(plain.base_url),
            judge_client=client(plain.base_url),
            user_clients={"frustration@steer": client(steered.base_url)},
            steering={"frustration@steer": steering},
            user_format=config.user_format,
        )
        control, _ = run_cell(Cell("mock", "create_task_1", "control", 0), settings)
        steered_plain_before = len(plain.requests(role="user"))
        steered_record, prompts = run_cell(Cell("mock", "create_task_1", "frustration@steer", 0), settings)
        assert len(plain.requests(role="user")) == steered_plain_before  # no customer request reached the plain server
        assert steered.requests(role="user") and not steered.requests(role="agent")  # the agent is never steered
    assert control.steering is None and control.exit_reason.value == "success"
    assert steered_record.steering == steering and steered_record.exit_reason.value == "success"
    assert "<emotional_state>" not in prompts["user"]  # steering alone: tau2's prompt
    user_endpoints = {m["raw_data"]["endpoint"] for m in steered_record.messages if m["role"] == "user"}
    assert user_endpoints == {steered.base_url}
    sent = steered.requests(role="user")[0]["body"]
    assert sent["prompt"].rstrip().endswith("CUSTOMER:") and sent["stop"]  # the completion format, as a text request


def test_a_resume_with_another_vector_or_scale_is_refused(tmp_path: Path) -> None:
    def customer(scale: float, sha: str = "ab" * 32) -> dict[str, SteeredCustomer]:
        info = Steering(emotion="frustration", vector_sha256=sha, scale=scale, layers=(8, 23), method="mean")
        return {"frustration@steer": SteeredCustomer("frustration@steer", "http://127.0.0.1:1/v1", "m", info)}

    with Store(tmp_path / "results.sqlite") as store:
        record_steering(customer(0.667), store, False, tmp_path)
        record_steering(customer(0.667), store, False, tmp_path)  # same dose: a resume goes on
        with pytest.raises(ConfigError, match="other steering"):
            record_steering(customer(1.0), store, False, tmp_path)
        with pytest.raises(ConfigError, match="other steering"):
            record_steering(customer(0.667, "cd" * 32), store, False, tmp_path)
        record_steering(customer(1.0), store, True, tmp_path)  # --force-config
        assert store.get_meta("steering")["frustration@steer"]["scale"] == 1.0


def test_local_servers_get_cpu_threads_by_the_share_of_roles_they_play(tmp_path: Path) -> None:
    """The demo's matrix on 2 cores: the unsteered server plays every agent and two customers in three, so it
    gets both cores and the steered customer's server one thread (measured 24.2 vs 14.7 tokens/s with 1 + 1)."""
    from moodbench.experiment._local_servers import divide_threads, server_loads

    config = RunConfig(
        agent_model="local/qwen2.5-0.5b",
        domains=["mock"],
        task_ids=["create_task_1", "update_task_1"],
        variants=["control", "frustration", "frustration@steer"],
        out=tmp_path / "run",
    )
    plan = make_plan(config)
    loads = server_loads(config, plan, {"frustration@steer"})
    assert loads == {"local/qwen2.5-0.5b": 2 * 3 + 2 * 2, "frustration@steer": 2}
    assert divide_threads(loads, 2) == {"local/qwen2.5-0.5b": 2, "frustration@steer": 1}
    assert divide_threads(loads, 16) == {"local/qwen2.5-0.5b": 13, "frustration@steer": 3}
    # Two servers with equal work split the cores, as before; many servers on few cores get one thread each.
    even = server_loads(config.model_copy(update={"user_model": "local/other"}), None, ())
    assert even == {"local/qwen2.5-0.5b": 1, "local/other": 1} and divide_threads(even, 2) == dict.fromkeys(even, 1)
    assert divide_threads(dict.fromkeys("abcde", 3), 2) == dict.fromkeys("abcde", 1)
    # Never two multi-thread servers over the cores: the biggest gives threads back down to cores + 1.
    assert sorted(n or 0 for n in divide_threads({"a": 3, "b": 3, "c": 1, "d": 1}, 4).values()) == [
        1,
        1,
        1,
        2,
    ]  # 2, 2, 1, 1 before
    assert divide_threads({"local/only": 9}, 2) == {"local/only": None}  # alone: llama.cpp's default
    # A hosted agent: only the customers' servers count.
    hosted = config.model_copy(update={"agent_model": "openai/gpt-4o-mini", "user_model": "local/qwen2.5-0.5b"})
    assert server_loads(hosted, plan, {"frustration@steer"}) == {"local/qwen2.5-0.5b": 4, "frustration@steer": 2}
