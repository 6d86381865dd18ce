"""Your agent, your domain: user plugin modules and user tau2 agent classes.

tau2's extension points are its registry (``registry.register_agent``, ``register_domain``,
``register_tasks``) and its agent base class (:class:`tau2.agent.base.BaseAgent`). moodbench composes
with exactly those: a *plugin* is a Python module the user names (``--plugin mypkg.tau2_plugin``)
whose import registers agents, domains and task sets in tau2's registry; an *agent* is a tau2 agent
class, given as ``package.module:Class`` or as a name a plugin registered.

Nothing is imported because of global or environment state: plugins are imported only here, only
when a config (or a command's ``--plugin`` option) names them. Workers (processes, Ray) receive the
module names, never objects, and import them the same way, so a plugin's registrations exist in
every process that runs a conversation. Every way a plugin can be bad (not importable, raising at
import, a class that is no tau2 agent, a constructor that raises, a name nobody registered) is a
:class:`PluginError`: the CLI's exit 2, with the plugin and the problem named.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import re
import sys
import threading
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from tau2.agent.base import BaseAgent
from tau2.agent.llm_agent import LLMGTAgent, LLMSoloAgent
from tau2.orchestrator.orchestrator import DEFAULT_FIRST_AGENT_MESSAGE

from moodbench._util.errors import UsageError
from moodbench.llm import ModelClient
from moodbench.results import AgentImpl, RoleStats
from moodbench.sim._tau2 import AssistantMessage, registry

BUILTIN_AGENT = "moodbench_agent"
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_QUALNAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
# Constructor arguments moodbench fills by name (tau2's own agents take the first four).
AGENT_ARGS = ("tools", "domain_policy", "llm", "llm_args", "client", "tool_choice", "recover_text_tool_calls")
_lock = threading.RLock()
_loaded: set[str] = set()  # plugin modules whose import has completed in this process


class PluginError(UsageError):
    """A plugin module or agent class that cannot be used; the message names it, the problem and the fix."""


def _where(exc: BaseException) -> str:
    """``file:line`` of the innermost frame of ``exc`` (where a plugin's code raised)."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""


def _import(name: str, what: str) -> Any:
    """Import module ``name`` for ``what`` (e.g. "plugin 'x'"), every failure a :class:`PluginError`."""
    if not _MODULE.match(name):
        hint = (
            " (give a module name, not a file path: put its folder on PYTHONPATH)" if "/" in name or name.endswith(".py") else ""
        )
        raise PluginError(f"{what}: {name!r} is not a Python module name{hint}; example: mypkg.tau2_plugin")
    with _lock:
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
                raise PluginError(
                    f"{what}: no module named {name!r} on this Python's path; install its package, or put the "
                    f"folder that holds it on PYTHONPATH (workers import it by name too)"
                ) from None
            raise PluginError(f"{what}: importing {name!r} failed: {type(exc).__name__}: {exc}{_where(exc)}") from None
        except Exception as exc:  # noqa: BLE001 - any error in user code at import is the plugin's problem
            raise PluginError(f"{what}: importing {name!r} raised {type(exc).__name__}: {exc}{_where(exc)}") from None


def load_plugins(names: Sequence[str]) -> None:
    """Import the plugin modules ``names`` (in order; a module already imported is not imported again),
    so whatever they register in tau2's registry (agents, domains, task sets) exists in this process."""
    for name in names:
        # Every conversation asks; only the first import in a process does work. The check is against
        # the names whose import *finished*: ``sys.modules`` holds a module while another thread is still
        # executing it, and a conversation that trusted it found the plugin's domain not yet registered.
        if name not in _loaded:
            with _lock:
                if name not in _loaded:
                    _import(name, f"plugin {name!r}")
                    _loaded.add(name)


def module_sha256(module: Any) -> str | None:
    """sha256 of a module's source file (a package: its ``__init__``), the identity of unreleased code."""
    path = getattr(module, "__file__", None)
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else None
    except OSError:
        return None


def _distribution_version(module_name: str) -> str | None:
    """``dist version`` of the installed distribution that provides ``module_name``'s top package, if any."""
    top = module_name.split(".")[0]
    try:  # most often a distribution is named as its package (moodbench itself): one look-up, no scan of every one
        named = metadata.distribution(top)
        if top in (named.read_text("top_level.txt") or "").split():
            return f"{named.metadata['Name']} {named.version}"
    except Exception:  # noqa: BLE001 - not found, or unreadable metadata: the full scan below decides
        pass
    try:  # the scan reads every installed distribution's file list (~0.2-0.4 s in a large environment)
        dists = metadata.packages_distributions().get(top) or []
    except Exception:  # noqa: BLE001 - broken metadata of an unrelated package must not stop a run
        return None
    for dist in dists:
        try:
            return f"{dist} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    return None


@dataclass(frozen=True)
class AgentChoice:
    """The agent class a run uses, resolved: what the user named, the class, and its identity."""

    name: str  # as given: a registry name or package.module:Class
    cls: type[BaseAgent]
    impl: AgentImpl

    @property
    def builtin(self) -> bool:
        return self.name == BUILTIN_AGENT


def _describe(name: str, cls: type) -> AgentImpl:
    module = sys.modules.get(cls.__module__)
    version = _distribution_version(cls.__module__)
    if version is None and module is not None:
        version = getattr(module, "__version__", None)
        version = f"{cls.__module__.split('.')[0]} {version}" if isinstance(version, str) else None
    return AgentImpl(
        name=name,
        cls=f"{cls.__module__}:{cls.__qualname__}",
        version=version,
        sha256=module_sha256(module) if module is not None else None,
    )


def _check_class(what: str, cls: Any) -> type[BaseAgent]:
    if not inspect.isclass(cls):
        raise PluginError(
            f"{what} is a {type(cls).__name__}, not a class; give a tau2 agent class "
            "(a subclass of tau2.agent.base.BaseAgent, e.g. of tau2.agent.llm_agent.LLMAgent)"
        )
    if not issubclass(cls, BaseAgent):
        raise PluginError(
            f"{what} ({cls.__module__}.{cls.__qualname__}) is not a tau2 agent: it must subclass "
            "tau2.agent.base.BaseAgent (e.g. tau2.agent.llm_agent.LLMAgent or tau2.agent.base.LocalAgent)"
        )
    if issubclass(cls, (LLMSoloAgent, LLMGTAgent)):
        raise PluginError(
            f"{what} is a tau2 solo or ground-truth agent ({cls.__qualname__}): those are given the task's "
            "solution or play without a customer, and moodbench measures an agent talking with a customer; "
            "use an agent that takes (tools, domain_policy)"
        )
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(getattr(cls, "__abstractmethods__", ())))
        raise PluginError(f"{what} ({cls.__qualname__}) is abstract: it does not implement {missing}")
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unfilled = [
        p.name
        for p in params.values()
        if p.default is inspect.Parameter.empty
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        and p.name not in AGENT_ARGS
    ]
    if unfilled:
        raise PluginError(
            f"{what} ({cls.__qualname__}) needs constructor argument(s) {', '.join(unfilled)} that moodbench "
            f"cannot fill; it passes {', '.join(AGENT_ARGS)} by name (see README: Your own agent or domain)"
        )
    if params and not var_kw and not {"tools", "domain_policy"} <= set(params):
        raise PluginError(f"{what} ({cls.__qualname__}) must accept tools and domain_policy, as tau2's agents do")
    return cls


