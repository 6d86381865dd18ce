"""The run's SQLite store: append-only, one finished row per cell, safe to kill at any moment.

Every finished conversation is one INSERT in its own transaction (WAL mode), so a SIGKILL loses at
most the conversations still in flight. A partial unique index guarantees a cell is *finished*
exactly once; failed attempts (exit reasons that are excluded and re-run) stay as history.
Prompts are stored once, by hash, so thousands of rows don't repeat a 20 kB policy.

The ``simulations`` table's columns are derived from :class:`ConversationRecord`'s fields, so the
record is described once. A store written by an older version is upgraded in place by adding the
columns it lacks (``ALTER TABLE ... ADD COLUMN``); nothing is rewritten or dropped.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from moodbench._util.errors import UsageError
from moodbench.results._record import ConversationRecord, ExitReason

SCHEMA_VERSION = 2  # 1: the first release's hand-written table; 2: columns derived from the record
PAYLOAD = "simulation"  # the bulky column, left out when rows are read for summaries


class StoreError(UsageError):
    """Not a usable run directory or store (missing, corrupt, foreign, conflicting); says what to do."""


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _base(annotation: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X's origin, True); ``X`` -> (X's origin, False)."""
    args = typing.get_args(annotation)
    nullable = type(None) in args
    if nullable:
        annotation = next(a for a in args if a is not type(None))
    return typing.get_origin(annotation) or annotation, nullable


def _sql_type(annotation: Any) -> tuple[str, bool]:
    """(SQLite type, nullable) of a record field; models, dicts and tuples are stored as JSON text."""
    base, nullable = _base(annotation)
    if base in (int, bool):
        return "INTEGER", nullable
    if base is float:
        return "REAL", nullable
    if isinstance(base, type) and issubclass(base, str):  # str and ExitReason
        return "TEXT", nullable
    return "TEXT", True


def _json_field(name: str) -> bool:
    base, _ = _base(ConversationRecord.model_fields[name].annotation)
    return base in (dict, list, tuple) or (isinstance(base, type) and issubclass(base, BaseModel))


COLUMNS: tuple[str, ...] = tuple(f for f in ConversationRecord.model_fields if f != "id")
JSON_COLUMNS = frozenset(f for f in COLUMNS if _json_field(f))


def _column_sql(name: str) -> str:
    field = ConversationRecord.model_fields[name]
    kind, nullable = _sql_type(field.annotation)
    if field.is_required() and not nullable:
        return f"{name} {kind} NOT NULL"
    return f"{name} {kind}"


_EXCLUDED_SQL = ", ".join(f"'{v}'" for v in ExitReason.excluded_values())
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS prompts (sha256 TEXT PRIMARY KEY, role TEXT NOT NULL, text TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS simulations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    {(',' + chr(10) + '    ').join(_column_sql(c) for c in COLUMNS)}
);
CREATE UNIQUE INDEX IF NOT EXISTS one_finished_row_per_cell
    ON simulations(cell_key) WHERE exit_reason NOT IN ({_EXCLUDED_SQL});
CREATE INDEX IF NOT EXISTS by_variant ON simulations(variant, domain);
"""


def _to_sql(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in JSON_COLUMNS:
        return json.dumps(value)
    return value


def _from_row(row: sqlite3.Row) -> ConversationRecord:
    data: dict[str, Any] = {}
    for key in row.keys():
        value = row[key]
        if key in JSON_COLUMNS and isinstance(value, str):
            value = json.loads(value) if value else None
        if value is not None:  # NULL: the field's default (older rows lack newer columns' values)
            data[key] = value
    return ConversationRecord.model_validate(data)


class Store:
    """A connection to ``RUN_DIR/results.sqlite``. Use from one thread (the runner's main thread)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        try:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.executescript(SCHEMA)
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            raise StoreError(f"{self.path} is not a readable moodbench store ({exc}); move it aside "
                             "(or restore it from a backup) and run again") from None

    def _migrate(self) -> None:
        have = {r["name"] for r in self.conn.execute("PRAGMA table_info(simulations)")}
        for name in COLUMNS:
            if name not in have:
                self.conn.execute(f"ALTER TABLE simulations ADD COLUMN {_column_sql(name).replace(' NOT NULL', '')}")
        if (self.get_meta("schema_version") or 0) < SCHEMA_VERSION:
            self.set_meta("schema_version", SCHEMA_VERSION)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- meta ----------------------------------------------------------------------------------
    def get_meta(self, key: str) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return json.loads(row["value"]) if row else None

    def set_meta(self, key: str, value: Any) -> None:
        self.conn.execute("INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                          (key, json.dumps(value, sort_keys=True)))

    # -- prompts -------------------------------------------------------------------------------
    def put_prompt(self, role: str, text: str) -> str:
        digest = sha256(text)
        self.conn.execute("INSERT OR IGNORE INTO prompts(sha256, role, text) VALUES(?, ?, ?)", (digest, role, text))
        return digest

    def prompt(self, digest: str) -> str | None:
        row = self.conn.execute("SELECT text FROM prompts WHERE sha256=?", (digest,)).fetchone()
        return row["text"] if row else None

    # -- conversations ---------------------------------------------------------------------------
    def finished_keys(self) -> set[str]:
        rows = self.conn.execute(f"SELECT cell_key FROM simulations WHERE exit_reason NOT IN ({_EXCLUDED_SQL})")
        return {r["cell_key"] for r in rows}

    def attempts(self, cell_key: str) -> int:
        row = self.conn.execute("SELECT COUNT(*) AS n FROM simulations WHERE cell_key=?", (cell_key,)).fetchone()
        return int(row["n"])

    def insert(self, record: ConversationRecord, prompts: dict[str, str] | None = None) -> bool:
        """Store one conversation (and its prompts) atomically; False if the cell was already finished."""
        data = record.model_dump(mode="json", exclude={"id"})
        values = [_to_sql(c, data.get(c)) for c in COLUMNS]
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            for role, text in (prompts or {}).items():
                self.put_prompt(role, text)
            self.conn.execute(f"INSERT INTO simulations({', '.join(COLUMNS)}) VALUES({', '.join('?' for _ in COLUMNS)})",
                              values)
            self.conn.execute("COMMIT")
            return True
        except sqlite3.IntegrityError:
            self.conn.execute("ROLLBACK")
            return False
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise

    def records(self, *, final_only: bool = True, with_payload: bool = False) -> Iterator[ConversationRecord]:
        """Stored conversations in insertion order. ``final_only``: per cell, the finished row, else
        its latest failed attempt. ``with_payload``: include the transcript (``simulation``)."""
        cols = ["id", *(c for c in COLUMNS if with_payload or c != PAYLOAD)]
        latest: dict[str, ConversationRecord] = {}
        for r in self.conn.execute(f"SELECT {', '.join(cols)} FROM simulations ORDER BY id"):
            record = _from_row(r)
            if not final_only:
                yield record
                continue
            prev = latest.get(record.cell_key)
            if prev is None or prev.exit_reason.excluded:
                latest[record.cell_key] = record
        if final_only:
            yield from latest.values()

    def simulation(self, row_id: int) -> dict[str, Any] | None:
        r = self.conn.execute("SELECT simulation FROM simulations WHERE id=?", (row_id,)).fetchone()
        return json.loads(r["simulation"]) if r and r["simulation"] else None
