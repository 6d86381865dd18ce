"""The ``moodbench`` command. Thin: parse flags, call the library, map errors to exit codes.

Exit codes: 0 ok, 2 bad input (nothing was run), 3 preflight refused the setup, 4 endpoint down
(finished work stored; re-run to resume), 130 interrupted.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from moodbench._console import stderr_console

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="Measure how emotional customers change tool-calling agents on tau2 domains.")
console = stderr_console()
out = Console(width=None if sys.stdout.isatty() else 160)


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


@app.command()
def run(
    config_file: Optional[Path] = typer.Option(None, "--config", help="TOML or YAML file with the same keys as the flags; flags override it."),
    domain: Optional[str] = typer.Option(None, "--domain", help="tau2 domain(s), comma-separated: mock, retail, airline, telecom."),
    task_ids: Optional[str] = typer.Option(None, "--task-ids", help="tau2 task ids, comma-separated (e.g. 0,1,5)."),
    num_tasks: Optional[int] = typer.Option(None, "--num-tasks", help="The first N tasks of each domain."),
    task_split: Optional[str] = typer.Option(None, "--task-split", help="tau2 task split name (e.g. test, base)."),
    variants: Optional[str] = typer.Option(None, "--variants", help="Variant specs, comma-separated: control,frustration,anger:severe,anxiety:mild+confusion."),
    variants_file: Optional[list[Path]] = typer.Option(None, "--variants-file", help="YAML file with your own variants (repeatable)."),
    trials: Optional[int] = typer.Option(None, "--trials", help="Trials per task and variant (pass^k needs k <= trials)."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", help="Conversations in flight at once."),
    executor: Optional[str] = typer.Option(None, "--executor", help="Where conversations run: thread (default, one process), process (worker processes: all cores) or ray (Ray cluster)."),
    max_concurrency_per_endpoint: Optional[int] = typer.Option(None, "--max-concurrency-per-endpoint", help="At most this many requests in flight per base URL (replica); requests go to the least busy replica."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster to join with --executor ray (e.g. 10.0.0.1:6379, or auto); default: a private local instance."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="tau2 max steps per conversation (default 100)."),
    max_errors: Optional[int] = typer.Option(None, "--max-errors", help="tau2 max tool errors per conversation (default 10)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Base seed; each task/trial gets a seed shared by all its variants."),
    shard: Optional[str] = typer.Option(None, "--shard", help="I/N: run only shard I of N (1-based); combine shards with `moodbench merge`."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Run directory (results.sqlite, manifest, events, summary). Default runs/latest."),
    agent_model: Optional[str] = typer.Option(None, "--agent-model", help="litellm model string: openai/NAME, hosted_vllm/NAME, anthropic/NAME, ollama_chat/NAME, or local/qwen2.5-0.5b."),
    agent_base_url: Optional[str] = typer.Option(None, "--agent-base-url", help="OpenAI-compatible base URL(s), comma-separated replicas."),
    user_model: Optional[str] = typer.Option(None, "--user-model", help="Simulated customer's model (default: the agent's)."),
    user_base_url: Optional[str] = typer.Option(None, "--user-base-url"),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help="Model for NL assertions and judge checks (default: the agent's)."),
    judge_base_url: Optional[str] = typer.Option(None, "--judge-base-url"),
    agent_args: Optional[str] = typer.Option(None, "--agent-args", help="JSON of extra request parameters, e.g. '{\"temperature\": 0}'."),
    user_args: Optional[str] = typer.Option(None, "--user-args"),
    judge_args: Optional[str] = typer.Option(None, "--judge-args"),
    api_key_env: Optional[str] = typer.Option(None, "--api-key-env", help="Name of the environment variable holding the API key (never the key itself)."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="max_tokens per reply (default 2048) so server defaults never truncate."),
    tool_choice: Optional[str] = typer.Option(None, "--tool-choice", help="auto (default) or required: an ablation where the agent must call a tool every turn and speaks only through a respond_to_user tool."),
    recover_text_tool_calls: Optional[bool] = typer.Option(None, "--recover-text-tool-calls/--no-recover-text-tool-calls", help="Turn tool calls written as text into real calls (default: on for local models)."),
    user_format: Optional[str] = typer.Option(None, "--user-format", help="tau2 (flipped history, default) or transcript (one message with the conversation)."),
    judge_fidelity: Optional[bool] = typer.Option(None, "--judge-fidelity/--no-judge-fidelity", help="Ask the judge model to rate every simulated customer (in role? on goal? emotion at the intended level?)."),
    timeout_s: Optional[float] = typer.Option(None, "--timeout", help="Per-request timeout in seconds (default 120)."),
    max_retries: Optional[int] = typer.Option(None, "--max-retries", help="Retries per model call on 429/5xx/timeouts (default 4)."),
    max_consecutive_failures: Optional[int] = typer.Option(None, "--max-consecutive-failures", help="Stop starting conversations after this many failed requests in a row (default 25)."),
    skip_preflight: Optional[bool] = typer.Option(None, "--skip-preflight/--preflight", help="Skip the endpoint and tool-calling checks before the first conversation."),
    force_config: bool = typer.Option(False, "--force-config", help="Continue a run directory whose stored configuration differs."),
) -> None:
    """Run (or resume) an experiment: every domain x task x variant x trial, scored by tau2."""
    from moodbench.config import ConfigError, build_config, load_config_file

    flags: dict[str, Any] = {
        "domains": domain, "task_ids": task_ids, "num_tasks": num_tasks, "task_split": task_split,
        "variants": variants, "variants_file": variants_file or None, "trials": trials, "concurrency": concurrency,
        "executor": executor, "ray_address": ray_address, "max_concurrency_per_endpoint": max_concurrency_per_endpoint,
        "max_steps": max_steps, "max_errors": max_errors, "seed": seed, "shard": shard, "out": out_dir,
        "agent_model": agent_model, "agent_base_url": agent_base_url, "user_model": user_model,
        "user_base_url": user_base_url, "judge_model": judge_model, "judge_base_url": judge_base_url,
        "agent_args": agent_args, "user_args": user_args, "judge_args": judge_args, "api_key_env": api_key_env,
        "max_tokens": max_tokens, "tool_choice": tool_choice, "recover_text_tool_calls": recover_text_tool_calls,
        "user_format": user_format, "judge_fidelity": judge_fidelity, "timeout_s": timeout_s, "max_retries": max_retries,
        "max_consecutive_failures": max_consecutive_failures, "skip_preflight": skip_preflight,
    }
    from moodbench.preflight import PreflightError

    try:
        file_values = load_config_file(config_file) if config_file else {}
        config = build_config(file_values, flags, origin="config" if config_file else "option")
        from moodbench.session import run_with_models

        result = run_with_models(config, console=console, force_config=force_config)
    except ConfigError as exc:
        _fail(str(exc))
        return
    except PreflightError as exc:
        console.print(f"[bold red]preflight refused the setup[/] (exit {exc.exit_code}): {exc}", highlight=False)
        for line in exc.advice:
            console.print(f"  advice: {line}", highlight=False)
        console.print("nothing was run; details in manifest.json (\"preflight\"); --skip-preflight skips these checks")
        raise typer.Exit(exc.exit_code)
    if result.exit_code == 0:
        console.print(f"[green]done[/]: {result.finished} new conversation(s) stored in {result.run_dir}")
        _print_summary(result.run_dir)
        console.print(f"results: {result.run_dir / 'results.sqlite'}   summary: {result.run_dir / 'summary.json'}")
    else:
        console.print(f"[bold red]stopped[/] (exit {result.exit_code}): {result.message}")
        console.print(f"resume with the same command; finished conversations are kept in {result.run_dir}")
    raise typer.Exit(result.exit_code)


def _print_summary(run_dir: Path) -> None:
    from moodbench.summary import summary_for_run

    data = summary_for_run(run_dir)
    trials = data.get("trials", 1)
    table = Table(title=f"moodbench summary: {run_dir}")
    for col in ["variant", "done/planned", "avg reward"] + [f"pass^{k}" for k in range(1, trials + 1)] + ["flagged sim.", "exit reasons"]:
        table.add_column(col)
    for name, v in data["variants"].items():
        fmt = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
        table.add_row(name, f"{v['done']}/{v['planned']}", fmt(v["avg_reward"]), *[fmt(v["pass_hat_k"].get(str(k))) for k in range(1, trials + 1)],
                      f"{v['fidelity']['flagged']}/{v['done']}", ", ".join(f"{k}={n}" for k, n in v["exit_reasons"].items()))
    out.print(table)


@app.command()
def summary(run_dir: Path = typer.Argument(..., help="A run directory."), as_json: bool = typer.Option(False, "--json", help="Print summary.json.")) -> None:
    """Print the per-variant table of a run (recomputed from its store)."""
    if not (run_dir / "results.sqlite").exists():
        _fail(f"{run_dir} is not a run directory (no results.sqlite)")
    if as_json:
        from moodbench.summary import write_summary

        out.print_json(json.dumps(write_summary(run_dir)))
    else:
        _print_summary(run_dir)


@app.command()
def variants(
    show: Optional[str] = typer.Option(None, "--show", help="A spec whose exact user system prompt to print."),
    domain: str = typer.Option("mock", "--domain", help="Domain of the task used with --show."),
    task_id: Optional[str] = typer.Option(None, "--task-id", help="Task used with --show (default: the domain's first)."),
    variants_file: Optional[list[Path]] = typer.Option(None, "--variants-file"),
) -> None:
    """List variants and levels, or print the exact user prompt a spec produces."""
    from moodbench.variants import LEVELS, UnknownVariantError, load_catalog

    try:
        catalog = load_catalog(variants_file or [])
        if show is None:
            table = Table(title="moodbench variants (spec: name[:level][+name[:level]...], default level moderate)")
            table.add_column("variant")
            table.add_column("levels")
            table.add_column("description")
            table.add_column("source")
            for v in catalog.variants.values():
                table.add_row(v.name, ", ".join(lv for lv in LEVELS if lv in v.levels) or "-", v.description, v.source)
            out.print(table)
            return
        spec = catalog.parse(show)
    except UnknownVariantError as exc:
        _fail(str(exc))
        return
    from moodbench.config import ConfigError
    from moodbench.prompts import user_prompt_for

    try:
        text = user_prompt_for(domain, task_id, catalog.persona_block(spec))
    except ConfigError as exc:
        _fail(str(exc))
        return
    sys.stdout.write(text + "\n")


@app.command()
def export(
    run_dir: Path = typer.Argument(...),
    fmt: str = typer.Option("tau2", "--format", help="tau2: tau2's Results JSON (opens in `tau2 view`)."),
    out_file: Path = typer.Option(..., "--out", help="File to write."),
    variant: Optional[str] = typer.Option(None, "--variant", help="Only this variant (tau2 files hold one configuration)."),
) -> None:
    """Export a run in another tool's format."""
    if fmt != "tau2":
        _fail(f"unknown format {fmt!r}; valid formats: tau2")
    from moodbench.export import export_tau2

    from moodbench.config import ConfigError

    try:
        n = export_tau2(run_dir, out_file, variant=variant)
    except ConfigError as exc:
        _fail(str(exc))
        return
    console.print(f"wrote {n} simulation(s) to {out_file}")


