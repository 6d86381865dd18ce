"""One way to turn a conversation into text for a model to read (judges, the transcript user format).

Messages may be tau2 message objects or their JSON (dicts): only ``role`` and ``content`` are read.
Each caller names the roles it wants and how to label them; roles without a label are left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

AGENT_CUSTOMER = {"assistant": "AGENT", "user": "CUSTOMER"}


def _get(message: Any, key: str) -> Any:
    return message.get(key) if isinstance(message, Mapping) else getattr(message, key, None)


def render_transcript(
    messages: Iterable[Any], labels: Mapping[str, str] = AGENT_CUSTOMER, *, sep: str = "\n", numbered: bool = False
) -> str:
    """``LABEL: content`` per message with text whose role has a label (``""``: the text alone).

    ``numbered`` prefixes ``1. ``, ``2. ``... (the emotion judge reads customer turns as a list).
    """
    lines: list[str] = []
    for m in messages:
        label = labels.get(str(_get(m, "role")))
        content = _get(m, "content")
        if label is None or not isinstance(content, str) or not content:
            continue
        prefix = f"{len(lines) + 1}. " if numbered else ""
        lines.append(f"{prefix}{label}: {content}" if label else f"{prefix}{content}")
    return sep.join(lines)
