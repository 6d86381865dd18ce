"""The analysis commands: ``report``, ``view``, ``power`` and ``import``, registered on the one ``moodbench`` app.

Thin like the rest of the CLI: parse flags, call :mod:`moodbench.analysis`, :mod:`moodbench.report` or
:mod:`moodbench.sim`, map bad input to exit 2 with a message that names the problem and the fix.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from moodbench.cli._app import app
from moodbench.cli._exit import command_errors, console, fail, out


@app.command()
def report(
    run_dirs: list[Path] = typer.Argument(
        ..., help="One or more run directories (e.g. one per agent model) to compare side by side."
    ),
    out_dir: Optional[Path] = typer.Option(
        None, "--out", help="Output folder (default RUN_DIR/report for one run, ./moodbench-report for several)."
    ),
    baseline: str = typer.Option("control", "--baseline", help="Variant every other variant is compared with."),
    judge_model: Optional[str] = typer.Option(
        None, "--judge-model", help="Optional LLM judge rating the customers' emotion (manipulation check context)."
    ),
    judge_base_url: Optional[str] = typer.Option(None, "--judge-base-url"),
    as_json: bool = typer.Option(
        False, "--json", help="Print report.json's content (claims, effects, pass^k, MDE, checks) on stdout; write no pages."
    ),
) -> None:
    """Write report.html/.md/.json, plots and transcript pages: calibrated claims, manipulation check, fidelity, dose-response."""
    from moodbench._util.files import write_problem
    from moodbench.cli._report import report_command
    from moodbench.experiment._config import _url_problem

    problem = _url_problem(judge_base_url) if judge_base_url else None
    if problem:
        from moodbench._util.secrets import redact_url

        fail(
            f"--judge-base-url {redact_url(judge_base_url or '')!r} is not a usable base URL ({problem}); "
            "example: http://127.0.0.1:8000/v1"
        )
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        fail(f"--out {out_dir} is a file; give a directory for the report (it writes several files)")
    try:
        code = report_command(run_dirs, out_dir, baseline, judge_model, judge_base_url, console, as_json=as_json, stdout=out)
    except OSError as exc:
        fail(f"cannot write the report{f' to {out_dir}' if out_dir else ''}: {write_problem(exc) or exc}; choose another --out")
    raise typer.Exit(code)


@app.command()
def view(
    run_dir: Path = typer.Argument(..., help="A run directory."),
    port: int = typer.Option(8765, "--port", min=0, max=65535, help="Port on 127.0.0.1 (0 picks a free one)."),
    no_open: bool = typer.Option(False, "--no-open", help="Do not open a browser."),
) -> None:
    """Serve the run's transcripts and report on 127.0.0.1 (builds them if missing or stale)."""
    from moodbench.cli._report import view_command

    raise typer.Exit(view_command(run_dir, port, not no_open, out))


# --------------------------------------------------------------------------- power


# Tasks and trials a design table may name: far above any experiment, far below where the power
# formulas' floating point (scipy's t distribution) breaks down.
_MAX_DESIGN = 1_000_000


def _ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        fail(f"{flag} must be whole numbers separated by commas, e.g. {flag} 20,40,80 (got {text[:80]!r})")
    if not values or any(v < 1 for v in values):
        fail(f"{flag} needs at least one number >= 1 (got {text[:80]!r})")
    if any(v > _MAX_DESIGN for v in values) or len(values) > 100:
        fail(f"{flag} takes at most 100 numbers of at most {_MAX_DESIGN:,} each (got {text[:80]!r})")
    return values


