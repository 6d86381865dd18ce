"""One exit-code table for every command: the same failure exits the same way everywhere.

The table is ``moodbench.cli._exit.exit_code_for`` (private: it is the CLI's own mapping, tested as such);
the README's exit-code table must list every command the app registers.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest

from moodbench import UsageError
from moodbench._util.exitcodes import ExitCode, Interrupted
from moodbench.cli._exit import exit_code_for
from moodbench.emotions import UnknownVariantError
from moodbench.experiment import ConfigError, PreflightError
from moodbench.report import ReportError
from moodbench.results import StoreError
from moodbench.serve.install import LocalBackendMissing
from moodbench.serve.vllm import ServeConfigError
from moodbench.steer import SteeringInputError, SteeringRunError
from scripted import REPO_ROOT, run_cli


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (UsageError("x"), ExitCode.USAGE),
        (ConfigError("x"), ExitCode.USAGE),
        (StoreError("x"), ExitCode.USAGE),
        (ReportError("x"), ExitCode.USAGE),
        (UnknownVariantError("x"), ExitCode.USAGE),
        (ServeConfigError("x"), ExitCode.USAGE),
        (LocalBackendMissing("x"), ExitCode.USAGE),
        (SteeringInputError("x"), ExitCode.USAGE),
        (PreflightError("x"), ExitCode.PREFLIGHT),
        (KeyboardInterrupt(), ExitCode.INTERRUPTED),
        (Interrupted(signal.SIGINT), ExitCode.INTERRUPTED),
        (Interrupted(signal.SIGTERM), ExitCode.TERMINATED),
        (SteeringRunError("x"), None),  # mapped to 1 by the steer commands, not a usage problem
        (RuntimeError("x"), None),
    ],
)
def test_the_table(exc: BaseException, code: ExitCode | None) -> None:
    assert exit_code_for(exc) == code


def test_missing_llama_cpp_binary_is_exit_2_in_serve_and_run(tmp_path: Path) -> None:
    missing = {"MOODBENCH_LLAMA_SERVER": str(tmp_path / "no-llama-server")}
    serve = run_cli("serve", "--backend", "llamacpp", "--port", "0", extra_env=missing)
    run = run_cli(
        "run",
        "--agent-model",
        "local/qwen2.5-0.5b",
        "--domain",
        "mock",
        "--num-tasks",
        "1",
        "--out",
        tmp_path / "run",
        extra_env=missing,
    )
    for res in (serve, run):
        assert res.returncode == 2, res.stderr[-2000:]
        assert "llama-server" in res.stderr and "install-local-backend.sh" in res.stderr and "Traceback" not in res.stderr


def _commands(group: object, prefix: str = "moodbench") -> set[str]:
    import typer.main

    cmd = typer.main.get_command(group)  # type: ignore[arg-type]
    out: set[str] = set()
    for name, sub in getattr(cmd, "commands", {}).items():
        if getattr(sub, "commands", None):
            out |= {f"{prefix} {name} {n}" for n in sub.commands}
        else:
            out.add(f"{prefix} {name}")
    return out


def test_the_readme_lists_every_commands_exit_codes() -> None:
    from moodbench.cli import app

    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Exit codes") :]
    section = section[: section.index("\n## ")]
    listed = set(re.findall(r"^\| `(moodbench [a-z -]+)` \|", section, flags=re.M))
    assert listed == _commands(app)
