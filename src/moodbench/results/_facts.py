"""What of a conversation's tau2 task the failure anatomy needs, captured when the record is built.

The report must not import tau2 (imported runs, start-up time), yet two of its measures need the task:
which of the agent's write calls were outside the task's gold actions (decided with tau2's own
``Action.compare_with_tool_call`` inside ``moodbench.sim``), and which scenario facts the customer had
to deliver. ``moodbench.sim`` fills a :class:`TaskFacts` per record; ``moodbench.analysis`` reads it.
Records written before this existed have ``task_facts = None`` and those measures are left blank.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class GoldAction(BaseModel):
    """One of the task's gold actions, as tau2 states it (shown on paired transcript pages)."""

    model_config = ConfigDict(extra="ignore")

    name: str
    requestor: str = "assistant"
    arguments: dict[str, Any] = Field(default_factory=dict)
    write: bool = False  # the tool is a tau2 WRITE tool of its side


class ScenarioFact(BaseModel):
    """A fact of the customer's scenario the agent needs (an id, a name and zip, the requested change).

    Stated when, for at least one alternative of ``any_of``, every string of it occurs in what the
    customer said (case-insensitive; ids also without a leading ``#``).
    """

    model_config = ConfigDict(extra="ignore")

    kind: str  # "identity" | "id" | "value" | "change"
    label: str
    any_of: list[list[str]] = Field(default_factory=list)

    def stated_in(self, text: str) -> bool:
        """Whether ``text`` (what the customer said) states this fact: see :func:`mentions`."""
        return any(alt and all(mentions(text, s) for s in alt) for alt in self.any_of)


class WriteCall(BaseModel):
    """One write-tool call of the agent and whether it matches a gold action (tau2's comparison)."""

    model_config = ConfigDict(extra="ignore")

    name: str
    message_index: int
    gold: bool


class TaskFacts(BaseModel):
    """The task's gold actions, its scenario facts, and the agent's write calls judged against the gold."""

    model_config = ConfigDict(extra="ignore")

    gold_actions: list[GoldAction] = Field(default_factory=list)
    facts: list[ScenarioFact] = Field(default_factory=list)
    write_calls: list[WriteCall] = Field(default_factory=list)


def normalize(value: str) -> str:
    """How a fact's string is compared: lower case, surrounding spaces and a leading ``#`` removed
    (customers write order ``W2378156`` as often as ``#W2378156``)."""
    return value.strip().lower().lstrip("#")


@lru_cache(maxsize=4096)
def _pattern(value: str) -> re.Pattern[str]:
    # not inside a longer word or number: task_1 is not stated by task_10, 1912 not by 19122
    return re.compile(r"(?<![a-z0-9_])" + re.escape(normalize(value)) + r"(?![a-z0-9_])")


def mentions(text: str, value: str) -> bool:
    """``value`` occurs in ``text`` as a whole word or identifier, case-insensitive, ``#`` optional."""
    return bool(normalize(value)) and _pattern(value).search(text.lower()) is not None
