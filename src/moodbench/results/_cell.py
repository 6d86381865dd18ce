"""One conversation of the matrix (domain x task x variant x trial) and its key, the store's ``cell_key``.

It lives with the records because both the plan (:mod:`moodbench.experiment`) and the tau2 adapter
(:mod:`moodbench.sim`, which builds records, also from imported tau2 Results) need the one key format.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

__all__ = ["Cell"]


@dataclass(frozen=True, order=True)
class Cell:
    """One conversation of the matrix: domain x task x variant x trial."""

    domain: str
    task_id: str
    variant: str
    trial: int

    @property
    def key(self) -> str:
        return f"{self.domain}|{self.task_id}|{self.variant}|{self.trial}"

    def seed(self, base: int) -> int:
        """Same seed for every variant of a task and trial, so variants form matched pairs."""
        return base + zlib.crc32(f"{self.domain}|{self.task_id}|{self.trial}".encode()) % 1_000_000
