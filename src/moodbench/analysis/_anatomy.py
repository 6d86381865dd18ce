"""Why the agent fails: per-conversation failure anatomy and its paired, task-clustered differences.

Every measure is computed from one stored :class:`moodbench.results.ConversationRecord` (tau2's
``reward_info``, the transcript, the ``task_facts`` that ``moodbench.sim`` stored) and then compared
variant - baseline on matched (domain, task, trial) pairs with the report's task-clustered t
(:func:`moodbench.analysis.paired_effect`, clustered by task). These are **descriptive**: they carry a
95% interval but no claim, are not part of the report's Holm family and never change a claim; they say
*which part* of the task broke and *how* the agent behaved (``docs/statistics.md``, "Failure anatomy").

Reward components (1 = passed, 0 = failed; blank when tau2 did not check that part, e.g. a conversation
cut short before scoring, or a task without such checks):

* ``db``: tau2's database check (``db_check.db_reward``: final database equals the gold replay's);
* ``actions``: every gold action was matched by an agent call (``action_checks``);
* ``communicate``: every ``communicate_info`` string was said (``communicate_checks``);
* ``nl_assertions``: every natural-language assertion met (``nl_assertions``, judged);
* ``env_assertions``: every environment assertion met (``env_assertions``).

Agent behaviour (counts per conversation unless said otherwise):

* ``tool_calls``: the agent's tool calls in the transcript;
* ``tool_errors``: tool results tau2 marked ``error`` (the call raised);
* ``invalid_argument_calls``: calls whose arguments were unusable: unparseable JSON (the agent's
  ``raw_data.invalid_json_arguments``), or a result saying so (:data:`INVALID_ARGUMENTS`: missing or
  unexpected argument, pydantic validation error, unknown tool); per message the larger of the two;
* ``hallucinated_ids``: distinct identifiers in the agent's tool arguments that appear in no earlier
  message (customer, agent text, tool results). An identifier is a string argument value (at any depth)
  matching :data:`ID_PATTERN`: no spaces, at least one digit, 3+ characters, not a date or time
  (``user_1``, ``#W2378156``, ``1151293680``, ``credit_card_9513926``, ``HAT170``);
* ``off_gold_writes``: write-tool calls matching none of the task's gold actions (tau2's comparison,
  stored by ``sim``): giving in beyond policy, e.g. a refund nobody asked for. Blank without task facts;
* ``transferred``: 1 when the agent called ``transfer_to_human_agents``;
* ``turns``: customer turns with text (conversation length);
* ``apologies``, ``empathy``: matches of :data:`APOLOGY_LEXICON` / :data:`EMPATHY_LEXICON` in the
  agent's text (whole words, case-insensitive);
* ``customer_exit``: 1 when the customer ended the conversation (tau2's stop, transfer or out-of-scope
  token) with the task not done (reward < 1).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from moodbench.analysis._claims import POOLED, matched_pairs, scored_index
from moodbench.analysis._inference import paired_effect
from moodbench.results import STOP_TOKENS, ConversationRecord
from moodbench.results._facts import mentions

__all__ = [
    "APOLOGY_LEXICON",
    "BEHAVIOURS",
    "COMPONENTS",
    "DESCRIPTIVE",
    "EMPATHY_LEXICON",
    "ID_PATTERN",
    "INVALID_ARGUMENTS",
    "MEASURES",
    "anatomy_effects",
    "conversation_anatomy",
    "flipping_tasks",
    "hallucinated_ids",
    "paired_rows",
]

DESCRIPTIVE = "descriptive, not part of the report's family"
TRANSFER_TOOL = "transfer_to_human_agents"

COMPONENTS: dict[str, str] = {
    "db": "database state matches the gold (tau2 DB check)",
    "actions": "every gold action matched (tau2 action checks)",
    "communicate": "every required information said (tau2 communicate checks)",
    "nl_assertions": "every NL assertion met (judge)",
    "env_assertions": "every environment assertion met",
}
BEHAVIOURS: dict[str, str] = {
    "tool_calls": "agent tool calls",
    "tool_errors": "tool calls that returned an error",
    "invalid_argument_calls": "calls with unusable arguments (bad JSON, missing/unexpected/invalid argument, unknown tool)",
    "hallucinated_ids": "ids in tool arguments never seen earlier in the conversation",
    "off_gold_writes": "write calls outside the task's gold actions",
    "transferred": "agent transferred to a human (0/1)",
    "turns": "customer turns",
    "apologies": "apology phrases in the agent's text",
    "empathy": "empathy phrases in the agent's text",
    "customer_exit": "customer ended the conversation with the task undone (0/1)",
}
MEASURES = {**COMPONENTS, **BEHAVIOURS}

#: an identifier: no whitespace, starts with a letter, digit or '#', holds a digit (dates/times excluded)
ID_PATTERN = re.compile(r"^#?[A-Za-z0-9][A-Za-z0-9_.\-]{2,}$")
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}([T ].*)?$|^\d{1,2}:\d{2}(:\d{2})?$")
#: tool results (tau2's "Error: ..." of a raising call) that say the arguments themselves were unusable
INVALID_ARGUMENTS = re.compile(
    r"missing \d+ required (positional|keyword)|unexpected keyword argument|validation error|takes \d+ positional|"
    r"Tool '[^']*' not found|Input should be",
    re.IGNORECASE,
)
#: apology lexicon (agent text); documented in docs/statistics.md
APOLOGY_LEXICON = ("sorry", "apologize", "apologise", "apologies", "apologizing", "my apologies", "i regret", "regret the")
#: empathy lexicon (agent text)
EMPATHY_LEXICON = (
    "i understand",
    "i completely understand",
    "i totally understand",
    "understand your frustration",
    "understand how",
    "i hear you",
    "i can imagine",
    "i can see how",
    "that must be",
    "must be frustrating",
    "i appreciate your patience",
    "thank you for your patience",
    "thanks for your patience",
    "rest assured",
    "i know this is",
    "i'm here to help",
    "i am here to help",
)
_APOLOGY = re.compile(r"\b(" + "|".join(re.escape(w) for w in APOLOGY_LEXICON) + r")\b", re.IGNORECASE)
_EMPATHY = re.compile(r"\b(" + "|".join(re.escape(w) for w in EMPATHY_LEXICON) + r")\b", re.IGNORECASE)


# --------------------------------------------------------------------------- one conversation


def _all_met(items: Any, key: str) -> float | None:
    if not items:
        return None
    return 1.0 if all(bool(x.get(key)) for x in items if isinstance(x, dict)) else 0.0


def components(c: ConversationRecord) -> dict[str, float | None]:
    """tau2's reward components of one conversation (``None``: not checked)."""
    info = c.reward_info or {}
    db = info.get("db_check") if isinstance(info.get("db_check"), dict) else None
    return {
        "db": None if db is None or db.get("db_reward") is None else float(db["db_reward"]),
        "actions": _all_met(info.get("action_checks"), "action_match"),
        "communicate": _all_met(info.get("communicate_checks"), "met"),
        "nl_assertions": _all_met(info.get("nl_assertions"), "met"),
        "env_assertions": _all_met(info.get("env_assertions"), "met"),
    }


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


