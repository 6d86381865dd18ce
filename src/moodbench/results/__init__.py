"""What a run leaves behind: typed conversation records, the SQLite store, events, manifest, summary.

A run directory holds ``results.sqlite`` (one :class:`ConversationRecord` per finished cell, plus
failed attempts as history), ``events.jsonl``, ``manifest.json`` and ``summary.json``. This package
writes and reads them; it knows nothing about tau2 or models.
"""

from moodbench.results._cell import Cell
from moodbench.results._events import EventLog
from moodbench.results._facts import GoldAction, ScenarioFact, TaskFacts, WriteCall
from moodbench.results._load import Run, load_run
from moodbench.results._manifest import read_manifest, write_manifest
from moodbench.results._merge import merge_runs
from moodbench.results._record import (
    DESCRIPTIONS,
    FLAG_NAMES,
    STOP_TOKENS,
    SUCCESS_TOLERANCE,
    AgentImpl,
    ConversationRecord,
    ConversationStats,
    ExitReason,
    FidelityFlags,
    RoleStats,
    Steering,
    is_success,
    storable,
    strip_stop_tokens,
)
from moodbench.results._store import Store, StoreError, sha256
from moodbench.results._summary import compute_summary, max_k, pass_hat_k, summary_for_run, write_summary

__all__ = [
    "Cell",
    "DESCRIPTIONS",
    "AgentImpl",
    "FLAG_NAMES",
    "STOP_TOKENS",
    "SUCCESS_TOLERANCE",
    "ConversationRecord",
    "ConversationStats",
    "EventLog",
    "ExitReason",
    "FidelityFlags",
    "GoldAction",
    "RoleStats",
    "ScenarioFact",
    "Run",
    "Steering",
    "Store",
    "StoreError",
    "TaskFacts",
    "WriteCall",
    "compute_summary",
    "is_success",
    "load_run",
    "max_k",
    "merge_runs",
    "pass_hat_k",
    "read_manifest",
    "sha256",
    "storable",
    "strip_stop_tokens",
    "summary_for_run",
    "write_manifest",
    "write_summary",
]
