"""``moodbench steer``: build and calibrate control vectors that give the simulated customer an emotion.

Thin, like the rest of :mod:`moodbench.cli`: parse flags, call :func:`moodbench.steer.build_vector` /
:func:`moodbench.steer.calibrate`, print. Exit codes (the table in :mod:`moodbench.cli._exit`): 0 ok,
1 a tool failed while running (the message carries its log tail), 2 bad input (unknown emotion or model, an emotion without steering pairs, a
missing llama.cpp binary, malformed flags): the message names the problem and the fix, no traceback.
Mounted in the main app with ``app.add_typer(steer_app, name="steer")``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from moodbench._util.defaults import STEER_SCALES, STEER_TASKS
from moodbench.cli._exit import ExitCode, console, fail, out

__all__ = ["steer_app"]

steer_app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="rich",
    help="Steer the simulated customer with llama.cpp control vectors: build a vector per emotion, calibrate its scales.",
)


def parse_layers(text: str | None) -> tuple[int, int] | None:
    """``"8-23"`` -> (8, 23); None stays None (the model's default range)."""
    if text is None or not text.strip():
        return None
    a, sep, b = text.strip().partition("-")
    try:
        if not sep:
            raise ValueError
        return (int(a), int(b))
    except ValueError:
        raise ValueError(f"--layers {text!r} is not A-B; fix: e.g. --layers 8-23") from None


def parse_scales(text: str) -> list[float]:
    """``"0,0.5,1"`` -> [0.0, 0.5, 1.0]."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(
            f"--scales {text!r} is not a comma-separated list of numbers; fix: e.g. --scales 0,0.5,1,1.5,2,3"
        ) from None
    if not values:
        raise ValueError("--scales is empty; fix: e.g. --scales 0,0.5,1,1.5,2,3")
    return values


def _catalog(variants_file: list[Path] | None) -> Any:
    from moodbench.emotions import UnknownVariantError, load_catalog

    try:
        return load_catalog(list(variants_file or []))
    except UnknownVariantError as exc:
        fail(f"{exc}\nfix: correct the variants file (see the header comment of a built-in variant file)")


def _run(fn: Any) -> Any:
    """Call ``fn`` and map the steering errors to exit codes."""
    from moodbench.steer import SteeringInputError, SteeringRunError

    try:
        return fn()
    except SteeringInputError as exc:
        fail(str(exc), ExitCode.USAGE)
    except SteeringRunError as exc:
        fail(str(exc), ExitCode.FAILED)


_MODEL_HELP = "A built-in model (qwen2.5-0.5b, qwen2.5-1.5b, smollm2-135m) or the path of a .gguf file."
_EMOTION_HELP = (
    "A variant with a 'steering:' section: frustration, anger, anxiety, confusion, impatience, skepticism, incoherence."
)


@steer_app.command("build")
def build_cmd(
    model: str = typer.Option("qwen2.5-0.5b", "--model", help=_MODEL_HELP),
    emotion: str = typer.Option(..., "--emotion", help=_EMOTION_HELP),
    method: str = typer.Option("mean", "--method", help="mean (default: a signed direction) or pca (its sign is arbitrary)."),
    layers: str | None = typer.Option(
        None, "--layers", help="Layer range A-B the vector is served on (default: upper two thirds)."
    ),
    variants_file: Annotated[
        list[Path] | None, typer.Option("--variants-file", help="YAML file with your own variants (repeatable).")
    ] = None,
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """Build (once; cached) the control vector of an emotion for a model with llama-cvector-generator."""
    from moodbench.steer import build_vector

    try:
        rng = parse_layers(layers)
    except ValueError as exc:
        fail(str(exc))
    catalog = _catalog(variants_file)
    vec = _run(lambda: build_vector(model, emotion, method=method, layers=rng, catalog=catalog,  # type: ignore[arg-type]
                                    console=None if as_json else console))  # fmt: skip
    if as_json:
        typer.echo(json.dumps({"vector": str(vec.vector), "sha256": vec.sha256, "model": vec.model, "emotion": vec.emotion,
                                    "method": vec.method, "layers": list(vec.layers), "cached": vec.cached,
                                    "seconds": vec.seconds}))  # fmt: skip
        return
    state = "cached" if vec.cached else f"built in {vec.seconds:.1f}s"
    out.print(
        f"{vec.emotion} vector for {vec.model} ({vec.method}, layers {vec.layers[0]}-{vec.layers[1]}, {state}):", highlight=False
    )
    out.print(str(vec.vector), highlight=False, soft_wrap=True)


def _fmt(x: Any, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def render_calibration(result: dict[str, Any], console: Console) -> None:
    """The calibration table (one row per scale) and the chosen levels."""
    table = Table(title=f"{result['emotion']} steering of {result['model']} ({result['method']}, layers "
                        f"{result['layers'][0]}-{result['layers'][1]}, {result['format']} format)")  # fmt: skip
    for col in ("scale", "VADER", "diff [95% CI]", "markers/100w", "diff [95% CI]", "flagged", "stops", "ppl", "repet.", "goal",
                "coherent"):  # fmt: skip
        table.add_column(col, justify="right")
    for r in result["scales"]:
        ci, mci = r.get("ci") or [None, None], r.get("markers_ci") or [None, None]
        ok = "yes" if r["coherent"] else "no: " + "; ".join(r.get("why_incoherent") or [])
        table.add_row(
            f"{r['scale']:g}", _fmt(r["vader_compound"]), f"{_fmt(r['vader_diff'], '+.2f')} [{_fmt(ci[0], '+.2f')}, {_fmt(ci[1], '+.2f')}]",
            _fmt(r["markers"]), f"{_fmt(r.get('markers_diff'), '+.2f')} [{_fmt(mci[0], '+.2f')}, {_fmt(mci[1], '+.2f')}]",
            _fmt(r["flagged"], ".0%"), _fmt(r["stop_rate"], ".0%"), _fmt(r["perplexity"], ".1f"), _fmt(r.get("repetition")),
            _fmt(r.get("goal_overlap")), ok,
        )  # fmt: skip
    console.print(table)
    levels = result.get("levels")
    if levels:
        console.print("levels: " + ", ".join(f"{k} = {v:g}" for k, v in levels.items()), highlight=False)
    bound = (result.get("evidence") or {}).get("bounded_by")
    if bound:
        console.print(f"severe is bounded by scale {bound['scale']:g}: " + "; ".join(bound["checks"]), highlight=False,
                      soft_wrap=True)  # fmt: skip
    for w in result.get("warnings") or []:
        console.print(f"[yellow]warning:[/] {w}", highlight=False, soft_wrap=True)


@steer_app.command("calibrate")
def calibrate_cmd(
    model: str = typer.Option("qwen2.5-0.5b", "--model", help=_MODEL_HELP),
    emotion: str = typer.Option(..., "--emotion", help=_EMOTION_HELP),
    scales: str = typer.Option(
        ",".join(f"{s:g}" for s in STEER_SCALES),
        "--scales",
        help="Comma-separated vector scales to test (0 = unsteered baseline).",
    ),
    tasks: str = typer.Option(",".join(STEER_TASKS), "--tasks", help="tau2 tasks as DOMAIN:TASK_ID, comma-separated."),
    seeds: int = typer.Option(2, "--seeds", help="Conversations per task and scale (seeds 1..N)."),
    turns: int = typer.Option(3, "--turns", help="Scripted agent turns per conversation (1-4)."),
    fmt: str = typer.Option("tau2", "--format", help="Customer message format the run will use: tau2, transcript or completion."),
    method: str = typer.Option("mean", "--method", help="Vector method (mean or pca)."),
    layers: str | None = typer.Option(None, "--layers", help="Layer range A-B (default: upper two thirds)."),
    variants_file: Annotated[
        list[Path] | None, typer.Option("--variants-file", help="YAML file with your own variants (repeatable).")
    ] = None,
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """Sweep vector scales (one llama-server each) and map mild/moderate/severe to the coherent ones."""
    from moodbench.steer import calibrate

    try:
        grid, rng = parse_scales(scales), parse_layers(layers)
    except ValueError as exc:
        fail(str(exc))
    task_list = [t.strip() for t in tasks.split(",") if t.strip()]
    catalog = _catalog(variants_file)
    cal = _run(lambda: calibrate(model, emotion, scales=grid, tasks=task_list, seeds=seeds, turns=turns, fmt=fmt,
                                 method=method, layers=rng, catalog=catalog, console=None if as_json else console))  # type: ignore[arg-type]  # fmt: skip
    result = cal.to_dict()
    if as_json:
        typer.echo(json.dumps(result))
        return
    render_calibration(result, out)
    out.print(f"result: {cal.path}", highlight=False, soft_wrap=True)
    out.print(f"plot:   {cal.plot}", highlight=False, soft_wrap=True)
