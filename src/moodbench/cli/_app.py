"""The ``moodbench`` command. Thin: parse flags, call the library, map errors to exit codes.

Exit codes: the one table in :mod:`moodbench.cli._exit` (0 ok, 1 failed, 2 bad input, 3 preflight,
4 endpoint down, 130 interrupted, 143 terminated).
"""

from __future__ import annotations

import inspect
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from moodbench._util import defaults
from moodbench._util.defaults import USER_FORMATS
from moodbench._util.errors import UsageError
from moodbench.cli._exit import ExitCode, command_errors, console, exit_code_for, fail, out
from moodbench.cli._run_options import config_values, option_parameters

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="rich",
    help="Measure how emotional customers change tool-calling agents on tau2 domains.",
)


_global = {"verbose": False}  # the global options this process's command line gave (the CLI's own state)


@app.callback()
def _global_options(
    verbose: bool = typer.Option(
        False, "-v", "--verbose", help="Also show tau2's and litellm's own logs (hidden by default). Give it before the command."
    ),
) -> None:
    """Options of every command. ``-v`` is passed on explicitly: to this process here, to ``run``'s workers as
    ``library_logs`` (see :mod:`moodbench._util.liblogs`)."""
    _global["verbose"] = verbose
    if verbose:
        from moodbench._util.liblogs import library_logs

        library_logs(True)


def _verbose() -> bool:
    """Whether ``moodbench -v`` was given."""
    return _global["verbose"]


def _spec_overrides() -> dict[str, Any]:
    """Hidden knobs for tests, benchmarks and debugging, read here at the edge (the library takes
    arguments): MOODBENCH_BACKOFF_BASE_S / MOODBENCH_BACKOFF_MAX_S (the real 1 s doubling to 30 s is
    right for real servers but would make a fault benchmark take many minutes) and
    MOODBENCH_LITELLM=1 (send every call through litellm, skipping the light transport)."""
    out: dict[str, Any] = {"transport": "litellm"} if os.environ.get("MOODBENCH_LITELLM") == "1" else {}
    for env, key in (("MOODBENCH_BACKOFF_BASE_S", "backoff_base_s"), ("MOODBENCH_BACKOFF_MAX_S", "backoff_max_s")):
        value = os.environ.get(env, "").strip()
        if not value:
            continue
        try:
            seconds = float(value)
        except ValueError:
            fail(f"environment variable {env} must be a number of seconds, got {value!r}")
        if seconds < 0:
            fail(f"environment variable {env} must not be negative")
        out[key] = seconds
    return out


_PLUGIN_HELP = "Python module to import first (repeatable): it may register tau2 domains (and agents) in tau2's registry."


def _load_plugins(plugins: list[str] | None) -> None:
    """Import the modules named by ``--plugin`` (a bad one is exit 2 naming it); only moodbench.sim imports tau2."""
    if plugins:
        from moodbench.sim import load_plugins

        load_plugins([p for item in plugins for p in item.split(",") if p.strip()])


def run(
    config_file: Optional[Path] = typer.Option(
        None, "--config", help="TOML or YAML file with the same keys as the flags; flags override it."
    ),
    force_config: bool = typer.Option(
        False, "--force-config", help="Continue a run directory whose stored configuration differs."
    ),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Print the planned conversations and the design's minimum detectable effect; run nothing, write nothing.",
    ),
    **flags: Any,
) -> None:
    """Run (or resume) an experiment: every domain x task x variant x trial, scored by tau2."""
    from moodbench.experiment import PreflightError, build_config, load_config_file
    from moodbench.experiment import run as run_experiment

    with command_errors():
        file_values = load_config_file(config_file) if config_file else {}
        config = build_config(file_values, config_values(flags), origin="config" if config_file else "option")
        if dry_run:
            _print_plan(config)
            raise typer.Exit(ExitCode.OK)
        try:
            result = run_experiment(
                config,
                console=console,
                force_config=force_config,
                handle_signals=True,
                freeze_gc=True,
                spec_overrides=_spec_overrides(),
                library_logs=_verbose(),
            )
        except PreflightError as exc:
            console.print(
                f"[bold red]preflight refused the setup[/] (exit {int(ExitCode.PREFLIGHT)}): {escape(str(exc))}", highlight=False
            )
            for line in exc.advice:
                console.print(f"  advice: {line}", highlight=False, markup=False)
            console.print('nothing was run; details in manifest.json ("preflight"); --skip-preflight skips these checks')
            raise typer.Exit(ExitCode.PREFLIGHT) from None
    if result.ok:
        console.print(f"[green]done[/]: {result.finished} new conversation(s) stored in {escape(str(result.run_dir))}")
        _print_summary(result.run_dir)
        console.print(f"results: {result.run_dir / 'results.sqlite'}   summary: {result.run_dir / 'summary.json'}", markup=False)
    else:
        console.print(f"[bold red]stopped[/] (exit {int(result.exit_code)}): {escape(result.message)}")
        console.print(f"resume with the same command; finished conversations are kept in {result.run_dir}", markup=False)
    raise typer.Exit(int(result.exit_code))


