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

SRC = Path(__file__).resolve().parent.parent / "src" / "moodbench"
ROOT = {"__init__.py", "py.typed", "_util", "analysis", "cli", "doctor", "emotions", "experiment", "judges", "llm",
        "report", "results", "serve", "sim", "steer", "testing"}


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
    res = subprocess.run([sys.executable, "-m", "moodbench.cli", "run", "--help"], capture_output=True, text=True, env=env,
                         timeout=120, check=True)
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