@app.command()
def merge(
    out_dir: Path = typer.Argument(..., help="New run directory for the combined run."),
    shard_dirs: list[Path] = typer.Argument(..., help="Shard run directories (same config, different --shard)."),
) -> None:
    """Combine shard run directories into one run directory."""
    from moodbench.config import ConfigError
    from moodbench.merge import merge_runs

    try:
        n = merge_runs(out_dir, shard_dirs)
    except ConfigError as exc:
        _fail(str(exc))
        return
    console.print(f"merged {n} simulation(s) into {out_dir}")
    _print_summary(out_dir)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def serve(
    ctx: typer.Context,
    backend: str = typer.Option(..., "--backend", help="llamacpp (CPU, GGUF) or vllm (GPU)."),
    model: Optional[str] = typer.Option(None, "--model", help="GGUF path or built-in name (llamacpp); Hugging Face id (vllm)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Bind address (default loopback only)."),
    port: Optional[int] = typer.Option(None, "--port"),
    ctx_size: int = typer.Option(16384, "--ctx", help="llamacpp context size."),
    threads: Optional[int] = typer.Option(None, "--threads", help="llamacpp CPU threads."),
    parallel: int = typer.Option(4, "--parallel", help="llamacpp slots (prompt cache per slot)."),
    tensor_parallel: int = typer.Option(1, "--tensor-parallel"),
    replicas: int = typer.Option(1, "--replicas", help="vllm: servers on consecutive ports, one per GPU slice."),
    max_model_len: Optional[int] = typer.Option(None, "--max-model-len"),
    gpu_memory_utilization: Optional[float] = typer.Option(None, "--gpu-memory-utilization"),
    tool_call_parser: Optional[str] = typer.Option(None, "--tool-call-parser"),
    reasoning_parser: Optional[str] = typer.Option(None, "--reasoning-parser"),
    reuse: bool = typer.Option(False, "--reuse", help="Keep a healthy server already serving this model on the port."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the exact commands; change nothing."),
    stop: bool = typer.Option(False, "--stop", help="Stop servers started by moodbench serve."),
    startup_timeout: float = typer.Option(900.0, "--startup-timeout"),
    log_dir: Optional[Path] = typer.Option(None, "--log-dir"),
    skypilot: Optional[Path] = typer.Option(None, "--skypilot", help="Write (and launch, if SkyPilot is set up) a SkyPilot task YAML."),
    gpus: str = typer.Option("H100:1", "--gpus"),
    cloud: Optional[str] = typer.Option(None, "--cloud"),
) -> None:
    """Start an OpenAI-compatible model server (extra vLLM arguments go after --)."""
    from moodbench.serve.options import ServeOptions

    opts = ServeOptions(backend=backend, model=model, host=host, port=port, ctx=ctx_size, threads=threads, parallel=parallel,
                        tensor_parallel=tensor_parallel, replicas=replicas, max_model_len=max_model_len,
                        gpu_memory_utilization=gpu_memory_utilization, tool_call_parser=tool_call_parser,
                        reasoning_parser=reasoning_parser, reuse=reuse, dry_run=dry_run, stop=stop,
                        startup_timeout=startup_timeout, log_dir=log_dir, extra_args=list(ctx.args), skypilot=skypilot,
                        gpus=gpus, cloud=cloud)
    if backend == "llamacpp":
        from moodbench.serve.llamacpp import serve_llamacpp

        raise typer.Exit(serve_llamacpp(opts, console))
    if backend == "vllm":
        from moodbench.serve.vllm import serve_vllm

        raise typer.Exit(serve_vllm(opts, console))
    _fail(f"unknown backend {backend!r}; valid backends: llamacpp, vllm")


@app.command()
def report(
    run_dirs: list[Path] = typer.Argument(..., help="One or more run directories (e.g. one per agent model) to compare side by side."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Output folder (default RUN_DIR/report for one run, ./moodbench-report for several)."),
    baseline: str = typer.Option("control", "--baseline", help="Variant every other variant is compared with."),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help="Optional LLM judge rating the customers' emotion (manipulation check)."),
    judge_base_url: Optional[str] = typer.Option(None, "--judge-base-url"),
) -> None:
    """Write report.html/.md/.json, plots and transcript pages: effects with CIs, manipulation check, fidelity."""
    from moodbench.report.cli import report_command

    raise typer.Exit(report_command(run_dirs, out_dir, baseline, judge_model, judge_base_url, out))


@app.command()
def view(
    run_dir: Path = typer.Argument(..., help="A run directory."),
    port: int = typer.Option(8765, "--port", help="Port on 127.0.0.1 (0 picks a free one)."),
    no_open: bool = typer.Option(False, "--no-open", help="Do not open a browser."),
) -> None:
    """Serve the run's transcripts and report on 127.0.0.1 (builds them if missing or stale)."""
    from moodbench.report.cli import view_command

    raise typer.Exit(view_command(run_dir, port, not no_open, out))


@app.command()
def probe(
    model: str = typer.Option(..., "--model", help="litellm model string, e.g. openai/NAME or hosted_vllm/NAME."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="OpenAI-compatible base URL (omit for provider models)."),
    domain: str = typer.Option("retail", "--domain", help="tau2 domain whose tools and policy the cases use: mock, retail, airline, telecom."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
    api_key_env: Optional[str] = typer.Option(None, "--api-key-env", help="Name of the environment variable holding the API key."),
    user: bool = typer.Option(False, "--user", help="Probe the model as the simulated customer instead of the agent."),
    user_format: Optional[str] = typer.Option(None, "--user-format", help="With --user: tau2 or transcript (default: both, compared)."),
    threads: int = typer.Option(4, "--threads", min=1, help="Requests in flight at once."),
    timeout_s: float = typer.Option(120.0, "--timeout", help="Per-request timeout in seconds."),
    max_tokens: int = typer.Option(2048, "--max-tokens", min=1),
    args: Optional[str] = typer.Option(None, "--args", help="JSON of extra request parameters, e.g. '{\"temperature\": 0}'."),
) -> None:
    """Check that a model can act as a tau2 agent (tool calls under auto/required) or, with --user, as the customer.

    Exit codes: 0 verdict ok (--user: a usable format exists), 1 any other verdict, 2 bad input,
    3 the endpoint is down or serves another model.
    """
    import os

    if api_key_env and not os.environ.get(api_key_env):
        _fail(f"environment variable {api_key_env} (named by --api-key-env) is not set; export it first")
    if model.startswith("local/"):
        _fail("probe talks to a running server: start it with `moodbench serve --backend llamacpp --model "
              f"{model[len('local/'):]}` and pass --model openai/NAME --base-url URL")
    if user_format is not None and user_format not in ("tau2", "transcript"):
        _fail(f"unknown --user-format {user_format!r}; valid: tau2, transcript")
    try:
        extra = json.loads(args) if args else {}
    except json.JSONDecodeError as exc:
        _fail(f"--args is not valid JSON ({exc.msg})")
        return
    if not isinstance(extra, dict):
        _fail("--args must be a JSON object")
    from moodbench.llm import ModelSpec
    from moodbench.probe import ProbeError, check_endpoint, render_report, render_user_report, run_probe, run_user_probe

    spec = ModelSpec(model=model, base_urls=(base_url,) if base_url else (), api_key_env=api_key_env, args=extra,
                     max_tokens=max_tokens, timeout_s=timeout_s)
    endpoint = check_endpoint("agent" if not user else "user", model, base_url,
                              api_key=os.environ.get(api_key_env) if api_key_env else None, timeout=min(10.0, timeout_s))
    if not endpoint.ok:
        _fail(f"{base_url}: {endpoint.error}", code=3)
    try:
        if user:
            formats = (user_format,) if user_format else ("tau2", "transcript")
            ureport = run_user_probe(spec, domain, formats=formats, threads=threads)
            ureport.endpoint = endpoint
            if as_json:
                sys.stdout.write(json.dumps(ureport.to_dict(), indent=2, default=str) + "\n")
            else:
                render_user_report(ureport, out)
            raise typer.Exit(0 if ureport.usable else 1)
        report = run_probe(spec, domain, threads=threads)
    except ProbeError as exc:
        _fail(str(exc))
        return
    report.endpoint = endpoint
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict(), indent=2, default=str) + "\n")
    else:
        render_report(report, out)
    raise typer.Exit(0 if report.verdict.verdict == "ok" else 1)


app.add_typer(__import__("moodbench.steer._cli", fromlist=["steer_app"]).steer_app, name="steer")


def main() -> None:  # pragma: no cover - console-script shim
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
