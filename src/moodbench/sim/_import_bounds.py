"""Bounds on a tau2 Results file, checked on its parsed JSON before tau2's models or the store see it.

A crafted (or damaged) file parses and validates as tau2 Results and then breaks moodbench later: a
trial or seed of 10^20 overflows SQLite's 64-bit integers at the INSERT, ``num_trials`` 10^9 makes every
summary build a billion-column pass^k table, JSON nested hundreds deep passes tau2's models and fails
the store's serializer. Each is refused here with the simulation and field named (exit 2); nothing is
written. Non-finite rewards are not refused: the record excludes such a conversation with the reason
stated (``ConversationRecord``), so one bad reward never costs the rest of the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moodbench._util.bounds import INT64_MAX, INT64_MIN, BoundError, check_int, check_tree
from moodbench._util.defaults import MAX_TRIALS
from moodbench._util.errors import UsageError

# A tau2 Results file nests about 10 levels (simulation, messages, tool calls, arguments).
MAX_RESULTS_DEPTH = 64


def check_results_bounds(data: Any, path: Path) -> None:
    """Refuse (``UsageError``) a Results file whose numbers or nesting moodbench cannot store."""
    fix = "the file is damaged or was edited; re-export it from tau2"
    try:
        check_tree(data, f"{path}", max_depth=MAX_RESULTS_DEPTH, max_nodes=None)
        info = data.get("info") if isinstance(data, dict) else None
        if isinstance(info, dict):
            check_int(info.get("num_trials"), "info.num_trials", low=0, high=MAX_TRIALS)
            check_int(info.get("seed"), "info.seed", low=INT64_MIN, high=INT64_MAX)
        sims = data.get("simulations") if isinstance(data, dict) else None
        for i, sim in enumerate(sims if isinstance(sims, list) else []):
            if not isinstance(sim, dict):
                continue
            check_int(sim.get("trial"), f"simulation {i}: trial", low=0, high=MAX_TRIALS - 1)
            check_int(sim.get("seed"), f"simulation {i}: seed", low=INT64_MIN, high=INT64_MAX)
    except BoundError as exc:
        raise UsageError(
            f"{path}: {exc} (moodbench stores at most {MAX_TRIALS} trials per task and 64-bit seeds); {fix}"
        ) from None
