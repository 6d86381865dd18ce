"""A run with everything around it: local model servers started and stopped, preflight checks.

``run_experiment`` only talks to endpoints; this module gets the endpoints ready first, so
``moodbench run --agent-model local/qwen2.5-0.5b`` is one command on a laptop.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from rich.console import Console

from moodbench.config import RunConfig
from moodbench.runner import LOCAL_PREFIX, RunResult, check_environment, run_experiment


@contextlib.contextmanager
def local_endpoints(config: RunConfig, console: Console) -> Iterator[RunConfig]:
    """Start one llama.cpp server per distinct ``local/NAME`` model and point the config at it."""
    names = {m for m in (config.agent_model, config.user_model, config.judge_model) if m and m.startswith(LOCAL_PREFIX)}
    if not names:
        yield config
        return
    from moodbench.serve.llamacpp import LlamaCppServer
    from moodbench.serve.models import resolve_model

    servers = {}
    try:
        for name in sorted(names):
            path = resolve_model(name[len(LOCAL_PREFIX):], console=console)
            console.print(f"starting local llama.cpp server for {name} ({path.name}) ...")
            server = LlamaCppServer(path, log_path=config.out / f"llamacpp-{name.split('/')[-1]}.log")
            server.start()
            servers[name] = server
            console.print(f"  {name} served at {server.base_url}")
        updates = {}
        for role in ("agent", "user", "judge"):
            model = getattr(config, f"{role}_model")
            if model in servers:
                updates[f"{role}_model"] = f"openai/{servers[model].model_name}"
                updates[f"{role}_base_url"] = [servers[model].base_url]
        if config.recover_text_tool_calls is None:
            updates["recover_text_tool_calls"] = True
        # identity keeps the local/NAME form, so a resumed run on another port is the same experiment
        yield config.model_copy(update=updates)
    finally:
        for server in servers.values():
            server.stop()


def run_with_models(config: RunConfig, *, console: Console, force_config: bool = False) -> RunResult:
    from moodbench.plan import make_plan

    check_environment(config)
    make_plan(config)  # every input error surfaces before a server starts
    from moodbench.preflight import run_preflight

    with local_endpoints(config, console) as ready:
        return run_experiment(ready, console=console, force_config=force_config, preflight=run_preflight,
                              identity_config=config)
