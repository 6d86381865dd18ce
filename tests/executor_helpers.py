"""Shared by the executor tests: one scripted mock experiment run through the real CLI."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from moodbench.results import Store
from moodbench.testing.scripts import mock_example_script

SCRIPT = mock_example_script()

ARGS = [
    "--domain",
    "mock",
    "--task-ids",
    "create_task_1,update_task_1",
    "--variants",
    "control,frustration",
    "--trials",
    "2",
    "--agent-model",
    "openai/scripted",
    "--skip-preflight",
    "--concurrency",
    "4",
]


def run(cli: list[str], url: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(
        [*cli, "run", *ARGS, "--agent-base-url", url, "--out", str(out), *extra], capture_output=True, text=True, timeout=900
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    return res


def _conversation(sim: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [
        (m["role"], m.get("content"), tuple((tc["name"], str(tc["arguments"])) for tc in m.get("tool_calls") or []))
        for m in sim["messages"]
    ]


def rows(out: Path) -> dict[str, tuple[Any, ...]]:
    """Per cell: exit reason, reward, reward breakdown and the conversation (timestamps left out)."""
    with Store(out / "results.sqlite") as store:
        result = {}
        for r in store.records(with_payload=True):
            info = r.reward_info or {}
            result[r.cell_key] = (
                r.exit_reason.value,
                r.reward,
                str(info.get("reward_breakdown")),
                r.seed,
                _conversation(r.simulation or {"messages": []}),
            )
        return result


def forget(out: Path, keys: list[str]) -> None:
    """Delete stored conversations, as if the run had been killed before they finished."""
    con = sqlite3.connect(out / "results.sqlite")
    with con:
        con.executemany("DELETE FROM simulations WHERE cell_key=?", [(k,) for k in keys])
    con.close()
