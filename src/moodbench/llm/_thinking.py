"""Removing reasoning blocks so they never reach the other side of the conversation."""

from __future__ import annotations

import re

_TAGS = ("think", "thinking", "reasoning")
_CLOSED = re.compile(r"<(think|thinking|reasoning)>.*?</\1>", re.DOTALL | re.IGNORECASE)
_UNCLOSED = re.compile(r"<(think|thinking|reasoning)>.*\Z", re.DOTALL | re.IGNORECASE)
# Templates such as Qwen3's open <think> inside the prompt, so the reply starts mid-reasoning and
# only the closing tag appears.
_LEADING = re.compile(r"\A.*?</(think|thinking|reasoning)>", re.DOTALL | re.IGNORECASE)


def strip_thinking(text: str | None) -> tuple[str | None, bool]:
    """Return ``(clean_text, stripped?)``: closed, unclosed and leading blocks are removed."""
    if text is None:
        return None, False
    lowered = text.lower()
    if not any(f"<{t}>" in lowered or f"</{t}>" in lowered for t in _TAGS):
        return text, False
    clean = _CLOSED.sub("", text)
    clean = _LEADING.sub("", clean)
    clean = _UNCLOSED.sub("", clean)
    return clean.strip(), True
