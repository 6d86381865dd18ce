"""Getting a run's endpoints ready: embedded llama.cpp servers for ``local/NAME`` models and steered customers.

``moodbench run --agent-model local/qwen2.5-0.5b`` is one command on a laptop: one server per
distinct local model, the config pointed at it for the run, everything stopped afterwards.

A steered variant (``frustration@steer``) gets a server of its own: llama.cpp applies a control
vector to everything a server generates, so the vector (built once and cached, see
:mod:`moodbench.steer`) and its calibrated scale for the variant's level are loaded into a separate
``llama-server`` that only that variant's customer talks to. The agent is never steered (it keeps the
unsteered server, even when agent and customer are the same model).
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from moodbench._util.console import say
from moodbench._util.cores import usable_cores
from moodbench.experiment._config import ConfigError, RunConfig
from moodbench.results import Steering

if TYPE_CHECKING:
    from rich.console import Console

    from moodbench.experiment._plan import Plan

LOCAL_PREFIX = "local/"


@dataclass(frozen=True)
class SteeredCustomer:
    """Where one steered variant's customer is served, and what was added to its activations."""

    variant: str
    base_url: str
    model_name: str
    steering: Steering


@dataclass
class Endpoints:
    """The run's config pointed at running servers, and the steered customers' servers by variant."""

    config: RunConfig
    steered: dict[str, SteeredCustomer] = field(default_factory=dict)


def local_models(config: RunConfig) -> set[str]:
    return {m for m in (config.agent_model, config.user_model, config.judge_model) if m and m.startswith(LOCAL_PREFIX)}


def server_loads(config: RunConfig, plan: Plan | None, steered: Iterable[str]) -> dict[str, int]:
    """How many conversation roles each local server will play: ``{server: count}``.

    A server is a ``local/NAME`` model or a steered variant. Every cell counts once for its agent
    (the agent model's server) and once for its customer (the variant's own server when steered, else
    the customer model's). Without a plan, one cell of each role. Roles on remote models count nowhere.
    """
    steered = set(steered)
    cells = [c.variant for c in plan.cells] if plan is not None else [""]
    agent, user = config.agent_model, config.resolved_user_model()[0]
    loads: dict[str, int] = {}
    for variant in cells:
        roles = [agent, variant if variant in steered else user]
        for server in roles:
            if server in steered or server.startswith(LOCAL_PREFIX):
                loads[server] = loads.get(server, 0) + 1
    for name in local_models(config):  # a local judge alone still gets a server
        loads.setdefault(name, 0)
    return loads


def divide_threads(loads: dict[str, int], cores: int) -> dict[str, int | None]:
    """CPU threads per llama-server, by the share of the run's roles each serves (None: llama.cpp's default).

    Why shares: llama.cpp's threads spin at barriers, so two servers that each take every core both crawl
    when busy at once (measured on 2 cores: 1-4 tokens/s instead of ~15 each; and 1.1 tokens/s per slot
    with two 2-thread servers). But an even split wastes a core when one server does most of the work: in
    ``./demo`` the unsteered server plays the agent of every conversation and two customers in three,
    and with one thread each it generated 14.7 tokens/s while the steered server mostly waited; with two
    threads for it and one for the steered customer, 24.2 (benchmarks/README.md, "First contact"). A
    one-thread server never waits at a barrier, so it may take the core count one over: each
    server gets ``round(cores * share)`` threads (at least 1), then the largest give threads back until
    the total is at most ``cores + 1``.
    """
    if len(loads) <= 1:
        return dict.fromkeys(loads)
    weights = loads if any(loads.values()) else dict.fromkeys(loads, 1)
    total = sum(weights.values())
    threads = {k: max(1, math.floor(cores * v / total + 0.5)) for k, v in weights.items()}
    while sum(threads.values()) > cores + 1 and max(threads.values()) > 1:
        biggest = max(threads, key=lambda k: threads[k])
        threads[biggest] -= 1
    return dict(threads)


