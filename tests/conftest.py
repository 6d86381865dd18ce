"""Shared fixtures: every test gets real servers, real files and real subprocesses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scripted import CLI

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("MOODBENCH_CACHE_DIR", str(Path.home() / ".cache" / "moodbench"))


@pytest.fixture
def moodbench_bin() -> list[str]:
    """The CLI as a real subprocess (the installed console script's module form)."""
    return list(CLI)
