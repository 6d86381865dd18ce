"""The one claim family of a report: every claim-bearing test gathered in one place, one Holm correction.

A report answers several questions at once (each variant's reward effect, pooled and per domain, without
flagged conversations, dose trends...). If each section ran its own Holm family at 0.05, the report as a
whole would claim something under an exact null far more often than 5% of the time (measured 0.073-0.095
with three families). So every section hands its tests to one :class:`ReportFamily`, and :meth:`resolve`
applies one Holm correction at the stated level over all of them; a section that does not want to carry
claims marks its rows :func:`descriptive` (no ``claim`` field, a ``descriptive`` reason instead).

How a section joins (the contract a later section, e.g. a failure anatomy, follows):

* ``family.add_effect(section, row, effect)`` for a :class:`PairedEffect`, or ``family.add(section, row, p=...,
  estimate=..., se=..., df=..., reason=...)`` for any other two-sided test; ``reason`` (why it cannot be
  claimed: too few tasks, zero spread) keeps it out of the family, it can never be claimed;
* ``family.add_same(section, row, other_row)`` when the row is the *same test on the same data* as a member
  already added (e.g. the unflagged subset when nothing was flagged): it gets that member's verdict and does
  not count twice;
* ``bounds=[(estimate, p), (estimate, p)]``: the same test with the missing outcomes imputed as failures and
  as successes. The member's p for the family is then the largest of the three p-values, and 1 when the three
  estimates do not share a sign (an intersection-union test: a claim must hold whatever the excluded
  conversations hid). A member that the complete-case p alone would have claimed but the bounded p does not is
  ``no_difference`` with ``claim_withdrawn`` saying why; ``p_bounded`` is written to the row;
* after :meth:`resolve` every member row has ``claim``, ``p_adjusted``, ``family_size``, ``ci_family``,
  ``claim_family`` and ``no_claim_reason``.

Why the bounds enter the p and not only a sign check: when a variant's failures are excluded more often (long
angry conversations time out), the complete-case estimate is biased towards the variant, and a significant
complete-case "higher" almost always keeps its sign when the excluded are imputed, so a sign check alone left
the false-claim rate at ~0.08; requiring the adverse bound to be significant too brings it under 0.05
(``benchmarks/calibration.py``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

from moodbench.analysis._inference import ALPHA, MIN_PAIRS, MIN_TASKS, PairedEffect, _t_quantile, adjust_pvalues, no_claim_reason

__all__ = ["FAMILY_NAME", "ReportFamily", "descriptive"]

FAMILY_NAME = "report"
Row = MutableMapping[str, Any]
Bounds = tuple[tuple[float | None, float | None], ...]  # (estimate, p) of the test with missing outcomes imputed


def descriptive(row: Row, why: str) -> Row:
    """Label a row descriptive: it carries no ``claim`` (so nothing can read it as one) and says why."""
    row.pop("claim", None)
    row.pop("p_adjusted", None)
    row["descriptive"] = why
    return row


@dataclass
class _Member:
    section: str
    row: Row
    p: float | None
    estimate: float | None
    se: float | None
    df: int | None
    reason: str | None
    bounds: Bounds | None
    same_as: Row | None = None

    @property
    def p_bounded(self) -> float | None:
        """The p the family uses: with bounds, the largest of the three p's, 1 when their estimates disagree in sign."""
        if self.p is None or self.bounds is None or self.estimate is None:
            return self.p
        signs = {self.estimate > 0, *((e is not None and e > 0) for e, _ in self.bounds)}
        if len(signs) > 1 or any(e is None or e == 0 or q is None for e, q in self.bounds) or self.estimate == 0:
            return 1.0
        return max([self.p, *(float(q) for _, q in self.bounds if q is not None)])