@functools.lru_cache(maxsize=32)
def resolve_agent(name: str | None, plugins: tuple[str, ...] = ()) -> AgentChoice:
    """The agent class named ``name`` (None: moodbench's own), after importing ``plugins``.

    ``package.module:Class`` is imported directly; any other name is looked up in tau2's registry,
    where tau2's own agents and whatever the plugins registered are. Cached per process.
    """
    from moodbench.sim._conversation import register

    register()
    load_plugins(plugins)
    name = name or BUILTIN_AGENT
    if ":" in name:
        module_name, _, qualname = name.partition(":")
        what = f"agent {name!r}"
        if not _QUALNAME.match(qualname):
            raise PluginError(f"{what}: {qualname!r} is not a class name; write package.module:Class")
        obj: Any = _import(module_name, what)
        for part in qualname.split("."):
            if not hasattr(obj, part):
                raise PluginError(f"{what}: module {module_name!r} has no {qualname!r}")
            obj = getattr(obj, part)
        cls = _check_class(what, obj)
    else:
        if name not in registry.get_agents():
            hint = " (a plugin named with --plugin may register it)" if not plugins else f" after importing {', '.join(plugins)}"
            raise PluginError(
                f"agent {name!r} is not registered in tau2's registry{hint}; registered agents: "
                f"{', '.join(registry.get_agents())}; or give the class as package.module:Class"
            )
        cls = _check_class(f"agent {name!r}", registry.get_agent_constructor(name))
    return AgentChoice(name=name, cls=cls, impl=_describe(name, cls))


