"""The report (``moodbench report``) and the transcript viewer (``moodbench view``).

:func:`report_data` computes every number (report.json's documented shape; ``moodbench report --json``);
:func:`build_report` turns one or more run directories into ``report.json``, ``report.html``
(self-contained), ``report.md``, PNG plots and one static transcript page per conversation.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Names load on first use (PEP 562): ``view`` of a built report and ``report --json`` need neither
# matplotlib nor the page templates, and the viewer needs no statistics.
_EXPORTS = {
    "SCHEMA": "_builder",
    "ReportError": "_builder",
    "ReportResult": "_builder",
    "bottom_line": "_builder",
    "build_report": "_builder",
    "load_runs": "_builder",
    "report_data": "_builder",
    "md_cell": "_markdown",
    "md_text": "_markdown",
    "start_server": "_viewer",
    "write_transcripts": "_viewer",
}

if TYPE_CHECKING:
    from moodbench.report._builder import SCHEMA, ReportError, ReportResult, bottom_line, build_report, load_runs, report_data
    from moodbench.report._markdown import md_cell, md_text
    from moodbench.report._viewer import start_server, write_transcripts


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "SCHEMA",
    "ReportError",
    "ReportResult",
    "bottom_line",
    "build_report",
    "load_runs",
    "md_cell",
    "md_text",
    "report_data",
    "start_server",
    "write_transcripts",
]
