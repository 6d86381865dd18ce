"""The report (``moodbench report``) and the transcript viewer (``moodbench view``)."""
