"""The ``completion`` customer format: the next customer message as the continuation of a plain transcript.

Why: tau2 sends the simulated customer its conversation with the roles flipped (the agent's messages
as ``user``, the customer's as ``assistant``). A small instruct model then does what its chat tuning
says an assistant does: it answers like the service rep ("How can I assist you today?") or repeats the
agent. Written as a document instead (a header with tau2's own user guidelines and scenario, then
``AGENT: ...`` / ``CUSTOMER: ...`` lines ending in ``CUSTOMER:``), the next tokens are the customer's
words by construction, and there is no assistant turn for the chat tuning to take over. Sent to
``/v1/completions`` (no chat template) with :data:`STOP` strings, so generation ends where the agent's
next line would begin.

Pure functions only; the user simulator wires this in as ``--user-format completion``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["AGENT", "CUSTOMER", "STOP", "clean_completion_reply", "render_completion_prompt"]

AGENT = "AGENT"
CUSTOMER = "CUSTOMER"
#: Where a customer message ends: the next speaker label (with or without a line break before it).
STOP: tuple[str, ...] = (f"\n{AGENT}:", f"\n{CUSTOMER}:", f"{AGENT}:", "\n\n\n")

HEADER = (
    "The following is the transcript of a conversation between a CUSTOMER and a customer service AGENT, "
    "written down word for word.\n"
    "Before the conversation the customer was given the instructions below (the agent never saw them). "
    "Every CUSTOMER line follows them: the customer speaks in their own words, one message at a time, "
    "as the customer and never as the agent.\n\n"
    "<customer_instructions>\n{instructions}\n</customer_instructions>\n\n"
    "TRANSCRIPT\n"
)

_ROLE_ALIASES = {
    "agent": AGENT, "assistant": AGENT,
    "customer": CUSTOMER, "user": CUSTOMER,
    "tool": "tool",
}  # fmt: skip
_LABEL_AT_LINE_START = re.compile(rf"^(\s*)({AGENT}|{CUSTOMER}):", re.MULTILINE)


def _one_line(text: str) -> str:
    """A message as transcript text: no speaker label at the start of any of its lines, no blank lines."""
    body = _LABEL_AT_LINE_START.sub(lambda m: f"{m.group(1)}{m.group(2).lower()}:", text.strip())
    return re.sub(r"\n\s*\n+", "\n", body)


def render_completion_prompt(system_prompt: str, turns: Sequence[tuple[str, str]]) -> tuple[str, list[str]]:
    """``(prompt, stop)`` for the customer's next message; pure function.

    ``system_prompt``: the customer's instructions exactly as the chat formats send them (tau2's user
    guidelines + scenario, plus any emotion block). ``turns``: the conversation so far, oldest first,
    as ``(role, text)`` with role ``agent``/``assistant``, ``customer``/``user`` or ``tool`` (the result
    of the customer's own action, shown as a note). The prompt ends with ``"CUSTOMER:"``; send it to
    ``/v1/completions`` with ``stop`` and strip the result (:func:`clean_completion_reply`).
    """
    lines = [HEADER.format(instructions=system_prompt.strip())]
    for role, text in turns:
        who = _ROLE_ALIASES.get(role.strip().lower())
        if who is None:
            raise ValueError(f"unknown role {role!r} in the transcript; roles are agent, customer, tool")
        if not text or not text.strip():
            continue
        if who == "tool":
            lines.append(f"(result of the customer's action: {_one_line(text)})\n")
        else:
            lines.append(f"{who}: {_one_line(text)}\n")
    lines.append(f"{CUSTOMER}:")
    return "".join(lines), list(STOP)


#: A line that starts with an invented label (``RETRY:``, ``ATTEMPTED:``, ``NOTE:``): the model has stopped
#: writing the customer's message and is continuing the document (seen on steered 0.5B replies).
_INVENTED_LABEL = re.compile(r"\n\s*[A-Z][A-Z0-9 _-]{1,24}:")


def clean_completion_reply(text: str) -> str:
    """The generated continuation as a message, stripped: cut at the next speaker label that slipped
    through the stop strings, or at a line starting with an invented all-caps label."""
    cut = len(text)
    for stop in STOP:
        i = text.find(stop)
        if i >= 0:
            cut = min(cut, i)
    if m := _INVENTED_LABEL.search(text):
        cut = min(cut, m.start())
    return text[:cut].strip()
