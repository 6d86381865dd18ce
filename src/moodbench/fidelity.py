"""Simulator fidelity: did the simulated customer behave like the customer in the scenario?

Rules run offline on the stored messages, so every conversation of every run gets them for free.
Thresholds are module constants and documented in the README ("Simulator fidelity").
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from moodbench._tau2 import (
    OUT_OF_SCOPE_TOKEN,
    STOP_TOKEN,
    TRANSFER_TOKEN,
    AssistantMessage,
    SimulationRun,
    Task,
    UserMessage,
)

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
_AGENT_RE = re.compile("|".join(_AGENT_PHRASES), re.IGNORECASE)
_WORD = re.compile(r"[a-z0-9']+")
_STOPWORDS = set(
    "a an the and or but if of to in on for with at by from as is are was were be been being you your yours i me my "
    "we our it its this that these those they them their he she his her do does did have has had not no yes so very "
    "can could would should will shall may might must want wants need needs about into over than then there here "
    "also just only any all some more most other such own same too s t don now when where which who whom what why how "
    "goal task instructions know user agent customer".split()
)
_WRITE_PREFIXES = ("update", "cancel", "modify", "exchange", "return", "book", "create", "delete", "send", "transfer", "change", "add", "remove", "set", "toggle", "enable", "disable", "reset", "refuel", "suspend", "resume")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _content_words(text: str) -> set[str]:
    return {w for w in _words(text) if w not in _STOPWORDS and len(w) > 2}


def _is_write(name: str) -> bool:
    return name.split("_")[0] in _WRITE_PREFIXES


def _strip_tokens(text: str) -> str:
    for tok in (STOP_TOKEN, TRANSFER_TOKEN, OUT_OF_SCOPE_TOKEN):
        text = text.replace(tok, "")
    return text.strip()


def fidelity_flags(simulation: SimulationRun, task: Task, user_prompt: str | None = None) -> dict[str, Any]:
    """Flags (booleans) plus the evidence behind each, for one conversation."""
    msgs = simulation.messages
    user_turns = [(i, m) for i, m in enumerate(msgs) if isinstance(m, UserMessage) and m.content]
    evidence: dict[str, Any] = {}

    confusion = [m.content for _, m in user_turns if _AGENT_RE.search(m.content)]
    evidence["role_confusion_turns"] = len(confusion)

    echoes = 0
    for i, m in user_turns:
        prev = next((p for p in reversed(msgs[:i]) if isinstance(p, AssistantMessage) and p.content), None)
        if prev is None:
            continue
        a, b = _strip_tokens(prev.content).lower(), _strip_tokens(m.content).lower()
        if len(b) >= 20 and difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() >= ECHO_SIMILARITY:
            echoes += 1
    evidence["echo_turns"] = echoes

    gold = task.evaluation_criteria.actions if task.evaluation_criteria and task.evaluation_criteria.actions else []
    needs_write = any(a.requestor == "assistant" and _is_write(a.name) for a in gold)
    agent_wrote = any(isinstance(m, AssistantMessage) and m.tool_calls and any(_is_write(tc.name) for tc in m.tool_calls) for m in msgs)
    stop_turn = next((k for k, (_, m) in enumerate(user_turns) if any(t in m.content for t in (STOP_TOKEN, TRANSFER_TOKEN, OUT_OF_SCOPE_TOKEN))), None)
    premature = bool(needs_write and not agent_wrote and stop_turn is not None and stop_turn < EARLY_STOP_TURNS)
    evidence["stop_turn"] = stop_turn

    scenario = task.user_scenario.instructions
    scenario_text = scenario if isinstance(scenario, str) else " ".join(
        str(getattr(scenario, f, "") or "") for f in ("reason_for_call", "known_info", "task_instructions"))
    reason = getattr(scenario, "reason_for_call", None) if not isinstance(scenario, str) else scenario
    target = _content_words(str(reason or scenario_text))
    said = set().union(*[_content_words(m.content) for _, m in user_turns]) if user_turns else set()
    overlap = len(target & said) / len(target) if target else 1.0
    evidence["goal_overlap"] = round(overlap, 3)

    leak = False
    if user_prompt:
        prompt_words = _words(user_prompt)
        grams = {tuple(prompt_words[k:k + LEAK_NGRAM]) for k in range(max(0, len(prompt_words) - LEAK_NGRAM + 1))}
        for _, m in user_turns:
            w = _words(m.content)
            if any(tuple(w[k:k + LEAK_NGRAM]) in grams for k in range(max(0, len(w) - LEAK_NGRAM + 1))):
                leak = True
                break
        for marker in ("<scenario>", "###STOP###' token", "simulation guidelines", "<emotional_state>"):
            if any(marker.lower() in m.content.lower() for _, m in user_turns):
                leak = True
    flags = {
        "user_role_confusion": bool(confusion),
        "user_echo": echoes > 0,
        "user_premature_stop": premature,
        "user_goal_not_stated": bool(user_turns) and overlap < GOAL_MIN_OVERLAP or not user_turns,
        "user_leaks_instructions": leak,
    }
    flags["any"] = any(flags.values())
    return {**flags, "evidence": evidence}
