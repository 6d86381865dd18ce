"""A run directory read back into memory: its configuration, plan, summary, records and prompts.

The report reads the store directly (never summary.json), so a report can be regenerated at any
time and always matches the rows; the summary numbers come from the very function that writes
summary.json, so the two cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moodbench.results._record import ConversationRecord
from moodbench.results._store import Store, StoreError
from moodbench.results._summary import summary_of_store


@dataclass
class Run:
    """Everything stored about one run directory (``moodbench.load_run``)."""

    run_dir: Path
    config: dict[str, Any]
    plan: dict[str, Any]
    summary: dict[str, Any]
    records: list[ConversationRecord]
    prompts: dict[str, str] = field(default_factory=dict)  # sha256 -> text, for the prompts the records used
    label: str = ""  # display name (the report names runs after their agent model)
    slug: str = ""  # file-system-safe display name, unique among the runs of one report
    sequential: dict[str, Any] | None = None  # a run --sequential's plan, stage layout and looks (store meta)

    @property
    def trials(self) -> int:
        return int(self.summary.get("trials") or self.config.get("trials") or 1)

    @property
    def variants(self) -> list[str]:
        return list(self.summary.get("variants", {}))

    @property
    def domains(self) -> list[str]:
        return list(self.summary.get("domains") or sorted({r.domain for r in self.records}))

    def prompt(self, digest: str | None) -> str | None:
        return self.prompts.get(digest or "")


def load_run(run_dir: Path | str, *, with_payload: bool = True) -> Run:
    """Load a run directory: final record per cell (with transcripts unless ``with_payload=False``)."""
    run_dir = Path(run_dir)
    db = run_dir / "results.sqlite"
    if not db.is_file():
        raise StoreError(f"{run_dir} is not a run directory (no results.sqlite)")
    with Store(db, readonly=True) as store:
        summary = summary_of_store(store)
        records = list(store.records(with_payload=with_payload))
        used = {r.user_prompt_sha256 for r in records} | {r.agent_prompt_sha256 for r in records}
        prompts = {d: t for d in used if d and (t := store.prompt(d)) is not None}
        return Run(
            run_dir=run_dir,
            config=store.get_meta("config") or {},
            plan=store.get_meta("plan") or {},
            sequential=store.get_meta("sequential"),
            summary=summary,
            records=records,
            prompts=prompts,
            label=run_dir.name,
        )
