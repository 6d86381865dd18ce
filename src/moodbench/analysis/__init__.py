"""Analysis of a run's records: calibrated claims on paired effects, manipulation check, dose-response, planning.

Everything here reads :class:`moodbench.results.ConversationRecord` lists (a run loaded with
:func:`moodbench.results.load_run`) and returns plain dicts, so the report can render them and write them
to report.json unchanged. One inference stands behind every claim: the task-clustered t of
:mod:`moodbench.analysis._inference`, and one family per report decides them all
(:class:`ReportFamily`, ``_family.py``: a new section joins it with ``add``/``add_effect`` or marks its rows
``descriptive``); estimand, family and thresholds in ``docs/statistics.md``.
``benchmarks/calibration.py`` measures the same functions on simulated experiments.
"""

from moodbench.analysis._claims import (
    POOLED,
    SUBSETS,
    ClaimedEffect,
    Comparison,
    MissingBounds,
    claim_effects,
    finish_reward_effects,
    missing_bounds,
    reward_effects,
    scope_design,
    scopes_of,
)
from moodbench.analysis._conversations import FIDELITY_MAX_FLAGGED, FIDELITY_MAX_GAP, conversation_stats, fidelity
from moodbench.analysis._dose import dose_groups, dose_response_table, trend_reason
from moodbench.analysis._family import FAMILY_NAME, ReportFamily, descriptive
from moodbench.analysis._inference import (
    ALPHA,
    CLAIMS,
    CONFIDENCE,
    METHOD,
    MIN_PAIRS,
    MIN_TASKS,
    aa_split,
    adjust_pvalues,
    claim,
    claim_family,
    dose_response,
    manipulation_test,
    no_claim_reason,
    paired_effect,
    pass_hat_k_paired,
)
from moodbench.analysis._manipulation import (
    EARLY_TURNS,
    MIN_EFFECT,
    PRIMARY,
    SCORES,
    early_user_texts,
    manipulation_check,
    manipulation_family,
)
from moodbench.analysis._methods import comparison_summary, methods_comparison, steering_by_variant
from moodbench.analysis._planning import (
    DEFAULT_BASELINE_SUCCESS,
    DEFAULT_EFFECT_SD,
    DEFAULT_ICC,
    DEFAULT_PAIR_CORR,
    SPREADS,
    assumptions,
    family_size,
    mde_by_spread,
    pilot_design,
    plan_summary,
    planned_design,
    planned_mde,
    power_design,
)
from moodbench.analysis._power import POWER, Design, design_from_pilot, mde, mde_note, power_at, power_table
from moodbench.analysis._stats import mcnemar_exact
from moodbench.analysis._variants import Dose, dose_of

__all__ = [
    "ALPHA",
    "CLAIMS",
    "CONFIDENCE",
    "DEFAULT_BASELINE_SUCCESS",
    "DEFAULT_EFFECT_SD",
    "DEFAULT_ICC",
    "DEFAULT_PAIR_CORR",
    "EARLY_TURNS",
    "FAMILY_NAME",
    "FIDELITY_MAX_FLAGGED",
    "FIDELITY_MAX_GAP",
    "METHOD",
    "MIN_EFFECT",
    "MIN_PAIRS",
    "MIN_TASKS",
    "POOLED",
    "POWER",
    "PRIMARY",
    "SCORES",
    "SPREADS",
    "SUBSETS",
    "ClaimedEffect",
    "Comparison",
    "Design",
    "Dose",
    "MissingBounds",
    "ReportFamily",
    "aa_split",
    "assumptions",
    "adjust_pvalues",
    "claim",
    "claim_effects",
    "claim_family",
    "comparison_summary",
    "conversation_stats",
    "descriptive",
    "design_from_pilot",
    "dose_groups",
    "dose_of",
    "dose_response",
    "dose_response_table",
    "early_user_texts",
    "family_size",
    "fidelity",
    "finish_reward_effects",
    "manipulation_check",
    "manipulation_family",
    "manipulation_test",
    "mcnemar_exact",
    "mde",
    "mde_by_spread",
    "mde_note",
    "methods_comparison",
    "missing_bounds",
    "no_claim_reason",
    "paired_effect",
    "pass_hat_k_paired",
    "pilot_design",
    "plan_summary",
    "planned_design",
    "planned_mde",
    "power_at",
    "power_design",
    "power_table",
    "reward_effects",
    "scope_design",
    "scopes_of",
    "steering_by_variant",
    "trend_reason",
]