def _floats(text: str, flag: str) -> list[float]:
    try:
        values = [float(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        fail(f"{flag} must be numbers separated by commas, e.g. {flag} 0.05,0.1 (got {text!r})")
    if not values or any(not 0 < v <= 1 for v in values):
        fail(f"{flag} are drops in mean reward and must lie in (0, 1] (got {text!r})")
    return values


def _pilot_run(run_dir: Path, baseline: str) -> Any:
    from moodbench.results import StoreError, load_run

    try:
        run = load_run(run_dir, with_payload=False)
    except StoreError as exc:
        fail(f"--pilot: {exc}")
    if baseline not in run.variants:
        fail(
            f"--pilot {run_dir}: no variant {baseline!r} (its variants: {', '.join(run.variants) or 'none'}); pick one with --baseline"
        )
    return run


@app.command()
def power(
    tasks: str = typer.Option("20,40,80,160", "--tasks", help="Tasks per domain (comma-separated for a table)."),
    trials: str = typer.Option("1,2,3,5", "--trials", help="Trials per task (comma-separated for a table)."),
    variants: Optional[int] = typer.Option(
        None, "--variants", min=1, help="Emotional variants compared with the baseline (default 1, or the pilot's)."
    ),
    domains: Optional[int] = typer.Option(
        None, "--domains", min=1, help="Domains (default 1, or the pilot's); adds per-domain comparisons to the family."
    ),
    alpha: float = typer.Option(0.05, "--alpha", help="Family-wise error rate of the claims (Holm)."),
    power_: float = typer.Option(0.80, "--power", help="Power at which the minimum detectable effect is defined."),
    baseline_success: Optional[float] = typer.Option(
        None, "--baseline-success", help="Baseline success rate (default 0.5, the most conservative)."
    ),
    icc: Optional[float] = typer.Option(
        None, "--icc", help="Within-task correlation: share of the outcome variance between tasks (default 0.5)."
    ),
    pair_corr: Optional[float] = typer.Option(
        None, "--pair-corr", help="Correlation of a baseline and variant conversation sharing a seed (default 0)."
    ),
    effect_sd: Optional[float] = typer.Option(None, "--effect-sd", help="Spread of the true effect across tasks (default 0.05)."),
    drop_share: Optional[float] = typer.Option(
        None, "--drop-share", help="Share of tasks that carry the drop (default 1: even; 0.5: half the tasks drop twice as much)."
    ),
    effects: str = typer.Option("0.05,0.10,0.20", "--effects", help="Drops in mean reward at which to print the power."),
    pilot: Optional[Path] = typer.Option(
        None, "--pilot", help="Estimate success, ICC, pair correlation and effect spread from this run."
    ),
    baseline: str = typer.Option("control", "--baseline", help="With --pilot: the baseline variant."),
    sequential: bool = typer.Option(
        False,
        "--sequential",
        help="Also plan run --sequential (pooled over domains) for the first tasks x trials: looks, bounds, expected size.",
    ),
    looks: int = typer.Option(4, "--looks", min=2, max=20, help="With --sequential: number of looks (stages of tasks)."),
    smallest_effect: Optional[float] = typer.Option(
        None, "--smallest-effect", help="With --sequential: smallest drop of interest (futility); default the MDE."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the tables as JSON on stdout."),
) -> None:
    """Minimum detectable effect and power before spending GPU hours (same formula the report's MDE uses)."""
    from moodbench.analysis import mde, mde_by_spread, power_design, power_table

    task_list, trial_list, effect_list = _ints(tasks, "--tasks"), _ints(trials, "--trials"), _floats(effects, "--effects")
    if not 0 < alpha < 1 or not 0 < power_ < 1:
        fail("--alpha and --power must lie strictly between 0 and 1")
    run = _pilot_run(pilot, baseline) if pilot is not None else None
    try:
        design, info = power_design(
            tasks=task_list[0],
            trials=trial_list[0],
            variants=variants,
            domains=domains,
            alpha=alpha,
            power=power_,
            baseline_success=baseline_success,
            icc=icc,
            pair_corr=pair_corr,
            effect_sd=effect_sd,
            drop_share=drop_share,
            pilot=run,
            baseline=baseline,
        )
    except ValueError as exc:
        if pilot is not None and "no scored" in str(exc):
            fail(f"--pilot {pilot}: {exc}; run the baseline first")
        if pilot is not None and "pilot" in str(exc):
            fail(f"--pilot {pilot}: {exc}")
        fail(f"{exc}; see moodbench power --help")
    n_var, n_dom = info["variants"], info["domains"]
    rows = power_table(design, task_list, trial_list, effect_list)
    first = replace(design, tasks=task_list[0], trials=trial_list[0])
    # the spread table for the first design that can make claims at all (a too-small one would show only dashes)
    shown = next((d for d in (replace(design, tasks=g, trials=m) for g in task_list for m in trial_list) if d.claimable), first)
    spread = mde_by_spread(shown)
    params = {
        "baseline_success": design.baseline_success,
        "icc": design.icc,
        "pair_corr": design.pair_corr,
        "effect_sd": design.effect_sd,
        "drop_share": design.drop_share,
        "within_var": design.within_var,
        "alpha": alpha,
        "power": power_,
        "variants": n_var,
        "domains": n_dom,
        "family_size": design.family_size,
    }
    # run --sequential decides one pooled comparison per variant: all domains' tasks, a family of the variants
    pooled = replace(first, tasks=first.tasks * n_dom, family_size=n_var)
    seq = _sequential_plan(pooled, looks, smallest_effect) if sequential else None
    if as_json:
        sys.stdout.write(
            json.dumps(
                {
                    **({} if seq is None else {"sequential": seq}),
                    "design": params,
                    "defaults_used": info["defaults_used"],
                    "pilot": info["pilot"],
                    "rows": [r.to_dict() for r in rows],
                    "mde_by_spread": {"tasks": shown.tasks, "trials": shown.trials, "rows": spread},
                    "mde_note": "drop in mean reward detected with the given power; null below the minimum "
                    "design (20 tasks, 40 pairs per comparison) or when unreachable",
                },
                indent=1,
            )
            + "\n"
        )
        return
    defaults = info["defaults_used"]
    src = (
        (f"estimated from the pilot {pilot}" + (f"; assumed {', '.join(defaults)}" if defaults else ""))
        if pilot
        else ("assumed (defaults) " + ", ".join(defaults) if defaults else "as given")
    )
    console.print(
        f"design: baseline success {design.baseline_success:.3f}, ICC {design.icc:.2f}, pair correlation {design.pair_corr:.2f}, "
        f"effect SD {design.effect_sd:.3f}, drop share {design.drop_share:g} ({src}); family {design.family_size} comparison(s) "
        f"({n_var} variant(s) x {n_dom} domain(s){' + pooled' if n_dom > 1 else ''}), Holm alpha {alpha:g}",
        highlight=False,
        markup=False,
    )
    table = Table(title=f"minimum detectable drop in mean reward at {power_:.0%} power (per domain)")
    table.add_column("tasks \\ trials", justify="right")
    for m in trial_list:
        table.add_column(str(m), justify="right")
    for g in task_list:
        cells = [next(r for r in rows if r.tasks == g and r.trials == m).mde for m in trial_list]
        table.add_row(
            str(g),
            *[
                "too few"
                if c is None and replace(design, tasks=g, trials=m).claimable is False
                else ("unreachable" if c is None else f"{c:.3f}")
                for c, m in zip(cells, trial_list)
            ],
        )
    out.print(table)
    ptable = Table(title="power to claim a drop of ...")
    for col in ["tasks", "trials", *[f"{e:g}" for e in effect_list]]:
        ptable.add_column(col, justify="right")
    for r in rows:
        ptable.add_row(str(r.tasks), f"{r.trials:g}", *["–" if p is None else f"{p:.2f}" for _, p in r.powers])
    out.print(ptable)
    stable = Table(
        title=f"MDE of {shown.tasks} tasks x {shown.trials:g} trials across task-effect spreads (SD of the true effect across tasks)"
    )
    stable.add_column("drop", justify="left")
    sds = sorted({r["effect_sd"] for r in spread})
    for sd in sds:
        stable.add_column(f"SD {sd:g}", justify="right")
    for share in sorted({r["drop_share"] for r in spread}, reverse=True):
        label = "even over tasks" if share == 1 else f"in {share:.0%} of the tasks"
        none = "unreachable" if shown.claimable else "too few"
        stable.add_row(
            label,
            *[
                none if r["mde"] is None else f"{r['mde']:.3f}"
                for sd in sds
                for r in spread
                if r["effect_sd"] == sd and r["drop_share"] == share
            ],
        )
    out.print(stable)
    value = mde(first)
    console.print(
        f"MDE of the first design ({task_list[0]} tasks x {trial_list[0]} trials): "
        + ("too few for any claim" if value is None else f"{value:.3f}"),
        highlight=False,
        markup=False,
    )
    if seq is not None:
        _print_sequential(seq)


def _sequential_plan(design: Any, looks: int, smallest_effect: float | None) -> dict[str, Any]:
    """``moodbench power --sequential``: the plan of ``run --sequential`` for ``design`` (exit 2 when it has none)."""
    from moodbench.analysis import sequential_design

    if design.tasks < looks:
        fail(f"--looks {looks} needs at least {looks} tasks (the first --tasks is {design.tasks}); lower --looks")
    try:
        return sequential_design(design, looks, smallest_effect=smallest_effect)
    except ValueError as exc:
        fail(f"--sequential: {exc}")


def _print_sequential(seq: dict[str, Any]) -> None:
    from moodbench.analysis import futility_text

    plan = seq["plan"]
    console.print(
        f"\nrun --sequential: {len(plan['stages'])} looks over {plan['tasks']} tasks (stages of {', '.join(map(str, plan['stages']))}), "
        f"{plan['spending']} alpha spending, Holm over the {plan['family_size']} comparison(s) on repeated p-values; "
        f"{futility_text(plan['futility'], plan['futility_confidence'], seq['smallest_effect'])} "
        f"(smallest effect of interest); at most {seq['max_conversations']} conversations, as the fixed design",
        highlight=False,
        markup=False,
    )
    bt = Table(title="boundaries per look (each comparison, Holm's first step)")
    for col in ("look", "tasks", "info fraction", "|z| bound", "nominal p", "alpha spent"):
        bt.add_column(col, justify="right")
    for r in seq["looks"]:
        bt.add_row(
            str(r["look"]),
            str(r["tasks"]),
            f"{r['fraction']:.2f}",
            f"{r['z_bound']:.3f}",
            f"{r['nominal_p']:.2g}",
            f"{r['alpha_spent']:.2g}",
        )
    out.print(bt)
    st = Table(title="sequential vs fixed (same maximum size)")
    for col in ("true drop", "claims: fixed", "claims: sequential", "expected size / fixed (run)", "stop by look"):
        st.add_column(col, justify="right")
    for r in seq["scenarios"]:
        st.add_row(
            f"{r['effect']} ({r['drop']:.3f})",
            f"{r['power_fixed']:.3f}",
            f"{r['power_sequential']:.3f}",
            f"{r['expected_fraction_run']:.2f}",
            " / ".join(f"{p:.2f}" for p in r["stop_by_look"]),
        )
    out.print(st)


# --------------------------------------------------------------------------- import


@app.command("import")
def import_(
    items: list[str] = typer.Argument(
        ...,
        help="FILE=VARIANT pairs: a tau2 Results JSON and the variant it ran; one file per "
        "variant and domain (e.g. airline.json=control retail.json=control airline-b.json=agent-b).",
    ),
    fmt: str = typer.Option("tau2", "--format", help="tau2: Results JSON written by `tau2 run` or `moodbench export`."),
    out_dir: Path = typer.Option(..., "--out", help="Run directory to create or add the variants to."),
    emotions: bool = typer.Option(
        False,
        "--emotions",
        help="The variant names are emotion specs (e.g. frustration:severe) whose "
        "customers were given those emotions: the report runs the manipulation check on them. "
        "Without it, imported variants are compared as plain variants (agents, prompts, settings).",
    ),
) -> None:
    """Bring tau2 Results files into a run directory so summary, report and view work on them (pairs on domain, task, trial)."""
    if fmt != "tau2":
        fail(f"unknown format {fmt!r}; valid formats: tau2")
    with command_errors():
        from moodbench.sim._interchange import import_tau2, parse_import_items

        result = import_tau2(out_dir, parse_import_items(items), emotions=emotions)
    for note in result.notes:
        console.print(f"note: {note}", highlight=False, markup=False)
    console.print(
        f"imported {sum(result.counts.values())} simulation(s) into {result.run_dir}: "
        + ", ".join(f"{v}={n}" for v, n in result.counts.items())
        + f"; domains {', '.join(result.domains)}; {result.trials} trial(s); {result.prompts} prompt(s) reconstructed",
        highlight=False,
        markup=False,
    )
    console.print(f"next: moodbench report {result.run_dir}", highlight=False, markup=False)
