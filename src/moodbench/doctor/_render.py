"""The probe's tables and verdicts in the terminal."""

from __future__ import annotations

from typing import Any

from moodbench.doctor._agent_probe import VERDICT_TEXT, ProbeReport
from moodbench.doctor._user_probe import USER_TURNS, UserProbeReport

_ROWS: tuple[tuple[str, str], ...] = (
    ("proper tool calls (replies)", "proper_calls"),
    ("tool calls written as text (replies)", "text_calls"),
    ("no call when one was needed", "missed_calls"),
    ("call when none was needed", "unwanted_calls"),
    ("right tool chosen", "right_tool"),
    ("unknown / hallucinated tool names", "invalid_names"),
    ("  the same, written as text", "invented_text_calls"),
    ("arguments not JSON", "invalid_json"),
    ("arguments not matching schema", "schema_errors"),
    ("replies repeating a call", "duplicate_calls"),
    ("<think> in raw reply", "think"),
    ("empty replies", "empty"),
    ("failed requests", "errors"),
)


def render_report(report: ProbeReport, console: Any) -> None:
    from rich.table import Table

    table = Table(
        title=f"moodbench probe: {report.model} on {report.domain} "
        f"({len(report.results[next(iter(report.results))])} cases per mode, {len(report.tools)} tools)"
    )
    table.add_column("tool_choice")
    for m in report.modes:
        table.add_column(m, justify="right")
    for label, key in _ROWS:
        cells = []
        for s in report.modes.values():
            value = getattr(s, key)
            denom = {"missed_calls": s.tool_cases, "right_tool": s.tool_cases, "unwanted_calls": s.answer_cases}.get(key, s.cases)
            plain = ("invalid_names", "invented_text_calls", "invalid_json", "schema_errors")
            cells.append(str(value) if key in plain else f"{value}/{denom}")
        table.add_row(label, *cells)

    def fmt(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}s"

    table.add_row("latency mean / max", *[f"{fmt(s.latency_mean_s)} / {fmt(s.latency_max_s)}" for s in report.modes.values()])
    console.print(table)
    _print_verdict(console, report.verdict.verdict, report.verdict.reasons, report.verdict.advice, report.verdict.notes)


def _print_verdict(console: Any, verdict: str, reasons: list[str], advice: list[str], notes: list[str]) -> None:
    colour = {"ok": "green", VERDICT_TEXT: "yellow"}.get(verdict, "red")
    console.print(f"verdict: [bold {colour}]{verdict}[/]  ({'; '.join(reasons)})", highlight=False)
    for a in advice:
        console.print(f"  advice: {a}", highlight=False)
    for n in notes:
        console.print(f"  note: {n}", highlight=False)


def render_user_report(report: UserProbeReport, console: Any) -> None:
    from rich.table import Table

    table = Table(
        title=f"moodbench probe --user: {report.model} as the customer on {report.domain} "
        f"(tasks {', '.join(report.tasks)}; up to {USER_TURNS} turns each)"
    )
    table.add_column("user format")
    for col in ("replies", "flagged", "role confusion", "echo", "premature stop (conv.)", "empty", "errors"):
        table.add_column(col, justify="right")
    for f, s in report.formats.items():
        table.add_row(
            f,
            str(s.replies),
            f"{s.flagged} ({s.flagged_rate():.0%})",
            str(s.role_confusion),
            str(s.echo),
            f"{s.premature_stop}/{s.conversations}",
            str(s.empty),
            str(s.errors),
        )
    console.print(table)
    colour = "green" if report.usable else "red"
    console.print(
        f"recommended user format: [bold {colour}]{report.recommended}[/]"
        + ("" if report.usable else " (but no format is usable)"),
        highlight=False,
    )
    for a in report.advice:
        console.print(f"  advice: {a}", highlight=False)
