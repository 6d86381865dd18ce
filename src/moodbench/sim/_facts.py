"""The task facts a record carries for the failure anatomy (:class:`moodbench.results.TaskFacts`).

Built here because only ``moodbench.sim`` may read tau2 tasks and environments; the report then needs
neither tau2 nor the task files, also for imported runs.

* **gold actions**: the task's ``evaluation_criteria.actions``, each marked ``write`` when tau2 types
  its tool ``ToolType.WRITE`` on its side (agent or user tools).
* **write calls**: every tool call the agent made to a WRITE tool, and whether it matches one of the
  agent's gold actions by tau2's own ``Action.compare_with_tool_call`` (name, then the gold's
  ``compare_args``). A write call matching no gold action is "giving in beyond policy" (an unrequested
  refund, a cancellation nobody asked for).
* **scenario facts**: what the customer was told and the agent needs, read from tau2's task data: every
  string value of an agent gold action's arguments that the customer's scenario (reason for call, known
  info, task instructions; never ``unknown_info``) states verbatim. ``user_id``, ``email`` and
  ``first_name`` + ``last_name`` + ``zip`` are folded into one *identity* fact (any one of them
  delivers it); values with a digit are *ids* (order, item, task ids), the rest *values* (a title, a
  status). Each agent gold write adds a *change* fact: its verb (``exchange_delivered_order_items`` ->
  exchange) or a documented synonym (:data:`CHANGE_WORDS`) must be said.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import Any

from tau2.data_model.message import AssistantMessage  # data models and environments only: no registry, no litellm
from tau2.data_model.tasks import Task
from tau2.environment.environment import Environment
from tau2.environment.toolkit import ToolType

from moodbench.results import GoldAction, ScenarioFact, TaskFacts, WriteCall
from moodbench.results._facts import mentions

#: words that state a requested change, by the first word of the gold write tool's name (tau2's naming);
#: a verb not listed must be said itself.
CHANGE_WORDS: dict[str, tuple[str, ...]] = {
    "exchange": ("exchange", "swap", "replace"),
    "return": ("return", "refund", "send back"),
    "cancel": ("cancel", "cancellation"),
    "modify": ("modify", "change", "update", "switch"),
    "update": ("update", "change", "mark", "set"),
    "create": ("create", "add", "new"),
    "book": ("book", "reserve", "reservation"),
    "send": ("send", "compensation", "certificate"),
    "delete": ("delete", "remove"),
    "transfer": ("transfer", "human", "agent"),
}
_IDENTITY_KEYS = ("user_id", "email")
_NAME_ZIP = ("first_name", "last_name", "zip")
MIN_FACT_LEN = 3  # shorter strings ("1", "no") are stated by accident


def scenario_text(task: Task) -> str:
    """What the customer was told about its situation (tau2's user scenario, without ``unknown_info``)."""
    instructions = task.user_scenario.instructions
    if isinstance(instructions, str):
        return instructions
    return " ".join(str(getattr(instructions, f, "") or "") for f in ("reason_for_call", "known_info", "task_instructions"))


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


def _gold(task: Task) -> list[Any]:
    crit = task.evaluation_criteria
    return list(crit.actions or []) if crit is not None else []


def _is_write(env: Environment, requestor: str, name: str) -> bool:
    toolkit = env.tools if requestor == "assistant" else env.user_tools
    return toolkit is not None and toolkit.has_tool(name) and toolkit.tool_type(name) == ToolType.WRITE


def scenario_facts(task: Task, write_names: Sequence[str]) -> list[ScenarioFact]:
    """The facts of :mod:`this module's docstring <moodbench.sim._facts>`, in gold-action order."""
    text = scenario_text(task)
    told: dict[str, str] = {}  # value -> argument name, values the scenario states
    for action in _gold(task):
        if action.requestor != "assistant":
            continue
        for key, value in action.arguments.items():
            for s in _strings(value):
                if len(s.strip()) >= MIN_FACT_LEN and s not in told and mentions(text, s):
                    told[s] = key
    facts: list[ScenarioFact] = []
    identity = [[v] for v, k in told.items() if k in _IDENTITY_KEYS]
    name_zip = [next((v for v, k in told.items() if k == key), None) for key in _NAME_ZIP]
    if all(name_zip):
        identity.append([v for v in name_zip if v])
    if identity:
        facts.append(
            ScenarioFact(
                kind="identity", label="identity (" + " or ".join(" + ".join(a) for a in identity) + ")", any_of=identity
            )
        )
    used = {v for alt in identity for v in alt}
    for value, key in told.items():
        if value in used or key in _IDENTITY_KEYS or key in _NAME_ZIP:
            continue
        kind = "id" if any(ch.isdigit() for ch in value) and not any(ch.isspace() for ch in value) else "value"
        facts.append(ScenarioFact(kind=kind, label=f"{key} {value}", any_of=[[value]]))
    verbs = dict.fromkeys(name.split("_")[0] for name in write_names)
    for verb in verbs:
        words = CHANGE_WORDS.get(verb, (verb,))
        facts.append(ScenarioFact(kind="change", label=f"requested change: {verb}", any_of=[[w] for w in words]))
    return facts


def write_calls(messages: Sequence[Any], task: Task, env: Environment) -> list[WriteCall]:
    """The agent's WRITE-tool calls in ``messages`` (tau2 message objects), each judged against the gold."""
    gold = [a for a in _gold(task) if a.requestor == "assistant"]
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, AssistantMessage) or not m.tool_calls:
            continue
        for tc in m.tool_calls:
            if _is_write(env, "assistant", tc.name):
                out.append(WriteCall(name=tc.name, message_index=i, gold=any(a.compare_with_tool_call(tc) for a in gold)))
    return out


@lru_cache(maxsize=16)
def _typing_environment(domain: str) -> Environment | None:
    """An environment used only to ask tool types (imported runs have none of their own), or None for a
    domain nobody registered. A built-in domain is built by tau2's own constructor for it
    (``tau2.domains.<domain>.environment.get_environment``, what tau2's registry registers), so reading a
    Results file never loads the registry, which imports litellm (~5 s); a plugin's domain through the registry."""
    try:
        builtin = importlib.util.find_spec(f"tau2.domains.{domain}.environment") is not None
    except (ImportError, ValueError):
        builtin = False
    if builtin:
        return importlib.import_module(f"tau2.domains.{domain}.environment").get_environment()
    from moodbench.sim._tasks import known_domains

    if domain not in known_domains():
        return None
    from moodbench.sim._env_pool import new_environment

    return new_environment(domain)


def task_facts(task: Task, messages: Sequence[Any], env: Environment | None = None, domain: str | None = None) -> TaskFacts:
    """The :class:`TaskFacts` of one conversation. ``env``: the conversation's environment (tool types are
    asked of it); without one, a shared environment of ``domain`` answers."""
    if env is None:
        if domain is None:
            raise ValueError("task_facts needs an environment or a domain")
        env = _typing_environment(domain)
        if env is None:
            raise ValueError(f"no tau2 domain {domain!r} to ask tool types of")
    gold = [
        GoldAction(name=a.name, requestor=a.requestor, arguments=dict(a.arguments), write=_is_write(env, a.requestor, a.name))
        for a in _gold(task)
    ]
    writes = [a.name for a in gold if a.write and a.requestor == "assistant"]
    return TaskFacts(gold_actions=gold, facts=scenario_facts(task, writes), write_calls=write_calls(messages, task, env))
