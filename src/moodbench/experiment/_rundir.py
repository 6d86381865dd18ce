"""The run directory: refusing directories that are not ours, and one writer at a time.

A run directory is moodbench's: it holds a ``results.sqlite`` store, or only files moodbench writes,
or nothing. Anything else (a project folder given as ``--out`` by mistake) is refused before a byte
is written, so nothing of the user's is modified. While a run writes, it holds an exclusive lock on
``RUN_DIR/.moodbench.lock`` (:class:`moodbench.results._lock.RunLock`, shared with every command that
writes a run directory); a second writer is refused and told which process holds it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from moodbench.experiment._config import ConfigError
from moodbench.results._lock import LOCK_NAME, RunLock

__all__ = ["LOCK_NAME", "OWN_FILES", "RunLock", "prepare_run_dir"]

# What moodbench itself writes into a run directory (a run refused at preflight has these and a store).
OWN_FILES = {
    "results.sqlite",
    "results.sqlite-wal",
    "results.sqlite-shm",
    "manifest.json",
    "events.jsonl",
    "summary.json",
    LOCK_NAME,
    "report",
}


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
            raise ConfigError(
                f"--out {out} is not a moodbench run directory and not empty (it holds {shown}); "
                "choose a new directory (moodbench writes several files into it)"
            )
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test", dir=out)  # O_EXCL: never through a planted symlink
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"cannot write to output directory {out}: {exc.strerror or exc}; choose another --out") from None
    return created
