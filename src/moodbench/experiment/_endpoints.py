"""Getting a run's endpoints ready: local llama.cpp servers started for ``local/NAME`` models, and stopped.

``moodbench run --agent-model local/qwen2.5-0.5b`` is one command on a laptop: one server per
distinct local model, the config pointed at it for the run, everything stopped afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from moodbench.experiment._config import RunConfig

if TYPE_CHECKING:
    from rich.console import Console

LOCAL_PREFIX = "local/"


def _say(console: Console | None, text: str) -> None:
    if console is not None:
        console.print(text, highlight=False)


def local_models(config: RunConfig) -> set[str]:
    return {m for m in (config.agent_model, config.user_model, config.judge_model) if m and m.startswith(LOCAL_PREFIX)}


@contextlib.contextmanager
def local_endpoints(config: RunConfig, console: Console | None) -> Iterator[RunConfig]:
    """Start one llama.cpp server per distinct ``local/NAME`` model and yield the config pointed at them.

    The config the caller keeps (its identity) still says ``local/NAME``, so a resumed run on
    another port is the same experiment.
    """
    names = local_models(config)
    if not names:
        yield config
        return
    from moodbench.serve.llamacpp import LlamaCppServer
    from moodbench.serve.models import resolve_model

    servers: dict[str, Any] = {}
    try:
        for name in sorted(names):
            path = resolve_model(name[len(LOCAL_PREFIX):], console=console)
            _say(console, f"starting local llama.cpp server for {name} ({path.name}) ...")
            server = LlamaCppServer(path, log_path=config.out / f"llamacpp-{name.split('/')[-1]}.log")
            server.start()
            servers[name] = server
            _say(console, f"  {name} served at {server.base_url}")
        updates: dict[str, Any] = {}
        for role in ("agent", "user", "judge"):
            model = getattr(config, f"{role}_model")
            if model in servers:
                updates[f"{role}_model"] = f"openai/{servers[model].model_name}"
                updates[f"{role}_base_url"] = [servers[model].base_url]
        if config.recover_text_tool_calls is None:
            updates["recover_text_tool_calls"] = True
        yield config.model_copy(update=updates)
    finally:
        for server in servers.values():
            server.stop()
