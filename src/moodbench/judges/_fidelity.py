"""Simulator fidelity: did the simulated customer behave like the customer in the scenario?

Rules run on the stored messages (plain JSON: role, content, tool_calls), so every conversation of
every run gets them for free and they can be recomputed offline. Thresholds are module constants and
documented in the README ("Simulator fidelity").
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from moodbench.results import STOP_TOKENS as _STOPS
from moodbench.results import FidelityFlags, strip_stop_tokens

ECHO_SIMILARITY = 0.85  # a customer turn this similar to the agent's previous turn is an echo
LEAK_NGRAM = 12  # a customer turn sharing a run of this many words with its own instructions leaks them
GOAL_MIN_OVERLAP = 0.15  # share of the scenario's content words the customer must mention overall
EARLY_STOP_TURNS = 2  # a stop within this many customer turns, before any agent write, is premature

_AGENT_PHRASES = [
    r"\bhow (can|may) i (help|assist) you\b",
    r"\bis there anything else i can (help|assist)",
    r"\bcould you (please )?(provide|share|confirm) (me )?(your|the) (user ?id|email|order|name|zip|reservation)",
    r"\bi('m| am) (here|happy|glad) to help\b",
    r"\bthank you for contacting\b",
    r"\bplease (provide|share) (your|the)\b",
    r"\bi can help you with that\b",
]
AGENT_PHRASE = re.compile("|".join(_AGENT_PHRASES), re.IGNORECASE)
_WORD = re.compile(r"[a-z0-9']+")
_STOPWORDS = set(
    "a an the and or but if of to in on for with at by from as is are was were be been being you your yours i me my "
    "we our it its this that these those they them their he she his her do does did have has had not no yes so very "
    "can could would should will shall may might must want wants need needs about into over than then there here "
    "also just only any all some more most other such own same too s t don now when where which who whom what why how "
    "goal task instructions know user agent customer".split()
)
_WRITE_PREFIXES = (
    "update",
    "cancel",
    "modify",
    "exchange",
    "return",
    "book",
    "create",
    "delete",
    "send",
    "transfer",
    "change",
    "add",
    "remove",
    "set",
    "toggle",
    "enable",
    "disable",
    "reset",
    "refuel",
    "suspend",
    "resume",
)
_LEAK_MARKERS = ("<scenario>", "###STOP###' token", "simulation guidelines", "<emotional_state>")


@dataclass(frozen=True)
class Scenario:
    """What the customer was asked to do, reduced to what the rules need (built from a tau2 task)."""

    reason_for_call: str  # the words the customer should get across
    needs_agent_write: bool  # the task's gold actions include an agent-side write


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def content_words(text: str) -> set[str]:
    return {w for w in words(text) if w not in _STOPWORDS and len(w) > 2}


def is_write(tool_name: str) -> bool:
    """Tools that change state, by tau2's naming (``update_...``, ``cancel_...``, ``book_...``)."""
    return tool_name.split("_")[0] in _WRITE_PREFIXES


def ends_conversation(text: str) -> bool:
    return any(t in text for t in _STOPS)


def looks_like_agent(text: str) -> bool:
    return bool(AGENT_PHRASE.search(text))


def _shingles(text: str) -> Counter[tuple[str, ...]]:
    """Word pairs of ``text`` (its words when it has only one)."""
    w = words(text)
    return Counter(zip(w, w[1:])) if len(w) > 1 else Counter((x,) for x in w)


def echo_similarity(agent_text: str, customer_text: str) -> float:
    """How much of the two turns is the same words in the same order: the Dice coefficient of their
    word-pair multisets (1.0 for a verbatim copy). Linear in the texts' length, so a 1 MB turn costs
    milliseconds (difflib's SequenceMatcher, used before, is quadratic: 30 KB turns took a minute)."""
    a, b = _shingles(strip_stop_tokens(agent_text)), _shingles(strip_stop_tokens(customer_text))
    total = sum(a.values()) + sum(b.values())
    return 2 * sum((a & b).values()) / total if total else 0.0


def is_echo(agent_text: str, customer_text: str) -> bool:
    return len(strip_stop_tokens(customer_text)) >= 20 and echo_similarity(agent_text, customer_text) >= ECHO_SIMILARITY


def _text(m: Mapping[str, Any]) -> str | None:
    c = m.get("content")
    return c if isinstance(c, str) and c else None


SOLO_SKIPPED = "no simulated customer (tau2 solo run): the customer-fidelity rules do not apply"


def fidelity_flags(
    messages: Sequence[Mapping[str, Any]], scenario: Scenario, user_prompt: str | None = None, *, solo: bool = False
) -> FidelityFlags:
    """Flags plus the evidence behind each, for one conversation's messages (tau2 message JSON).

    ``solo``: tau2's solo mode (the agent works the ticket alone, a dummy user says nothing); every rule here
    is about the simulated customer, so none is applied and the evidence says why.
    """
    if solo:
        return FidelityFlags(evidence={"skipped": SOLO_SKIPPED})
    user_turns = [(i, t) for i, m in enumerate(messages) if m.get("role") == "user" and (t := _text(m))]
    evidence: dict[str, Any] = {}

    confusion = [t for _, t in user_turns if looks_like_agent(t)]
    evidence["role_confusion_turns"] = len(confusion)

    echoes = 0
    previous_agent: str | None = None  # the agent's last text before each customer turn (one pass)
    for m in messages:
        role, text = m.get("role"), _text(m)
        if role == "assistant" and text:
            previous_agent = text
        elif role == "user" and text and previous_agent is not None and is_echo(previous_agent, text):
            echoes += 1
    evidence["echo_turns"] = echoes

    agent_wrote = any(
        m.get("role") == "assistant" and any(is_write(str(tc.get("name", ""))) for tc in m.get("tool_calls") or [])
        for m in messages
    )
    stop_turn = next((k for k, (_, t) in enumerate(user_turns) if ends_conversation(t)), None)
    premature = bool(scenario.needs_agent_write and not agent_wrote and stop_turn is not None and stop_turn < EARLY_STOP_TURNS)
    evidence["stop_turn"] = stop_turn

    target = content_words(scenario.reason_for_call)
    said = set().union(*[content_words(t) for _, t in user_turns]) if user_turns else set()
    overlap = len(target & said) / len(target) if target else 1.0
    evidence["goal_overlap"] = round(overlap, 3)

    leak = False
    if user_prompt:
        prompt_words = words(user_prompt)
        grams = {tuple(prompt_words[k : k + LEAK_NGRAM]) for k in range(max(0, len(prompt_words) - LEAK_NGRAM + 1))}
        for _, t in user_turns:
            w = words(t)
            if any(tuple(w[k : k + LEAK_NGRAM]) in grams for k in range(max(0, len(w) - LEAK_NGRAM + 1))):
                leak = True
                break
        if any(marker.lower() in t.lower() for _, t in user_turns for marker in _LEAK_MARKERS):
            leak = True
    flags = FidelityFlags(
        user_role_confusion=bool(confusion),
        user_echo=echoes > 0,
        user_premature_stop=premature,
        user_goal_not_stated=(bool(user_turns) and overlap < GOAL_MIN_OVERLAP) or not user_turns,
        user_leaks_instructions=leak,
        evidence=evidence,
    )
    flags.any = bool(flags.raised())
    return flags
