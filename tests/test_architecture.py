"""The package plan holds: concept packages at the root, cheap imports, one tau2 importer, the CLI from the config.

docs/architecture.md describes the layout; these tests fail when the code drifts from it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from scripted import CLI

SRC = Path(__file__).resolve().parent.parent / "src" / "moodbench"
ROOT = {
    "__init__.py",
    "py.typed",
    "_util",
    "analysis",
    "cli",
    "doctor",
    "emotions",
    "experiment",
    "judges",
    "llm",
    "report",
    "results",
    "serve",
    "sim",
    "steer",
    "testing",
}


def test_the_root_holds_concept_packages_only() -> None:
    entries = {p.name for p in SRC.iterdir() if p.name != "__pycache__"}
    assert entries <= ROOT, f"new root entries {sorted(entries - ROOT)}: put modules in a concept package (docs/architecture.md)"
    for pkg in entries - {"__init__.py", "py.typed"}:
        init = SRC / pkg / "__init__.py"
        assert init.is_file(), f"{pkg} is not a package"
        text = init.read_text(encoding="utf-8")
        assert text.lstrip().startswith('"""'), f"{pkg}/__init__.py says what the package is for"


def _imported_after(statement: str) -> dict[str, bool]:
    code = f"import sys; {statement}; import json; print(json.dumps({{m: m in sys.modules for m in ('tau2', 'litellm')}}))"
    env = {**os.environ, "PYTHONPATH": str(SRC.parent)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("statement", "tau2", "litellm"),
    [
        ("import moodbench", False, False),
        ("import moodbench.results, moodbench.emotions, moodbench.judges, moodbench.analysis, moodbench.report", False, False),
        ("import moodbench.experiment, moodbench.cli", False, False),  # `moodbench --help` and bad input stay fast
        ("import moodbench.llm", False, True),
        ("import moodbench.sim", False, False),  # names load on first use (PEP 562)
        ("import moodbench.sim._interchange", True, False),  # reading Results files: tau2's data models only
        ("from moodbench.sim import run_cell", True, True),
    ],
)
def test_what_an_import_pulls_in(statement: str, tau2: bool, litellm: bool) -> None:
    assert _imported_after(statement) == {"tau2": tau2, "litellm": litellm}


def test_run_options_are_the_config_fields_with_their_defaults() -> None:
    """Every RunConfig field is a `moodbench run` flag whose help shows the field's own default."""
    from moodbench.cli._run_options import default_text, flag_of
    from moodbench.experiment import RunConfig

    env = {**os.environ, "COLUMNS": "400", "PYTHONPATH": str(SRC.parent), "NO_COLOR": "1", "TERM": "dumb"}
    res = subprocess.run([*CLI, "run", "--help"], capture_output=True, text=True, env=env, timeout=120, check=True)
    text = re.sub(r"\s+", " ", res.stdout.replace("│", " "))
    for name, field in RunConfig.model_fields.items():
        flag = flag_of(name).split("/")[0]
        assert re.search(rf"(^| ){re.escape(flag)}( |$)", text), f"config field {name!r} has no flag {flag}"
        shown = re.search(rf"{re.escape(flag)} .*?\[default: ([^\]]*)\]", text)
        assert shown and shown.group(1) == default_text(field), (name, shown and shown.group(1))


def test_public_names_resolve() -> None:
    import moodbench

    for name in moodbench.__all__:
        assert getattr(moodbench, name) is not None


# --------------------------------------------------------------------------- layering

# Who may import whom (besides `_util`, which every package may import), read from every import
# statement of the sources (inside functions and under TYPE_CHECKING included). docs/architecture.md's
# package table must state the same sets; a new edge is a decision: add it here and there.
ALLOWED_IMPORTS: dict[str, set[str]] = {
    "_util": set(),
    "emotions": set(),
    "llm": set(),
    "serve": set(),
    "testing": set(),
    "results": {"llm"},
    "judges": {"llm", "results"},
    "analysis": {"judges", "results"},
    "report": {"analysis", "judges", "results"},
    "sim": {"emotions", "judges", "llm", "results"},
    "doctor": {"judges", "llm", "results", "serve", "sim"},
    "steer": {"analysis", "doctor", "emotions", "judges", "llm", "results", "serve", "sim"},
    "experiment": {"analysis", "doctor", "emotions", "llm", "results", "serve", "sim", "steer"},
    "cli": {"analysis", "doctor", "emotions", "experiment", "llm", "report", "results", "serve", "sim", "steer"},
    "__init__.py": {"experiment", "report", "results"},  # moodbench's lazy top-level names
}


def _package_imports() -> dict[str, dict[str, list[str]]]:
    """package -> imported moodbench package -> where (file:line), from the AST of every source file."""
    import ast

    found: dict[str, dict[str, list[str]]] = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        pkg = rel.parts[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level:  # relative: resolve against the file's package
                base = ["moodbench", *rel.parts[:-1]][: len(rel.parts) - node.level + 1]
                names = [".".join([*base, *([node.module] if node.module else [])])]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] == "moodbench" and len(parts) > 1 and parts[1] not in (pkg, "_util"):
                    found.setdefault(pkg, {}).setdefault(parts[1], []).append(f"{rel}:{node.lineno}")
    return found


def test_packages_import_only_what_the_map_allows() -> None:
    assert set(ALLOWED_IMPORTS) == {p.name for p in SRC.iterdir() if p.name in ROOT and p.name != "py.typed"}
    bad = [
        f"{pkg} -> {dep} ({', '.join(where[:3])})"
        for pkg, deps in _package_imports().items()
        for dep, where in deps.items()
        if dep not in ALLOWED_IMPORTS[pkg]
    ]
    assert not bad, "imports the layering does not allow (tests/test_architecture.py ALLOWED_IMPORTS):\n" + "\n".join(bad)


def test_the_allowed_imports_have_no_cycle() -> None:
    import graphlib

    graphlib.TopologicalSorter(ALLOWED_IMPORTS).static_order()  # raises CycleError on a cycle


def test_docs_architecture_table_states_the_map() -> None:
    text = (SRC.parent.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([a-z_]+)` \|[^\n]*\| ([^|\n]*) \|$", text, flags=re.M)
    stated = {pkg: {m for m in re.findall(r"`([a-z_]+)`", cell) if m != "_util"} for pkg, cell in rows}
    assert stated == {pkg: deps for pkg, deps in ALLOWED_IMPORTS.items() if pkg != "__init__.py"}
