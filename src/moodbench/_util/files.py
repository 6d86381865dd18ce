"""Writing files so that a reader (or a crash) never sees half of one."""

from __future__ import annotations

import errno
import os
import sqlite3
import stat
import tempfile
from pathlib import Path

from moodbench._util.bounds import MAX_USER_FILE_BYTES
from moodbench._util.errors import UsageError


def read_user_text(path: Path, what: str, error: type[UsageError] = UsageError) -> str:
    """A user's UTF-8 text file (config, variants), or ``error`` saying what is wrong with the path.

    Only a regular file of at most ``MAX_USER_FILE_BYTES`` is read: ``/dev/zero`` would fill memory and
    a FIFO would block forever, so both are refused before they are opened."""
    path = Path(path)
    if path.is_dir():
        raise error(f"{what} {path} is a directory; give the path of a file")
    if not path.exists():
        raise error(f"{what} {path} does not exist")
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise error(f"{what} {path} is not a regular file (a device, FIFO or socket); give the path of a text file")
        with path.open("rb") as fh:
            raw = fh.read(MAX_USER_FILE_BYTES + 1)
        if len(raw) > MAX_USER_FILE_BYTES:
            raise error(
                f"{what} {path} is larger than {MAX_USER_FILE_BYTES // (1024 * 1024)} MiB; no real {what} is, check the path"
            )
        return raw.decode("utf-8")
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


# Why a write to a run directory can fail that the user can fix: (errno names, SQLite result names) -> advice.
_WRITE_PROBLEMS: tuple[tuple[frozenset[int], frozenset[str], str], ...] = (
    (frozenset({errno.ENOSPC, errno.EDQUOT}), frozenset({"SQLITE_FULL"}), "the disk (or your quota) is full; free some space"),
    (frozenset({errno.EFBIG}), frozenset(), "a file grew past the size limit set for this process (ulimit -f); raise it"),
    (frozenset({errno.EROFS}), frozenset({"SQLITE_READONLY"}), "the file system is read-only; use a writable --out"),
    (frozenset({errno.EACCES, errno.EPERM}), frozenset({"SQLITE_CANTOPEN"}), "permission denied; use a directory you can write"),
    (frozenset({errno.ENAMETOOLONG}), frozenset(), "the path is too long for the file system; choose a shorter name"),
    (
        frozenset(),
        frozenset({"SQLITE_IOERR"}),
        "the disk reported an I/O error (often: full, or a size limit); free space or check the disk",
    ),
)


def write_problem(exc: BaseException) -> str | None:
    """What the user can do about a failed write (disk full, read-only, permissions, a name too
    long), or None when ``exc`` is not such a failure (then it is a bug, and stays a traceback)."""
    code = exc.errno if isinstance(exc, OSError) else None
    name = getattr(exc, "sqlite_errorname", "") if isinstance(exc, sqlite3.Error) else ""
    for codes, names, advice in _WRITE_PROBLEMS:
        if code in codes or any(name.startswith(n) for n in names):
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            return f"{detail} ({advice})"
    return None
