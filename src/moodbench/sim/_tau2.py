"""One place that imports tau2, quietly.

tau2's registry logs a JSON dump of itself at import and litellm fetches a remote cost map for ~10 s
when offline; both are noise for a CLI. Importing tau2 only through this module keeps those side
effects switched off everywhere (CLI, workers, tests) without touching tau2 itself.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from loguru import logger as _loguru

# loguru's per-library switch: tau2's own logging stays silent unless MOODBENCH_TAU2_LOGS=1.
if os.environ.get("MOODBENCH_TAU2_LOGS") != "1":
    _loguru.disable("tau2")

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
