"""Analysis of a run's records: paired effect statistics, manipulation check, conversation statistics.

Everything here reads :class:`moodbench.results.ConversationRecord` lists (a run loaded with
:func:`moodbench.results.load_run`) and returns plain dicts, so the report can render them and
write them to report.json unchanged.
"""

from moodbench.analysis._conversations import FIDELITY_MAX_FLAGGED, FIDELITY_MAX_GAP, conversation_stats, fidelity
from moodbench.analysis._effects import ALPHA, MIN_PAIRS, MIN_TASKS, compute_effects
from moodbench.analysis._manipulation import METRICS, manipulation_check
from moodbench.analysis._stats import DEFAULT_RESAMPLES, DEFAULT_SEED, holm, mcnemar_exact, noise_floor, paired_bootstrap

__all__ = [
    "ALPHA",
    "DEFAULT_RESAMPLES",
    "DEFAULT_SEED",
    "FIDELITY_MAX_FLAGGED",
    "FIDELITY_MAX_GAP",
    "METRICS",
    "MIN_PAIRS",
    "MIN_TASKS",
    "compute_effects",
    "conversation_stats",
    "fidelity",
    "holm",
    "manipulation_check",
    "mcnemar_exact",
    "noise_floor",
    "paired_bootstrap",
]
