"""How far to believe each claim of a report: the caveats beside every comparison (trust level and reasons,
worst first) and the report-level warnings. They never change a claim; they say how far to believe it.

Split from ``_builder.py`` (which re-exports ``_missing_caveats`` for the tests) so the rules that grade trust
can be read apart from loading runs and writing the report.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from moodbench.analysis import ALPHA, POOLED, PRIMARY
from moodbench.report._render import pval, signed

EXCLUDED_SHARE_CAUTION = 0.10  # more than 10% of a variant's planned conversations excluded: say so
TRUST_ORDER = {"ok": 0, "caution": 1, "unreliable": 2}
SHORT = {
    "manipulation_failed": "manipulation check failed",
    "manipulation_too_few": "manipulation not checkable",
    "low_fidelity": "simulator fidelity too low",
    "fidelity_gap": "fidelity differs from baseline",
    "excluded": "many conversations excluded",
    "customer_differs": "different customer simulator",
    "pairing_suspect": "conversations do not match their task ids",
    "exclusions_differ": "exclusions differ from the baseline",
    "exclusions_outcome": "excluded conversations ran longer",
    "claim_withdrawn": "not robust to exclusions",
    "no_spread": "no spread: the data cannot say more",
}


# --------------------------------------------------------------------------- validity caveats (beside the claim)


def _caveats(
    row: dict[str, Any], a: dict[str, Any], manip: dict[tuple[str, str], dict[str, Any]]
) -> tuple[str, list[dict[str, str]]]:
    """Trust level and the reasons, worst first. They never change the claim; they say how far to believe it."""
    level, out = "ok", []

    def add(new: str, kind: str, text: str) -> None:
        nonlocal level
        out.append({"kind": kind, "level": new, "short": SHORT[kind], "text": text})
        if TRUST_ORDER[new] > TRUST_ORDER[level]:
            level = new

    v, baseline = row["variant"], a["baseline"]
    m = manip.get((v, row["domain"]))
    if m is not None and m["status"] == "failed":
        add(
            "unreliable",
            "manipulation_failed",
            f"manipulation check failed: the customers' {PRIMARY.label} in their early turns did not rise by more than "
            f"{m['min_effect']:g} over the baseline (shift {signed(m['shift'])}, lower bound {signed(m['lower_bound'])})",
        )
    elif m is not None and m["status"] == "too_few":
        why = m.get("reason") or f"{m['n_tasks']} tasks, {m['n_pairs']} pairs"
        add("caution", "manipulation_too_few", f"manipulation not checkable ({why})")
    for w in a["fidelity"]["warnings"]:
        if w["variant"] in (v, baseline):
            add("unreliable" if w["kind"] == "low_fidelity" else "caution", w["kind"], w["message"])
    s = a["summary"]["variants"].get(v, {})
    planned, excluded = s.get("planned") or 0, s.get("excluded") or 0
    if planned and excluded / planned > EXCLUDED_SHARE_CAUTION:
        add("caution", "excluded", f"{excluded}/{planned} of {v!r} conversations excluded ({_excluded_why(s)})")
    p = next((x for x in a["pairing"] if x["variant"] == v), None)
    if p is not None:
        for side in ("baseline", "variant"):
            f = p["facts"][side]
            if f["suspect"]:
                add(
                    "unreliable",
                    "pairing_suspect",
                    f"{f['missing']}/{f['checked']} of the {side}'s ({p[side]!r}) conversations never "
                    "mention any scenario fact of their task (user id, order/reservation id, phone): they may not belong to the "
                    "task ids they are paired on",
                )
        c = p["customer"]
        if c["differs"] or c.get("unknown"):
            add(
                "caution",
                "customer_differs",
                (
                    "the customer simulator differs"
                    if c["differs"]
                    else "the customer simulator of one side is unknown (its file does not name it), so it may differ"
                )
                + f": baseline {_cust(c['baseline'])}, {v} "
                f"{_cust(c['variant'])}; a difference may come from the customer, not the agent",
            )
    _missing_caveats(row, add)
    out.sort(key=lambda c: -TRUST_ORDER[c["level"]])
    return level, out


def _cust(c: dict[str, Any]) -> str:
    return " / ".join(x for x in (", ".join(c["models"]), ", ".join(c["implementations"])) if x) or "unknown"


def _excluded_why(s: dict[str, Any]) -> str:
    reasons = {k: n for k, n in s.get("exit_reasons", {}).items() if k in ("llm_error", "harness_error", "infrastructure_error")}
    return ", ".join(f"{k}={n}" for k, n in reasons.items()) or "no reward"


def _missing_caveats(row: dict[str, Any], add: Callable[[str, str, str], None]) -> None:
    """Caveats from the comparison's own exclusions (``exclusions`` of the row) and from the family's gates."""
    x = row.get("exclusions")
    if x:
        b = x["bounds"] or {}
        lo, hi = (b.get("as_failures") or {}).get("diff"), (b.get("as_successes") or {}).get("diff")
        bounds = f"; with the excluded conversations as failures {signed(lo)}, as successes {signed(hi)}"
        if "exclusions_differ" in x["concerns"]:
            add(
                "caution",
                "exclusions_differ",
                f"{x['excluded_variant']}/{x['pairs_run']} of {row['variant']!r} conversations excluded against "
                f"{x['excluded_baseline']}/{x['pairs_run']} of the baseline's (Fisher p {pval(x['p_rate'])}){bounds}",
            )
        if "exclusions_outcome" in x["concerns"]:
            add(
                "caution",
                "exclusions_outcome",
                f"excluded conversations ran longer than scored ones ({x['turns_excluded_mean']:.1f} vs "
                f"{x['turns_scored_mean']:.1f} turns): they may hide outcomes{bounds}",
            )
    if row.get("claim_withdrawn"):
        add("caution", "claim_withdrawn", row["claim_withdrawn"])
    reason = row.get("no_claim_reason") or ""
    if row.get("claim") == "too_few" and reason.startswith("every task"):
        add("caution", "no_spread", reason)


def _warnings(analyses: list[dict[str, Any]]) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for a in analyses:
        prefix = f"{a['label']}: " if len(analyses) > 1 else ""
        for m in a["manipulation_checks"]:
            if m["domain"] == POOLED and m["status"] == "failed":
                out.append(
                    {
                        "level": "bad",
                        "text": f"{prefix}{m['variant']}: manipulation check failed: the customers' early turns do not "
                        f"show the emotion ({PRIMARY.label}: shift {signed(m['shift'])}, one-sided lower bound "
                        f"{signed(m['lower_bound'])} <= minimum {m['min_effect']:g}); a reward difference cannot be attributed to it.",
                    }
                )
        for w in a["fidelity"]["warnings"]:
            out.append({"level": "bad" if w["kind"] == "low_fidelity" else "warn", "text": prefix + w["message"]})
        excl = {v: n for v, n in a["excluded"].items() if n}
        if excl:
            imported = bool(a.get("imports"))
            out.append(
                {
                    "level": "warn",
                    "text": prefix
                    + "excluded from all effects ("
                    + (
                        "imported: tau2 infrastructure errors and skipped samples, as tau2's metrics leave them out; they cannot be "
                        "re-run here"
                        if imported
                        else "llm_error/harness_error, re-run to retry"
                    )
                    + "): "
                    + ", ".join(f"{v}={n} ({_excluded_why(a['summary']['variants'].get(v, {}))})" for v, n in excl.items()),
                }
            )
        for p in a["pairing"]:
            v, b = p["variant"], p["baseline"]
            if p["no_shared_task"]:
                out.append(
                    {
                        "level": "bad",
                        "text": prefix + f"{v} and the baseline {b} share no task: no pair can form, nothing is compared.",
                    }
                )
                continue
            for side, key in ((b, "only_baseline"), (v, "only_variant")):
                u = p[key]
                if u["n"]:
                    out.append(
                        {
                            "level": "info",
                            "text": prefix
                            + f"{v} vs {b}: {u['n']} task(s) only in {side}, left unpaired: "
                            + ", ".join(u["tasks"])
                            + (f" and {u['more']} more" if u["more"] else ""),
                        }
                    )
            for side in ("baseline", "variant"):
                f = p["facts"][side]
                if f["suspect"]:
                    out.append(
                        {
                            "level": "bad",
                            "text": prefix + f"{p[side]}: {f['missing']} of {f['checked']} conversations never mention a "
                            "scenario fact of their task (its user id, order or reservation ids, phone number), e.g. "
                            + "; ".join(f["examples"][:2])
                            + ": the file's task ids may not match its conversations, so its pairs "
                            "may compare different tasks.",
                        }
                    )
            c = p["customer"]
            if c["differs"] or c.get("unknown"):
                out.append(
                    {
                        "level": "warn",
                        "text": prefix
                        + f"{v} vs {b}: "
                        + ("different customer simulators" if c["differs"] else "one side's customer simulator is unknown")
                        + f" (baseline {_cust(c['baseline'])}; "
                        f"{v} {_cust(c['variant'])}): the difference may come from the customer, not the agent.",
                    }
                )
        for d in a["designs"]:
            aa = d.get("aa")
            if aa and aa.get("p") is not None and aa["p"] < ALPHA:
                out.append(
                    {
                        "level": "warn",
                        "text": prefix + f"A/A split of the baseline ({d['domain']}): the two halves of its trials differ "
                        f"({signed(aa['diff'])}, p {pval(aa['p'])}); trials may not be exchangeable (drift, caching, seeds).",
                    }
                )
        if a["trials"] < 2:
            out.append(
                {
                    "level": "info",
                    "text": prefix + "one trial per task: no A/A split of the baseline (run with --trials >= 2 for it).",
                }
            )
        for v, st in a["steering"].items():
            if not st["consistent"]:
                out.append(
                    {
                        "level": "warn",
                        "text": prefix + f"{v}: its conversations were steered with {len(st['distinct'])} different "
                        "vectors or scales (merged runs?); its scale is left blank and its effects mix doses: "
                        + "; ".join(f"{d['vector_sha256'][:12]} x {d['scale']:g} ({d['n_records']})" for d in st["distinct"]),
                    }
                )
        if a["judge"] and a["judge"].get("failed"):
            out.append(
                {
                    "level": "warn",
                    "text": prefix + f"LLM judge failed on {a['judge']['failed']} conversation(s) (left out of the judge score).",
                }
            )
    return out
