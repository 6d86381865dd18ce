"""The tau2 adapter: the only package of moodbench that imports tau2.

tau2 supplies domains, tools, tasks, the orchestrator and the evaluator; this package composes
them with moodbench's agent and emotional customer (tau2 subclasses registered in tau2's
registry, configured by constructor arguments), pools environments, runs one conversation per
matrix cell, scores it with tau2's evaluator and returns a
:class:`moodbench.results.ConversationRecord`. It also reads and writes tau2's Results files.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from moodbench._util.defaults import USER_FORMATS
from moodbench.sim import _quiet  # noqa: F401  (first: quiets tau2 and litellm before anything imports them)

# Names are imported on first use (PEP 562): reading a tau2 Results file must not pay for tau2's
# registry and litellm (~5 s), which ``run_cell`` and the probes need.
_EXPORTS = {
    "RESPOND_TOOL": "_agent",
    "EmptyReplyError": "_agent",
    "MoodbenchAgent": "_agent",
    "ConversationSettings": "_conversation",
    "register": "_conversation",
    "prepare_process": "_conversation",
    "run_cell": "_conversation",
    "scenario_of": "_tasks",
    "domain_template": "_env_pool",
    "domain_tools": "_env_pool",
    "new_environment": "_env_pool",
    "export_tau2": "_interchange",
    "OutcomeInputs": "_outcome",
    "classify": "_outcome",
    "GREETING": "_probing",
    "CustomerReply": "_probing",
    "agent_setup": "_probing",
    "agent_turn_messages": "_probing",
    "customer_replies": "_probing",
    "customer_system_prompt": "_probing",
    "user_prompt_for": "_probing",
    "find_task": "_tasks",
    "known_domains": "_tasks",
    "load_domain_tasks": "_tasks",
    "task_needs_agent_tool": "_tasks",
    "OUT_OF_SCOPE_TOKEN": "_tau2",
    "STOP_TOKEN": "_tau2",
    "TRANSFER_TOKEN": "_tau2",
    "Task": "_tau2",
    "EmotionalUserSimulator": "_user",
    "BUILTIN_AGENT": "_plugins",
    "AgentChoice": "_plugins",
    "PluginError": "_plugins",
    "check_agent": "_plugins",
    "load_plugins": "_plugins",
    "resolve_agent": "_plugins",
}

if TYPE_CHECKING:
    from moodbench.sim._agent import RESPOND_TOOL, EmptyReplyError, MoodbenchAgent
    from moodbench.sim._conversation import ConversationSettings, prepare_process, register, run_cell
    from moodbench.sim._env_pool import domain_template, domain_tools, new_environment
    from moodbench.sim._interchange import export_tau2
    from moodbench.sim._outcome import OutcomeInputs, classify
    from moodbench.sim._plugins import BUILTIN_AGENT, AgentChoice, PluginError, check_agent, load_plugins, resolve_agent
    from moodbench.sim._probing import (
        GREETING,
        CustomerReply,
        agent_setup,
        agent_turn_messages,
        customer_replies,
        customer_system_prompt,
        user_prompt_for,
    )
    from moodbench.sim._tasks import find_task, known_domains, load_domain_tasks, scenario_of, task_needs_agent_tool
    from moodbench.sim._tau2 import OUT_OF_SCOPE_TOKEN, STOP_TOKEN, TRANSFER_TOKEN, Task
    from moodbench.sim._user import EmotionalUserSimulator


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "BUILTIN_AGENT",
    "GREETING",
    "OUT_OF_SCOPE_TOKEN",
    "RESPOND_TOOL",
    "STOP_TOKEN",
    "TRANSFER_TOKEN",
    "USER_FORMATS",
    "AgentChoice",
    "ConversationSettings",
    "CustomerReply",
    "EmotionalUserSimulator",
    "EmptyReplyError",
    "MoodbenchAgent",
    "OutcomeInputs",
    "PluginError",
    "Task",
    "agent_setup",
    "agent_turn_messages",
    "check_agent",
    "classify",
    "customer_replies",
    "customer_system_prompt",
    "domain_template",
    "domain_tools",
    "export_tau2",
    "find_task",
    "known_domains",
    "load_domain_tasks",
    "load_plugins",
    "new_environment",
    "register",
    "resolve_agent",
    "prepare_process",
    "run_cell",
    "scenario_of",
    "task_needs_agent_tool",
    "user_prompt_for",
]