def _arguments(tc: dict[str, Any]) -> Any:
    args = tc.get("arguments")
    if isinstance(args, str):  # some writers keep arguments as JSON text
        try:
            return json.loads(args)
        except ValueError:
            return {}
    return args or {}


def is_identifier(value: str) -> bool:
    return bool(ID_PATTERN.match(value)) and any(ch.isdigit() for ch in value) and not _DATE_TIME.match(value)


def hallucinated_ids(messages: Sequence[dict[str, Any]]) -> list[str]:
    """Distinct identifiers in the agent's tool arguments that no earlier message's text contains."""
    seen: list[str] = []  # lower-cased texts of the messages so far
    out: dict[str, None] = {}
    for m in messages:
        if m.get("role") == "assistant":
            earlier = "\n".join(seen)
            for tc in m.get("tool_calls") or []:
                for s in _strings(_arguments(tc)):
                    if is_identifier(s) and s not in out and not mentions(earlier, s):
                        out[s] = None
        content = m.get("content")
        if isinstance(content, str) and content:
            seen.append(content.lower())
    return list(out)


def _invalid_argument_calls(messages: Sequence[dict[str, Any]]) -> int:
    results = {m.get("id"): m for m in messages if m.get("role") == "tool"}
    total = 0
    for m in messages:
        if m.get("role") != "assistant":
            continue
        calls = m.get("tool_calls") or []
        said = sum(
            1
            for tc in calls
            if (r := results.get(tc.get("id"))) is not None
            and r.get("error")
            and INVALID_ARGUMENTS.search(str(r.get("content") or ""))
        )
        bad_json = len((m.get("raw_data") or {}).get("invalid_json_arguments") or [])
        total += max(said, bad_json)
    return total


def behaviours(c: ConversationRecord) -> dict[str, float | None]:
    """The agent-behaviour measures of one conversation (see the module docstring)."""
    msgs = c.messages
    calls = [
        tc
        for m in msgs
        if m.get("role") == "assistant"
        for tc in (m.get("tool_calls") or [])
        if tc.get("requestor", "assistant") == "assistant"
    ]
    agent_text = "\n".join(c.agent_texts)
    last_user = (
        next(
            (
                m.get("content")
                for m in reversed(msgs)
                if m.get("role") == "user" and isinstance(m.get("content"), str) and m.get("content")
            ),
            None,
        )
        or ""
    )
    facts = c.task_facts
    turns = c.stats.turns if c.stats.turns is not None else sum(1 for m in msgs if m.get("role") == "user" and m.get("content"))
    return {
        "tool_calls": float(len(calls)),
        "tool_errors": float(
            sum(1 for m in msgs if m.get("role") == "tool" and m.get("error") and m.get("requestor", "assistant") == "assistant")
        ),
        "invalid_argument_calls": float(_invalid_argument_calls(msgs)),
        "hallucinated_ids": float(len(hallucinated_ids(msgs))),
        "off_gold_writes": None if facts is None else float(sum(1 for w in facts.write_calls if not w.gold)),
        "transferred": float(any(tc.get("name") == TRANSFER_TOOL for tc in calls)),
        "turns": float(turns),
        "apologies": float(len(_APOLOGY.findall(agent_text))),
        "empathy": float(len(_EMPATHY.findall(agent_text))),
        "customer_exit": float(any(t in last_user for t in STOP_TOKENS) and not c.success),
    }


