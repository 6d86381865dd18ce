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
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from moodbench._util.console import say
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


def _threads(servers: int) -> int | None:
    """CPU threads per llama-server when several share the machine (None: llama.cpp's default).

    Measured on 2 shared cores: servers that each take every core spin against each other in
    llama.cpp's thread barriers and decode at 1-4 tokens/s; with the cores divided, ~15 each.
    """
    if servers <= 1:
        return None
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, cores // servers)


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

    threads = _threads(len(names) + len(steering))
    servers: list[Any] = []
    try:
        by_model: dict[str, Any] = {}
        for name in sorted(names):
            path = resolve_model(name[len(LOCAL_PREFIX) :], console=console)
            say(console, f"starting local llama.cpp server for {name} ({path.name}) ...")
            server = LlamaCppServer(path, threads=threads, log_path=config.out / f"llamacpp-{name.split('/')[-1]}.log")
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
                threads=threads,
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
