"""Analysis of a run's records: calibrated claims on paired effects, manipulation check, dose-response, planning.

Everything here reads :class:`moodbench.results.ConversationRecord` lists (a run loaded with
:func:`moodbench.results.load_run`) and returns plain dicts, so the report can render them and write them
to report.json unchanged. One inference stands behind every claim: the task-clustered t of
:mod:`moodbench.analysis._inference` (estimand, family and thresholds in ``docs/statistics.md``).
``benchmarks/calibration.py`` measures the same functions on simulated experiments.
"""

from moodbench.analysis._anatomy import (
    APOLOGY_LEXICON,
    DESCRIPTIVE,
    EMPATHY_LEXICON,
    MEASURES,
    anatomy_effects,
    conversation_anatomy,
    flipping_tasks,
)
from moodbench.analysis._claims import (
    POOLED,
    SUBSETS,
    ClaimedEffect,
    Comparison,
    claim_effects,
    reward_effects,
    scope_design,
    scopes_of,
)
from moodbench.analysis._conversations import FIDELITY_MAX_FLAGGED, FIDELITY_MAX_GAP, conversation_stats, fidelity
from moodbench.analysis._delivery import DELIVERY_MAX_GAP, delivery, delivery_effects
from moodbench.analysis._dose import dose_groups, dose_response_table
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
    paired_effect,
    pass_hat_k_paired,
)
from moodbench.analysis._manipulation import (
    EARLY_TURNS,
    MIN_EFFECT,
    NOT_APPLICABLE,
    PRIMARY,
    SCORES,
    declared_emotions,
    early_user_texts,
    manipulation_check,
    manipulation_family,
)
from moodbench.analysis._pairing import FACTS_MISSING_MAX, pairing_checks
from moodbench.analysis._planning import (
    DEFAULT_BASELINE_SUCCESS,
    DEFAULT_EFFECT_SD,
    DEFAULT_ICC,
    DEFAULT_PAIR_CORR,
    family_size,
    pilot_design,
    pilot_with_assumptions,
    planned_design,
    planned_mde,
)
from moodbench.analysis._power import POWER, Design, design_from_pilot, mde, power_at, power_table
from moodbench.analysis._prompted_vs_steered import comparison_summary, methods_comparison, steering_by_variant
from moodbench.analysis._stats import mcnemar_exact
from moodbench.analysis._variants import Dose, dose_of

__all__ = [
    "ALPHA",
    "APOLOGY_LEXICON",
    "CLAIMS",
    "CONFIDENCE",
    "DEFAULT_BASELINE_SUCCESS",
    "DEFAULT_EFFECT_SD",
    "DEFAULT_ICC",
    "DEFAULT_PAIR_CORR",
    "DELIVERY_MAX_GAP",
    "DESCRIPTIVE",
    "EARLY_TURNS",
    "FACTS_MISSING_MAX",
    "NOT_APPLICABLE",
    "EMPATHY_LEXICON",
    "FIDELITY_MAX_FLAGGED",
    "FIDELITY_MAX_GAP",
    "MEASURES",
    "METHOD",
    "MIN_EFFECT",
    "MIN_PAIRS",
    "MIN_TASKS",
    "POOLED",
    "POWER",
    "PRIMARY",
    "SCORES",
    "SUBSETS",
    "ClaimedEffect",
    "Comparison",
    "Design",
    "Dose",
    "aa_split",
    "adjust_pvalues",
    "anatomy_effects",
    "claim",
    "claim_effects",
    "claim_family",
    "comparison_summary",
    "conversation_anatomy",
    "conversation_stats",
    "delivery",
    "delivery_effects",
    "design_from_pilot",
    "dose_groups",
    "dose_of",
    "dose_response",
    "dose_response_table",
    "declared_emotions",
    "early_user_texts",
    "family_size",
    "fidelity",
    "flipping_tasks",
    "manipulation_check",
    "manipulation_family",
    "manipulation_test",
    "mcnemar_exact",
    "mde",
    "methods_comparison",
    "paired_effect",
    "pairing_checks",
    "pass_hat_k_paired",
    "pilot_design",
    "pilot_with_assumptions",
    "planned_design",
    "planned_mde",
    "power_at",
    "power_table",
    "reward_effects",
    "scope_design",
    "scopes_of",
    "steering_by_variant",
]
