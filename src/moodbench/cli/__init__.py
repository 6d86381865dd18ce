"""The ``moodbench`` command: thin typer commands over the library, errors mapped to exit codes.

Exit codes, one table for every command (:mod:`moodbench.cli._exit`; README "Exit codes" per command):
0 ok, 1 a tool failed or a check's verdict is not ok, 2 bad input (nothing was run), 3 preflight refused
the setup, 4 endpoint down (finished work stored; re-run to resume), 130 interrupted, 143 terminated.
"""

from moodbench.cli._app import app, main

__all__ = ["app", "main"]
