"""``python -m moodbench.cli``: the same command as the ``moodbench`` console script."""

from moodbench.cli._app import main

main()
