"""events.jsonl: a structured, append-only log of what the run did, one JSON object per line."""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from moodbench._util.secrets import scrub


def _drop_cut_line(path: Path) -> None:
    """A SIGKILL can cut the last line mid-write; drop that fragment so the lines this run appends
    (and everything before) stay one JSON object each."""
    try:
        with path.open("rb+") as fh:
            size = fh.seek(0, os.SEEK_END)
            if size == 0:
                return
            fh.seek(max(0, size - 65536))
            tail = fh.read()
            if tail.endswith(b"\n"):
                return
            cut = tail.rfind(b"\n")
            fh.truncate(size - len(tail) + cut + 1 if cut >= 0 else (0 if size <= 65536 else size))
    except FileNotFoundError:
        pass


class EventLog:
    """Appends events; every event is scrubbed of ``secrets`` first, whoever emits it."""

    def __init__(self, path: Path, secrets: list[str] | None = None):
        self.path = Path(path)
        self._secrets = list(secrets or [])
        if self.path.is_symlink():  # appending (and trimming) through it would change a file outside the run
            from moodbench.results._store import StoreError

            raise StoreError(
                f"{self.path} is a symlink; moodbench writes nothing through a symlink in a run directory. "
                "Remove it, or choose another --out"
            )
        _drop_cut_line(self.path)
        self._lock = threading.Lock()
        self._fh = self.path.open("a", encoding="utf-8")

    def emit(self, event: str, **fields: Any) -> None:
        line = json.dumps(
            {"ts": datetime.now(UTC).isoformat(timespec="milliseconds"), "event": event, **scrub(fields, self._secrets)},
            default=str,
        )
        with self._lock:
            self._fh.write(line + "\n")
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            self._fh.close()
