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

Because the spread of task effects is what nobody knows and what matters most, both commands also show the
MDE across a range of spreads (:data:`SPREADS`) and for a drop concentrated in half the tasks
(:func:`mde_by_spread`), naming every value they assumed (:func:`plan_summary`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import replace
from typing import Any

from moodbench.analysis._claims import baseline_by_task, matched_pairs, scored_index
from moodbench.analysis._inference import ALPHA
from moodbench.analysis._power import POWER, Design, design_from_pilot, mde
from moodbench.results import ConversationRecord, Run

__all__ = [
    "DEFAULT_BASELINE",
    "DEFAULT_BASELINE_SUCCESS",
    "DEFAULT_EFFECT_SD",
    "DEFAULT_ICC",
    "DEFAULT_PAIR_CORR",
    "SPREADS",
    "assumptions",
    "family_size",
    "mde_by_spread",
    "pilot_design",
    "plan_summary",
    "power_design",
    "planned_design",
    "planned_mde",
]

DEFAULT_BASELINE = "control"
DEFAULT_BASELINE_SUCCESS = 0.5
DEFAULT_ICC = 0.5
DEFAULT_PAIR_CORR = 0.0
DEFAULT_EFFECT_SD = 0.05
SPREADS = (0.0, 0.05, 0.10, 0.20)  # task-effect spreads (SD of the true effect across tasks) every plan is shown at
HALF = 0.5  # the uneven case every plan is shown at: the whole drop in half the tasks


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


def planned_design(
    tasks: int,
    trials: int,
    variants: int | Sequence[str],
    domains: int | Sequence[str] = 1,
    *,
    baseline_success: float | None = None,
    icc: float | None = None,
    pair_corr: float | None = None,
    effect_sd: float | None = None,
    alpha: float = ALPHA,
    power: float = POWER,
) -> Design:
    """The design of one domain's comparison (``tasks`` tasks per domain) with the run's family size."""
    return Design(
        tasks=int(tasks),
        trials=int(trials),
        family_size=family_size(variants, domains),
        alpha=alpha,
        power=power,
        baseline_success=DEFAULT_BASELINE_SUCCESS if baseline_success is None else baseline_success,
        icc=DEFAULT_ICC if icc is None else icc,
        pair_corr=DEFAULT_PAIR_CORR if pair_corr is None else pair_corr,
        effect_sd=DEFAULT_EFFECT_SD if effect_sd is None else effect_sd,
    )


def planned_mde(
    tasks: int, trials: int, variants: int | Sequence[str], domains: int | Sequence[str] = 1, **params: Any
) -> float | None:
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


def pilot_design(
    records: Sequence[ConversationRecord],
    baseline: str,
    variants: Sequence[str],
    *,
    family: int = 1,
    alpha: float = ALPHA,
    power: float = POWER,
) -> Design:
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


# --------------------------------------------------------------------------- planning across spreads


def mde_by_spread(
    design: Design, spreads: Sequence[float] = SPREADS, shares: Sequence[float] = (1.0, HALF)
) -> list[dict[str, Any]]:
    """The MDE of ``design`` at each assumed task-effect spread and drop share (1 = even, 0.5 = half the tasks).

    The spread is the SD of the true effect across tasks around its mean; the share puts the whole drop on
    that share of the tasks. ``mde`` is ``None`` below the minimum design or when unreachable.
    """
    return [
        {"effect_sd": float(sd), "drop_share": float(sh), "mde": mde(replace(design, effect_sd=float(sd), drop_share=float(sh)))}
        for sh in shares
        for sd in spreads
    ]


def assumptions(design: Design, given: Sequence[str] = ()) -> dict[str, Any]:
    """The design values a plan rests on, and which of them were assumed (module defaults) rather than given."""
    values = {
        "baseline_success": design.baseline_success,
        "icc": design.icc,
        "pair_corr": design.pair_corr,
        "effect_sd": design.effect_sd,
        "drop_share": design.drop_share,
        "family_size": design.family_size,
        "alpha": design.alpha,
        "power": design.power,
    }
    assumed = [k for k in ("baseline_success", "icc", "pair_corr", "effect_sd", "drop_share") if k not in given]
    return {"values": values, "assumed": assumed}


def plan_summary(
    tasks: int, trials: int, variants: int | Sequence[str], domains: int | Sequence[str] = 1, **params: Any
) -> dict[str, Any]:
    """What ``moodbench run --dry-run`` states about a planned run: its MDE at the stated assumptions, the MDE
    across task-effect spreads and for a drop in half the tasks, and every assumed value, as data and words.

    ``params`` are :func:`planned_design`'s keywords; the ones not given are reported as assumed.
    """
    design = planned_design(tasks, trials, variants, domains, **params)
    given = [k for k, v in params.items() if v is not None]
    spread = mde_by_spread(design)
    value = mde(design)
    a = assumptions(design, given)
    vals = a["values"]
    said = ", ".join(f"{k.replace('_', ' ')} {vals[k]:g}" for k in ("baseline_success", "icc", "pair_corr", "effect_sd"))
    lines = []
    if not design.claimable:
        lines.append(
            f"Minimum detectable effect: none. {tasks} task(s) x {trials} trial(s) per domain is below the smallest design "
            "that supports a claim (see `moodbench power`); every effect would be reported as too_few."
        )
    else:
        head = "unreachable at this power" if value is None else f"{value:.3f}"
        lines.append(
            f"Minimum detectable drop in mean reward: {head} (80% power, Holm over a family of {design.family_size}; "
            f"assumed {said}, the drop spread evenly over tasks)."
        )
        cells = "; ".join(
            f"{'even' if r['drop_share'] == 1 else 'half the tasks'} SD {r['effect_sd']:g}: "
            + ("-" if r["mde"] is None else f"{r['mde']:.3f}")
            for r in spread
        )
        lines.append(f"Across task-effect spreads (SD of the effect across tasks; drop even or in half the tasks): {cells}.")
        lines.append("`moodbench power --pilot RUN_DIR` estimates success, ICC, pair correlation and spread from a pilot run.")
    return {"design": design, "mde": value, "by_spread": spread, "assumptions": a, "lines": lines}


def power_design(
    *,
    tasks: int,
    trials: int,
    variants: int | None,
    domains: int | None,
    alpha: float,
    power: float,
    baseline_success: float | None = None,
    icc: float | None = None,
    pair_corr: float | None = None,
    effect_sd: float | None = None,
    drop_share: float | None = None,
    pilot: Run | None = None,
    baseline: str = DEFAULT_BASELINE,
) -> tuple[Design, dict[str, Any]]:
    """The design ``moodbench power`` plans with: from a pilot run (explicit values override its estimates) or
    from the given values and the module defaults. Returns the design and what it rests on
    (``variants``, ``domains``, ``given``, ``defaults_used``, ``pilot``). Raises ``ValueError`` for values
    outside their range or a pilot without a scored baseline.
    """
    given = {
        k: v
        for k, v in (
            ("baseline_success", baseline_success),
            ("icc", icc),
            ("pair_corr", pair_corr),
            ("effect_sd", effect_sd),
            ("drop_share", drop_share),
        )
        if v is not None
    }
    info: dict[str, Any] = {"pilot": None, "given": sorted(given)}
    if pilot is not None:
        base = pilot_design(pilot.records, baseline, pilot.variants, alpha=alpha, power=power)
        others = [v for v in pilot.variants if v != baseline]
        n_var, n_dom = variants or max(1, len(others)), domains or max(1, len(pilot.domains))
        overrides: dict[str, Any] = dict(given)
        if {"icc", "pair_corr", "baseline_success"} & set(
            overrides
        ):  # the pilot's measured difference variance no longer applies
            overrides["diff_within_var"] = None
        if not others and effect_sd is None:  # a baseline-only pilot cannot see how tasks react
            overrides["effect_sd"] = DEFAULT_EFFECT_SD
        if "baseline_success" in overrides:
            overrides["outcome_var"] = None
        design = replace(base, family_size=family_size(n_var, n_dom), **overrides)
        info["pilot"] = {
            "run_dir": str(pilot.run_dir),
            "baseline": baseline,
            "tasks": design.tasks,
            "variants": others,
            "domains": pilot.domains,
            "conversations": sum(1 for r in pilot.records if not r.excluded),
        }
        info["defaults_used"] = ["effect_sd"] if not others and effect_sd is None else []
    else:
        n_var, n_dom = variants or 1, domains or 1
        design = Design(
            tasks=tasks,
            trials=trials,
            family_size=family_size(n_var, n_dom),
            alpha=alpha,
            power=power,
            baseline_success=DEFAULT_BASELINE_SUCCESS if baseline_success is None else baseline_success,
            icc=DEFAULT_ICC if icc is None else icc,
            pair_corr=DEFAULT_PAIR_CORR if pair_corr is None else pair_corr,
            effect_sd=DEFAULT_EFFECT_SD if effect_sd is None else effect_sd,
            drop_share=1.0 if drop_share is None else drop_share,
        )
        info["defaults_used"] = [k for k in ("baseline_success", "icc", "pair_corr", "effect_sd") if k not in given]
    if not 0 < design.baseline_success < 1:
        if info["pilot"] is not None and baseline_success is None:  # the pilot measured it; the user gave no option
            raise ValueError(
                f"the pilot's {baseline!r} conversations {'all' if design.baseline_success >= 1 else 'never'} "
                f"succeeded ({info['pilot']['conversations']} scored conversation(s)), so they cannot estimate a "
                "success rate: run a larger pilot, or give --baseline-success"
            )
        raise ValueError("--baseline-success must lie strictly between 0 and 1")
    info.update(variants=n_var, domains=n_dom)
    return design, info