_params = list(inspect.signature(run).parameters.values())
run.__signature__ = inspect.Signature([*_params[:-1], *option_parameters()])  # type: ignore[attr-defined]
app.command()(run)


def _print_plan(config: Any) -> None:
    """``run --dry-run``: the matrix a run would execute, and what it could detect."""
    from moodbench.analysis import plan_summary
    from moodbench.experiment import make_plan

    plan = make_plan(config)
    table = Table(
        title=f"moodbench run --dry-run: {len(plan.cells)} conversation(s) planned"
        + (f" (shard {config.shard} of {len(plan.all_cells)})" if config.shard else "")
    )
    for col in ("domain", "tasks", "variant", "trials", "conversations"):
        table.add_column(col, justify="right" if col in ("tasks", "trials", "conversations") else "left")
    tasks_per_domain = {d: sum(1 for dom, _ in plan.tasks if dom == d) for d in config.domains}
    for domain, per in plan.planned().items():
        for variant, n in per.items():
            table.add_row(domain, str(tasks_per_domain[domain]), variant, str(config.trials), str(n))
    out.print(table)
    others = [v for v in plan.variants if v != "control"]
    fewest = min(tasks_per_domain.values()) if tasks_per_domain else 0
    if not others:
        out.print("No emotional variant besides control: nothing to compare.")
        return
    for line in plan_summary(fewest, config.trials, others, list(config.domains))["lines"]:
        out.print(line)
    if config.sequential:
        out.print(_sequential_line(plan))