def steering_of(plan: Plan, config: RunConfig, console: Console | None) -> dict[str, tuple[Any, Steering]]:
    """Per steered variant: the control vector (built or cached) and the scale its level calibrates to.

    Refused (exit 2) when the customer model's calibration for the run's customer format is missing
    or found no coherent scale: an uncalibrated scale would be a guess about how much emotion reaches
    the customer.
    """
    from moodbench.steer import build_vector, load_calibration

    customer = config.resolved_user_model()[0][len(LOCAL_PREFIX) :]
    out: dict[str, tuple[Any, Steering]] = {}
    for variant, spec in plan.specs.items():
        part = spec.steered
        if part is None:
            continue
        vec = build_vector(customer, part.name, catalog=plan.catalog, console=console)
        cal = load_calibration(vec, config.user_format)
        fix = (
            f"`moodbench steer calibrate --model {customer} --emotion {part.name} --format {config.user_format}` "
            "maps mild/moderate/severe to scales"
        )
        if cal is None:
            raise ConfigError(
                f"{variant}: no calibration of the {part.name} vector for {customer} with --user-format "
                f"{config.user_format}; run {fix}, then this command again"
            )
        levels = cal.get("levels") or {}
        if part.level not in levels:
            other = (
                "steer it with --user-format completion (measured to keep small models in role), "
                if config.user_format != "completion"
                else f"calibrate smaller scales (`moodbench steer calibrate --model {customer} --emotion {part.name} "
                "--format completion --scales 0,0.1,0.25,0.5`) or other layers (--layers A-B), "
            )
            raise ConfigError(
                f"{variant}: calibrating the {part.name} vector for {customer} with --user-format "
                f"{config.user_format} found no scale that keeps the customer coherent; {other}"
                f"or prompt the emotion ({part.name} without @steer)"
            )
        scale = float(levels[part.level])
        out[variant] = (
            vec,
            Steering(
                emotion=part.name,
                vector_sha256=vec.sha256,
                scale=scale,
                layers=(vec.layers[0], vec.layers[1]),
                method=vec.method,
                vector=str(vec.vector),
            ),
        )
    return out


@contextlib.contextmanager
def local_endpoints(config: RunConfig, console: Console | None, plan: Plan | None = None) -> Iterator[Endpoints]:
    """Start one llama.cpp server per distinct ``local/NAME`` model and one per steered variant, and
    yield the config pointed at them (the caller's config keeps the ``local/NAME`` form, so a resumed
    run on other ports is the same experiment)."""
    names = local_models(config)
    steering = steering_of(plan, config, console) if plan is not None and any(s.steered for s in plan.specs.values()) else {}
    if not names and not steering:
        yield Endpoints(config)
        return
    from moodbench.serve.llamacpp import LlamaCppServer
    from moodbench.serve.models import resolve_model

    threads = divide_threads(server_loads(config, plan, steering), usable_cores())
    servers: list[Any] = []
    try:
        by_model: dict[str, Any] = {}
        for name in sorted(names):
            path = resolve_model(name[len(LOCAL_PREFIX) :], console=console)
            say(console, f"starting local llama.cpp server for {name} ({path.name}) ...")
            server = LlamaCppServer(path, threads=threads.get(name), log_path=config.out / f"llamacpp-{name.split('/')[-1]}.log")
            server.start()
            servers.append(server)
            by_model[name] = server
            say(console, f"  {name} served at {server.base_url}")
        steered: dict[str, SteeredCustomer] = {}
        for variant, (vec, info) in steering.items():
            say(
                console,
                f"starting the steered customer for {variant} ({info.emotion} vector {info.vector_sha256[:12]}, "
                f"scale {info.scale:g}, layers {info.layers_text}) ...",
            )
            server = LlamaCppServer(
                vec.model_path,
                threads=threads.get(variant),
                control_vectors=[(vec.vector, info.scale)],
                control_vector_layers=vec.layers,
                log_path=config.out / f"llamacpp-steer-{re.sub(r'[^A-Za-z0-9._-]+', '_', variant)}.log",
            )
            server.start()
            servers.append(server)
            steered[variant] = SteeredCustomer(variant, server.base_url, server.model_name, info)
            say(console, f"  {variant}'s customer served at {server.base_url}")
        updates: dict[str, Any] = {}
        for role in ("agent", "user", "judge"):
            model = getattr(config, f"{role}_model")
            if model in by_model:
                updates[f"{role}_model"] = f"openai/{by_model[model].model_name}"
                updates[f"{role}_base_url"] = [by_model[model].base_url]
        if names and config.recover_text_tool_calls is None:
            updates["recover_text_tool_calls"] = True
        yield Endpoints(config.model_copy(update=updates), steered)
    finally:
        for server in servers:
            server.stop()