def agent_kwargs(
    cls: type,
    tools: list[Any],
    domain_policy: str,
    client: ModelClient,
    *,
    tool_choice: str = "auto",
    recover_text_tool_calls: bool = False,
) -> dict[str, Any]:
    """The constructor arguments moodbench gives a user's agent class, by name (see README).

    ``tools`` and ``domain_policy`` as tau2 gives them; ``llm`` (the agent model's litellm string) and
    ``llm_args`` (its base URL, key, timeout, max_tokens, retries and ``--agent-args``) for classes that
    call models themselves, as tau2's ``LLMAgent`` does; ``client``, moodbench's model layer for the
    agent model, to classes that ask for it by name; ``tool_choice`` and ``recover_text_tool_calls`` (the run's
    ``--tool-choice`` and ``--recover-text-tool-calls``) to classes that name them, as moodbench's own agent does.
    """
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs: dict[str, Any] = {"tools": tools, "domain_policy": domain_policy}
    if "llm" in params or var_kw:
        kwargs["llm"] = client.spec.model
    if "llm_args" in params or var_kw:
        kwargs["llm_args"] = client.litellm_args()
    if "client" in params:
        kwargs["client"] = client
    if "tool_choice" in params:
        kwargs["tool_choice"] = tool_choice
    if "recover_text_tool_calls" in params:
        kwargs["recover_text_tool_calls"] = recover_text_tool_calls
    return kwargs


def construct_agent(
    choice: AgentChoice,
    tools: list[Any],
    domain_policy: str,
    client: ModelClient,
    *,
    tool_choice: str = "auto",
    recover_text_tool_calls: bool = False,
) -> BaseAgent:
    """An instance of the user's agent class; a constructor that raises is a :class:`PluginError`."""
    kwargs = agent_kwargs(
        choice.cls, tools, domain_policy, client, tool_choice=tool_choice, recover_text_tool_calls=recover_text_tool_calls
    )
    try:
        return choice.cls(**kwargs)
    except Exception as exc:  # noqa: BLE001 - the user's constructor: any error is theirs to fix
        raise PluginError(
            f"agent {choice.name!r} ({choice.impl.cls}): its constructor raised {type(exc).__name__}: "
            f"{client.redact(str(exc))}{_where(exc)}"
        ) from None


def message_stats(messages: list[Any], tool_names: set[str]) -> RoleStats:
    """The agent's accounting read from its messages, for agent classes that call models themselves
    (moodbench's own agent counts every call as it makes it): replies, tokens and cost as the class
    reported them on its messages, tool calls and calls to tools that do not exist."""
    stats = RoleStats()
    for i, m in enumerate(messages):
        if not isinstance(m, AssistantMessage) or (i == 0 and m.content == DEFAULT_FIRST_AGENT_MESSAGE.content):
            continue  # tau2's fixed greeting is no model reply
        stats.llm_calls += 1
        stats.attempts += 1  # retries inside the class are not visible here
        usage = m.usage or {}
        stats.prompt_tokens += int(usage.get("prompt_tokens") or 0)
        stats.completion_tokens += int(usage.get("completion_tokens") or 0)
        stats.cost_usd += float(m.cost or 0.0)
        calls = m.tool_calls or []
        stats.tool_calls += len(calls)
        stats.unknown_tool_calls += sum(1 for c in calls if c.name not in tool_names)
        stats.empty_replies += int(not calls and not (m.content or "").strip())
    return stats


def check_agent(
    name: str | None, plugins: Sequence[str], domain: str, client: ModelClient | None, *, tool_choice: str = "auto"
) -> AgentImpl:
    """Resolve the run's agent and build it once on ``domain``'s tools and policy, before anything runs, so a
    bad class or a constructor that raises is exit 2 at once instead of a failed conversation per cell."""
    from moodbench.sim._env_pool import domain_tools, new_environment

    choice = resolve_agent(name, tuple(plugins))
    if not choice.builtin:
        if client is None:
            raise ValueError("check_agent needs the agent model's client to build a user's agent class")
        if tool_choice != "auto" and "tool_choice" not in inspect.signature(choice.cls).parameters:
            raise PluginError(
                f"--tool-choice {tool_choice} is applied by the agent, and agent {name!r} ({choice.impl.cls}) "
                "takes no tool_choice argument; drop --tool-choice, or accept tool_choice in its constructor "
                "(moodbench's own agent does)"
            )
        tools, _ = domain_tools(domain)
        construct_agent(choice, tools, new_environment(domain).get_policy(), client, tool_choice=tool_choice)
    return choice.impl
