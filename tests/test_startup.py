"""Commands that call no model import neither litellm nor tau2's registry (nor tau2 at all, when they read no
tau2 file), so they start in well under a second and print nothing of tau2's or litellm's.

Checked on the import graph of real CLI subprocesses (``python -X importtime``, which lists every module a
process imported), not on wall time: ``benchmarks/startup.py`` measures the times.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scripted import cli_env
from tau2_results import Conv, write

IDS = [f"t{i:02d}" for i in range(20)]
HEAVY = ("litellm", "tau2.registry", "tau2.utils.llm_utils", "tau2.agent.llm_agent")


def _modules(stderr: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)\s*$", stderr, re.M)}


def _cli(*args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    res = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "moodbench.cli", *args],
        capture_output=True,
        text=True,
        env=cli_env({"COLUMNS": "200"}),
        timeout=180,
    )
    return res, _modules(res.stderr)


def _printed(res: subprocess.CompletedProcess[str]) -> str:
    """What the command printed, without -X importtime's lines."""
    return res.stdout + "\n".join(ln for ln in res.stderr.splitlines() if not ln.startswith("import time:"))


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[str], str]:
    root = tmp_path_factory.mktemp("startup")
    base = write(root / "control.json", [Conv(t, j, float((i + j) % 3 != 0)) for i, t in enumerate(IDS) for j in range(2)], IDS)
    angry = write(
        root / "anger.json",
        [Conv(t, j, float((i + j) % 2 != 0), opening="This is outrageous! ") for i, t in enumerate(IDS) for j in range(2)],
        IDS,
    )
    run = root / "run"
    res, modules = _cli("import", "--format", "tau2", "--out", str(run), f"{base}=control", f"{angry}=anger")
    assert res.returncode == 0, _printed(res)
    return run, modules, _printed(res)


def test_import_reads_results_with_tau2s_data_models_only(imported: tuple[Path, set[str], str]) -> None:
    _, modules, printed = imported
    assert "tau2.data_model.simulation" in modules  # the file is parsed with tau2's own schema
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))
    assert not any(m.startswith("scipy") or m.startswith("matplotlib") for m in modules)
    assert "imported 80 simulation(s)" in printed
    assert "LiteLLM" not in printed and "tau2." not in printed and ".env" not in printed  # nothing of tau2's logging


@pytest.mark.parametrize("command", [["summary"], ["report", "--json"]])
def test_reading_commands_import_no_tau2(imported: tuple[Path, set[str], str], command: list[str]) -> None:
    run = imported[0]
    res, modules = _cli(*command, str(run))
    assert res.returncode == 0, _printed(res)
    assert not any(m == "tau2" or m.startswith("tau2.") or m == "litellm" for m in modules), sorted(
        m for m in modules if m.startswith(("tau2", "litellm"))
    )
    if command == ["summary"]:
        assert not any(m.startswith(("scipy", "statsmodels", "matplotlib")) for m in modules)
    else:
        assert not any(m.startswith("matplotlib") for m in modules)  # --json draws nothing


def test_view_of_a_built_report_imports_no_statistics(imported: tuple[Path, set[str], str]) -> None:
    run = imported[0]
    res, _ = _cli("report", str(run))  # builds run/report once
    assert res.returncode == 0, _printed(res)
    proc = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "moodbench.cli", "view", str(run), "--port", "0", "--no-open"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        deadline = time.monotonic() + 120
        stdout = ""
        while "press Ctrl-C" not in stdout and time.monotonic() < deadline and proc.poll() is None:
            stdout += proc.stdout.readline()
        assert "press Ctrl-C" in stdout, stdout
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    modules = _modules(err)
    assert "moodbench.report._viewer" in modules
    assert not any(m.startswith(("tau2", "litellm", "scipy", "statsmodels", "matplotlib")) for m in modules), sorted(
        m for m in modules if m.startswith(("tau2", "litellm", "scipy", "statsmodels", "matplotlib"))
    )
