"""The one table from failures to exit codes, and the one way a command says it failed.

Every command maps what went wrong through :func:`exit_code_for`, so the same failure exits the same
way everywhere (a missing llama.cpp binary is 2 in ``serve``, ``steer`` and ``run``; Ctrl-C is 130
and SIGTERM 143 in ``run``, ``serve`` and ``view``):

============================================  ====
any :class:`~moodbench._util.errors.UsageError` (bad input, a missing binary, ``ServeConfigError``,
``SteeringInputError``, ``ConfigError``, ``ReportError``...): nothing was run                       2
:class:`moodbench.experiment.PreflightError`: the setup cannot work, nothing was run                    3
an endpoint stopped answering during a run (:attr:`RunResult.exit_code`)                           4
Ctrl-C (``KeyboardInterrupt``) / SIGTERM (:class:`~moodbench._util.exitcodes.Interrupted`)    130 / 143
a tool failed while running, or a check's verdict is not ok                                        1
============================================  ====
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from moodbench._util.console import stderr_console
from moodbench._util.errors import UsageError
from moodbench._util.exitcodes import ExitCode, exit_code_of

__all__ = ["ExitCode", "command_errors", "console", "exit_code_for", "fail", "out", "say"]

console = stderr_console()  # messages, progress, errors
out = Console(width=None if sys.stdout.isatty() else 160)  # a command's result (tables), on standard output


def exit_code_for(exc: BaseException) -> ExitCode | None:
    """The exit code of a failure that escaped a command; None for an unexpected one (a bug)."""
    if isinstance(exc, UsageError):
        return ExitCode.USAGE
    if isinstance(exc, KeyboardInterrupt):
        return exit_code_of(exc)
    from moodbench.experiment import PreflightError  # loaded only once something failed

    if isinstance(exc, PreflightError):
        return ExitCode.PREFLIGHT
    return None


def say(to: Console | None, text: str = "", style: str | None = None) -> None:
    """Print ``text`` literally on ``to`` (default: standard error): no markup, no highlighting, no wrapping,
    so paths, URLs and command lines a command prints stay copy-pasteable."""
    (to or console).print(Text(text, style=style or ""), soft_wrap=True, highlight=False)


def fail(message: str, code: ExitCode = ExitCode.USAGE) -> NoReturn:
    """Print ``error: message`` on standard error (the message shown literally, secrets masked) and exit with ``code``."""
    from moodbench._util.secrets import mask, secret_values

    console.print(f"[bold red]error:[/] {escape(mask(message, secret_values()))}", highlight=False, soft_wrap=True)
    raise typer.Exit(int(code))


@contextlib.contextmanager
def command_errors() -> Iterator[None]:
    """A :class:`UsageError` (bad config, unusable run directory, unknown variant...) -> its message and exit 2."""
    try:
        yield
    except UsageError as exc:
        fail(str(exc), ExitCode.USAGE)
