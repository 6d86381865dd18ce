"""Prompted vs steered side by side: at matched levels, how far each method moved the customer and at what cost.

A steered customer (a control vector added to a local model's activations) and a prompted one (a persona
block in its system prompt) are two ways to deliver one emotion; ``frustration:mild`` and
``frustration@steer:mild`` share a level *name*, not a dose. This module puts them next to each other per
(emotion, level, method) without any inference of its own: every number is read from what the report already
computed and calibrated (``docs/statistics.md``):

* the **manipulation check** row of the variant (declared primary score on early turns; its paired
  difference with the two-sided 95% interval, the one-sided lower bound and the status);
* the **simulator-fidelity** flagged rate of the variant and its gap to the baseline's (the coherence cost:
  a vector strong enough to move the customer can also make it stop playing its part);
* the **reward effect** with its Holm claim from the primary family (``claim_family``), trust and caveats;
* for steered rows, what was added to the activations, read from the records' ``steering``.

Methods are never tested against each other (that would be a second, uncalibrated inference): the plain-words
summary says which method passed the check where the other did not, and calls a larger shift among methods
that both passed a point estimate. ``too_few`` designs say so and give point estimates only.

report.json ``methods_comparison`` (one entry per run and emotion that has a steered variant or more than one
method)::

    {"run", "emotion", "methods": ["prompt", "steer", "both"], "levels": ["mild", ...], "matched_levels": [...],
     "baseline": "control", "baseline_flagged_rate": 0.0,
     "rows": [{"level": 1, "level_name": "mild", "method": "steer", "variant": "frustration@steer:mild",
               "steering": {"emotion", "vector_sha256", "vector_short", "scale", "layers", "vector_method", "vector",
                            "n_records", "consistent", "distinct"} | null,
               "manipulation": {"score", "turns", "status", "n_pairs", "n_tasks", "baseline_mean", "variant_mean",
                                "shift", "ci", "lower_bound", "min_effect", "p", "family_size", "reason"} | null,
               "fidelity": {"n", "flagged", "flagged_rate", "baseline_flagged_rate", "gap", "warnings": [kind, ...]},
               "reward": {"n_pairs", "n_tasks", "baseline_mean", "variant_mean", "diff", "ci", "p", "p_adjusted",
                          "claim", "family", "family_size", "trust", "caveats": [kind, ...]} | null}],
     "summary": "plain words, from the numbers above"}
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from moodbench.analysis._claims import POOLED
from moodbench.analysis._conversations import FIDELITY_MAX_FLAGGED, FIDELITY_MAX_GAP
from moodbench.analysis._inference import MIN_PAIRS, MIN_TASKS
from moodbench.analysis._manipulation import PRIMARY
from moodbench.analysis._variants import Dose, dose_of
from moodbench.results import ConversationRecord

__all__ = ["METHOD_ORDER", "METHOD_WORDS", "comparison_summary", "methods_comparison", "steering_by_variant"]

METHOD_ORDER = ("prompt", "steer", "both")
METHOD_WORDS = {"prompt": "prompted", "steer": "steered", "both": "prompted+steered"}
SHORT_SHA = 12  # characters of a vector's sha256 shown in tables (the full digest is in report.json)


def _fmt(x: float | None, digits: int = 2, sign: bool = True) -> str:
    if x is None:
        return "–"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


# --------------------------------------------------------------------------- what was steered


def _steering_key(r: ConversationRecord) -> tuple[Any, ...] | None:
    s = r.steering
    if s is None:
        return None
    return (s.emotion, s.vector_sha256, float(s.scale), tuple(s.layers) if s.layers else None, s.method, s.vector)


def steering_by_variant(records: Iterable[ConversationRecord]) -> dict[str, dict[str, Any]]:
    """variant -> what its records say was added to the customer's activations (steered variants only).

    Every record of a variant should carry the same vector and scale (a resume with another one is refused),
    but merged runs can mix them: then ``consistent`` is false, every field the records disagree on (say
    ``scale``) is null and ``distinct`` lists what was seen, so no table pretends there was one dose.
    """
    seen: dict[str, Counter[tuple[Any, ...]]] = defaultdict(Counter)
    for r in records:
        key = _steering_key(r)
        if key is not None:
            seen[r.variant][key] += 1
    out: dict[str, dict[str, Any]] = {}
    for variant, counts in seen.items():
        distinct = [
            {
                "emotion": k[0],
                "vector_sha256": k[1],
                "scale": k[2],
                "layers": list(k[3]) if k[3] else None,
                "vector_method": k[4],
                "n_records": n,
            }
            for k, n in counts.most_common()
        ]
        keys = list(counts)

        def same(i: int, keys: list[tuple[Any, ...]] = keys) -> Any:
            """The value when every record agrees on it, else None (no table may pretend there was one)."""
            return keys[0][i] if len({k[i] for k in keys}) == 1 else None

        sha, layers = same(1), same(3)
        out[variant] = {
            "emotion": same(0),
            "vector_sha256": sha,
            "vector_short": sha[:SHORT_SHA] if sha else None,
            "scale": same(2),
            "layers": list(layers) if layers else None,
            "vector_method": same(4),
            "vector": same(5),
            "n_records": sum(counts.values()),
            "consistent": len(keys) == 1,
            "distinct": [] if len(keys) == 1 else distinct,
        }
    return out


# --------------------------------------------------------------------------- the side-by-side rows


def _compared(variants: Sequence[str], baseline: str) -> dict[str, list[tuple[str, Dose]]]:
    """emotion -> [(variant, dose)] for emotions with a steered variant or more than one method."""
    by_emotion: dict[str, list[tuple[str, Dose]]] = defaultdict(list)
    for v in variants:
        d = dose_of(v) if v != baseline else None
        if d is not None:
            by_emotion[d.emotion].append((v, d))
    out = {}
    for emotion, members in by_emotion.items():
        methods = {d.method for _, d in members}
        if len(methods) > 1 or methods & {"steer", "both"}:
            order = {m: i for i, m in enumerate(METHOD_ORDER)}
            out[emotion] = sorted(members, key=lambda x: (x[1].level, order.get(x[1].method, len(order)), x[1].method))
    return out


def _manipulation(check: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if check is None:
        return None
    primary = next((s for s in check.get("secondary", []) if s.get("primary")), None)
    return {
        "score": check.get("score"),
        "turns": check.get("turns"),
        "status": check["status"],
        "n_pairs": check["n_pairs"],
        "n_tasks": check["n_tasks"],
        "baseline_mean": check["baseline_mean"],
        "variant_mean": check["variant_mean"],
        "shift": check["shift"],
        "ci": list(primary["ci"]) if primary else [None, None],
        "lower_bound": check["lower_bound"],
        "min_effect": check["min_effect"],
        "p": check["p"],
        "family_size": check["family_size"],
        "reason": check.get("reason"),
    }


def _reward(e: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if e is None:
        return None
    return {
        "n_pairs": e["n_pairs"],
        "n_tasks": e["n_tasks"],
        "baseline_mean": e["baseline_mean"],
        "variant_mean": e["variant_mean"],
        "diff": e["diff"],
        "ci": list(e["ci"]),
        "p": e["p"],
        "p_adjusted": e["p_adjusted"],
        "claim": e["claim"],
        "family": e.get("family"),
        "family_size": e.get("family_size"),
        "trust": e.get("trust"),
        "caveats": [c["kind"] for c in e.get("caveats") or []],
    }


def _fidelity(v: str, fid: Mapping[str, Any], baseline: str) -> dict[str, Any]:
    per = fid.get("variants", {})
    mine, base = per.get(v, {}), per.get(baseline, {})
    rate, base_rate = mine.get("flagged_rate"), base.get("flagged_rate")
    return {
        "n": mine.get("n", 0),
        "flagged": mine.get("flagged", 0),
        "flagged_rate": rate,
        "baseline_flagged_rate": base_rate,
        "gap": None if rate is None or base_rate is None else rate - base_rate,
        "warnings": sorted({w["kind"] for w in fid.get("warnings", []) if w.get("variant") == v}),
    }


def methods_comparison(
    records: Sequence[ConversationRecord],
    baseline: str,
    variants: Sequence[str],
    *,
    effects: Sequence[Mapping[str, Any]],
    checks: Sequence[Mapping[str, Any]],
    fidelity: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """One entry per emotion with a steered variant or several methods, rows per (level, method), pooled scope.

    ``effects`` are the run's reward effect rows (``reward_effects``, with trust/caveats added by the report),
    ``checks`` its manipulation checks (``manipulation_check``) and ``fidelity`` its :func:`fidelity` result:
    the rows only read them, so every number here is the one the report's other sections show.
    """
    groups = _compared(variants, baseline)
    if not groups:
        return []
    steering = steering_by_variant(records)
    eff = {e["variant"]: e for e in effects if e["domain"] == POOLED and e["subset"] == "all"}
    chk = {c["variant"]: c for c in checks if c["domain"] == POOLED}
    base_rate = fidelity.get("variants", {}).get(baseline, {}).get("flagged_rate")
    out: list[dict[str, Any]] = []
    for emotion, members in groups.items():
        rows: list[dict[str, Any]] = [
            {
                "level": d.level,
                "level_name": d.level_name,
                "method": d.method,
                "variant": v,
                "steering": steering.get(v),
                "manipulation": _manipulation(chk.get(v)),
                "fidelity": _fidelity(v, fidelity, baseline),
                "reward": _reward(eff.get(v)),
            }
            for v, d in members
        ]
        by_level: dict[str, set[str]] = defaultdict(set)
        for r in rows:
            by_level[r["level_name"]].add(r["method"])
        levels = list(dict.fromkeys(r["level_name"] for r in rows))
        entry: dict[str, Any] = {
            "emotion": emotion,
            "methods": [m for m in METHOD_ORDER if any(r["method"] == m for r in rows)]
            + sorted({r["method"] for r in rows} - set(METHOD_ORDER)),
            "levels": levels,
            "matched_levels": [lv for lv in levels if len(by_level[lv]) > 1],
            "baseline": baseline,
            "baseline_flagged_rate": base_rate,
            "rows": rows,
        }
        entry["summary"] = comparison_summary(entry)
        out.append(entry)
    return out


# --------------------------------------------------------------------------- plain words

TIE = 1e-9  # shifts this close are called equal, not ranked
UNTESTED = "A larger shift between methods that both passed is a point estimate: methods are not tested against each other"


def _who(r: Mapping[str, Any]) -> str:
    return METHOD_WORDS.get(r["method"], r["method"])


def _shift(r: Mapping[str, Any]) -> float | None:
    m = r.get("manipulation")
    return None if m is None else m.get("shift")


def _status(r: Mapping[str, Any]) -> str:
    m = r.get("manipulation")
    return "too_few" if m is None else str(m["status"])


def _and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _shifts(rows: Sequence[Mapping[str, Any]]) -> str:
    return ", ".join(f"{_who(r)} {_fmt(_shift(r))}" for r in rows)


def _moved(level: str, rows: Sequence[Mapping[str, Any]], min_effect: float) -> tuple[str, bool]:
    """Which method moved the customer at one level, within what the manipulation check can say.

    Returns the clause and whether it ranked methods by point estimate (the caller then says so once).
    """
    passed = [r for r in rows if _status(r) == "passed"]
    failed = [r for r in rows if _status(r) == "failed"]
    few = [r for r in rows if _status(r) == "too_few"]
    if not passed and not failed:
        m = next((r["manipulation"] for r in rows if r.get("manipulation")), None)
        size = f" ({m['n_tasks']} tasks, {m['n_pairs']} pairs)" if m else ""
        return f"at {level} too few to check{size}, early-turn shifts as point estimates only: {_shifts(rows)}", False
    ranked = False
    if passed and failed:
        text = (
            f"at {level} only {_and([_who(r) for r in passed])} moved the customer by more than the minimum {min_effect:g} "
            f"(manipulation check passed; {_and([_who(r) for r in failed])} failed; shifts {_shifts(passed + failed)})"
        )
    elif len(passed) > 1:
        top = max(_shift(r) or 0.0 for r in passed)
        best = [r for r in passed if abs((_shift(r) or 0.0) - top) <= TIE]
        which = "with equal shifts" if len(best) == len(passed) else f"{_and([_who(r) for r in best])} with the larger shift"
        text = (
            f"at {level} {_and([_who(r) for r in passed])} {'both' if len(passed) == 2 else 'all'} passed the manipulation "
            f"check, {which} ({_shifts(passed)})"
        )
        ranked = len(best) < len(passed)
    elif passed:
        text = f"at {level} {_who(passed[0])} moved the customer (manipulation check passed, shift {_fmt(_shift(passed[0]))})"
    else:
        subject = "neither method" if len(failed) > 1 else _who(failed[0])
        text = (
            f"at {level} {subject} did not move the customer by more than the minimum {min_effect:g} (manipulation check "
            f"failed; shift{'s' if len(failed) > 1 else ''} {_shifts(failed)})"
        )
    if few:
        text += f"; {_and([_who(r) for r in few])} too few to check"
    return text, ranked


def _cost(rows: Sequence[Mapping[str, Any]]) -> str:
    """The coherence cost: flagged share per method against the baseline's, with the documented thresholds."""
    bits = []
    for r in rows:
        f = r["fidelity"]
        over = [
            {
                "low_fidelity": f"the {FIDELITY_MAX_FLAGGED:.0%} limit",
                "fidelity_gap": f"the {100 * FIDELITY_MAX_GAP:.0f}-point gap limit",
            }.get(w, w)
            for w in sorted(f["warnings"], key=lambda k: k != "low_fidelity")
        ]
        gap = [] if f["gap"] is None else [f"{100 * f['gap']:+.0f} points"]
        note = ", ".join(gap + ([f"over {_and(over)}"] if over else []))
        bits.append(f"{_who(r)} {_pct(f['flagged_rate'])}" + (f" ({note})" if note else ""))
    return "flagged " + ", ".join(bits)


