"""Planning a run before spending GPU hours: ``moodbench power`` and ``moodbench run --dry-run``.

The numbers come from :mod:`moodbench.analysis._power` (the formula ``benchmarks/calibration.py`` checks
against simulation); this module only turns counts a user knows (tasks, trials, variants, domains) into a
:class:`Design` with the report's family size, and estimates the unknown variance parameters from a pilot
run when there is one.

Defaults for what nobody knows before a pilot (documented in ``docs/statistics.md``):

* ``baseline_success`` 0.5: the largest outcome variance p(1 - p), so the MDE is not optimistic;
* ``icc`` 0.5: tau2 tasks differ a lot in difficulty (many always fail or always succeed); half of the
  outcome variance between tasks is the middle of what moodbench pilots showed, and it matters less than
  ``pair_corr`` because pairing removes the between-task part;
* ``pair_corr`` 0.0: no credit for the shared seed (with an LLM at temperature > 0 it is often small);
* ``effect_sd`` 0.05: tasks react to an emotion somewhat differently (a spread of 5 points of success).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import replace
from typing import Any

from moodbench.analysis._claims import baseline_by_task, matched_pairs, scored_index
from moodbench.analysis._inference import ALPHA
from moodbench.analysis._power import POWER, Design, design_from_pilot, mde
from moodbench.results import ConversationRecord

__all__ = [
    "DEFAULT_BASELINE",
    "DEFAULT_BASELINE_SUCCESS",
    "DEFAULT_EFFECT_SD",
    "DEFAULT_ICC",
    "DEFAULT_PAIR_CORR",
    "family_size",
    "pilot_design",
    "planned_design",
    "planned_mde",
]

DEFAULT_BASELINE = "control"
DEFAULT_BASELINE_SUCCESS = 0.5
DEFAULT_ICC = 0.5
DEFAULT_PAIR_CORR = 0.0
DEFAULT_EFFECT_SD = 0.05


def _count(x: int | Sequence[str], *, drop: str | None = None) -> int:
    if isinstance(x, int):
        return x
    return len([s for s in dict.fromkeys(x) if s != drop])


def family_size(variants: int | Sequence[str], domains: int | Sequence[str] = 1) -> int:
    """The report's primary family: every variant compared with the baseline x every scope (each domain,
    plus all domains pooled when there are several). A list of variant specs may include the baseline
    (``control``), which is not counted."""
    v = _count(variants, drop=DEFAULT_BASELINE)
    d = _count(domains)
    return max(1, v) * (d + 1 if d > 1 else 1)


def planned_design(tasks: int, trials: int, variants: int | Sequence[str], domains: int | Sequence[str] = 1, *,
                   baseline_success: float | None = None, icc: float | None = None, pair_corr: float | None = None,
                   effect_sd: float | None = None, alpha: float = ALPHA, power: float = POWER) -> Design:
    """The design of one domain's comparison (``tasks`` tasks per domain) with the run's family size."""
    return Design(
        tasks=int(tasks), trials=int(trials), family_size=family_size(variants, domains), alpha=alpha, power=power,
        baseline_success=DEFAULT_BASELINE_SUCCESS if baseline_success is None else baseline_success,
        icc=DEFAULT_ICC if icc is None else icc,
        pair_corr=DEFAULT_PAIR_CORR if pair_corr is None else pair_corr,
        effect_sd=DEFAULT_EFFECT_SD if effect_sd is None else effect_sd,
    )


def planned_mde(tasks: int, trials: int, variants: int | Sequence[str], domains: int | Sequence[str] = 1,
                **params: Any) -> float | None:
    """Minimum detectable drop in mean reward (80% power, Holm family of the report) of a planned run.

    ``tasks``: tasks per domain; ``trials``: trials per task; ``variants``: the emotional variants compared
    with the baseline (a count, or the run's list of specs, baseline included or not); ``domains``: a count
    or the list. Unknown parameters take the module defaults (``baseline_success`` 0.5, ``icc`` 0.5,
    ``pair_corr`` 0, ``effect_sd`` 0.05); pass them as keywords to override. ``None`` when the design is
    below the minimum for any claim (fewer than MIN_TASKS tasks or MIN_PAIRS pairs per domain), or when no
    drop reaches the power. With several domains this is the per-domain MDE; the pooled comparison has
    more tasks and a smaller one. For ``moodbench run --dry-run``.
    """
    return mde(planned_design(tasks, trials, variants, domains, **params))


def pilot_design(records: Sequence[ConversationRecord], baseline: str, variants: Sequence[str], *,
                 family: int = 1, alpha: float = ALPHA, power: float = POWER) -> Design:
    """Design parameters estimated from a pilot run (``moodbench power --pilot``).

    The baseline's trials give ``baseline_success`` and ``icc`` (one-way ANOVA); the pilot's variants, when
    it has any, give the within-task variance of a pair difference and the spread of task effects
    (``effect_sd``), each variant centred on its own mean effect so a real effect is not counted as spread.
    Raises ``ValueError`` when the pilot has no scored baseline conversation.
    """
    base = baseline_by_task(records, baseline)
    if not base:
        raise ValueError(f"the pilot has no scored {baseline!r} conversations")
    index = scored_index(records)
    diffs: dict[Hashable, list[float]] = defaultdict(list)
    for v in variants:
        if v == baseline:
            continue
        pairs = matched_pairs(index.get(baseline, {}), index.get(v, {}))
        if not pairs:
            continue
        d = [float(y.reward) - float(x.reward) for x, y in pairs]  # type: ignore[arg-type]
        centre = sum(d) / len(d)
        for (x, _), value in zip(pairs, d):
            diffs[(v, x.task_key)].append(value - centre)
    design = design_from_pilot(base, dict(diffs) if diffs else None, family_size=family, alpha=alpha, power=power)
    return replace(design, tasks=len(base))


def pilot_with_assumptions(pilot: Design, *, family: int, pilot_has_variants: bool, baseline_success: float | None = None,
                           icc: float | None = None, pair_corr: float | None = None,
                           effect_sd: float | None = None) -> Design:
    """A pilot's design with the user's stated assumptions on top (``moodbench power --pilot ... --icc X``).

    A stated ``icc``, ``pair_corr`` or ``baseline_success`` makes the pilot's measured pair-difference
    variance no longer apply; a stated ``baseline_success`` replaces the pilot's outcome variance; a pilot
    without variants cannot see how tasks react, so its effect spread falls back to the default unless
    stated.
    """
    stated = {k: v for k, v in (("baseline_success", baseline_success), ("icc", icc), ("pair_corr", pair_corr),
                                ("effect_sd", effect_sd)) if v is not None}
    overrides: dict[str, Any] = dict(stated)
    if {"icc", "pair_corr", "baseline_success"} & set(stated):
        overrides["diff_within_var"] = None
    if not pilot_has_variants and effect_sd is None:
        overrides["effect_sd"] = DEFAULT_EFFECT_SD
    if "baseline_success" in stated:
        overrides["outcome_var"] = None
    return replace(pilot, family_size=family, **overrides)
