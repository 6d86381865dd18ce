"""Showing how two configurations differ, one line per key."""

from __future__ import annotations

import json
from typing import Any


def dict_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable ``  key: old -> new`` lines for keys whose values differ."""
    return [
        f"  {key}: {json.dumps(old.get(key))} -> {json.dumps(new.get(key))}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]