def _rewards(rows: Sequence[Mapping[str, Any]]) -> str:
    """The reward claims of the report's primary family, as the claims section states them."""
    got: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        w = r.get("reward")
        if w is not None:
            got[w["claim"]].append(
                f"{_who(r)} at {r['level_name']}" + (f" ({_fmt(w['diff'], 3)})" if w["claim"] != "no_difference" else "")
            )
    parts = [f"{c} with {_and(got[c])}" for c in ("lower", "higher") if got.get(c)]
    if got.get("no_difference"):
        parts.append(f"no difference claimed for {_and(got['no_difference'])}")
    if not parts:
        return "no reward claim for any variant: too few tasks or pairs, or zero spread" if got else ""
    few = f"; too few for a claim: {_and(got['too_few'])}" if got.get("too_few") else ""
    return "reward (claims of the report's primary family, Holm): " + "; ".join(parts) + few


def comparison_summary(entry: Mapping[str, Any]) -> str:
    """Plain words per emotion: which method moved the customer more, at what coherence cost, and the reward claims.

    Only what the calibrated statistics allow: the check's status per variant (passed / failed / too_few), shifts
    among passing methods as point estimates, flagged shares against the documented thresholds, the claims of
    the report's own family.
    """
    emotion, rows, baseline = entry["emotion"], entry["rows"], entry["baseline"]
    min_effect = next((r["manipulation"]["min_effect"] for r in rows if r.get("manipulation")), PRIMARY.min_effect)
    by_level: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        by_level[r["level_name"]].append(r)
    sentences, ranked = [], False
    base_rate = rows[0]["fidelity"]["baseline_flagged_rate"] if rows else None
    cost = f"coherence cost = the share of conversations with a simulator flag ({baseline} {_pct(base_rate)})"
    if entry["matched_levels"]:
        sentences.append(f"{emotion}, matched levels {_and(entry['matched_levels'])}; {cost}")
        shown = list(entry["matched_levels"])
    else:
        methods = _and([METHOD_WORDS.get(m, m) for m in entry["methods"]])
        sentences.append(
            f"{emotion}: only {methods} at {_and(entry['levels'])}, so no level can be compared across methods; {cost}"
        )
        shown = list(entry["levels"])
    flat = [r for r in rows if str((r.get("manipulation") or {}).get("reason") or "").startswith("zero spread")]
    if rows and len(flat) == len(rows):
        sentences.append(
            "the manipulation check gives no verdict: in every task the customer's early turns shifted by the same "
            "amount (zero spread), so the data give no uncertainty to test against and every number here is a point "
            "estimate only"
        )
        for level in shown:
            sentences.append(f"at {level} early-turn shifts {_shifts(by_level[level])}; {_cost(by_level[level])}")
    elif rows and all(_status(r) == "too_few" for r in rows):
        sizes = {(r["manipulation"]["n_tasks"], r["manipulation"]["n_pairs"]) for r in rows if r.get("manipulation")}
        size = f" ({_and([f'{t} tasks, {n} pairs' for t, n in sorted(sizes)])})" if sizes else ""
        sentences.append(
            f"too few to check whether the emotion reached the customer or to claim a reward effect{size}: both need "
            f">= {MIN_TASKS} tasks and >= {MIN_PAIRS} pairs, so every number here is a point estimate only"
        )
        for level in shown:
            sentences.append(f"at {level} early-turn shifts {_shifts(by_level[level])}; {_cost(by_level[level])}")
    else:
        for level in shown:
            text, r = _moved(level, by_level[level], min_effect)
            ranked = ranked or r
            sentences.append(text + "; " + _cost(by_level[level]))
    single = [lv for lv in entry["levels"] if lv not in shown]
    if single:
        sentences.append(
            "unmatched: "
            + ", ".join(f"{lv} {_who(by_level[lv][0])} only ({_status(by_level[lv][0]).replace('_', ' ')})" for lv in single)
        )
    reward = _rewards(rows)
    if reward:
        sentences.append(reward)
    if ranked:
        sentences.append(UNTESTED)
    return ". ".join(s[0].upper() + s[1:] for s in sentences) + "."
