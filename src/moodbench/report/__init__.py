"""The report (``moodbench report``) and the transcript viewer (``moodbench view``).

:func:`report_data` computes every number (report.json's documented shape; ``moodbench report --json``);
:func:`build_report` turns one or more run directories into ``report.json``, ``report.html``
(self-contained), ``report.md``, PNG plots and one static transcript page per conversation.
"""

from moodbench.report._builder import SCHEMA, ReportError, ReportResult, bottom_line, build_report, load_runs, report_data
from moodbench.report._markdown import md_cell, md_text
from moodbench.report._viewer import start_server, write_transcripts

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
