"""Telling early when a setup cannot work: ``moodbench probe`` (agent and customer) and a run's preflight.

The system this project replaces spent GPU-hours on a model that never called a tool under
``tool_choice="auto"``. The agent probe sends a fixed battery of tool decisions from a tau2 domain
and says whether (and how) the model calls tools; the user probe checks the model as the simulated
customer; a run's preflight (:mod:`moodbench.experiment`) runs a short version of both before its first
conversation.
"""

from moodbench.doctor._agent_probe import (
    MODES,
    VERDICT_NEVER_AUTO,
    VERDICT_OK,
    VERDICT_TEXT,
    VERDICT_UNUSABLE,
    CaseResult,
    ModeStats,
    ProbeError,
    ProbeReport,
    Verdict,
    decide,
    probe_spec,
    run_probe,
    summarize,
)
from moodbench.doctor._cases import CASES, ProbeCase, cases_for, probe_domains
from moodbench.doctor._endpoint_check import OPENAI_COMPATIBLE, EndpointCheck, check_endpoint, split_model
from moodbench.doctor._render import render_report, render_user_report
from moodbench.doctor._user_probe import (
    USER_FLAGGED_MAX,
    UserFormatStats,
    UserProbeReport,
    UserTurn,
    agent_questions,
    check_customer_reply,
    run_user_probe,
)

__all__ = [
    "CASES",
    "MODES",
    "OPENAI_COMPATIBLE",
    "USER_FLAGGED_MAX",
    "VERDICT_NEVER_AUTO",
    "VERDICT_OK",
    "VERDICT_TEXT",
    "VERDICT_UNUSABLE",
    "agent_questions",
    "check_customer_reply",
    "CaseResult",
    "EndpointCheck",
    "ModeStats",
    "ProbeCase",
    "ProbeError",
    "ProbeReport",
    "UserFormatStats",
    "UserProbeReport",
    "UserTurn",
    "Verdict",
    "cases_for",
    "check_endpoint",
    "decide",
    "probe_domains",
    "probe_spec",
    "render_report",
    "render_user_report",
    "run_probe",
    "run_user_probe",
    "split_model",
    "summarize",
]
