"""One writer per run directory, and nothing written through a symlink out of it.

Every command that writes a run directory (``run``, ``import``, ``merge``, ``export`` into a run,
``report``/``view`` into a run's ``report/``) holds an exclusive ``flock`` on
``RUN_DIR/.moodbench.lock`` while it writes, or refuses. The operating system drops the lock when its
process ends, however it ends (SIGKILL included), so a crashed writer never leaves it stuck.

The lock file is unlinked only by the process holding it (:meth:`RunLock.remove_dir_if_empty`, when a
refused run takes back the directory it created). A process that opened the file just before that
unlink would then lock a file no longer in the directory, so :meth:`RunLock.__enter__` checks, after
locking, that the path still names the very file it locked, and starts over if not.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO

from moodbench.results._store import StoreError

LOCK_NAME = ".moodbench.lock"
_RETRIES = 20  # a lock file replaced under us this often in a row is a bug, not a race


class RunDirLocked(StoreError):
    """Another moodbench process is writing this run directory."""


class RunLock:
    """An exclusive, crash-safe lock on a run directory (``with RunLock(dir): ...``).

    ``create``: make the directory when it is missing (a new run); otherwise a missing directory is
    a :class:`StoreError`. ``what``: the command, for the refusal message.
    """

    def __init__(self, run_dir: Path, *, create: bool = True, what: str = "moodbench run"):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.create = create
        self.what = what
        self._fh: IO[str] | None = None

    def _open(self) -> IO[str]:
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags, 0o644)
        except FileNotFoundError:
            if not self.create:
                raise StoreError(f"{self.run_dir} does not exist") from None
            self.run_dir.mkdir(parents=True, exist_ok=True)  # its creator removed it (a refused run): make it again
            fd = os.open(self.path, flags, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise StoreError(
                    f"{self.path} is a symlink; moodbench follows no symlink in a run directory. "
                    "Remove it (or use another directory)"
                ) from None
            raise StoreError(f"cannot lock {self.run_dir}: {exc.strerror or exc}; is it writable?") from None
        return os.fdopen(fd, "a+", encoding="utf-8")

    def __enter__(self) -> RunLock:
        for _ in range(_RETRIES):
            fh = self._open()
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.seek(0)
                holder = fh.read(4096).strip()
                fh.close()
                raise RunDirLocked(
                    f"{self.run_dir} is being written by another moodbench run ({_describe(holder)}); "
                    "wait for it to finish or stop it (two writers would lose or duplicate work)"
                ) from None
            try:
                now = os.stat(self.path, follow_symlinks=False)
            except FileNotFoundError:
                now = None
            mine = os.fstat(fh.fileno())
            if now is not None and (now.st_ino, now.st_dev) == (mine.st_ino, mine.st_dev):
                break
            fh.close()  # its holder unlinked it after we opened it: lock the file the directory holds now
        else:
            raise StoreError(f"cannot lock {self.run_dir}: its lock file keeps being replaced")
        fh.seek(0)
        fh.truncate()
        fh.write(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "command": self.what,  # no argv: it may hold a key
                    "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
                }
            )
        )
        fh.flush()
        self._fh = fh
        return self

    def remove_dir_if_empty(self) -> None:
        """Take back a directory this process created, while still holding its lock: when the lock file
        is all it holds, unlink that file and remove the directory."""
        if self._fh is None:
            raise RuntimeError("remove_dir_if_empty needs the lock held")
        try:
            if [p.name for p in self.run_dir.iterdir()] == [LOCK_NAME]:
                self.path.unlink()
                self.run_dir.rmdir()
        except OSError:
            pass

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


def _describe(holder: str) -> str:
    try:
        data = json.loads(holder)
        what = f"{data['command']}, " if data.get("command") else ""
        return f"{what}pid {data['pid']} on {data.get('host', '?')}, started {data.get('started_at', '?')}"
    except (ValueError, KeyError, TypeError, AttributeError):
        return "a process that is still running"


def run_dir_of(path: Path) -> Path | None:
    """The run directory ``path`` lies in (``path`` itself or its nearest parent holding a ``results.sqlite``
    or a run lock), or None."""
    p = Path(os.path.abspath(path))
    for d in (p, *p.parents):
        if (d / "results.sqlite").exists() or (d / LOCK_NAME).exists():
            return d
    return None


def refuse_symlinks(root: Path, what: str) -> None:
    """:class:`StoreError` when ``root`` or anything below it is a symlink: writing (or serving) through
    one would reach files outside the run directory. Directories are walked without following links."""
    root = Path(root)
    if root.is_symlink():
        raise StoreError(
            f"{what} {root} is a symlink (to {os.readlink(root)}); moodbench writes and serves nothing "
            "through a symlink in a run directory. Remove it, or write elsewhere with --out"
        )
    if not root.is_dir():
        return
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(top) / name
            if p.is_symlink():
                raise StoreError(
                    f"{p} is a symlink (to {os.readlink(p)}); moodbench writes and serves nothing through "
                    f"a symlink in a run directory. Remove it (or the whole {root}), or write elsewhere with --out"
                )


# A run directory's own files: no export may replace them, --force or not.
_RUN_FILES = frozenset(
    {
        "results.sqlite",
        "results.sqlite-wal",
        "results.sqlite-shm",
        "results.sqlite-journal",
        "manifest.json",
        "events.jsonl",
        "summary.json",
        LOCK_NAME,
    }
)


def check_export_target(out_file: Path, *, force: bool) -> Path | None:
    """Refuse an export target that would destroy something (:class:`StoreError`); return the run directory
    it lies in, if any.

    Refused: a directory; an existing file unless ``force``; a run directory's own files (its store,
    manifest, events, summary, lock) even with ``force``; a path inside a run directory that passes
    through a symlink.
    """
    out_file = Path(out_file)
    if out_file.is_dir() and not out_file.is_symlink():
        raise StoreError(f"--out {out_file} is a directory; give the path of a file to write (e.g. {out_file / 'results.json'})")
    run_dir = run_dir_of(out_file.parent)
    if run_dir is not None:
        if out_file.name in _RUN_FILES and Path(os.path.abspath(out_file)).parent == run_dir:
            raise StoreError(
                f"--out {out_file} is a file of the run directory {run_dir}; moodbench never replaces a run's "
                "own files. Export to another path"
            )
        rel = Path(os.path.abspath(out_file)).relative_to(run_dir)
        for i in range(1, len(rel.parts) + 1):
            if (run_dir / Path(*rel.parts[:i])).is_symlink():
                raise StoreError(
                    f"--out {out_file} goes through the symlink {run_dir / Path(*rel.parts[:i])} in the run "
                    f"directory {run_dir}; moodbench writes nothing through a symlink there. Export elsewhere"
                )
    if (out_file.exists() or out_file.is_symlink()) and not force:
        raise StoreError(
            f"--out {out_file} already exists; moodbench overwrites no file it did not create. "
            "Choose a new path, or add --force to replace it"
        )
    return run_dir


def write_export(out_file: Path, text: str, *, force: bool) -> None:
    """Write an export file whole (a temporary file renamed over it: never half a file, never through a
    symlink), holding the run lock when it lands inside a run directory."""
    from moodbench._util.files import atomic_write_text

    run_dir = check_export_target(out_file, force=force)
    try:
        Path(out_file).parent.mkdir(parents=True, exist_ok=True)
        if run_dir is None:
            atomic_write_text(Path(out_file), text)
            return
        with RunLock(run_dir, create=False, what="moodbench export"):
            check_export_target(out_file, force=force)  # again, now that no other writer can change it
            atomic_write_text(Path(out_file), text)
    except OSError as exc:
        raise StoreError(f"cannot write --out {out_file}: {exc.strerror or exc}; choose another path") from None
