"""The one door to models: retries, deadlines, size limits, ``<think>`` stripping, text tool-call recovery, accounting.

Agent, user simulator, judge and probe all call models through :class:`ModelClient`, so every
conversation gets the same fault handling and the same per-call record, whatever the provider.
Importing this package does not import tau2, and sets no behaviour from the environment: what a
client does is in its :class:`ModelSpec`.
"""

from moodbench.llm._client import (
    Completion,
    ContextWindowError,
    EndpointDownError,
    EndpointHealth,
    LLMCallError,
    ModelClient,
    ModelSpec,
    ParsedToolCall,
    ReplyTooLargeError,
)
from moodbench.llm._textcalls import recover_text_tool_calls
from moodbench.llm._thinking import strip_thinking

__all__ = [
    "Completion",
    "ContextWindowError",
    "EndpointDownError",
    "EndpointHealth",
    "LLMCallError",
    "ModelClient",
    "ModelSpec",
    "ParsedToolCall",
    "ReplyTooLargeError",
    "recover_text_tool_calls",
    "strip_thinking",
]
