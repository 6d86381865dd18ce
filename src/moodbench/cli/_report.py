"""``moodbench report`` and ``moodbench view``, as plain functions (the typer commands in :mod:`._analysis` are thin shims).

Exit codes follow the CLI's table (:mod:`moodbench.cli._exit`): 0 ok, 2 bad input (nothing written);
``view`` ends with 130 on Ctrl-C and 143 on SIGTERM, like ``run`` and ``serve``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from moodbench._util.exitcodes import ExitCode
from moodbench._util.secrets import mask, secret_values
from moodbench.report._render import ci, fmt, pval, signed

TRUST_STYLE = {"ok": "green", "caution": "yellow", "unreliable": "bold red"}
CLAIM_STYLE = {"lower": "bold red", "higher": "bold green", "no_difference": "none", "too_few": "dim"}


def _t(value: object, style: str = "none") -> Text:
    """A table cell that shows run data literally (a variant or model named ``[b]x`` is not rich markup)."""
    return Text("" if value is None else str(value), style=style)


def _default_out(run_dirs: list[Path]) -> Path:
    return run_dirs[0] / "report" if len(run_dirs) == 1 else Path("moodbench-report")


def print_headline(data: dict, console: Console) -> None:
    """The answer in the terminal: one row per (run, variant), pooled scope, same numbers as report.html."""
    multi = len(data["runs"]) > 1
    table = Table(title=f"moodbench: effect of each variant vs {data['baseline']!r} (variant − baseline, matched pairs)")
    cols = (["run"] if multi else []) + [
        "variant",
        "baseline",
        "variant mean",
        "Δ reward",
        "95% CI",
        "p (Holm)",
        "claim",
        "pairs/tasks",
        "Δ w/o flagged",
        "emotion visible",
        "trust",
    ]
    for col in cols:
        table.add_column(col, justify="left" if col in ("run", "variant", "claim", "trust", "emotion visible") else "right")
    for a in data["runs"]:
        design: dict[str, Any] = next((d for d in data["designs"] if d["run"] == a["label"] and d["domain"] == "all"), {})
        mde = design.get("mde")
        table.add_row(
            *([_t(a["label"])] if multi else []),
            _t(f"{a['baseline']} (baseline)"),
            "",
            "",
            "",
            "",
            "",
            "",
            str(a["summary"]["variants"][a["baseline"]]["scored"]),
            f"MDE {mde:.3f}" if mde is not None else "MDE n/a",
            "",
            "",
        )
        rows = [e for e in data["effects"] if e["run"] == a["label"] and e["domain"] == "all"]
        for e in (r for r in rows if r["subset"] == "all"):
            u = next(r for r in rows if r["subset"] == "unflagged" and r["variant"] == e["variant"])
            table.add_row(
                *([_t(a["label"])] if multi else []),
                _t(e["variant"]),
                fmt(e["baseline_mean"]),
                fmt(e["variant_mean"]),
                signed(e["diff"]),
                ci(*e["ci"]),
                pval(e["p_adjusted"]),
                _t(e["claim"], CLAIM_STYLE.get(e["claim"], "none")),
                f"{e['n_pairs']}/{e['n_tasks']}",
                f"{signed(u['diff'])} (n={u['n_pairs']})",
                {"passed": "yes", "failed": "NO", "too_few": "too few"}.get(e["manipulation"], str(e["manipulation"])),
                _t(e["trust"], TRUST_STYLE.get(e["trust"], "none")),
            )
    console.print(table)
    for b in data["bottom_lines"]:
        console.print(("" if not multi else f"{b['run']}: ") + b["text"], highlight=False, markup=False)
    for w in data["warnings"]:
        if w["level"] in ("bad", "warn"):
            console.print(f"[yellow]warning:[/] {escape(w['text'])}", highlight=False)


def report_command(
    run_dirs: list[Path],
    out: Path | None,
    baseline: str,
    judge_model: str | None,
    judge_base_url: str | None,
    console: Console,
    *,
    as_json: bool = False,
    stdout: Console | None = None,
) -> int:
    """Build the report and print its headline table (``console``: messages; ``stdout``: the table); 2 on bad input.

    ``as_json``: compute the numbers only (no pages, plots or transcript files) and print report.json's
    content on standard output, for scripts.
    """
    from moodbench.report._anatomy_section import add_anatomy
    from moodbench.report._builder import ReportError, build_report, judge_runs, load_runs, report_data

    run_dirs = [Path(d) for d in run_dirs]

    def say(msg: str) -> None:
        console.print(f"[dim]{escape(msg)}[/]", highlight=False)

    try:
        if as_json:
            runs = load_runs(run_dirs, baseline)
            judges = judge_runs(runs, judge_model, judge_base_url, Path(out) if out else None, say)
            data = report_data(runs, baseline, judges, say)
            add_anatomy(data, runs, baseline)  # report.json's "anatomy", as build_report adds it
            sys.stdout.write(json.dumps(data, indent=1, default=str) + "\n")
            sys.stdout.flush()
            return ExitCode.OK
        out_dir = Path(out) if out else _default_out(run_dirs)
        result = build_report(
            run_dirs, out_dir, baseline=baseline, judge_model=judge_model, judge_base_url=judge_base_url, progress=say
        )
    except ReportError as exc:
        console.print(f"[bold red]error:[/] {escape(mask(str(exc), secret_values()))}", highlight=False)
        return ExitCode.USAGE
    print_headline(result.data, stdout or console)
    console.print(
        f"report: {result.html}  (also {result.markdown.name}, {result.json.name}, plots/)", highlight=False, markup=False
    )
    console.print(f"transcripts: {result.index}   ({result.seconds:.1f}s)", highlight=False, markup=False)
    return ExitCode.OK


def _needs_build(run_dir: Path, out: Path) -> bool:
    """Missing pages, or a store that changed since the report was written (a resumed run)."""
    marker = out / "report.json"
    if not marker.exists() or not (out / "transcripts" / "index.html").exists():
        return True
    # the database and its write-ahead log change only when rows are written (-shm changes on every open)
    files = [run_dir / "results.sqlite", run_dir / "results.sqlite-wal"]
    newest = max((p.stat().st_mtime for p in files if p.exists()), default=0.0)
    return newest > marker.stat().st_mtime


def _pair_page(run_dirs: list[Path]) -> Callable[[str, int, int], str | None]:
    """The viewer's side-by-side pages, whose renderer (statistics included) loads on the first pair asked for,
    so serving a built report stays light."""
    renderer: list[Callable[[str, int, int], str | None]] = []

    def page(run_slug: str, base_id: int, var_id: int) -> str | None:
        if not renderer:
            from moodbench.report._anatomy_section import pair_pages

            renderer.append(pair_pages(run_dirs))
        return renderer[0](run_slug, base_id, var_id)

    return page


def _build_for_view(run_dir: Path, out: Path, console: Console) -> int | None:
    """Build the report ``view`` serves; None when built, else the exit code (after saying why)."""
    from moodbench._util.errors import UsageError
    from moodbench.report._builder import build_report  # statistics and plots: only to build
    from moodbench.results import summary_for_run

    try:
        variants = list(summary_for_run(run_dir).get("variants", {}))
        baseline = "control" if "control" in variants or not variants else variants[0]
        console.print(
            f"building the report and transcript pages in {out} (baseline {baseline!r}); pages are served once built",
            highlight=False,
        )
        build_report([run_dir], out, baseline=baseline)
    except UsageError as exc:  # another writer holding the run directory, a bad run (ReportError)
        console.print("[bold red]error:[/] ", highlight=False, end="")
        console.print(mask(str(exc), secret_values()), highlight=False, markup=False)
        return ExitCode.USAGE
    except KeyboardInterrupt:
        console.print("stopped", highlight=False)
        return ExitCode.INTERRUPTED
    console.print("report built", highlight=False)
    return None


def view_command(run_dir: Path, port: int, open_browser: bool, console: Console) -> int:
    """Serve RUN_DIR/report on 127.0.0.1 (building it first when missing or stale) until interrupted."""
    from moodbench._util.errors import UsageError
    from moodbench.report._viewer import open_in_browser, start_server
    from moodbench.results._lock import refuse_symlinks

    run_dir = Path(run_dir)
    if not (run_dir / "results.sqlite").exists():
        console.print(f"[bold red]error:[/] {run_dir} is not a run directory (no results.sqlite)", highlight=False)
        return ExitCode.USAGE
    out = run_dir / "report"
    try:
        refuse_symlinks(out, "the report folder")  # served pages must be the run's own, not a link's target
        build = _needs_build(run_dir, out)
    except UsageError as exc:  # a symlink
        console.print("[bold red]error:[/] ", highlight=False, end="")
        console.print(mask(str(exc), secret_values()), highlight=False, markup=False)
        return ExitCode.USAGE
    # listen at once; a missing or stale report is built meanwhile, and requests wait for it (never a stale page)
    ready = threading.Event()
    if not build:
        ready.set()
    try:
        server = start_server(out, port, pair_page=_pair_page([run_dir]), ready=ready)
    except OSError as exc:
        console.print(
            f"[bold red]error:[/] cannot listen on 127.0.0.1:{port}: {exc} (try --port 0 for a free port)", highlight=False
        )
        return ExitCode.USAGE
    base = f"http://127.0.0.1:{server.server_address[1]}"
    console.print(f"serving {out} at {base}/", highlight=False)
    console.print(f"transcripts: {base}/transcripts/index.html", highlight=False)
    console.print(f"report:      {base}/report.html", highlight=False)
    console.print("press Ctrl-C to stop", highlight=False)
    if build:
        failed = _build_for_view(run_dir, out, console)
        if failed is not None:
            server.shutdown()
            server.server_close()
            return failed
        ready.set()
    if open_browser:
        open_in_browser(f"{base}/transcripts/index.html")
    stop = threading.Event()
    code = ExitCode.TERMINATED  # the loop below ends on SIGTERM (stop set) or Ctrl-C (KeyboardInterrupt)
    if threading.current_thread() is threading.main_thread() and os.name == "posix":
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        code = ExitCode.INTERRUPTED
    finally:
        server.shutdown()
        server.server_close()
    console.print("stopped", highlight=False)
    return code
