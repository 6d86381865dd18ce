"""The one door to models: retries, timeouts, ``<think>`` stripping, text tool-call recovery, accounting.

Agent, user simulator, judge and probe all call models through :class:`ModelClient`, so every
conversation gets the same fault handling and the same per-call record, whatever the provider.
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
    "recover_text_tool_calls",
    "strip_thinking",
]
