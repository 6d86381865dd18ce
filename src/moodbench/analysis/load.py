"""Read one run directory into memory once, in the shape every analysis step wants.

The report reads the store directly (never summary.json), so a report can be regenerated at any
time and always matches the rows; the summary numbers come from :func:`summary_for_run`, the very
function that writes summary.json, so the two cannot disagree.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from moodbench.outcomes import EXCLUDED
from moodbench.store import Row, Store
from moodbench.summary import summary_for_run

STOP_TOKENS = ("###STOP###", "###TRANSFER###", "###OUT-OF-SCOPE###")
FLAG_NAMES = ("user_role_confusion", "user_echo", "user_premature_stop", "user_goal_not_stated", "user_leaks_instructions")
_WORD = re.compile(r"[A-Za-z0-9']+")
SUCCESS_THRESHOLD = 1.0 - 1e-9  # tau2 counts a conversation as a success at reward 1


def strip_stop_tokens(text: str) -> str:
    for token in STOP_TOKENS:
        text = text.replace(token, "")
    return text.strip()


def word_count(text: str) -> int:
    return len(_WORD.findall(text))


@dataclass
class Conversation:
    """One final row of the store (per cell) with its parsed payload."""

    row: Row
    simulation: dict[str, Any] | None
    flags: dict[str, Any]
    stats: dict[str, Any]
    reward_info: dict[str, Any] | None

    @property
    def id(self) -> int:
        return self.row.id

    @property
    def variant(self) -> str:
        return self.row.variant

    @property
    def domain(self) -> str:
        return self.row.domain

    @property
    def task_id(self) -> str:
        return self.row.task_id

    @property
    def trial(self) -> int:
        return self.row.trial

    @property
    def reward(self) -> float | None:
        return self.row.reward

    @property
    def exit_reason(self) -> str:
        return self.row.exit_reason

    @property
    def pair_key(self) -> tuple[str, str, int]:
        """The same (domain, task, trial) under two variants is one matched pair (same seed)."""
        return (self.row.domain, self.row.task_id, self.row.trial)

    @property
    def task_key(self) -> tuple[str, str]:
        return (self.row.domain, self.row.task_id)

    @property
    def excluded(self) -> bool:
        """``llm_error``/``harness_error`` say nothing about the agent: left out of every effect."""
        return self.row.exit_reason in EXCLUDED or self.row.reward is None

    @property
    def success(self) -> bool:
        return self.row.reward is not None and self.row.reward >= SUCCESS_THRESHOLD

    @property
    def flagged(self) -> bool:
        return bool(self.flags.get("any"))

    @cached_property
    def messages(self) -> list[dict[str, Any]]:
        return list((self.simulation or {}).get("messages") or [])

    @cached_property
    def user_texts(self) -> list[str]:
        """What the simulated customer said, stop tokens removed (empty turns dropped)."""
        out = []
        for m in self.messages:
            if m.get("role") == "user" and isinstance(m.get("content"), str):
                text = strip_stop_tokens(m["content"])
                if text:
                    out.append(text)
        return out

    @cached_property
    def agent_texts(self) -> list[str]:
        return [m["content"].strip() for m in self.messages
                if m.get("role") == "assistant" and isinstance(m.get("content"), str) and m["content"].strip()]


@dataclass
class RunData:
    """Everything the report needs from one run directory."""

    run_dir: Path
    label: str
    config: dict[str, Any]
    plan: dict[str, Any]
    summary: dict[str, Any]
    conversations: list[Conversation]
    prompts: dict[str, str] = field(default_factory=dict)
    slug: str = ""  # file-system-safe name, set by the report (unique among the runs compared)

    @property
    def trials(self) -> int:
        return int(self.summary.get("trials") or self.config.get("trials") or 1)

    @property
    def variants(self) -> list[str]:
        return list(self.summary.get("variants", {}))

    @property
    def domains(self) -> list[str]:
        return list(self.summary.get("domains") or sorted({c.domain for c in self.conversations}))


def _json(value: Any) -> Any:
    if value is None or value == "":
        return None
    if isinstance(value, (dict, list)):
        return value
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return None


def load_run(run_dir: Path, label: str | None = None) -> RunData:
    """Load final rows (one per cell), their conversations and the prompts they used."""
    run_dir = Path(run_dir)
    db = run_dir / "results.sqlite"
    if not db.exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no results.sqlite)")
    summary = summary_for_run(run_dir)
    with Store(db) as store:
        config = store.get_meta("config") or {}
        plan = store.get_meta("plan") or {}
        conversations = []
        for row in store.rows(with_payload=True):
            data = row.data
            conversations.append(Conversation(
                row=row,
                simulation=_json(data.pop("simulation", None)),
                flags=_json(data.get("flags")) or {},
                stats=_json(data.get("stats")) or {},
                reward_info=_json(data.get("reward_info")),
            ))
        used = {c.row.data.get("user_prompt_sha256") for c in conversations} | {c.row.data.get("agent_prompt_sha256") for c in conversations}
        prompts = {}
        for digest in used:
            if digest:
                text = store.prompt(digest)
                if text is not None:
                    prompts[digest] = text
    return RunData(run_dir=run_dir, label=label or run_dir.name, config=config, plan=plan, summary=summary,
                   conversations=conversations, prompts=prompts)
