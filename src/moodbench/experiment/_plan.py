"""From a config to the matrix of cells: tasks resolved, variants parsed, shard applied.

Everything that can be wrong with the input is checked here, before any model is called.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from moodbench._util import defaults
from moodbench.emotions import Catalog, UnknownVariantError, VariantSpec, load_catalog
from moodbench.experiment._config import ConfigError, RunConfig
from moodbench.results import AgentImpl, Cell

if TYPE_CHECKING:
    from moodbench.sim import Task


@dataclass
class Plan:
    config: RunConfig
    catalog: Catalog
    variants: list[str]  # canonical specs, in the user's order
    specs: dict[str, VariantSpec]  # canonical spec -> parsed spec
    tasks: dict[tuple[str, str], Task]
    all_cells: list[Cell]
    cells: list[Cell]  # this shard's
    agent_impl: AgentImpl | None = None  # the agent class the conversations use (--agent), checked

    def planned(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for c in self.cells:
            out.setdefault(c.domain, {}).setdefault(c.variant, 0)
            out[c.domain][c.variant] += 1
        return out

    def meta(self) -> dict[str, Any]:
        """What the store keeps about the plan (summaries need the planned counts)."""
        return {
            "planned": self.planned(),
            "variants": self.variants,
            "domains": list(self.config.domains),
            "cells": len(self.cells),
            "all_cells": len(self.all_cells),
        }


def shard_cells(cells: list[Cell], index: int, count: int) -> list[Cell]:
    """Round-robin over the canonical order: every cell in exactly one shard, sizes differ by <= 1."""
    return [c for k, c in enumerate(cells) if k % count == index - 1]


def make_plan(config: RunConfig) -> Plan:
    """Resolve tasks (tau2 is imported here, not before) and variants; apply the shard."""
    from moodbench.sim import domain_tools, load_domain_tasks, load_plugins

    load_plugins(config.plugins)  # first: they may register the domains and the agent named below

    try:
        catalog = load_catalog(list(config.variants_file))
        specs = catalog.parse_many(config.variants)
    except UnknownVariantError as exc:
        raise ConfigError(str(exc)) from None
    variants = [s.canonical for s in specs]
    steered = [s.canonical for s in specs if s.steered]
    customer, _ = config.resolved_user_model()
    if steered and not customer.startswith("local/"):
        raise ConfigError(
            f"{', '.join(steered)} steer the customer with a llama.cpp control vector, which needs an embedded local/ "
            f"customer model (--user-model local/qwen2.5-0.5b); {customer} cannot be steered (vLLM and hosted APIs have "
            "no control vectors). Use the prompted variant instead (e.g. 'frustration' rather than 'frustration@steer')."
        )
    tasks: dict[tuple[str, str], Task] = {}
    order: list[tuple[str, str]] = []
    for domain in config.domains:
        available = load_domain_tasks(domain, config.task_split)
        if config.user_format == "completion" and domain_tools(domain)[1]:
            raise ConfigError(
                f"--user-format completion gives the customer no tools, and {domain!r} customers act on their "
                "own device; use --user-format tau2 (or transcript) for this domain"
            )
        by_id = {t.id: t for t in available}
        if config.task_ids is not None:
            twice = sorted({t for t in config.task_ids if config.task_ids.count(t) > 1})
            if twice:  # a repeated id would run the same cells twice and store them once
                raise ConfigError(f"task id(s) {', '.join(twice)} listed more than once; use --trials for repeats")
            missing = [t for t in config.task_ids if t not in by_id]
            if missing:
                ids = ", ".join(list(by_id)[:60]) + (" ..." if len(by_id) > 60 else "")
                raise ConfigError(f"unknown task id(s) {', '.join(missing)} in domain {domain!r}; valid ids: {ids}")
            chosen = [by_id[t] for t in config.task_ids]
        else:
            chosen = available[: config.num_tasks] if config.num_tasks else available
        for t in chosen:
            tasks[(domain, t.id)] = t
            order.append((domain, t.id))
    agent_impl = _check_agent(config)
    planned = len(order) * len(variants) * config.trials  # counted before a cell is built
    if planned > defaults.MAX_CELLS:
        raise ConfigError(
            f"the plan has {planned:,} conversations ({len(order)} task(s) x {len(variants)} variant(s) x "
            f"{config.trials} trial(s)), more than the {defaults.MAX_CELLS:,} one run can hold; fewer "
            "tasks or trials, or split the experiment into several runs"
        )
    # trial-major, then task, then variant: paired cells finish close together
    all_cells = [Cell(d, tid, v, trial) for trial in range(config.trials) for d, tid in order for v in variants]
    cells = all_cells
    if config.shard_index:
        i, n = config.shard_index
        cells = shard_cells(all_cells, i, n)
    return Plan(
        config=config,
        catalog=catalog,
        variants=variants,
        specs={s.canonical: s for s in specs},
        tasks=tasks,
        all_cells=all_cells,
        cells=cells,
        agent_impl=agent_impl,
    )


def _check_agent(config: RunConfig) -> AgentImpl:
    """The run's agent class, resolved and built once on the first domain (a bad one is exit 2 here)."""
    from moodbench.llm import ModelClient, ModelSpec
    from moodbench.sim import check_agent

    if config.agent is None:
        return check_agent(None, config.plugins, config.domains[0], None)
    spec = ModelSpec(
        model=config.agent_model,
        base_urls=tuple(config.agent_base_url),
        api_key_env=config.api_key_env,
        args=dict(config.agent_args),
        max_tokens=config.max_tokens,
        timeout_s=config.timeout_s,
        max_retries=config.max_retries,
    )
    return check_agent(config.agent, config.plugins, config.domains[0], ModelClient(spec), tool_choice=config.tool_choice)
