"""Analysis of a run's store: paired effect statistics, manipulation check, conversation statistics.

Everything here reads :class:`moodbench.analysis.load.RunData` (loaded from the SQLite store) and
returns plain dicts, so the report can render them and write them to report.json unchanged.
"""

from moodbench.analysis.load import Conversation, RunData, load_run

__all__ = ["Conversation", "RunData", "load_run"]
