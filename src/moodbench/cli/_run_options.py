"""The ``moodbench run`` options, generated from :class:`RunConfig`'s fields.

Each option's name, default and help live on the config field (``experiment._config.opt``), so a
new field gets its flag automatically and the help can never show a stale default. Options default
to ``None`` ("not given"), so a ``--config`` file's values apply unless a flag overrides them.
"""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Any, Optional

import typer
from pydantic.fields import FieldInfo

from moodbench.experiment import RunConfig, field_cli


def flag_of(name: str) -> str:
    """The flag declaration of a config field (``--agent-model``; ``--x/--no-x`` for booleans)."""
    flag = field_cli(name).get("flag")
    if flag:
        return str(flag)
    dashed = name.replace("_", "-")
    if _base(RunConfig.model_fields[name].annotation) is bool:
        return f"--{dashed}/--no-{dashed}"
    return f"--{dashed}"


def _base(annotation: Any) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if type(None) in typing.get_args(annotation) and args:
        annotation = args[0]
    return typing.get_origin(annotation) or annotation


def _cli_type(name: str, field: FieldInfo) -> Any:
    """What the option parses: repeatable paths, booleans, numbers; lists and JSON as text."""
    base = _base(field.annotation)
    if base is list and typing.get_args(_strip_none(field.annotation)) == (Path,):
        return Optional[list[Path]]
    if base is list and field_cli(name).get("repeatable"):
        return Optional[list[str]]
    if base in (bool, int, float, Path):
        return Optional[base]
    return Optional[str]  # str, Literal choices, comma-separated lists, JSON objects: validated by RunConfig


def _strip_none(annotation: Any) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if type(None) in typing.get_args(annotation) and args else annotation


def default_text(field: FieldInfo) -> str:
    """The default as the help shows it (``[required]`` for required fields)."""
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "none"
    if isinstance(value, dict):
        return "{}" if not value else str(value)
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def option_parameters() -> list[inspect.Parameter]:
    """One keyword parameter per config field, each a ``typer.Option`` defaulting to None."""
    params = []
    for name, field in RunConfig.model_fields.items():
        cli_type = _cli_type(name, field)
        help_text = f"{field.description} \\[default: {default_text(field)}]"  # "\\[" is a literal bracket in rich markup
        option = typer.Option(None, flag_of(name), help=help_text, show_default=False)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=cli_type))
    return params


def config_values(flags: dict[str, Any]) -> dict[str, Any]:
    """The flags the user gave (None: not given), as RunConfig keys."""
    return {k: v for k, v in flags.items() if k in RunConfig.model_fields and v not in (None, [])}
