"""The run's SQLite store: append-only, one finished row per cell, safe to kill at any moment.

Every finished simulation is one INSERT in its own transaction (WAL mode), so a SIGKILL loses at
most the conversations still in flight. A partial unique index guarantees a cell is *finished*
exactly once; failed attempts (``llm_error``, ``harness_error``) stay as history and are retried.
Prompts are stored once, by hash, so thousands of rows don't repeat a 20 kB policy.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS prompts (sha256 TEXT PRIMARY KEY, role TEXT NOT NULL, text TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS simulations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    cell_key TEXT NOT NULL,
    domain TEXT NOT NULL,
    task_id TEXT NOT NULL,
    variant TEXT NOT NULL,
    trial INTEGER NOT NULL,
    seed INTEGER,
    attempt INTEGER NOT NULL DEFAULT 1,
    reward REAL,
    exit_reason TEXT NOT NULL,
    termination_reason TEXT,
    reward_info TEXT,
    simulation TEXT,
    agent_prompt_sha256 TEXT,
    user_prompt_sha256 TEXT,
    agent_model TEXT,
    user_model TEXT,
    agent_prompt_tokens INTEGER DEFAULT 0,
    agent_completion_tokens INTEGER DEFAULT 0,
    user_prompt_tokens INTEGER DEFAULT 0,
    user_completion_tokens INTEGER DEFAULT 0,
    cost_usd REAL DEFAULT 0,
    wall_seconds REAL,
    started_at TEXT,
    finished_at TEXT,
    stats TEXT,
    flags TEXT,
    error TEXT,
    shard TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS one_finished_row_per_cell
    ON simulations(cell_key) WHERE exit_reason NOT IN ('llm_error', 'harness_error');
CREATE INDEX IF NOT EXISTS by_variant ON simulations(variant, domain);
"""

RETRYABLE = ("llm_error", "harness_error")


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class Row:
    """One stored simulation, as read back for summaries and reports."""

    id: int
    cell_key: str
    domain: str
    task_id: str
    variant: str
    trial: int
    reward: float | None
    exit_reason: str
    data: dict[str, Any]

    def json(self, column: str) -> Any:
        value = self.data.get(column)
        return json.loads(value) if value else None


class Store:
    """A connection to ``RUN_DIR/results.sqlite``. Use from one thread (the runner's main thread)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(SCHEMA)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Store":
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

    # -- simulations ---------------------------------------------------------------------------
    def finished_keys(self) -> set[str]:
        rows = self.conn.execute(
            "SELECT cell_key FROM simulations WHERE exit_reason NOT IN ('llm_error', 'harness_error')"
        )
        return {r["cell_key"] for r in rows}

    def attempts(self, cell_key: str) -> int:
        row = self.conn.execute("SELECT COUNT(*) AS n FROM simulations WHERE cell_key=?", (cell_key,)).fetchone()
        return int(row["n"])

    def insert(self, record: dict[str, Any], prompts: dict[str, str] | None = None) -> bool:
        """Store one simulation (and its prompts) atomically; False if the cell was already finished."""
        cols = list(record)
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            for role, text in (prompts or {}).items():
                self.put_prompt(role, text)
            self.conn.execute(
                f"INSERT INTO simulations({', '.join(cols)}) VALUES({', '.join('?' for _ in cols)})",
                [json.dumps(v) if isinstance(v, (dict, list)) else v for v in record.values()],
            )
            self.conn.execute("COMMIT")
            return True
        except sqlite3.IntegrityError:
            self.conn.execute("ROLLBACK")
            return False
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise

    def rows(self, *, final_only: bool = True, with_payload: bool = False) -> Iterator[Row]:
        """Stored simulations. ``final_only``: per cell, the finished row, else its latest failed attempt."""
        payload = "" if with_payload else ", NULL AS simulation_omitted"
        cols = "*" if with_payload else (
            "id, cell_key, domain, task_id, variant, trial, seed, attempt, reward, exit_reason, termination_reason, "
            "reward_info, agent_prompt_sha256, user_prompt_sha256, agent_model, user_model, agent_prompt_tokens, "
            "agent_completion_tokens, user_prompt_tokens, user_completion_tokens, cost_usd, wall_seconds, started_at, "
            "finished_at, stats, flags, error, shard" + payload
        )
        query = f"SELECT {cols} FROM simulations ORDER BY id"
        latest: dict[str, Row] = {}
        for r in self.conn.execute(query):
            row = Row(id=r["id"], cell_key=r["cell_key"], domain=r["domain"], task_id=r["task_id"], variant=r["variant"],
                      trial=r["trial"], reward=r["reward"], exit_reason=r["exit_reason"], data=dict(r))
            if not final_only:
                yield row
                continue
            prev = latest.get(row.cell_key)
            if prev is None or prev.exit_reason in RETRYABLE:
                latest[row.cell_key] = row
        if final_only:
            yield from latest.values()

    def simulation(self, row_id: int) -> dict[str, Any] | None:
        r = self.conn.execute("SELECT simulation FROM simulations WHERE id=?", (row_id,)).fetchone()
        return json.loads(r["simulation"]) if r and r["simulation"] else None
