"""Did the customer deliver the task? The share of the scenario's facts the simulated customer stated.

An emotional customer who never gives the order id measures the simulator, not the agent (NCUser, 2025,
checks that every piece of task information was still delivered). ``moodbench.sim`` stores per record the
facts the agent needed, from tau2's task data (:class:`moodbench.results.ScenarioFact`: identity as user id,
email or name + zip; order, item and task ids; the requested change); here each conversation's customer
text is checked against them (whole words, case-insensitive, ``#`` optional: ``ScenarioFact.stated_in``).

Per variant, descriptively (no claim; ``docs/statistics.md``, "Failure anatomy"): the paired difference of
the delivered share, and the reward effect on all pairs beside the reward effect on the pairs where *both*
customers delivered every fact. When the variant's customers delivered less (:data:`DELIVERY_MAX_GAP`) the
reward effect gets a caveat: the simulator may cause it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from moodbench.analysis._anatomy import DESCRIPTIVE
from moodbench.analysis._claims import POOLED, matched_pairs, scored_index
from moodbench.analysis._inference import PairedEffect, paired_effect
from moodbench.results import ConversationRecord

__all__ = ["DELIVERY_MAX_GAP", "FACT_KINDS", "delivery", "delivery_effects"]

#: the variant's customers stated at least 5 points less of the facts than the baseline's (or the interval
#: of the difference lies below 0): its reward effect may be the simulator's
DELIVERY_MAX_GAP = 0.05
FACT_KINDS = ("identity", "id", "value", "change")


def delivery(c: ConversationRecord) -> dict[str, Any]:
    """``share`` (stated / facts; ``None`` without facts), ``complete`` (every fact stated; ``True`` when the
    task has none, ``None`` when the record carries no task facts) and the facts left unsaid."""
    if c.task_facts is None:
        return {"share": None, "complete": None, "n_facts": 0, "missing": [], "missing_kinds": []}
    text = "\n".join(c.user_texts).lower()
    facts = c.task_facts.facts
    missing = [f for f in facts if not f.stated_in(text)]
    return {
        "share": (len(facts) - len(missing)) / len(facts) if facts else None,
        "complete": not missing,
        "n_facts": len(facts),
        "missing": [f.label for f in missing],
        "missing_kinds": sorted({f.kind for f in missing}),
    }


def _effect(e: PairedEffect) -> dict[str, Any]:
    return {
        "n_pairs": e.n_pairs,
        "n_tasks": e.n_tasks,
        "baseline_mean": e.baseline_mean,
        "variant_mean": e.variant_mean,
        "diff": e.diff,
        "ci": [e.ci_low, e.ci_high],
        "p_unadjusted": e.p,
    }


def _reward(pairs: Sequence[tuple[ConversationRecord, ConversationRecord]]) -> PairedEffect:
    return paired_effect(
        [float(b.reward or 0.0) for b, _ in pairs], [float(v.reward or 0.0) for _, v in pairs], [b.task_key for b, _ in pairs]
    )


def delivery_effects(records: Sequence[ConversationRecord], baseline: str, variants: Sequence[str]) -> list[dict[str, Any]]:
    """One row per variant: delivered share (paired), missing kinds, reward effect on all and on fully delivered pairs."""
    index = scored_index(records)
    base = index.get(baseline, {})
    cache: dict[int, dict[str, Any]] = {}

    def d(c: ConversationRecord) -> dict[str, Any]:
        if id(c) not in cache:
            cache[id(c)] = delivery(c)
        return cache[id(c)]

    out = []
    for v in variants:
        if v == baseline:
            continue
        pairs = matched_pairs(base, index.get(v, {}), POOLED)
        shared = [(b, w) for b, w in pairs if d(b)["share"] is not None and d(w)["share"] is not None]
        share = paired_effect(
            [d(b)["share"] for b, _ in shared], [d(w)["share"] for _, w in shared], [b.task_key for b, _ in shared]
        )
        complete = [(b, w) for b, w in pairs if d(b)["complete"] and d(w)["complete"]]
        known = [(b, w) for b, w in pairs if d(b)["complete"] is not None and d(w)["complete"] is not None]
        less = share.diff is not None and (share.diff <= -DELIVERY_MAX_GAP or (share.ci_high is not None and share.ci_high < 0))
        caveat = None
        if less:
            caveat = (
                f"{v}'s customers stated less of the task's facts than {baseline}'s (share {share.diff:+.3f}); the reward "
                "effect may be caused by the simulator withholding information: compare the effect among pairs where "
                "both customers stated every fact"
            )
        out.append(
            {
                "variant": v,
                "status": DESCRIPTIVE,
                "share": _effect(share),
                "complete_rate": {
                    side: (sum(1 for p in known if d(p[i])["complete"]) / len(known) if known else None)
                    for i, side in enumerate(("baseline", "variant"))
                },
                "missing_kinds": {
                    side: {k: sum(1 for p in known if k in d(p[i])["missing_kinds"]) for k in FACT_KINDS}
                    for i, side in enumerate(("baseline", "variant"))
                },
                "pairs_with_facts": len(known),
                "reward_all": _effect(_reward(pairs)),
                "reward_all_delivered": _effect(_reward(complete)),
                "delivered_less": less,
                "caveat": caveat,
            }
        )
    return out
