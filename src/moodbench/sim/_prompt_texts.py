"""tau2's standard system-prompt texts, read from tau2's own source files without running them.

``tau2.agent.llm_agent`` and ``tau2.user.user_simulator`` import litellm (~5 s, and a remote cost-map
fetch when it is not switched off) although their prompts are plain string constants. Importing a
Results file only needs those strings to rebuild the prompts the file's run used, so they are taken
from the modules' syntax trees; if a constant is not a plain string there (another tau2 version), the
module is imported after all.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
from pathlib import Path


@functools.cache
def _literals(module: str) -> dict[str, str]:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        return {}
    try:
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return {}
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            value = _string(node.value)
            if value is not None:
                found[node.targets[0].id] = value
    return found


def _string(node: ast.expr) -> str | None:
    """A string literal, or one with ``.strip()`` / ``.lstrip()`` / ``.rstrip()`` (tau2's style); else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if (
        isinstance(node, ast.Call)
        and not node.args
        and not node.keywords
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("strip", "lstrip", "rstrip")
    ):
        inner = _string(node.func.value)
        return None if inner is None else str(getattr(inner, node.func.attr)())
    return None


def tau2_constant(module: str, name: str) -> str:
    """The string constant ``name`` of tau2's ``module``, without importing it when it is a literal."""
    value = _literals(module).get(name)
    if value is None:
        value = getattr(importlib.import_module(module), name)
    return str(value)
