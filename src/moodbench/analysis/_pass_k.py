"""tau2's pass^k for baseline and variant on one fixed task set, with the task-clustered difference.

Descriptive only (no claim rests on it, see :class:`PassK`); kept apart from the claims in
``_inference.py``, which re-exports it, because it has its own task-set rule.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from moodbench.analysis._effect import CONFIDENCE, task_t

# --------------------------------------------------------------------------- pass^k, paired


@dataclass(frozen=True)
class PassK:
    """tau2's pass^k for baseline and variant on the same tasks, and their task-clustered difference.

    Descriptive: ``pass^1`` is the reward effect already claimed (for 0/1 rewards), and pass^k intervals
    for k >= 2 under-covered in small designs near the floor/ceiling (0.71 at 5 x 5), so no claim rests on them.
    ``dropped_tasks`` are the paired tasks left out because they have fewer than ``k_max`` pairs.
    """

    k: int
    n_tasks: int
    baseline: float
    variant: float
    diff: float
    se: float | None
    df: int | None
    ci_low: float | None
    ci_high: float | None
    p: float | None
    dropped_tasks: int = 0
    k_max: int = 0
    degenerate: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PASS_K_KEEP = 0.9  # the largest k shown is the largest with at least 90% of the paired tasks having >= k pairs


def _pass_k_task(successes: Sequence[bool], k: int) -> float:
    n, c = len(successes), int(sum(bool(s) for s in successes))
    return math.comb(c, k) / math.comb(n, k)


def pass_k_task_set(pairs_per_task: Mapping[Hashable, int], *, keep: float = PASS_K_KEEP) -> tuple[int, list[Hashable]]:
    """(k_max, tasks): one fixed task set, every task in it with >= k_max pairs, for every k = 1 .. k_max.

    ``k_max`` is the largest k whose set keeps at least ``keep`` of the paired tasks, so one lost conversation
    drops one task (counted), not pass^T of every task; the same set serves every k so pass^k cannot rise with
    k by losing hard tasks on the way. Empty when no task has a pair.
    """
    tasks = [t for t, n in pairs_per_task.items() if n > 0]
    if not tasks:
        return 0, []
    k_max = 1
    for k in range(max(pairs_per_task[t] for t in tasks), 0, -1):
        if sum(1 for t in tasks if pairs_per_task[t] >= k) >= keep * len(tasks):
            k_max = k
            break
    return k_max, [t for t in tasks if pairs_per_task[t] >= k_max]


def pass_hat_k_paired(
    base_by_task: Mapping[Hashable, Sequence[bool]],
    var_by_task: Mapping[Hashable, Sequence[bool]],
    *,
    confidence: float = CONFIDENCE,
    keep: float = PASS_K_KEEP,
) -> dict[int, PassK]:
    """pass^k for k = 1 .. k_max on one fixed task set (:func:`pass_k_task_set`), both sides on the same pairs.

    ``base_by_task[t][i]`` and ``var_by_task[t][i]`` are one pair. Per task C(c, k) / C(n, k) (unbiased for the
    task's p^k), averaged over tasks: tau2's rule. The difference is analysed like every other effect (one value
    per task, t(G-1)); zero spread gives no interval (:func:`task_t`).
    """
    counts = {t: min(len(base_by_task[t]), len(var_by_task[t])) for t in base_by_task if t in var_by_task}
    k_max, tasks = pass_k_task_set(counts, keep=keep)
    if not tasks:
        return {}
    dropped = sum(1 for n in counts.values() if n > 0) - len(tasks)
    out: dict[int, PassK] = {}
    for k in range(1, k_max + 1):
        b = np.array([_pass_k_task(base_by_task[t][: counts[t]], k) for t in tasks])
        v = np.array([_pass_k_task(var_by_task[t][: counts[t]], k) for t in tasks])
        t = task_t(v - b, confidence=confidence)
        out[k] = PassK(
            k,
            len(tasks),
            float(b.mean()),
            float(v.mean()),
            float(v.mean() - b.mean()),
            t.se,
            t.df,
            t.ci_low,
            t.ci_high,
            t.p,
            dropped,
            k_max,
            t.degenerate,
        )
    return out
