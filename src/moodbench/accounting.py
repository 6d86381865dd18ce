"""Per-conversation counters for each role, kept on the agent and user objects of one simulation.

tau2 builds a fresh agent and user per simulation, so counters that live on them are naturally
scoped to one conversation; no global or thread-local state is needed to attribute calls.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from moodbench.llm import Completion


@dataclass
class RoleStats:
    llm_calls: int = 0
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    think_stripped: int = 0
    tool_calls: int = 0
    recovered_text_calls: int = 0
    invalid_json_calls: int = 0
    unknown_tool_calls: int = 0
    empty_replies: int = 0
    truncated_replies: int = 0

    def add(self, c: Completion, known_tools: set[str] | None = None) -> None:
        self.llm_calls += 1
        self.attempts += c.attempts
        self.prompt_tokens += c.prompt_tokens
        self.completion_tokens += c.completion_tokens
        self.cost_usd += c.cost_usd
        self.latency_s += c.latency_s
        self.think_stripped += int(c.think_stripped)
        self.tool_calls += len(c.tool_calls)
        self.recovered_text_calls += c.recovered_text_calls
        self.invalid_json_calls += sum(1 for t in c.tool_calls if not t.valid_json)
        if known_tools is not None:
            self.unknown_tool_calls += sum(1 for t in c.tool_calls if t.name not in known_tools)
        self.empty_replies += int(c.is_empty)
        self.truncated_replies += int(c.finish_reason == "length")

    def to_dict(self) -> dict:
        return asdict(self)