def _sequential_line(plan: Any) -> str:
    """``run --dry-run --sequential``: the stages and the smallest effect the run will stop on."""
    from moodbench.analysis import futility_text, plan_run
    from moodbench.experiment import ConfigError

    base = "control" if "control" in plan.variants else plan.variants[0]
    by_domain: dict[str, list[str]] = {}
    for d, tid in plan.tasks:
        by_domain.setdefault(d, []).append(tid)
    try:
        seq, _ = plan_run(
            by_domain,
            plan.variants,
            base,
            plan.config.trials,
            looks=plan.config.looks,
            smallest_effect=plan.config.smallest_effect,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return (
        f"sequential: {seq.looks} looks, stages of {', '.join(map(str, seq.stages))} task(s); each variant stops at its first "
        f"claim (|z| bounds {', '.join(f'{c:.2f}' for c in seq.bounds)}) or at its "
        f"{futility_text(seq.futility, seq.futility_confidence, seq.smallest_effect)}; at most the conversations above "
        "(moodbench power --sequential plans it)"
    )


def _print_summary(run_dir: Path) -> None:
    from moodbench.results import summary_for_run

    data = summary_for_run(run_dir)
    trials = data.get("trials", 1)
    table = Table(title=f"moodbench summary: {run_dir}")
    for col in (
        ["variant", "agent / customer", "done/planned", "avg reward"]
        + [f"pass^{k}" for k in range(1, trials + 1)]
        + ["flagged sim.", "exit reasons"]
    ):
        table.add_column(col)
    fmt = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
    for name, v in data["variants"].items():
        models = f"{', '.join(v.get('agent_models') or ['?'])} / {', '.join(v.get('user_models') or ['?'])}"
        table.add_row(
            name,
            models,
            f"{v['done']}/{v['planned']}",
            fmt(v["avg_reward"]),
            *[fmt(v["pass_hat_k"].get(str(k))) for k in range(1, trials + 1)],
            f"{v['fidelity']['flagged']}/{v['done']}",
            ", ".join(f"{k}={n}" for k, n in v["exit_reasons"].items()),
        )
    out.print(table)
    seq = data.get("sequential")
    if seq and seq.get("looks"):
        last = seq["looks"][-1]
        state = f"stopped at look {seq['stopped_at_look']}" if seq.get("stopped") else f"look {seq['looks_run']} taken"
        decided = "; ".join(
            f"{d['variant']}: {d['status']}" + (f" {d['claim']}" if d.get("claim") else "") for d in last["decisions"]
        )
        tail = "; later stages were not needed" if seq.get("stopped_early") else ""
        out.print(f"sequential: {state} of {len(seq['plan']['stages'])} ({decided}){tail}", markup=False)
    for f in data.get("tau2_files", []):  # imported files: does moodbench reproduce tau2's own metrics?
        t = f["tau2"]
        head = (
            f"{f['variant']} / {f['domain']} ({f['file']}; tau2 {f.get('tau2_git_commit') or 'version unknown'}): tau2's metrics "
            f"avg_reward {fmt(t['avg_reward'])}, "
            + ", ".join(f"pass^{k} {fmt(x)}" for k, x in t["pass_hat_k"].items())
            + f" on {t['simulations']} simulation(s)"
            + (f", {t['not_run']} not run (infrastructure error, left out)" if t["not_run"] else "")
            + (f", {t['no_reward']} without a reward" if t["no_reward"] else "")
        )
        out.print(
            head + (": reproduced" if f["matches"] else ": differs: " + "; ".join(f["differences"])),
            highlight=False,
            markup=False,
        )


@app.command()
def summary(
    run_dir: Path = typer.Argument(..., help="A run directory."),
    as_json: bool = typer.Option(False, "--json", help="Print summary.json."),
) -> None:
    """Print the per-variant table of a run (recomputed from its store)."""
    if not (run_dir / "results.sqlite").is_file():
        fail(f"{run_dir} is not a run directory (no results.sqlite)")
    with command_errors():
        if as_json:  # printed, not written: summary reads (a read-only directory, a run writing it)
            from moodbench.results import summary_for_run

            out.print_json(json.dumps(summary_for_run(run_dir)))
        else:
            _print_summary(run_dir)


@app.command()
def variants(
    show: Optional[str] = typer.Option(None, "--show", help="A spec whose exact user system prompt to print."),
    domain: str = typer.Option("mock", "--domain", help="Domain of the task used with --show."),
    task_id: Optional[str] = typer.Option(None, "--task-id", help="Task used with --show (default: the domain's first)."),
    variants_file: Optional[list[Path]] = typer.Option(None, "--variants-file"),
    user_model: Optional[str] = typer.Option(
        None,
        "--user-model",
        help="With a steered --show spec: the local/ customer model whose control vector and calibrated scale to show.",
    ),
    user_format: Optional[str] = typer.Option(
        None,
        "--user-format",
        help="With a steered --show spec: the customer format the scale is calibrated for (default as in `moodbench run`).",
    ),
    plugins: Optional[list[str]] = typer.Option(None, "--plugin", help=_PLUGIN_HELP),
) -> None:
    """List variants and levels, or print the exact user prompt (and, when steered, the vector and scale) a spec produces."""
    from moodbench.emotions import LEVELS, load_catalog

    with command_errors():
        _load_plugins(plugins)
        catalog = load_catalog(variants_file or [])
        if show is None:
            table = Table(title="moodbench variants (spec: name[@steer|@both][:level][+...], default level moderate)")
            table.add_column("variant")
            table.add_column("levels")
            table.add_column("steerable")
            table.add_column("description")
            table.add_column("source")
            for v in catalog.variants.values():
                table.add_row(
                    v.name,
                    ", ".join(lv for lv in LEVELS if lv in v.levels) or "-",
                    f"{len(v.steering.pairs)} pairs" if v.steering else "-",
                    v.description,
                    v.source,
                )
            out.print(table)
            return
        spec = catalog.parse(show)
        from moodbench.sim import user_prompt_for

        text = user_prompt_for(domain, task_id, catalog.persona_block(spec))
        steering = _show_steering(spec, catalog, user_model, user_format) if spec.steered else None
    sys.stdout.write(text + "\n")
    if steering:
        sys.stdout.write(steering + "\n")


def _show_steering(spec: Any, catalog: Any, user_model: str | None, user_format: str | None) -> str:
    """The control vector and scale a run would add to this spec's customer, as text."""
    from moodbench.experiment import ConfigError, RunConfig, make_plan
    from moodbench.experiment._local_servers import steering_of

    if not user_model or not user_model.startswith("local/"):
        raise ConfigError(
            f"{spec.canonical} is steered: name the customer model with --user-model local/NAME "
            "(e.g. local/qwen2.5-0.5b) to see its vector and scale"
        )
    fields: dict[str, Any] = {"agent_model": user_model, "user_model": user_model, "variants": [spec.canonical]}
    if user_format:
        fields["user_format"] = user_format
    config = RunConfig(**fields)
    plan = make_plan(config.model_copy(update={"task_ids": None, "num_tasks": 1}))
    ((vec, info),) = steering_of(plan, config, console).values()
    return (
        f"<steering>\ncustomer model: {user_model} (customer format {config.user_format})\n"
        f"vector: {vec.vector}\nsha256: {info.vector_sha256}\nemotion: {info.emotion}, level {spec.steered.level}, "
        f"method {info.method}, layers {info.layers_text}\nscale: {info.scale:g}\n"
        f"llama-server {' '.join(vec.server_args(info.scale))}\n</steering>"
    )


@app.command()
def export(
    run_dir: Path = typer.Argument(...),
    fmt: str = typer.Option("tau2", "--format", help="tau2: tau2's Results JSON (opens in `tau2 view`)."),
    out_file: Path = typer.Option(..., "--out", help="File to write."),
    variant: Optional[str] = typer.Option(None, "--variant", help="Only this variant (tau2 files hold one configuration)."),
    plugins: Optional[list[str]] = typer.Option(None, "--plugin", help=_PLUGIN_HELP + " Needed for a run of a plugin's domain."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists (never a run directory's own files)."),
) -> None:
    """Export a run in another tool's format."""
    if fmt != "tau2":
        fail(f"unknown format {fmt!r}; valid formats: tau2")
    if out_file.is_dir():
        fail(f"--out {out_file} is a directory; give the path of the JSON file to write")
    with command_errors():
        _load_plugins(plugins)
        from moodbench._util.files import write_problem
        from moodbench.sim import export_tau2

        try:
            n = export_tau2(run_dir, out_file, variant=variant, force=force)
        except OSError as exc:
            fail(f"cannot write {out_file}: {write_problem(exc) or exc.strerror or exc}; choose another --out")
    console.print(f"wrote {n} simulation(s) to {out_file}", markup=False)


@app.command()
def merge(
    out_dir: Path = typer.Argument(..., help="New run directory for the combined run."),
    shard_dirs: list[Path] = typer.Argument(..., help="Shard run directories (same config, different --shard)."),
) -> None:
    """Combine shard run directories into one run directory."""
    from moodbench.results import merge_runs

    with command_errors():
        n = merge_runs(out_dir, shard_dirs)
    console.print(f"merged {n} simulation(s) into {out_dir}", markup=False)
    _print_summary(out_dir)


@app.command()
def probe(
    model: str = typer.Option(..., "--model", help="litellm model string, e.g. openai/NAME or hosted_vllm/NAME."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="OpenAI-compatible base URL (omit for provider models)."),
    domain: str = typer.Option(
        "retail", "--domain", help="tau2 domain whose tools and policy the cases use: mock, retail, airline, telecom."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
    api_key_env: Optional[str] = typer.Option(
        None, "--api-key-env", help="Name of the environment variable holding the API key."
    ),
    user: bool = typer.Option(False, "--user", help="Probe the model as the simulated customer instead of the agent."),
    user_format: Optional[str] = typer.Option(
        None, "--user-format", help="With --user: tau2, transcript or completion (default: all, compared)."
    ),
    threads: int = typer.Option(4, "--threads", min=1, help="Requests in flight at once."),
    timeout_s: float = typer.Option(defaults.TIMEOUT_S, "--timeout", help="Deadline per request in seconds."),
    max_tokens: int = typer.Option(defaults.MAX_TOKENS, "--max-tokens", min=1),
    args: Optional[str] = typer.Option(None, "--args", help="JSON of extra request parameters, e.g. '{\"temperature\": 0}'."),
    plugins: Optional[list[str]] = typer.Option(None, "--plugin", help=_PLUGIN_HELP),
) -> None:
    """Check that a model can act as a tau2 agent (tool calls under auto/required) or, with --user, as the customer.

    Exit codes: 0 verdict ok (--user: a usable format exists), 1 any other verdict, 2 bad input,
    3 the endpoint is down or serves another model.
    """
    import os

    if api_key_env and not os.environ.get(api_key_env):
        fail(f"environment variable {api_key_env} (named by --api-key-env) is not set; export it first")
    if model.startswith("local/"):
        fail(
            "probe talks to a running server: start it with `moodbench serve --backend llamacpp --model "
            f"{model[len('local/') :]}` and pass --model openai/NAME --base-url URL"
        )
    if user_format is not None and user_format not in USER_FORMATS:
        fail(f"unknown --user-format {user_format!r}; valid: {', '.join(USER_FORMATS)}")
    try:
        extra = json.loads(args) if args else {}
    except json.JSONDecodeError as exc:
        fail(f"--args is not valid JSON ({exc.msg})")
        return
    if not isinstance(extra, dict):
        fail("--args must be a JSON object")
    from moodbench.doctor import ProbeError, check_endpoint, render_report, render_user_report, run_probe, run_user_probe
    from moodbench.llm import ModelSpec

    with command_errors():
        _load_plugins(plugins)
    spec = ModelSpec(
        model=model,
        base_urls=(base_url,) if base_url else (),
        api_key_env=api_key_env,
        args=extra,
        max_tokens=max_tokens,
        timeout_s=timeout_s,
    )
    endpoint = check_endpoint(
        "agent" if not user else "user",
        model,
        base_url,
        api_key=os.environ.get(api_key_env) if api_key_env else None,
        timeout=min(10.0, timeout_s),
    )
    if not endpoint.ok:
        fail(f"{base_url}: {endpoint.error}", ExitCode.PREFLIGHT)
    try:
        if user:
            formats = (user_format,) if user_format else USER_FORMATS
            ureport = run_user_probe(spec, domain, formats=formats, threads=threads)
            ureport.endpoint = endpoint
            if as_json:
                sys.stdout.write(json.dumps(_masked(ureport.to_dict(), base_url, api_key_env), indent=2, default=str) + "\n")
            else:
                render_user_report(ureport, out)
            raise typer.Exit(ExitCode.OK if ureport.usable else ExitCode.FAILED)
        report = run_probe(spec, domain, threads=threads)
    except ProbeError as exc:
        fail(str(exc))
        return
    report.endpoint = endpoint
    if as_json:
        sys.stdout.write(json.dumps(_masked(report.to_dict(), base_url, api_key_env), indent=2, default=str) + "\n")
    else:
        render_report(report, out)
    raise typer.Exit(ExitCode.OK if report.verdict.verdict == "ok" else ExitCode.FAILED)


def _masked(data: Any, base_url: str | None, api_key_env: str | None) -> Any:
    """A probe report fit to print: the URL's credentials and the named key masked (as in the text output)."""
    from moodbench._util.secrets import mask, secret_values, url_secrets

    return mask(data, [*url_secrets(base_url or ""), *secret_values((api_key_env,) if api_key_env else ())])


def main() -> None:
    """The console script: every command, with any :class:`UsageError` that escaped a command turned
    into its message and exit code 2 through :func:`moodbench.cli._exit.exit_code_for` (never a traceback).

    SIGINT is restored first when it arrived ignored: a shell starts background jobs (and CI runners
    often start their steps) with SIGINT ignored, children inherit that, and then ``kill -INT`` could not
    give ``serve`` or ``view`` the graceful stop their docs promise (``run`` installs its own handler).
    Measured: under ``bash -c './test' &`` the vLLM-serve and view Ctrl-C tests hung until killed.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        app()
    except UsageError as exc:
        from moodbench._util.secrets import mask, secret_values

        console.print("[bold red]error:[/] ", highlight=False, end="")
        console.print(mask(str(exc), secret_values()), highlight=False, markup=False)
        raise SystemExit(exit_code_for(exc)) from None


from moodbench.cli import _analysis, _install, _serve  # noqa: E402,F401  (report, view, power, import, serve, install-backend)
from moodbench.cli._steer import steer_app  # noqa: E402  (moodbench steer build / calibrate)

app.add_typer(steer_app, name="steer")
