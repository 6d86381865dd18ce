"""The agent under test: tau2's LLMAgent, calling models through moodbench's model layer.

Subclassing keeps tau2's prompt, state and message protocol; only the model call changes, so that
tool_choice policy, retries, ``<think>`` stripping and text tool-call recovery apply to the agent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tau2.agent.llm_agent import LLMAgent
from tau2.utils.llm_utils import to_litellm_messages

from moodbench.llm import Completion, ModelClient
from moodbench.results import RoleStats
from moodbench.sim._env_pool import tool_schema
from moodbench.sim._tau2 import AssistantMessage, MultiToolMessage, ToolCall

# Under ``tool_choice=required`` every reply must be a tool call, so speaking to the customer is
# offered as one more tool. It never reaches tau2's environment: the agent turns it back into text.
RESPOND_TOOL = "respond_to_user"
RESPOND_SCHEMA: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": RESPOND_TOOL,
        "description": "Send a message to the customer. Use this whenever you want to talk to the customer instead of calling another tool.",
        "parameters": {
            "type": "object",
            "properties": {"message": {"type": "string", "description": "The message for the customer."}},
            "required": ["message"],
        },
    },
}


class MoodbenchAgent(LLMAgent):
    """tau2's agent with moodbench's model layer. Registered in tau2's registry as ``moodbench_agent``."""

    def __init__(
        self,
        tools,
        domain_policy: str,
        llm: str | None = None,
        llm_args: dict | None = None,
        *,
        client: ModelClient | None = None,
        tool_choice: str = "auto",
        recover_text_tool_calls: bool = True,
        between_tool_calls: Callable[[], object] | None = None,
    ):
        super().__init__(tools=tools, domain_policy=domain_policy, llm=llm, llm_args=llm_args)
        # Called before each model request, when no tool call of this conversation is running
        # (the environment gives back records its searches copied; see sim._env_pool).
        self.between_tool_calls = between_tool_calls
        if client is None:
            raise ValueError("MoodbenchAgent needs a ModelClient")
        self.client = client
        self.tool_choice = tool_choice
        self.recover_text_tool_calls = recover_text_tool_calls
        self.stats = RoleStats()
        self.seed: int | None = None
        # tau2 regenerates JSON schemas on every call; they never change within a conversation.
        self._schemas = [tool_schema(t) for t in self.tools]
        self._tool_names = {t.name for t in self.tools}
        if tool_choice == "required":
            self._schemas.append(RESPOND_SCHEMA)
        self.respond_tool_uses = 0

    @property
    def tool_schemas(self) -> list[dict[str, Any]]:
        """The tool schemas this agent sends (``respond_to_user`` included under ``required``)."""
        return list(self._schemas)

    def set_seed(self, seed: int) -> None:
        self.seed = seed

    def generate_next_message(self, message, state):
        if self.between_tool_calls is not None:
            self.between_tool_calls()
        if isinstance(message, MultiToolMessage):
            state.messages.extend(message.tool_messages)
        elif message is not None:
            state.messages.append(message)
        payload = to_litellm_messages(state.system_messages + state.messages)
        completion = self.client.complete(
            payload,
            tools=self._schemas or None,
            tool_choice=self.tool_choice if self._schemas else None,
            recover_text_tool_calls=self.recover_text_tool_calls,
            seed=self.seed,
        )
        self.stats.add(completion, self._tool_names | {RESPOND_TOOL})
        assistant = self._to_message(completion)
        state.messages.append(assistant)
        return assistant, state

    def _to_message(self, c: Completion) -> AssistantMessage:
        calls = [t for t in c.tool_calls if t.name != RESPOND_TOOL]
        spoken = [t for t in c.tool_calls if t.name == RESPOND_TOOL]
        content = c.content
        if spoken and not calls:
            self.respond_tool_uses += 1
            content = "\n".join(str(t.arguments.get("message", "")) for t in spoken).strip() or None
        raw_data = raw_record(c, content, invalid_json_arguments=[t.raw_arguments for t in c.tool_calls if not t.valid_json])
        usage = {"prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens}
        if calls:
            return AssistantMessage(
                role="assistant",
                content=None,
                tool_calls=[ToolCall(id=t.id, name=t.name, arguments=t.arguments, requestor="assistant") for t in calls],
                cost=c.cost_usd,
                usage=usage,
                raw_data=raw_data,
            )
        if not content:
            # tau2 refuses empty messages; after the client's retries this ends the conversation
            # with exit reason agent_error instead of inventing text on the model's behalf.
            raise EmptyReplyError("agent", c.raw_content)
        return AssistantMessage(role="assistant", content=content, cost=c.cost_usd, usage=usage, raw_data=raw_data)


def raw_record(c: Completion, shown: str | None, **extra: Any) -> dict[str, Any]:
    """What a message keeps of its completion beyond its text (tau2's ``raw_data``).

    The model's raw text is kept only when it differs from the text the message shows (``<think>``
    stripped, calls recovered from text), so a long reply is stored once, not twice.
    """
    return {
        "raw_content": c.raw_content if c.raw_content != shown else None,
        "think_stripped": c.think_stripped,
        "recovered_text_calls": c.recovered_text_calls,
        **extra,
        "finish_reason": c.finish_reason,
        "latency_s": round(c.latency_s, 4),
        "attempts": c.attempts,
        "endpoint": c.endpoint,
    }


class EmptyReplyError(RuntimeError):
    """A model kept answering with nothing (no text, no tool call) after the client's retries."""

    def __init__(self, role: str, raw: str | None, detail: str = "returned an empty reply"):
        super().__init__(f"the {role} model {detail} (raw: {raw!r:.200})")
        self.role = role