def conversation_anatomy(c: ConversationRecord) -> dict[str, float | None]:
    """Every anatomy measure of one conversation (``None``: not measurable for it)."""
    return {**components(c), **behaviours(c)}


# --------------------------------------------------------------------------- paired differences


Pair = tuple[ConversationRecord, ConversationRecord]


def paired_rows(
    pairs: Sequence[Pair], measures: dict[str, str], value: Callable[[ConversationRecord], dict[str, float | None]], **tag: Any
) -> list[dict[str, Any]]:
    """One descriptive row per measure: variant - baseline on the pairs where both sides have a value,
    task-weighted, task-clustered 95% interval (the report's estimator, without a claim)."""
    rows = []
    values = [(value(b), value(v), b.task_key) for b, v in pairs]
    for key, text in measures.items():
        kept = [(bv[key], vv[key], t) for bv, vv, t in values if bv[key] is not None and vv[key] is not None]
        e = paired_effect([float(x[0]) for x in kept], [float(x[1]) for x in kept], [x[2] for x in kept])  # type: ignore[arg-type]
        rows.append(
            {
                **tag,
                "measure": key,
                "description": text,
                "n_pairs": e.n_pairs,
                "n_tasks": e.n_tasks,
                "baseline_mean": e.baseline_mean,
                "variant_mean": e.variant_mean,
                "diff": e.diff,
                "ci": [e.ci_low, e.ci_high],
                "p_unadjusted": e.p,
                "status": DESCRIPTIVE,
            }
        )
    return rows


def anatomy_effects(
    records: Sequence[ConversationRecord],
    baseline: str,
    variants: Sequence[str],
    measure: Callable[[ConversationRecord], dict[str, float | None]] | None = None,
    cache: dict[int, dict[str, float | None]] | None = None,
) -> list[dict[str, Any]]:
    """Per variant and measure, the paired difference against the baseline (all domains pooled).

    ``cache``: record id() -> measures, filled here, for callers that show the same conversations again."""
    cache = {} if cache is None else cache

    def value(c: ConversationRecord) -> dict[str, float | None]:
        key = id(c)
        if key not in cache:
            cache[key] = (measure or conversation_anatomy)(c)
        return cache[key]

    index = scored_index(records)
    base = index.get(baseline, {})
    out: list[dict[str, Any]] = []
    for v in variants:
        if v == baseline:
            continue
        pairs = matched_pairs(base, index.get(v, {}), POOLED)
        for row in paired_rows(pairs, MEASURES, value, variant=v):
            row["group"] = "reward component" if row["measure"] in COMPONENTS else "behaviour"
            out.append(row)
    return out


# --------------------------------------------------------------------------- tasks that flip


def flipping_tasks(records: Sequence[ConversationRecord], baseline: str, variants: Sequence[str]) -> list[dict[str, Any]]:
    """Per variant, the tasks whose success differs from the baseline's on at least one matched trial.

    ``lost``: trials that succeeded under the baseline and failed under the variant; ``gained`` the
    reverse. Each flipped trial names both records (ids) for the side-by-side page.
    """
    index = scored_index(records)
    base = index.get(baseline, {})
    out = []
    for v in variants:
        if v == baseline:
            continue
        by_task: dict[tuple[str, str], list[Pair]] = defaultdict(list)
        for b, w in matched_pairs(base, index.get(v, {}), POOLED):
            by_task[b.task_key].append((b, w))
        for (domain, task), pairs in sorted(by_task.items()):
            lost = [(b, w) for b, w in pairs if b.success and not w.success]
            gained = [(b, w) for b, w in pairs if w.success and not b.success]
            if not lost and not gained:
                continue
            out.append(
                {
                    "variant": v,
                    "domain": domain,
                    "task_id": task,
                    "trials": len(pairs),
                    "baseline_successes": sum(b.success for b, _ in pairs),
                    "variant_successes": sum(w.success for _, w in pairs),
                    "lost": len(lost),
                    "gained": len(gained),
                    "direction": "lost" if lost and not gained else "gained" if gained and not lost else "mixed",
                    "flips": [
                        {
                            "trial": b.trial,
                            "seed": b.seed,
                            "baseline_id": b.id,
                            "variant_id": w.id,
                            "kind": "lost" if b.success else "gained",
                            "baseline_reward": b.reward,
                            "variant_reward": w.reward,
                        }
                        for b, w in sorted(lost + gained, key=lambda p: p[0].trial)
                    ],
                }
            )
    return out
