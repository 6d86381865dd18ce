"""The one pair-level statistic the report still shows: the exact McNemar test, as a *secondary* number.

McNemar counts discordant *pairs* (only the baseline succeeded / only the variant did). It answers "do
these particular pairs differ?", not "does the emotion move the reward over the universe of tasks?": when
tasks react in opposite directions it rejects a true null too often (0.084 at nominal 0.05 in
``benchmarks/calibration.py``), and one task with nine hurt trials makes it look decisive. The report
therefore prints it only next to the task-clustered claim, labelled "McNemar on these pairs", and never
lets it decide anything (``docs/statistics.md``).
"""

from __future__ import annotations

from math import comb

__all__ = ["mcnemar_exact"]


def mcnemar_exact(baseline_only: int, variant_only: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pair counts.

    ``baseline_only``: pairs where only the baseline succeeded; ``variant_only``: only the variant.
    Under H0 each discordant pair is a fair coin, so p = min(1, 2 * P(Binom(b + c, 1/2) <= min(b, c))).
    Concordant pairs carry no information about the difference and do not enter.
    """
    b, c = int(baseline_only), int(variant_only)
    if b < 0 or c < 0:
        raise ValueError("counts must be non-negative")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2.0 * tail / 2**n)
