"""Writing files so that a reader (or a crash) never sees half of one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from moodbench._util.errors import UsageError


def read_user_text(path: Path, what: str, error: type[UsageError] = UsageError) -> str:
    """A user's UTF-8 text file (config, variants), or ``error`` saying what is wrong with the path."""
    path = Path(path)
    if path.is_dir():
        raise error(f"{what} {path} is a directory; give the path of a file")
    if not path.exists():
        raise error(f"{what} {path} does not exist")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def atomic_write_text(path: Path, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory, then rename.

    The temporary name is unique per call (``mkstemp``), so two processes writing the same file
    at once each replace it whole instead of sharing (and deleting) one ``.tmp`` file.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding=encoding) as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
