"""tau2 pieces that ``moodbench probe`` and ``steer calibrate`` need, without touching tau2 themselves.

A probe sends single agent turns exactly as a run's agent would (same system prompt, tool schemas,
tau2's greeting) and plays a fixed agent against the simulated customer for a few turns.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from tau2.orchestrator.orchestrator import DEFAULT_FIRST_AGENT_MESSAGE
from tau2.utils.llm_utils import to_litellm_messages

from moodbench.llm import ContextWindowError, LLMCallError, ModelClient, ModelSpec
from moodbench.sim._agent import EmptyReplyError, MoodbenchAgent
from moodbench.sim._tasks import known_domains
from moodbench.sim._tau2 import AssistantMessage, SystemMessage, Task, UserMessage, registry
from moodbench.sim._user import EmotionalUserSimulator

GREETING: str = str(DEFAULT_FIRST_AGENT_MESSAGE.content)  # tau2's fixed first agent message


def _user_tools(domain: str) -> list[Any] | None:
    env = registry.get_env_constructor(domain)()
    try:
        return env.get_user_tools() or None
    except Exception:  # noqa: BLE001 - tau2 raises when a domain has no user tools
        return None


def agent_setup(domain: str, tool_choice: str, client: ModelClient) -> tuple[str, list[dict[str, Any]], list[str]]:
    """System prompt, tool schemas and real tool names exactly as a run's agent would send them.

    Raises ``ValueError`` for an unknown domain (the message lists the known ones).
    """
    if domain not in known_domains():
        raise ValueError(f"unknown domain {domain!r}; valid domains: {', '.join(known_domains())}")
    env = registry.get_env_constructor(domain)()
    agent = MoodbenchAgent(
        tools=env.get_tools(),
        domain_policy=env.get_policy(),
        client=client,
        tool_choice=tool_choice,
        recover_text_tool_calls=False,
    )
    return agent.system_prompt, agent.tool_schemas, sorted(t.name for t in agent.tools)


def agent_turn_messages(system_prompt: str, history: Sequence[tuple[str, str]], message: str) -> list[dict[str, Any]]:
    """tau2's payload for one agent turn: system prompt, tau2's greeting, earlier exchange, the customer's message."""
    msgs: list[Any] = [SystemMessage(role="system", content=system_prompt), AssistantMessage(role="assistant", content=GREETING)]
    for role, text in history:
        msgs.append(
            UserMessage(role="user", content=text) if role == "user" else AssistantMessage(role="assistant", content=text)
        )
    msgs.append(UserMessage(role="user", content=message))
    return to_litellm_messages(msgs)


def customer_system_prompt(domain: str, task: Task, persona_block: str | None = None) -> str:
    """The simulated customer's exact system prompt for ``task`` (tau2's, plus the emotion block)."""
    user = EmotionalUserSimulator(
        tools=_user_tools(domain),
        instructions=str(task.user_scenario),
        persona_block=persona_block,
        client=ModelClient(ModelSpec(model="unused")),
    )  # never called
    return user.system_prompt


@dataclass
class CustomerReply:
    agent: str  # the agent turn the customer answered
    text: str | None = None
    tool_calls: list[str] | None = None  # names, when the customer acted instead of speaking
    empty: bool = False
    error: str | None = None
    finish_reason: str | None = None


def customer_replies(
    client: ModelClient,
    domain: str,
    task: Task,
    user_format: str,
    agent_turns: Sequence[str],
    persona_block: str | None = None,
    seed: int | None = None,
) -> Iterator[CustomerReply]:
    """The customer's reply to each fixed agent turn in order, as tau2 would ask for it; stops early
    on an empty reply, a failed request or a customer tool call (the fixed agent cannot follow)."""
    user = EmotionalUserSimulator(
        tools=_user_tools(domain),
        instructions=str(task.user_scenario),
        client=client,
        user_format=user_format,  # type: ignore[arg-type]
        persona_block=persona_block,
    )
    if seed is not None:
        user.set_seed(seed)
    state = user.get_init_state()
    for agent_text in agent_turns:
        try:
            message, state = user.generate_next_message(AssistantMessage(role="assistant", content=agent_text), state)
        except EmptyReplyError:
            yield CustomerReply(agent=agent_text, empty=True)
            return
        except (LLMCallError, ContextWindowError) as exc:
            yield CustomerReply(agent=agent_text, error=f"{type(exc).__name__}: {exc}"[:300])
            return
        if message.tool_calls:
            yield CustomerReply(agent=agent_text, tool_calls=[t.name for t in message.tool_calls])
            return
        yield CustomerReply(
            agent=agent_text, text=message.content or "", finish_reason=(message.raw_data or {}).get("finish_reason")
        )


def user_prompt_for(domain: str, task_id: str | None, persona_block: str | None) -> str:
    """The customer prompt a run would use for ``task_id`` (default: the domain's first task)."""
    from moodbench.sim._tasks import find_task

    return customer_system_prompt(domain, find_task(domain, task_id), persona_block)
