"""One place that imports tau2, quietly.

Importing tau2 (registry, runner: they pull in litellm, ~5 s) only through this module keeps tau2's
log noise and litellm's remote cost-map fetch off (:mod:`._quiet`). Modules that need only tau2's
data models (Results, messages, tasks) import those directly, so reading a Results file costs no
litellm import.
"""

from __future__ import annotations

from tau2.data_model.message import (
    AssistantMessage,
    Message,
    MultiToolMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
    UserMessage,
)
from tau2.data_model.simulation import (
    Info,
    Results,
    RewardInfo,
    SimulationRun,
    TerminationReason,
)
from tau2.data_model.tasks import RewardType, Task
from tau2.registry import registry
from tau2.run import load_tasks

from moodbench.sim import _quiet  # noqa: F401  (before tau2: quiet and offline)

__all__ = [
    "AssistantMessage",
    "Info",
    "Message",
    "MultiToolMessage",
    "Results",
    "RewardInfo",
    "RewardType",
    "SimulationRun",
    "SystemMessage",
    "Task",
    "TerminationReason",
    "ToolCall",
    "ToolMessage",
    "UserMessage",
    "load_tasks",
    "registry",
]

from tau2.user.base import OUT_OF_SCOPE as OUT_OF_SCOPE_TOKEN
from tau2.user.base import STOP as STOP_TOKEN
from tau2.user.base import TRANSFER as TRANSFER_TOKEN

__all__ += ["OUT_OF_SCOPE_TOKEN", "STOP_TOKEN", "TRANSFER_TOKEN"]
