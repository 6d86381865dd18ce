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
import os
import shutil
import sqlite3
import tempfile
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from moodbench._util.bounds import clean_strings
from moodbench._util.errors import UsageError
from moodbench._util.files import write_problem
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
    {("," + chr(10) + "    ").join(_column_sql(c) for c in COLUMNS)}
);
CREATE UNIQUE INDEX IF NOT EXISTS one_finished_row_per_cell
    ON simulations(cell_key) WHERE exit_reason NOT IN ({_EXCLUDED_SQL});
CREATE INDEX IF NOT EXISTS by_variant ON simulations(variant, domain);
CREATE INDEX IF NOT EXISTS by_cell ON simulations(cell_key);
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
            surrogates = "\\ud" in value or "\\uD" in value  # stored before replies were cleaned: clean them here
            value = json.loads(value) if value else None
            if surrogates:
                value = clean_strings(value)
        if value is not None:  # NULL: the field's default (older rows lack newer columns' values)
            data[key] = value
    return ConversationRecord.model_validate(data)


_OURS = {"meta", "prompts", "simulations"}
_REQUIRED = {"cell_key", "domain", "task_id", "variant", "trial", "exit_reason"}


def _unusable(path: Path, why: str) -> StoreError:
    return StoreError(
        f"{path} {why}; nothing was changed. Move it aside (or restore it from a backup), or choose another run directory"
    )


