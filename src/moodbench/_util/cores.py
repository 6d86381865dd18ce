"""How many CPU cores this process may use: the one count executors, local servers and builds share."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """Cores in this process's CPU affinity (a container's or ``taskset``'s limit), at least 1.

    ``os.cpu_count()`` counts the machine's cores, which is too many inside a CPU-limited container;
    it is the answer only where affinity cannot be read (not Linux)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)
