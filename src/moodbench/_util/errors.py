"""The one base class for input a user must fix: every command maps it to exit code 2.

Config problems, unusable run directories, bad report inputs all derive from :class:`UsageError`,
so the CLI needs one ``except`` to turn any of them into a message (never a traceback).
"""


class UsageError(ValueError):
    """Bad input; the message names the problem and the fix. Nothing was run or changed."""
