"""Removing reasoning blocks so they never reach the other side of the conversation.

Linear in the reply's length, whatever it holds: the obvious regex (``<think>.*?</think>``) rescans
the rest of the reply from every opening tag that has no closing one, so a reply of 60,000 ``<think>``
tags (420 KB, under the size limit) took minutes, holding the GIL past the request's deadline and a
SIGTERM. Here one scan finds every tag and each block is matched to its closing tag by index.
"""

from __future__ import annotations

import re

_TAGS = ("think", "thinking", "reasoning")
_TAG = re.compile(r"<(/?)(think|thinking|reasoning)>", re.IGNORECASE)


def _strip_closed(text: str) -> str:
    """Remove every ``<tag>...</tag>`` block (the first matching closing tag, as ``.*?`` would),
    scanning left to right, in one pass over the tags."""
    tags = [(m.start(), m.end(), m.group(1) == "/", m.group(2).lower()) for m in _TAG.finditer(text)]
    # for each position in ``tags``, the index of the next closing tag of each name at or after it
    following: list[dict[str, int]] = [{}] * (len(tags) + 1)
    nxt: dict[str, int] = {}
    for k in range(len(tags) - 1, -1, -1):
        _, _, closing, name = tags[k]
        if closing:
            nxt = {**nxt, name: k}
        following[k] = nxt
    parts: list[str] = []
    cursor = 0
    for k, (start, _end, closing, name) in enumerate(tags):
        if closing or start < cursor:
            continue
        close = following[k + 1].get(name)
        if close is None:
            continue
        parts.append(text[cursor:start])
        cursor = tags[close][1]
    parts.append(text[cursor:])
    return "".join(parts)


def strip_thinking(text: str | None) -> tuple[str | None, bool]:
    """Return ``(clean_text, stripped?)``: closed, leading (only the closing tag: templates such as
    Qwen3's open ``<think>`` inside the prompt) and unclosed blocks are removed, in that order."""
    if text is None:
        return None, False
    lowered = text.lower()
    if not any(f"<{t}>" in lowered or f"</{t}>" in lowered for t in _TAGS):
        return text, False
    clean = _strip_closed(text)
    first_close = next((m for m in _TAG.finditer(clean) if m.group(1) == "/"), None)
    if first_close is not None:  # a reply that starts mid-reasoning
        clean = clean[first_close.end() :]
    first_open = next((m for m in _TAG.finditer(clean) if m.group(1) != "/"), None)
    if first_open is not None:  # reasoning cut off by max_tokens
        clean = clean[: first_open.start()]
    return clean.strip(), True
