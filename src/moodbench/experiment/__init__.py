"""Experiments: the run configuration, the matrix of cells, and running it (``moodbench.run``).

A run is a matrix of cells (domain x task x variant x trial) executed into a run directory. This
package turns a :class:`RunConfig` into a :class:`Plan`, gets endpoints ready (local servers,
preflight), runs the missing cells on an executor (threads, processes or Ray) and writes the
results through :mod:`moodbench.results`.
"""

from moodbench._util.exitcodes import ExitCode
from moodbench.experiment._config import (
    ConfigError,
    RunConfig,
    build_config,
    field_cli,
    is_execution_field,
    load_config_file,
    read_text_file,
)
from moodbench.experiment._local_servers import LOCAL_PREFIX, local_endpoints
from moodbench.experiment._plan import Plan, make_plan, shard_cells
from moodbench.experiment._preflight import PreflightError
from moodbench.experiment._run import RunResult, check_environment, model_specs, run
from moodbench.results import Cell

__all__ = [
    "LOCAL_PREFIX",
    "Cell",
    "ConfigError",
    "ExitCode",
    "Plan",
    "PreflightError",
    "RunConfig",
    "RunResult",
    "build_config",
    "check_environment",
    "field_cli",
    "is_execution_field",
    "load_config_file",
    "local_endpoints",
    "make_plan",
    "model_specs",
    "read_text_file",
    "run",
    "shard_cells",
]
