"""``moodbench report`` and ``moodbench view``, as plain functions (the typer commands are thin shims).

Exit codes follow the CLI's: 0 ok, 2 bad input (nothing written).
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

from rich.console import Console
from rich.table import Table

from moodbench.report._render import ci, pval, rel, signed

TRUST_STYLE = {"ok": "green", "caution": "yellow", "inconclusive": "dim", "unreliable": "bold red"}


def _default_out(run_dirs: list[Path]) -> Path:
    return run_dirs[0] / "report" if len(run_dirs) == 1 else Path("moodbench-report")


def print_headline(data: dict, console: Console) -> None:
    """The answer in the terminal: one row per (run, variant), same numbers as report.html."""
    multi = len(data["runs"]) > 1
    table = Table(title=f"moodbench: effect of each variant vs {data['baseline']!r} (variant − baseline)")
    cols = (["run"] if multi else []) + ["variant", "avg reward", "Δ reward", "95% CI", "relative", "p (Holm)", "pairs",
                                         "Δ w/o flagged", "emotion visible", "trust"]
    for col in cols:
        table.add_column(col, justify="right" if col not in ("run", "variant", "trust", "emotion visible") else "left")
    for b in data["baseline_rows"]:
        noise = b["noise_floor"].get("mean_abs_diff")
        table.add_row(*([b["run"]] if multi else []), f"{b['variant']} (baseline)", "-" if b["avg_reward"] is None else f"{b['avg_reward']:.3f}",
                      "", "", "", "", str(b["done"]), f"noise ±{noise:.3f}" if noise is not None else "", "", "")
        for r in data["headline"]:
            if r["run"] != b["run"]:
                continue
            u = r["unflagged"]
            table.add_row(*([r["run"]] if multi else []), r["variant"], "-" if r["avg_reward"] is None else f"{r['avg_reward']:.3f}",
                          signed(r["diff"]), ci(r["low"], r["high"]), rel(r["relative_pct"]), pval(r["p_holm"]), str(r["n_pairs"]),
                          f"{signed(u['diff'])} (n={u['n_pairs']})", {"passed": "yes", "failed": "NO", "too_few": "too few"}.get(r["manipulation"], str(r["manipulation"])),
                          f"[{TRUST_STYLE.get(r['trust'], '')}]{r['trust']}[/]")
    console.print(table)
    for w in data["warnings"]:
        if w["level"] in ("bad", "warn"):
            console.print(f"[yellow]warning:[/] {w['text']}", highlight=False)


def report_command(run_dirs: list[Path], out: Path | None, baseline: str, judge_model: str | None, judge_base_url: str | None,
                   console: Console) -> int:
    """Build the report and print its headline table; 2 on bad input."""
    from moodbench.report._builder import ReportError, build_report

    run_dirs = [Path(d) for d in run_dirs]
    out_dir = Path(out) if out else _default_out(run_dirs)
    try:
        result = build_report(run_dirs, out_dir, baseline=baseline, judge_model=judge_model, judge_base_url=judge_base_url,
                              progress=lambda msg: console.print(f"[dim]{msg}[/]", highlight=False))
    except ReportError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 2
    print_headline(result.data, console)
    console.print(f"report: {result.html}  (also {result.markdown.name}, {result.json.name}, plots/)", highlight=False)
    console.print(f"transcripts: {result.index}   [dim]({result.seconds:.1f}s)[/]", highlight=False)
    return 0


def _needs_build(run_dir: Path, out: Path) -> bool:
    """Missing pages, or a store that changed since the report was written (a resumed run)."""
    marker = out / "report.json"
    if not marker.exists() or not (out / "transcripts" / "index.html").exists():
        return True
    # the database and its write-ahead log change only when rows are written (-shm changes on every open)
    files = [run_dir / "results.sqlite", run_dir / "results.sqlite-wal"]
    newest = max((p.stat().st_mtime for p in files if p.exists()), default=0.0)
    return newest > marker.stat().st_mtime


def view_command(run_dir: Path, port: int, open_browser: bool, console: Console) -> int:
    """Serve RUN_DIR/report on 127.0.0.1 (building it first when missing or stale) until interrupted."""
    from moodbench.report._builder import ReportError, build_report
    from moodbench.report._viewer import open_in_browser, start_server
    from moodbench.results import summary_for_run

    run_dir = Path(run_dir)
    if not (run_dir / "results.sqlite").exists():
        console.print(f"[bold red]error:[/] {run_dir} is not a run directory (no results.sqlite)", highlight=False)
        return 2
    out = run_dir / "report"
    if _needs_build(run_dir, out):
        variants = list(summary_for_run(run_dir).get("variants", {}))
        baseline = "control" if "control" in variants or not variants else variants[0]
        console.print(f"building the report and transcript pages in {out} (baseline {baseline!r})", highlight=False)
        try:
            build_report([run_dir], out, baseline=baseline)
        except ReportError as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False)
            return 2
    try:
        server = start_server(out, port)
    except OSError as exc:
        console.print(f"[bold red]error:[/] cannot listen on 127.0.0.1:{port}: {exc} (try --port 0 for a free port)", highlight=False)
        return 2
    base = f"http://127.0.0.1:{server.server_address[1]}"
    console.print(f"serving {out} at {base}/", highlight=False)
    console.print(f"transcripts: {base}/transcripts/index.html", highlight=False)
    console.print(f"report:      {base}/report.html", highlight=False)
    console.print("press Ctrl-C to stop", highlight=False)
    if open_browser:
        open_in_browser(f"{base}/transcripts/index.html")
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread() and os.name == "posix":
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
    console.print("stopped", highlight=False)
    return 0
