"""Steering with the real llama.cpp binaries and the real 0.5B model: build, steered server, calibration.

Marked ``localmodel`` and skipped (with the reason) when ``llama-server``, ``llama-cvector-generator``
or the cached ``qwen2.5-0.5b`` GGUF is missing, like ``test_local_model_run.py``. Vectors and
calibrations go to a temporary ``MOODBENCH_CACHE_DIR`` (the binaries and the model are passed in from
the real cache), so the user's cache is left alone. Kept short for 2 CPU cores: one vector build
(~15 s), two small server starts, one calibration of 2 scales x 1 conversation x 2 turns.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from moodbench.serve.install import find_cvector_generator, find_llama_server
from moodbench.serve.llamacpp import LlamaCppServer
from moodbench.serve.models import ModelResolutionError, resolve_model
from moodbench.steer import SteeringVector, build_vector, calibrate, load_calibration, render_completion_prompt
from moodbench.steer._vector import vector_metadata  # the sidecar reader is private; the test checks what it wrote
from scripted import CLI

MODEL = "qwen2.5-0.5b"
SHIPPED_DATA = Path(__file__).resolve().parent.parent / "src" / "moodbench" / "steer" / "data"
# real builds, sweeps and runs on the CPU: their subprocesses may take up to 2 x 600 s (pyproject default 300 s)
pytestmark = [pytest.mark.localmodel, pytest.mark.timeout(1500)]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    server, generator = find_llama_server(), find_cvector_generator()
    if server is None or generator is None:
        pytest.skip("llama-server / llama-cvector-generator not installed: run scripts/install-local-backend.sh")
    try:
        model = resolve_model(MODEL, allow_download=False, allow_pip=False)
    except ModelResolutionError:
        pytest.skip(f"model {MODEL} not in the cache: run scripts/install-local-backend.sh (fetches it)")
    cache = tmp_path_factory.mktemp("steer-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MOODBENCH_CACHE_DIR", str(cache))
        mp.setenv("MOODBENCH_LLAMA_SERVER", str(server))
        mp.setenv("MOODBENCH_CVECTOR_GENERATOR", str(generator))
        yield {"model": model, "cache": cache}


@pytest.fixture(scope="module")
def vector(env: dict[str, Path]) -> SteeringVector:
    return build_vector(env["model"], "frustration")


def test_vector_is_built_cached_and_a_second_call_returns_at_once(env: dict[str, Path], vector: SteeringVector) -> None:
    assert vector.vector.is_file() and vector.vector.parent == env["cache"] / "vectors"
    assert vector.layers == (8, 23) and vector.method == "mean" and vector.seconds > 0
    meta = vector_metadata(vector.vector)
    assert meta["general.architecture"] == "controlvector" and meta["controlvector.layer_count"] == 23
    side = json.loads(vector.sidecar.read_text())
    assert {"vector", "sha256", "model", "model_sha256", "emotion", "method", "layers", "pairs_sha256", "built_at",
            "seconds"} <= set(side)  # fmt: skip
    assert side["sha256"] == vector.sha256 and side["emotion"] == "frustration"
    t0 = time.monotonic()
    again = build_vector(env["model"], "frustration")
    assert time.monotonic() - t0 < 3.0 and again.cached and again.vector == vector.vector and again.sha256 == vector.sha256


def _complete(srv: LlamaCppServer, prompt: str, stop: list[str]) -> str:
    body = {"model": srv.model_name, "prompt": prompt, "stop": stop, "max_tokens": 24, "temperature": 0, "seed": 1}
    r = httpx.post(f"{srv.base_url}/completions", json=body, timeout=300)  # through the front: relayed unchanged
    assert r.status_code == 200, r.text
    return str(r.json()["choices"][0]["text"])


def test_a_server_with_the_vector_answers_and_answers_differently(env: dict[str, Path], vector: SteeringVector,
                                                                   tmp_path: Path) -> None:  # fmt: skip
    prompt, stop = render_completion_prompt("You are a customer. You want to return a broken lamp.",
                                            [("agent", "Hi! How can I help you today?")])  # fmt: skip
    with LlamaCppServer(env["model"], ctx=2048, parallel=1, threads=1, log_path=tmp_path / "plain.log") as srv:
        plain = _complete(srv, prompt, stop)
    with LlamaCppServer(env["model"], ctx=2048, parallel=1, threads=1, log_path=tmp_path / "steered.log",
                        control_vectors=[(vector.vector, 2.0)], control_vector_layers=vector.layers) as srv:  # fmt: skip
        assert f"{vector.vector}:2" in srv.command()
        steered = _complete(srv, prompt, stop)
    assert steered.strip() and steered != plain  # greedy decoding: only the vector can change the reply


def test_perplexity_scored_eight_at_a_time_equals_one_at_a_time_and_the_grammar_method(env: dict[str, Path],
                                                                                      tmp_path: Path) -> None:  # fmt: skip
    """The calibration scores 8 replies at once (llama-server batches their forced decode steps); each reply
    keeps its own slot, so the batch may move a perplexity only by float noise, never swap replies. The
    per-token logit-bias forcing gives what the grammar forcing it replaced gave."""
    from moodbench.steer._calibrate import _add_perplexity
    from moodbench.steer._score import reply_perplexity

    texts = ["I want a refund for order #W2378156, it never arrived and nobody answers my emails.",
             "My name is Yusuf Rossi, zip code 19122.", "Why is this so hard? I already told you twice!",
             "Could you check the keyboard exchange, please? Same color, clicky switches.",
             "banana the the invoice purple seventeen why why refund",
             "Fine.", "I am not sure what you need from me. The order number? The email?",
             "This is the third time I call about the same broken lamp."]  # fmt: skip
    rows: dict[int, list[dict[str, Any]]] = {n: [{"reply": t} for t in texts] for n in (1, 8)}
    with LlamaCppServer(env["model"], ctx=8192, parallel=8, threads=1, log_path=tmp_path / "ppl.log",
                        extra_args=["--no-cache-idle-slots"]) as srv, httpx.Client(timeout=300) as http:  # fmt: skip
        for n, rs in rows.items():
            _add_perplexity(srv.base_url, rs, max_tokens=64, client=http, parallel=n)
        grammar = [reply_perplexity(srv.base_url, t, client=http, method="grammar")["perplexity"] for t in texts[:4]]
    assert all(abs(math.log(g) - math.log(r["perplexity"])) < 0.1 for g, r in zip(grammar, rows[1], strict=False)), grammar
    one, batched = [r["perplexity"] for r in rows[1]], [r["perplexity"] for r in rows[8]]
    assert all(p is not None and p > 1 for p in one + batched)
    for a, b in zip(one, batched, strict=True):  # mean log-probability per token within 0.1 nats (a 2-token reply
        assert abs(math.log(a) - math.log(b)) < 0.1, (one, batched)  # moved 0.06 in a measured batch)
    assert one[4] > 3 * max(one[2], one[7])  # word salad is still far less likely than a customer's sentence


def test_calibration_sweep_stores_table_levels_and_plot_beside_the_vector(vector: SteeringVector) -> None:
    # two tasks: the interval is task-clustered, one task would give none
    cal = calibrate(vector.model_path, "frustration", vector=vector, scales=(0, 1.5), tasks=("retail:0", "airline:5"), seeds=1,
                    turns=1, max_tokens=32, parallel=1)  # fmt: skip
    assert [r["scale"] for r in cal.scales] == [0.0, 1.5]
    base, steered = cal.scales
    for row in cal.scales:
        assert row["replies"] >= 1 and 0 <= row["stop_rate"] <= 1 and isinstance(row["coherent"], bool)
    assert base["vader_diff"] == 0.0 and steered["n_pairs"] >= 1 and steered["ci"][0] <= steered["ci"][1]
    assert any(r["perplexity"] for r in cal.replies if r["reply"])  # scored by the unsteered model
    assert cal.levels is None or set(cal.levels) == {"mild", "moderate", "severe"}
    assert any("2 conversations per scale: one early stop (50%)" in w for w in cal.warnings)  # too small to conclude
    assert [m["scale"] for m in cal.evidence["manipulation"]] == [1.5] and "checks" in steered
    phases = cal.evidence["seconds_per_phase"]  # both scales at once (2 lanes), each server's CPU counted
    assert phases["conversations"] > 0 and phases["perplexity"] > 0 and phases["server_cpu"] > 0 and phases["total"] > 0
    stored = load_calibration(vector)
    assert stored is not None and stored["vector_sha256"] == vector.sha256 and stored["scales"][1]["scale"] == 1.5
    assert Path(cal.plot or "").is_file() and Path(cal.plot or "").read_bytes()[:4] == b"\x89PNG"


def test_a_steered_run_routes_the_customer_to_its_own_server_and_records_the_vector(env: dict[str, Path], tmp_path: Path) -> None:
    """From an empty vector cache, as on a fresh machine: the vector is built, the shipped calibration of the
    built-in model gives the scale, one steered conversation and one control conversation are stored."""
    import os
    import sqlite3
    import subprocess

    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "models").symlink_to(env["model"].parent)
    run_env = {**os.environ, "MOODBENCH_CACHE_DIR": str(cache)}
    base = [
        *CLI,
        "run",
        "--agent-model",
        f"local/{MODEL}",
        "--domain",
        "mock",
        "--task-ids",
        "create_task_1",
        "--variants",
        "control,frustration@steer",
        "--max-steps",
        "4",
        "--max-tokens",
        "64",
        "--agent-args",
        '{"temperature": 0}',
        "--skip-preflight",
    ]
    refused = subprocess.run(
        [*base, "--user-format", "transcript", "--out", str(tmp_path / "t")],
        capture_output=True,
        text=True,
        env=run_env,
        timeout=600,
    )
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "moodbench steer calibrate" in refused.stderr and "--format transcript" in refused.stderr  # no guessed scale
    ok = subprocess.run([*base, "--out", str(tmp_path / "run")], capture_output=True, text=True, env=run_env, timeout=600)
    assert ok.returncode == 0, ok.stderr[-3000:]
    con = sqlite3.connect(tmp_path / "run" / "results.sqlite")
    rows = {
        v: (json.loads(st) if st else None, json.loads(sim))
        for v, st, sim in con.execute("SELECT variant, steering, simulation FROM simulations")
    }
    con.close()
    steering, steered_sim = rows["frustration@steer"]
    assert steering is not None
    vectors = list((cache / "vectors").glob("*.gguf"))
    assert len(vectors) == 1 and steering["vector"] == str(vectors[0])
    shipped = json.loads((SHIPPED_DATA / f"{MODEL}-frustration-completion.calibration.json").read_text())
    assert steering["scale"] == shipped["levels"]["moderate"]  # the default level, from the shipped calibration
    assert steering["layers"] == [8, 23] and len(steering["vector_sha256"]) == 64
    assert rows["control"][0] is None

    def customer_endpoints(sim: dict) -> set[str]:
        return {m["raw_data"]["endpoint"] for m in sim["messages"] if m["role"] == "user" and m.get("raw_data")}

    def agent_endpoints(sim: dict) -> set[str]:
        return {m["raw_data"]["endpoint"] for m in sim["messages"] if m["role"] == "assistant" and m.get("raw_data")}

    steered_customer, control_customer = customer_endpoints(steered_sim), customer_endpoints(rows["control"][1])
    assert len(steered_customer) == 1 and steered_customer.isdisjoint(control_customer)
    assert agent_endpoints(steered_sim) == control_customer  # the agent (and control's customer) stay unsteered

    def threads(log: Path) -> int:  # from the server's argv, the log's first "$ " line
        argv = next(line for line in log.read_text().splitlines() if line.startswith("$ ")).split()
        return int(argv[argv.index("--threads") + 1])

    # The unsteered server plays 3 of the 4 roles, so it gets the larger share of the cores (divide_threads).
    main, steered = (
        threads(tmp_path / "run" / f"llamacpp-{MODEL}.log"),
        threads(tmp_path / "run" / "llamacpp-steer-frustration_steer.log"),
    )
    assert main > steered if len(os.sched_getaffinity(0)) >= 2 else main == steered == 1


def test_a_calibration_without_a_coherent_scale_is_refused_with_what_to_try_next(vector: SteeringVector, tmp_path: Path) -> None:
    """As measured for frustration on qwen2.5-1.5b (benchmarks/README.md): no scale kept the customer
    coherent in the completion format. The run must not guess a scale, and must not advise the format it
    already uses."""
    from moodbench.experiment import ConfigError, RunConfig, make_plan
    from moodbench.experiment._local_servers import steering_of
    from moodbench.steer import calibration_path

    path = calibration_path(vector, "completion")
    path.write_text(json.dumps({"vector_sha256": vector.sha256, "levels": None, "scales": []}))
    try:
        config = RunConfig(
            agent_model="openai/scripted",
            user_model=f"local/{MODEL}",
            domains=["mock"],
            task_ids=["create_task_1"],
            variants=["control", "frustration@steer"],
            out=tmp_path / "run",
        )
        with pytest.raises(ConfigError) as err:
            steering_of(make_plan(config), config, None)
    finally:
        path.unlink()
    msg = str(err.value)
    assert "found no scale that keeps the customer coherent" in msg and "--scales 0,0.1,0.25,0.5" in msg
    assert "frustration without @steer" in msg and "--user-format completion (" not in msg
