"""Is each pair a pair? Which tasks pair, which do not, and do the conversations belong to their tasks?

Pairs form on (domain, task id, trial). That is only as good as the task ids: a file whose conversations were
written for other tasks (a submission whose ids were renumbered) pairs anyway, and silently. So, per variant
against the baseline, this module says which tasks pair and which are left unpaired on either side, says
plainly when two sides share no task, and counts the conversations that never mention any scenario fact of
their own task (its user id, order or reservation ids, phone number; recorded per conversation at import
as ``flags.evidence["task_facts"]``). It also compares the customer simulators: a different customer model
or user class between baseline and variant is a confound on any difference between them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from moodbench.results import ConversationRecord

__all__ = ["FACTS_MISSING_MAX", "pairing_checks"]

FACTS_MISSING_MAX = 0.5  # above this share of checked conversations missing their task's facts, pairing is suspect
SHOW = 12  # unpaired tasks listed by name (the rest counted)


def _facts(records: Sequence[ConversationRecord]) -> dict[str, Any]:
    checked = missing = 0
    examples: list[str] = []
    for r in records:
        ev = r.flags.evidence.get("task_facts") if isinstance(r.flags.evidence, dict) else None
        if not isinstance(ev, dict) or not ev.get("n") or not r.messages:
            continue
        checked += 1
        if not ev.get("found"):
            missing += 1
            if len(examples) < 5:
                examples.append(f"{r.domain}/{r.task_id} trial {r.trial} (never mentions {', '.join(ev.get('checked') or [])})")
    share = missing / checked if checked else None
    return {
        "checked": checked,
        "missing": missing,
        "share": share,
        "examples": examples,
        "suspect": share is not None and share > FACTS_MISSING_MAX,
    }


def _customers(records: Sequence[ConversationRecord], implementations: Sequence[str]) -> dict[str, Any]:
    return {"models": sorted({r.user_model for r in records if r.user_model}), "implementations": sorted(set(implementations))}


def _named(keys: set[tuple[str, str]]) -> dict[str, Any]:
    names = sorted(f"{d}/{t}" for d, t in keys)
    return {"n": len(names), "tasks": names[:SHOW], "more": max(0, len(names) - SHOW)}


def pairing_checks(
    records: Sequence[ConversationRecord], baseline: str, variants: Sequence[str], config: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """One row per variant other than the baseline: shared and unpaired tasks, task-fact mismatches, customers."""
    by_variant: dict[str, list[ConversationRecord]] = {}
    for r in records:
        by_variant.setdefault(r.variant, []).append(r)
    impl: dict[str, list[str]] = {}
    for imp in config.get("imports") or []:
        if imp.get("user_implementation"):
            impl.setdefault(imp["variant"], []).append(str(imp["user_implementation"]))
    base = [r for r in by_variant.get(baseline, []) if not r.excluded]
    base_tasks = {r.task_key for r in base}
    base_facts = _facts(base)
    base_cust = _customers(base, impl.get(baseline, []))
    rows = []
    for v in variants:
        if v == baseline:
            continue
        recs = [r for r in by_variant.get(v, []) if not r.excluded]
        tasks = {r.task_key for r in recs}
        cust = _customers(recs, impl.get(v, []))
        differs = bool(
            (base_cust["models"] and cust["models"] and base_cust["models"] != cust["models"])
            or (
                base_cust["implementations"]
                and cust["implementations"]
                and base_cust["implementations"] != cust["implementations"]
            )
        )
        rows.append(
            {
                "variant": v,
                "baseline": baseline,
                "shared_tasks": len(base_tasks & tasks),
                "no_shared_task": bool(base_tasks and tasks and not (base_tasks & tasks)),
                "only_baseline": _named(base_tasks - tasks),
                "only_variant": _named(tasks - base_tasks),
                "facts": {"baseline": base_facts, "variant": _facts(recs)},
                "customer": {
                    "baseline": base_cust,
                    "variant": cust,
                    "differs": differs,
                    # one side's file does not say which customer simulator it used: a difference cannot be ruled out
                    "unknown": bool(base_cust["models"]) != bool(cust["models"]),
                },
            }
        )
    return rows
