"""The simulated customer: tau2's UserSimulator with an emotional state, chosen per simulation.

The emotion arrives as a constructor argument (the persona block), never through globals, env
vars or context variables, so it reaches the model in every thread and process. The block is
appended after tau2's prompt, which therefore stays a byte-for-byte prefix: the control prompt *is*
tau2's prompt, and every emotional prompt can be audited against it.
"""

from __future__ import annotations

from collections.abc import Callable

from tau2.user.user_simulator import UserSimulator
from tau2.utils.llm_utils import to_litellm_messages

from moodbench._util.defaults import UserFormat
from moodbench.judges import render_transcript
from moodbench.llm import Completion, ModelClient
from moodbench.results import RoleStats
from moodbench.sim._agent import EmptyReplyError, raw_record
from moodbench.sim._completion import clean_completion_reply, render_completion_prompt
from moodbench.sim._env_pool import tool_schema
from moodbench.sim._tau2 import MultiToolMessage, ToolCall, ToolMessage, UserMessage

TRANSCRIPT_LABELS = {"user": "Customer (you)", "assistant": "Agent", "tool": "Result of your action"}
TRANSCRIPT_INSTRUCTION = (
    "Above is the conversation so far between you (the customer) and the customer service agent. "
    "Write your next message to the agent, as the customer described in your instructions. "
    "Reply with the message text only."
)


class EmotionalUserSimulator(UserSimulator):
    """Registered in tau2's registry as ``moodbench_user``."""

    def __init__(
        self,
        tools=None,
        instructions=None,
        llm: str | None = None,
        llm_args: dict | None = None,
        *,
        persona_block: str | None = None,
        client: ModelClient | None = None,
        user_format: UserFormat = "tau2",
        between_tool_calls: Callable[[], object] | None = None,
    ):
        super().__init__(tools=tools, instructions=instructions, llm=llm, llm_args=llm_args)
        if user_format == "completion" and tools:
            raise ValueError(
                "the completion user format gives the customer no tools, and this domain's customers act "
                "on their own device (telecom): use --user-format tau2 or transcript here"
            )
        if client is None:
            raise ValueError("EmotionalUserSimulator needs a ModelClient")
        self.persona_block = persona_block
        self.client = client
        self.between_tool_calls = between_tool_calls  # as MoodbenchAgent's
        self.user_format = user_format
        self.stats = RoleStats()
        self.seed: int | None = None
        self._schemas = [tool_schema(t) for t in tools] if tools else None
        self._tool_names = {t.name for t in tools} if tools else set()

    @property
    def tau2_system_prompt(self) -> str:
        """The prompt tau2's own UserSimulator would use for this task."""
        return super().system_prompt

    @property
    def system_prompt(self) -> str:
        base = self.tau2_system_prompt
        if not self.persona_block:
            return base
        return base + "\n\n" + self.persona_block

    def set_seed(self, seed: int) -> None:
        self.seed = seed

    def _payload(self, state) -> list[dict]:
        if self.user_format == "tau2":
            return to_litellm_messages(state.system_messages + state.flip_roles())
        transcript = render_transcript(state.messages, TRANSCRIPT_LABELS, sep="\n\n") or "(the conversation has not started yet)"
        return to_litellm_messages(state.system_messages) + [
            {"role": "user", "content": f"<conversation>\n{transcript}\n</conversation>\n\n{TRANSCRIPT_INSTRUCTION}"}
        ]

    def _completion_prompt(self, state) -> tuple[str, list[str]]:
        """The ``completion`` format: the conversation as a transcript the customer's next line continues."""
        turns = []
        for m in state.messages:
            if isinstance(m, ToolMessage):
                turns.append(("tool", str(m.content or "")))
            elif isinstance(m, UserMessage):
                turns.append(("customer", m.content or ""))
            elif m.content:
                turns.append(("agent", m.content))
        return render_completion_prompt(self.system_prompt, turns)

    def _ask(self, state) -> Completion:
        if self.user_format == "completion":
            prompt, stop = self._completion_prompt(state)
            completion = self.client.complete_text(prompt, stop=stop, seed=self.seed)
            completion.content = clean_completion_reply(completion.content or "")
            return completion
        return self.client.complete(
            self._payload(state),
            tools=self._schemas,
            tool_choice="auto" if self._schemas else None,
            seed=self.seed,
        )

    def _generate_next_message(self, message, state):
        if self.between_tool_calls is not None:
            self.between_tool_calls()
        if isinstance(message, MultiToolMessage):
            state.messages.extend(message.tool_messages)
        else:
            state.messages.append(message)
        completion = self._ask(state)
        self.stats.add(completion, self._tool_names if self._schemas else None)
        raw_data = raw_record(completion, completion.content)
        usage = {"prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens}
        if completion.tool_calls and self._schemas:
            user_message = UserMessage(
                role="user",
                content=None,
                tool_calls=[
                    ToolCall(id=t.id, name=t.name, arguments=t.arguments, requestor="user") for t in completion.tool_calls
                ],
                cost=completion.cost_usd,
                usage=usage,
                raw_data=raw_data,
            )
        else:
            if not completion.content or not completion.content.strip():
                detail = (
                    "called a tool although the customer has no tools, and wrote no text"
                    if completion.tool_calls
                    else "returned an empty reply"
                )
                raise EmptyReplyError("user", completion.raw_content, detail)
            user_message = UserMessage(
                role="user", content=completion.content, cost=completion.cost_usd, usage=usage, raw_data=raw_data
            )
        state.messages.append(user_message)
        return user_message, state
