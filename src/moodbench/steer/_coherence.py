"""Whether a steered customer is still a coherent customer, decided statistically across the whole sweep.

Why: the first rule judged each scale alone on point estimates ("flagged replies more than 20 points
above scale 0's") and took as ``severe`` the strongest scale before the first failure. One or two of 24
replies move a flag rate by 8-25 points, so the same design gave severe 1.0, 1.5 and "cannot be steered"
on three runs: an unlucky scale 0.5 (flagged 42% vs 20%) ended a sweep whose scale 1.0 was coherent and
clearly emotional.

How (each step a pure function of the scored replies, so it is tested on replies with a known truth):

1. **Each check is a paired, task-clustered difference to scale 0** (:func:`moodbench.analysis.paired_effect`,
   the project's one inference): replies paired by (task, turn, seed), conversations by (task, seed),
   clustered by task. Checks, with the harm direction and the practical margin (:data:`THRESHOLDS` of
   the calibration): flagged replies (+0.20), early stops per conversation (+0.20), trigram repetition
   (+0.15), goal overlap (a drop of more than half of scale 0's, when scale 0's is at least 0.1) and
   perplexity under the unsteered model (log ratio above log 2).
2. **Harm grows with the scale**: per check, the differences over the positive scales are fitted by a
   weighted isotonic (non-decreasing) regression (:func:`scipy.optimize.isotonic_regression`, weights
   1/SE^2). A noisy scale that breaks the order is pooled with its neighbours; its pooled SE is the
   weighted mean of the members' SEs (conservative: the members share scale 0's replies).
3. **Incoherent only when the excess is credible**: the fitted excess is above the check's margin AND
   its 95% interval (the members' t quantile) excludes 0. A check with fewer than 2 tasks cannot be
   credible; it makes the calibration "too small to decide" instead.
4. **One onset**: the first credibly incoherent positive scale ends the coherent range; every scale above
   it counts as incoherent (harm grows with the scale), and a scale above the onset that passed on its own
   is named in a note, as is a scale below it that the old point rule would have failed.

A deterministic check stays beside these: a scale with fewer than ``min_replies_ratio`` x scale 0's
scored replies is not judged on a handful (it mostly stopped early) and counts as incoherent.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["CHECKS", "Check", "Decision", "decide", "judge_one", "scale_checks", "suggest_tasks"]

Z_POWER = 1.959964 + 0.841621  # two-sided 5% test with 80% power (normal approximation)


@dataclass(frozen=True)
class Check:
    """One coherence check of one scale against scale 0 (harm is positive)."""

    name: str
    diff: float | None  # excess harm, paired task-clustered mean
    se: float | None
    low: float | None
    high: float | None
    n_tasks: int
    margin: float | None  # the practical size that counts as harm; None: not applicable at this baseline
    fitted: float | None = None  # isotonic fit over the scales
    fitted_low: float | None = None
    credible: bool = False  # fitted above the margin and its interval above 0
    raw_fail: bool = False  # what the point rule alone (diff > margin) would have said
    raw_credible: bool = False  # credible on this scale's own interval, before the monotone fit

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _flag(r: dict[str, Any]) -> float:
    return float(bool(r["role_confusion"] or r["echo"] or r["empty"] or r.get("refusal") or r.get("self_repeat")
                      or r["error"] is not None))  # fmt: skip


def _log_ppl(r: dict[str, Any]) -> float | None:
    p = r.get("perplexity")
    return math.log(p) if p and p > 0 and math.isfinite(p) else None


def _by_reply(rows: list[dict[str, Any]], value: Callable[[dict[str, Any]], float | None]) -> dict[tuple, float]:
    out = {}
    for r in rows:
        v = value(r)
        if v is not None:
            out[(r["task"], r["turn"], r["seed"])] = float(v)
    return out


def _by_conversation(rows: list[dict[str, Any]], value: Callable[[list[dict[str, Any]]], float | None]) -> dict[tuple, float]:
    convs: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        convs.setdefault((r["task"], r["seed"]), []).append(r)
    out = {}
    for key, conv in convs.items():
        v = value(conv)
        if v is not None:
            out[key] = float(v)
    return out


def _goal(conv: list[dict[str, Any]]) -> float | None:
    g = conv[0].get("goal_overlap")
    return None if g is None else -float(g)  # harm = the drop


def _stop(conv: list[dict[str, Any]]) -> float:
    return float(any(r["stop"] for r in conv))


# name -> (level of pairing, per-unit harm value, margin from the thresholds and the scale-0 mean)
CHECKS: dict[str, tuple[str, Callable[..., float | None], Callable[[dict[str, float], float | None], float | None]]] = {
    "flagged": ("reply", _flag, lambda t, _b: t["flagged_increase_max"]),
    "stop": ("conversation", _stop, lambda t, _b: t["stop_increase_max"]),
    "repetition": ("reply", lambda r: r.get("repetition"), lambda t, _b: t["repetition_increase_max"]),
    # goal values are negated overlaps: the margin is half of scale 0's overlap, when it is at least 0.1
    "goal_overlap": ("conversation", _goal,
                     lambda t, b: (1 - t["goal_ratio_min"]) * -b if b is not None and -b >= 0.1 else None),
    "perplexity": ("reply", _log_ppl, lambda t, _b: math.log(t["ppl_ratio_max"])),
}  # fmt: skip


def scale_checks(rows: list[dict[str, Any]], base_rows: list[dict[str, Any]], thresholds: dict[str, float]) -> dict[str, Check]:
    """Every check of one scale's scored replies against scale 0's, as paired task-clustered differences."""
    from moodbench.analysis import paired_effect

    out: dict[str, Check] = {}
    for name, (level, value, margin_of) in CHECKS.items():
        collect = _by_reply if level == "reply" else _by_conversation
        mine, base = collect(rows, value), collect(base_rows, value)
        keys = sorted(set(mine) & set(base), key=repr)
        base_mean = float(np.mean(list(base.values()))) if base else None
        margin = margin_of(thresholds, base_mean)
        if not keys:
            out[name] = Check(name, None, None, None, None, 0, margin)
            continue
        e = paired_effect([base[k] for k in keys], [mine[k] for k in keys], [k[0] for k in keys])
        above = margin is not None and e.diff is not None and e.diff > margin
        out[name] = Check(name, e.diff, e.se, e.ci_low, e.ci_high, e.n_tasks, margin, raw_fail=above,
                          raw_credible=above and e.n_tasks >= 2 and e.ci_low is not None and e.ci_low > 0)  # fmt: skip
    return out


def _t975(df: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.975, df)) if df >= 1 else math.inf


def _fit(checks: list[Check]) -> list[Check]:
    """Isotonic (non-decreasing in scale) fit of one check over the positive scales, with credible verdicts."""
    from scipy.optimize import isotonic_regression

    usable = [i for i, c in enumerate(checks) if c.diff is not None]
    fitted: list[Check] = list(checks)
    if not usable:
        return fitted
    se = np.array([checks[i].se if checks[i].se else 0.0 for i in usable])
    floor = max(float(se[se > 0].min()) if (se > 0).any() else 1e-6, 1e-9)
    weights = 1.0 / np.maximum(se, floor) ** 2
    y = np.array([checks[i].diff for i in usable], dtype=float)
    fit = isotonic_regression(y, weights=weights, increasing=True).x
    # members of one pooled block share a fitted value: give the block the members' conservative SE and df
    blocks: list[list[int]] = []
    for j in range(len(usable)):
        if blocks and math.isclose(fit[j], fit[blocks[-1][0]], rel_tol=1e-12, abs_tol=1e-12):
            blocks[-1].append(j)
        else:
            blocks.append([j])
    for block in blocks:
        members = [checks[usable[j]] for j in block]
        w = weights[block]
        block_se = float(np.sum(w * se[block]) / np.sum(w))
        tasks = min(m.n_tasks for m in members)
        value = float(fit[block[0]])
        low = value - _t975(tasks - 1) * block_se if tasks >= 2 else None
        for j, m in zip(block, members, strict=True):
            credible = bool(m.margin is not None and low is not None and value > m.margin and low > 0)
            fitted[usable[j]] = Check(**{**m.to_dict(), "fitted": value, "fitted_low": low, "credible": credible})
    return fitted


@dataclass
class Decision:
    """The verdicts of a sweep: per scale its checks and coherence, the onset of incoherence, notes."""

    checks: dict[float, dict[str, Check]]
    coherent: dict[float, bool]
    why: dict[float, list[str]]
    onset: float | None  # the first credibly incoherent positive scale
    bounded_by: list[str]  # the checks that made the onset scale incoherent
    notes: list[str]
    undecided: list[str]  # checks that could not be judged (fewer than 2 tasks)


def _describe(c: Check) -> str:
    if c.name == "perplexity":
        return (f"perplexity x{math.exp(c.fitted or 0):.2f} of scale 0's (fitted; 95% lower bound "
                f"x{math.exp(c.fitted_low or 0):.2f}, margin x{math.exp(c.margin or 0):.1f})")  # fmt: skip
    if c.name == "goal_overlap":
        return f"goal overlap down {c.fitted:.2f} (fitted; lower bound {c.fitted_low:.2f}, margin {c.margin:.2f})"
    return f"{c.name} +{c.fitted:.2f} vs scale 0 (fitted; 95% lower bound {c.fitted_low:+.2f}, margin +{c.margin:.2f})"


def decide(per_scale: dict[float, list[dict[str, Any]]], thresholds: dict[str, float]) -> Decision:
    """Coherence of every scale in ``per_scale`` (scale -> scored replies; 0.0 is the baseline)."""
    base_rows = per_scale[0.0]
    positive = sorted(s for s in per_scale if s > 0)
    negative = sorted(s for s in per_scale if s < 0)
    raw = {s: scale_checks(per_scale[s], base_rows, thresholds) for s in positive + negative}
    checks: dict[float, dict[str, Check]] = {s: {} for s in raw}
    for name in CHECKS:
        for side in (positive, [s for s in reversed(negative)]):
            for s, c in zip(side, _fit([raw[s][name] for s in side]), strict=True):
                checks[s][name] = c
    base_scored = sum(r.get("vader") is not None for r in base_rows)
    coherent: dict[float, bool] = {0.0: True}
    why: dict[float, list[str]] = {0.0: []}
    for s in positive + negative:
        reasons = [_describe(c) for c in checks[s].values() if c.credible]
        scored = sum(r.get("vader") is not None for r in per_scale[s])
        if scored < thresholds["min_replies_ratio"] * max(1, base_scored):
            reasons.append(f"only {scored} scored replies vs {base_scored} at scale 0")
        coherent[s], why[s] = not reasons, reasons
    onset = next((s for s in positive if not coherent[s]), None)
    notes: list[str] = []
    bounded_by: list[str] = []
    if onset is not None:
        bounded_by = list(why[onset])
        for s in positive:
            if s <= onset:
                continue
            if coherent[s]:
                coherent[s] = False
                why[s] = [f"above the onset of incoherence at scale {onset:g} (harm grows with the scale)"]
            if not any(c.raw_credible for c in checks[s].values()):
                notes.append(f"scale {s:g} passed on its own but lies above the incoherent scale {onset:g}; counted incoherent")
    for s in positive:
        if onset is not None and s >= onset:
            continue
        raw_fails = [c.name for c in checks[s].values() if c.raw_fail and not c.credible]
        if raw_fails:
            notes.append(f"scale {s:g}: {', '.join(raw_fails)} above the margin on its own but not credibly so "
                         "(task-clustered interval, monotone in the scale): kept coherent")  # fmt: skip
    undecided = sorted({c.name for s in positive for c in checks[s].values() if c.diff is not None and c.n_tasks < 2})
    return Decision(checks, coherent, why, onset, bounded_by, notes, undecided)


def suggest_tasks(n_tasks: int, se: float | None, target: float) -> int | None:
    """Tasks needed for a 95% interval to detect ``target`` with 80% power, scaling the measured SE by
    sqrt(n_tasks / n) (clusters are tasks); None when the SE is unknown. Always more than ``n_tasks``."""
    if not se or not target or n_tasks < 1:
        return None
    need = n_tasks * (Z_POWER * se / abs(target)) ** 2
    return max(n_tasks + 1, math.ceil(need))


def judge_one(
    rows: list[dict[str, Any]], base_rows: list[dict[str, Any]], thresholds: dict[str, float]
) -> tuple[bool, list[str]]:
    """One dose (e.g. a prompted level) against the baseline by the same credible-excess rule."""
    d = decide({0.0: base_rows, 1.0: rows}, thresholds)
    return d.coherent[1.0], d.why[1.0]