class ReportFamily:
    """Collects the claim-bearing tests of one report and decides them together (Holm at ``alpha``)."""

    def __init__(self, alpha: float = ALPHA, method: str = "holm") -> None:
        self.alpha = alpha
        self.method = method
        self._members: list[_Member] = []
        self._descriptive: dict[str, str] = {}
        self._resolved = False

    # ------------------------------------------------------------------ joining

    def add(
        self,
        section: str,
        row: Row,
        *,
        p: float | None,
        estimate: float | None,
        se: float | None = None,
        df: int | None = None,
        reason: str | None = None,
        bounds: Bounds | None = None,
    ) -> None:
        """A two-sided test that may carry a claim; ``reason`` (or a missing p) keeps it out of the family."""
        if self._resolved:
            raise RuntimeError("the family is already resolved; add every test before resolve()")
        if reason is None and (p is None or estimate is None):
            reason = "not estimable"
        self._members.append(_Member(section, row, p, estimate, se, df, reason, bounds))

    def add_effect(
        self,
        section: str,
        row: Row,
        effect: PairedEffect,
        *,
        min_tasks: int = MIN_TASKS,
        min_pairs: int = MIN_PAIRS,
        bounds: tuple[PairedEffect, PairedEffect] | None = None,
    ) -> None:
        """A paired effect, gated by the minimum design and zero spread (:func:`no_claim_reason`); ``bounds`` are
        the effects with missing outcomes imputed as failures and as successes (``_claims.missing_bounds``)."""
        self.add(
            section,
            row,
            p=effect.p,
            estimate=effect.diff,
            se=effect.se,
            df=effect.df,
            reason=no_claim_reason(effect, min_tasks=min_tasks, min_pairs=min_pairs),
            bounds=None if bounds is None else tuple((b.diff, b.p) for b in bounds),
        )

    def add_same(self, section: str, row: Row, same_as: Row) -> None:
        """The same test on the same data as a member already added: shares its verdict, not counted twice."""
        if not any(m.row is same_as for m in self._members):
            raise ValueError("add_same needs a row that was added to this family first")
        self._members.append(_Member(section, row, None, None, None, None, None, None, same_as))

    def describe(self, section: str, why: str) -> None:
        """Record that a whole section is descriptive (listed in :meth:`summary`); label its rows with
        :func:`descriptive`."""
        self._descriptive[section] = why

    # ------------------------------------------------------------------ deciding

    @property
    def size(self) -> int:
        """Tests in the family (eligible, not duplicates): the m of the Holm correction."""
        return sum(1 for m in self._members if m.same_as is None and m.reason is None)

    def resolve(self) -> dict[str, Any]:
        """Holm over every eligible member; writes the verdict into each member row; returns :meth:`summary`."""
        own = [m for m in self._members if m.same_as is None]
        adjusted = adjust_pvalues([m.p_bounded if m.reason is None else None for m in own], method=self.method)
        plain = adjusted
        if any(m.bounds is not None for m in own):  # what the complete-case p's alone would have claimed
            plain = adjust_pvalues([m.p if m.reason is None else None for m in own], method=self.method)
        size = self.size
        for m, q, q0 in zip(own, adjusted, plain):
            self._decide(m, q, q0, size)
        for m in self._members:
            if m.same_as is not None:
                for key in (
                    "claim",
                    "p_adjusted",
                    "family_size",
                    "ci_family",
                    "claim_family",
                    "no_claim_reason",
                    "claim_withdrawn",
                    "p_bounded",
                ):
                    m.row[key] = m.same_as.get(key)
                m.row["same_test_as"] = "the 'all' subset (identical pairs)"
        self._resolved = True
        return self.summary()

    def _decide(self, m: _Member, q: float | None, q_plain: float | None, size: int) -> None:
        row = m.row
        lo = hi = None
        if m.reason is None and m.se is not None and m.df is not None and m.estimate is not None and size:
            half = _t_quantile(1.0 - self.alpha / (2.0 * size), m.df) * m.se
            lo, hi = m.estimate - half, m.estimate + half
        withdrawn = None
        if m.reason is not None or q is None:
            verdict = "too_few"
        elif q < self.alpha and m.estimate:
            verdict = "lower" if m.estimate < 0 else "higher"
        else:
            verdict = "no_difference"
            if m.bounds is not None and q_plain is not None and q_plain < self.alpha and m.estimate:
                (lo_e, _), (hi_e, _) = m.bounds[0], m.bounds[-1]
                withdrawn = (
                    f"not stated as a finding: with the excluded conversations as failures {_num(lo_e)}, as successes "
                    f"{_num(hi_e)}, the claim does not hold at every value they could have had (bounded p "
                    f"{m.p_bounded:.3g})"
                )
        row.update(
            {
                "claim": verdict,
                "p_adjusted": q,
                "family_size": size,
                "ci_family": [lo, hi],
                "claim_family": FAMILY_NAME,
                "no_claim_reason": m.reason,
                "claim_withdrawn": withdrawn,
                "p_bounded": None if m.bounds is None else m.p_bounded,
            }
        )

    def summary(self) -> dict[str, Any]:
        """What report.json states about the family: size, method, level, members per section, descriptive parts."""
        sections = Counter(m.section for m in self._members if m.same_as is None and m.reason is None)
        planned = Counter(m.section for m in self._members)
        return {
            "name": FAMILY_NAME,
            "method": self.method,
            "alpha": self.alpha,
            "size": self.size,
            "sections": {s: {"members": sections.get(s, 0), "rows": n} for s, n in planned.items()},
            "descriptive": dict(self._descriptive),
            "statement": (
                f"one Holm family of {self.size} test(s) at family-wise level {self.alpha:g} over every claim of "
                "the report; rows labelled descriptive carry no claim"
            ),
        }


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.3f}"
