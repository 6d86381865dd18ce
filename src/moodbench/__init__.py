"""moodbench: how much worse do tool-calling customer-service agents get with emotional customers?

The library API does what the ``moodbench`` command does::

    import moodbench

    config = moodbench.RunConfig(agent_model="openai/gpt-4o-mini", domains=["retail"], num_tasks=5,
                                 variants=["control", "frustration"], trials=3, out="runs/retail")
    result = moodbench.run(config)            # preflight, local servers, resume: as `moodbench run`
    run = moodbench.load_run(result.run_dir)  # typed records, summary, prompts
    moodbench.write_report([result.run_dir], "report/")

Names are imported lazily, so ``import moodbench`` is cheap and pulls in neither tau2 nor litellm.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

if TYPE_CHECKING:
    from moodbench._util.errors import UsageError as UsageError
    from moodbench.experiment import ConfigError as ConfigError
    from moodbench.experiment import ExitCode as ExitCode
    from moodbench.experiment import RunConfig as RunConfig
    from moodbench.experiment import RunResult as RunResult
    from moodbench.experiment import run as run
    from moodbench.report import build_report as write_report  # noqa: F401
    from moodbench.results import ConversationRecord as ConversationRecord
    from moodbench.results import ExitReason as ExitReason
    from moodbench.results import Run as Run
    from moodbench.results import load_run as load_run

_EXPORTS = {
    "RunConfig": "moodbench.experiment",
    "RunResult": "moodbench.experiment",
    "ConfigError": "moodbench.experiment",
    "ExitCode": "moodbench.experiment",
    "run": "moodbench.experiment",
    "Run": "moodbench.results",
    "ConversationRecord": "moodbench.results",
    "ExitReason": "moodbench.results",
    "load_run": "moodbench.results",
    "write_report": "moodbench.report",
    "UsageError": "moodbench._util.errors",
}
_RENAMED = {"write_report": "build_report"}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'moodbench' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), _RENAMED.get(name, name))
    globals()[name] = value
    return value