class Store:
    """A connection to ``RUN_DIR/results.sqlite``. Use from one thread (the runner's main thread).

    ``readonly``: for readers (summary, report, view, export, merge sources) while a run may be
    writing: the file is opened read-only, never created, migrated or locked for writing.
    A file that is not a moodbench store (corrupt, truncated, empty, another program's database)
    raises :class:`StoreError` before anything is written to it.
    """

    def __init__(self, path: Path, *, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        self._copy_dir: str | None = None
        if self.path.is_symlink():
            raise _unusable(self.path, "is a symlink; moodbench reads and writes no symlink in a run directory")
        existed = self.path.exists()
        if existed and self.path.is_dir():
            raise _unusable(self.path, "is a directory, not a moodbench store")
        if existed and self.path.stat().st_size == 0:
            raise _unusable(self.path, "is empty (0 bytes), not a moodbench store")
        if readonly and not existed:
            raise StoreError(f"{self.path.parent} is not a run directory (no results.sqlite)")
        if not readonly:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        sidecars = [self.path.with_name(self.path.name + s) for s in ("-wal", "-shm")]
        self._new_sidecars = [p for p in sidecars if not p.exists()]
        try:
            if readonly:
                self.conn = self._connect_readonly()
            else:
                self.conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise _unusable(self.path, f"cannot be opened ({exc})") from None
        self.conn.row_factory = sqlite3.Row
        try:
            if existed:
                self._check_ours()
            if not readonly:
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=NORMAL")
                self.conn.executescript(SCHEMA)
                self._migrate()
            self._columns = [r["name"] for r in self.conn.execute("PRAGMA table_info(simulations)")]
        except sqlite3.DatabaseError as exc:
            self._give_up()
            problem = write_problem(exc) if not readonly else None
            if problem:  # the disk is full or read-only: the store is fine, the place is not
                raise StoreError(f"cannot write {self.path}: {problem}") from None
            raise _unusable(self.path, f"is not a readable moodbench store ({exc})") from None
        except StoreError:
            self._give_up()
            raise

    def _connect_readonly(self) -> sqlite3.Connection:
        """A read-only connection that also works where the directory cannot be written (an archive, a
        read-only mount), where SQLite cannot make the ``-shm`` index a WAL store wants: a store without
        pending WAL content is opened ``immutable``; one with it is read from a private copy of the two
        files (SQLite replays the WAL there), so no row is missed and nothing is written beside it."""
        uri = self.path.absolute().as_uri()
        if os.access(self.path.parent, os.W_OK):
            return sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=30.0, isolation_level=None)
        wal = self.path.with_name(self.path.name + "-wal")
        if not wal.exists() or wal.stat().st_size == 0:
            return sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, timeout=30.0, isolation_level=None)
        self._copy_dir = tempfile.mkdtemp(prefix="moodbench-readonly-")
        copy = Path(self._copy_dir) / self.path.name
        shutil.copyfile(self.path, copy, follow_symlinks=False)
        shutil.copyfile(wal, copy.with_name(copy.name + "-wal"), follow_symlinks=False)
        return sqlite3.connect(f"{copy.as_uri()}?mode=ro", uri=True, timeout=30.0, isolation_level=None)

    def _give_up(self) -> None:
        """Close a file that turned out not to be a usable store, and remove the (empty) WAL files
        SQLite made for it, so the user's file is left exactly as it was."""
        self.close()
        for p in self._new_sidecars:
            try:
                if p.name.endswith("-shm") or p.stat().st_size == 0:
                    p.unlink()
            except OSError:
                pass

    def _check_ours(self) -> None:
        """Refuse another program's SQLite file instead of adding our tables to it."""
        tables = {r["name"] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "simulations" not in tables:
            raise _unusable(
                self.path,
                "is an SQLite database but not a moodbench store (it has no 'simulations' table)"
                if tables - {"sqlite_sequence"}
                else "holds no moodbench tables",
            )
        columns = {r["name"] for r in self.conn.execute("PRAGMA table_info(simulations)")}
        if not _REQUIRED <= columns:
            raise _unusable(
                self.path, f"has a 'simulations' table without {', '.join(sorted(_REQUIRED - columns))}: not a moodbench store"
            )

    def _migrate(self) -> None:
        """Add the columns a store written by an older version lacks (their rows read as defaults)."""
        have = {r["name"] for r in self.conn.execute("PRAGMA table_info(simulations)")}
        for name in COLUMNS:
            if name not in have:
                self.conn.execute(f"ALTER TABLE simulations ADD COLUMN {_column_sql(name).replace(' NOT NULL', '')}")
        if (self.get_meta("schema_version") or 0) < SCHEMA_VERSION:
            self.set_meta("schema_version", SCHEMA_VERSION)

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        """A read; a damaged file (pages cut off, garbage) becomes a StoreError, not a traceback."""
        try:
            return self.conn.execute(sql, params)
        except sqlite3.DatabaseError as exc:
            self._give_up()
            raise _unusable(self.path, f"cannot be read ({exc})") from None

    def close(self) -> None:
        self.conn.close()
        if self._copy_dir is not None:
            shutil.rmtree(self._copy_dir, ignore_errors=True)
            self._copy_dir = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- meta ----------------------------------------------------------------------------------
    def get_meta(self, key: str) -> Any:
        row = self._execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        try:
            return json.loads(row["value"]) if row else None
        except ValueError as exc:
            raise _unusable(self.path, f"has unreadable metadata ({key}: {exc})") from None

    def set_meta(self, key: str, value: Any) -> None:
        self.conn.execute(
            "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, json.dumps(value, sort_keys=True)),
        )

    # -- prompts -------------------------------------------------------------------------------
    def put_prompt(self, role: str, text: str) -> str:
        digest = sha256(text)
        self.conn.execute("INSERT OR IGNORE INTO prompts(sha256, role, text) VALUES(?, ?, ?)", (digest, role, text))
        return digest

    def prompt(self, digest: str) -> str | None:
        row = self._execute("SELECT text FROM prompts WHERE sha256=?", (digest,)).fetchone()
        return row["text"] if row else None

    # -- conversations ---------------------------------------------------------------------------
    def finished_keys(self) -> set[str]:
        rows = self._execute(f"SELECT cell_key FROM simulations WHERE exit_reason NOT IN ({_EXCLUDED_SQL})").fetchall()
        return {r["cell_key"] for r in rows}

    def attempts(self, cell_key: str) -> int:
        """Rows of this cell, failed attempts included: asked once per finished conversation, so it must be an
        index look-up (``by_cell``; the partial unique index cannot serve it): as a scan of the table it was
        the main process's largest cost at 256 conversations in flight, growing with every row."""
        row = self._execute("SELECT COUNT(*) AS n FROM simulations WHERE cell_key=?", (cell_key,)).fetchone()
        return int(row["n"])

    def insert(self, record: ConversationRecord, prompts: dict[str, str] | None = None) -> bool:
        """Store one conversation (and its prompts) atomically; False if the cell was already finished."""
        data = record.model_dump(mode="json", exclude={"id"})
        values = [_to_sql(c, data.get(c)) for c in COLUMNS]
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            for role, text in (prompts or {}).items():
                self.put_prompt(role, text)
            self.conn.execute(f"INSERT INTO simulations({', '.join(COLUMNS)}) VALUES({', '.join('?' for _ in COLUMNS)})", values)
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
        cols = ["id", *(c for c in COLUMNS if (with_payload or c != PAYLOAD) and c in self._columns)]
        latest: dict[str, ConversationRecord] = {}
        rows = self._execute(f"SELECT {', '.join(cols)} FROM simulations ORDER BY id").fetchall()
        for r in rows:
            try:
                record = _from_row(r)
            except (ValueError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
                raise _unusable(
                    self.path, f"holds a row that is not a moodbench record (id {r['id']}: {str(exc)[:200]})"
                ) from None
            if not final_only:
                yield record
                continue
            prev = latest.get(record.cell_key)
            if prev is None or prev.exit_reason.excluded:
                latest[record.cell_key] = record
        if final_only:
            yield from latest.values()

    def simulation(self, row_id: int) -> dict[str, Any] | None:
        r = self._execute("SELECT simulation FROM simulations WHERE id=?", (row_id,)).fetchone()
        return json.loads(r["simulation"]) if r and r["simulation"] else None
