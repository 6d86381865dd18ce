"""The report (``moodbench report``) and the transcript viewer (``moodbench view``).

:func:`build_report` turns one or more run directories into ``report.html`` (self-contained),
``report.md``, ``report.json``, PNG plots and one static transcript page per conversation.
"""

from moodbench.report._builder import ReportError, ReportResult, bottom_line, build_report
from moodbench.report._commands import print_headline, report_command, view_command
from moodbench.report._viewer import start_server, write_transcripts

__all__ = [
    "ReportError",
    "ReportResult",
    "bottom_line",
    "build_report",
    "print_headline",
    "report_command",
    "start_server",
    "view_command",
    "write_transcripts",
]
