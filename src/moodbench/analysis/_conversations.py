"""What the conversations looked like per variant, and whether the simulated customer was usable.

Reward alone hides *how* an emotional customer changes a conversation (longer? more clarifying
questions? more tool calls?) and whether the simulator itself broke. Simulator fidelity uses the
flags stored per row by :mod:`moodbench.judges`; two documented thresholds turn them into
warnings, because small simulator models often stop playing the customer at all (see
role confusion, echoes, premature stops), and then an "effect" measures the simulator.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from moodbench.judges import word_count
from moodbench.results import FLAG_NAMES, ConversationRecord, strip_stop_tokens

FIDELITY_MAX_FLAGGED = 0.20  # a variant with more than 20% flagged conversations is too broken to conclude from
FIDELITY_MAX_GAP = 0.10  # flagged share differing from the baseline's by more than 10 points: the simulator, not the emotion, may drive the effect


def _one(c: ConversationRecord) -> dict[str, float]:
    msgs = c.messages
    user_words = sum(
        word_count(strip_stop_tokens(m["content"])) for m in msgs if m.get("role") == "user" and isinstance(m.get("content"), str)
    )
    agent_text = [
        m["content"].strip()
        for m in msgs
        if m.get("role") == "assistant" and isinstance(m.get("content"), str) and m["content"].strip()
    ]
    tool_calls_msgs = sum(len(m.get("tool_calls") or []) for m in msgs if m.get("role") == "assistant")
    turns = c.stats.turns
    if turns is None:
        turns = sum(1 for m in msgs if m.get("role") == "user" and m.get("content"))
    return {
        "turns": float(turns),
        "messages": float(len(msgs)),
        "user_words": float(user_words),
        "agent_words": float(sum(word_count(t) for t in agent_text)),
        # the agent's own tool calls as counted by its client (what it *asked* for), else from the transcript
        "tool_calls": float(c.stats.agent.tool_calls if c.stats.agent.llm_calls else tool_calls_msgs),
        "recovered_text_tool_calls": float(c.stats.agent.recovered_text_calls),
        "clarification_questions": float(sum(1 for t in agent_text if t.endswith("?"))),
        "wall_seconds": float(c.wall_seconds or 0.0),
        "tokens": float(c.tokens),
        "cost_usd": float(c.cost_usd),
    }


MEAN_FIELDS = (
    "turns",
    "messages",
    "user_words",
    "agent_words",
    "tool_calls",
    "recovered_text_tool_calls",
    "clarification_questions",
    "wall_seconds",
    "tokens",
)


def conversation_stats(convs: list[ConversationRecord], variants: list[str]) -> dict[str, Any]:
    """Per variant: means per scored conversation, totals and exit reasons over all final rows.

    Means leave out ``llm_error``/``harness_error`` rows (cut-off conversations would drag turn
    counts down); totals keep them, since their time and tokens were really spent.
    """
    groups: dict[str, list[ConversationRecord]] = defaultdict(list)
    for c in convs:
        groups[c.variant].append(c)
    out: dict[str, Any] = {}
    for v in variants:
        rows = groups.get(v, [])
        every = [(_one(c), c.excluded) for c in rows]
        per = [p for p, excluded in every if not excluded]
        n = len(per)
        means = {f: (sum(p[f] for p in per) / n if n else None) for f in MEAN_FIELDS}
        totals = {
            f: sum(p[f] for p, _ in every)
            for f in ("tool_calls", "recovered_text_tool_calls", "clarification_questions", "wall_seconds", "tokens", "cost_usd")
        }
        out[v] = {
            "conversations": len(rows),
            "scored": n,
            "mean": means,
            "total": totals,
            "exit_reasons": dict(sorted(Counter(c.exit_reason for c in rows).items())),
        }
    return out


def fidelity(convs: list[ConversationRecord], baseline: str, variants: list[str]) -> dict[str, Any]:
    """Flag rates per variant (over conversations that produced a transcript) and warnings."""
    groups: dict[str, list[ConversationRecord]] = defaultdict(list)
    for c in convs:
        if not c.excluded:
            groups[c.variant].append(c)
    per: dict[str, Any] = {}
    for v in variants:
        rows = groups.get(v, [])
        n = len(rows)
        flagged = sum(1 for c in rows if c.flagged)
        per[v] = {
            "n": n,
            "flagged": flagged,
            "flagged_rate": flagged / n if n else None,
            "rates": {f: (sum(1 for c in rows if getattr(c.flags, f)) / n if n else None) for f in FLAG_NAMES},
            "counts": {f: sum(1 for c in rows if getattr(c.flags, f)) for f in FLAG_NAMES},
            "warnings": [],
        }
    base_rate = per.get(baseline, {}).get("flagged_rate")
    warnings: list[dict[str, str]] = []
    for v in variants:
        rate = per[v]["flagged_rate"]
        if rate is None:
            continue
        if rate > FIDELITY_MAX_FLAGGED:
            msg = (
                f"simulator fidelity too low for conclusions: {rate:.0%} of {v!r} conversations have a simulator flag "
                f"(threshold {FIDELITY_MAX_FLAGGED:.0%})"
            )
            per[v]["warnings"].append(msg)
            warnings.append({"variant": v, "kind": "low_fidelity", "message": msg})
        if v != baseline and base_rate is not None and abs(rate - base_rate) > FIDELITY_MAX_GAP:
            msg = (
                f"simulator fidelity differs from the baseline: {rate:.0%} flagged vs {base_rate:.0%} for {baseline!r} "
                f"(threshold {FIDELITY_MAX_GAP:.0%} points); the effect may be the simulator's, compare the 'without flagged' column"
            )
            per[v]["warnings"].append(msg)
            warnings.append({"variant": v, "kind": "fidelity_gap", "message": msg})
    return {
        "thresholds": {"max_flagged": FIDELITY_MAX_FLAGGED, "max_gap": FIDELITY_MAX_GAP},
        "flags": list(FLAG_NAMES),
        "variants": per,
        "warnings": warnings,
    }
