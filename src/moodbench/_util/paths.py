"""Where moodbench keeps its caches (built binaries, models, vectors, server logs and state).

One definition, so ``serve``, ``steer`` and the installer can never disagree about a location.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$MOODBENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/moodbench``, else ``~/.cache/moodbench``."""
    env = os.environ.get("MOODBENCH_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "moodbench"
