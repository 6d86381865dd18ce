"""The run directory: refusing directories that are not ours, and one writer at a time.

A run directory is moodbench's: it holds a ``results.sqlite`` store, or only files moodbench writes,
or nothing. Anything else (a project folder given as ``--out`` by mistake) is refused before a byte
is written, so nothing of the user's is modified. While a run writes, it holds an exclusive lock on
``RUN_DIR/.moodbench.lock``; a second ``moodbench run`` on the same directory is refused and told
which process holds it. The operating system drops the lock when its process ends, however it
ends (SIGKILL included), so a crashed run never leaves it stuck.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO

from moodbench.experiment._config import ConfigError

LOCK_NAME = ".moodbench.lock"
# What moodbench itself writes into a run directory (a run refused at preflight has these and a store).
OWN_FILES = {"results.sqlite", "results.sqlite-wal", "results.sqlite-shm", "manifest.json", "events.jsonl", "summary.json",
             LOCK_NAME, "report"}


def _ours(entry: Path) -> bool:
    return entry.name in OWN_FILES or entry.name.startswith(("llamacpp-", ".manifest.json.", ".summary.json.", ".write-test"))


def prepare_run_dir(out: Path) -> bool:
    """Make sure ``out`` can be a run directory; create it if missing. Returns whether it was created.

    Refused (exit 2): a file; a non-empty directory that is neither a run directory nor only holds
    moodbench's files; a directory that cannot be written.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a directory (a new one, or a moodbench run directory to resume)")
    created = not out.exists()
    if not created and not (out / "results.sqlite").exists():
        foreign = sorted(p.name for p in out.iterdir() if not _ours(p))
        if foreign:
            shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
            raise ConfigError(f"--out {out} is not a moodbench run directory and not empty (it holds {shown}); "
                              "choose a new directory (moodbench writes several files into it)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"cannot write to output directory {out}: {exc.strerror or exc}; choose another --out") from None
    return created


def remove_if_empty(out: Path) -> None:
    """Undo :func:`prepare_run_dir`'s creation when a run refused its input before writing anything
    (only the lock file, which the refused run held, may be there)."""
    try:
        if [p.name for p in out.iterdir()] == [LOCK_NAME]:
            (out / LOCK_NAME).unlink()
        out.rmdir()
    except OSError:
        pass


class RunLock:
    """An exclusive, crash-safe lock on a run directory (``with RunLock(dir): ...``)."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_NAME
        self._fh: IO[str] | None = None

    def __enter__(self) -> RunLock:
        fh = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip()
            fh.close()
            raise ConfigError(f"{self.path.parent} is being written by another moodbench run ({_describe(holder)}); "
                              "wait for it to finish or stop it (two writers would run every conversation twice)") from None
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),  # no argv: it may hold a key
                             "started_at": datetime.now(UTC).isoformat(timespec="seconds")}))
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


def _describe(holder: str) -> str:
    try:
        data = json.loads(holder)
        return f"pid {data['pid']} on {data.get('host', '?')}, started {data.get('started_at', '?')}"
    except (ValueError, KeyError, TypeError):
        return "a process that is still running"
