"""Defaults shared by the library and the CLI, in a module that imports nothing (the CLI loads it at startup)."""

from __future__ import annotations

__all__ = ["DEFAULT_SCALES", "DEFAULT_TASKS"]

#: Vector scales a calibration tries; 0 is the unsteered baseline (planning: coherence collapses past ~2).
DEFAULT_SCALES: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)
#: Real tau2 tasks whose customers need the agent to act (so every early stop is premature): four
#: different customers (retail tasks 0-4 all share one), one of them calling to complain (airline:5).
DEFAULT_TASKS: tuple[str, ...] = ("retail:0", "retail:5", "retail:10", "airline:5")
