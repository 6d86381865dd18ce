"""The tau2 adapter: the only package of moodbench that imports tau2.

tau2 supplies domains, tools, tasks, the orchestrator and the evaluator; this package composes
them with moodbench's agent and emotional customer (tau2 subclasses registered in tau2's
registry, configured by constructor arguments), pools environments, runs one conversation per
matrix cell, scores it with tau2's evaluator and returns a
:class:`moodbench.results.ConversationRecord`. It also reads and writes tau2's Results files.
"""

from moodbench._util.defaults import USER_FORMATS
from moodbench.sim import _tau2  # noqa: F401  (first: quiets tau2 and litellm before anything imports them)
from moodbench.sim._agent import RESPOND_TOOL, EmptyReplyError, MoodbenchAgent
from moodbench.sim._conversation import ConversationSettings, register, run_cell, scenario_of
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
from moodbench.sim._tasks import find_task, known_domains, load_domain_tasks, task_needs_agent_tool
from moodbench.sim._tau2 import OUT_OF_SCOPE_TOKEN, STOP_TOKEN, TRANSFER_TOKEN, Task
from moodbench.sim._user import EmotionalUserSimulator

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
    "run_cell",
    "scenario_of",
    "task_needs_agent_tool",
    "user_prompt_for",
]
