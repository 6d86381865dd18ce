"""Group-sequential boundaries: Lan-DeMets O'Brien-Fleming-type alpha spending, solved by recursive integration.

The boundary math of :mod:`moodbench.analysis._sequential` (the method is described there): the spending
function, the numerical integration of the canonical joint normal of the look statistics, the boundaries at a
level, and the repeated p-value. Only numpy and scipy.special are imported at module level: ``report --json``
imports this for every run, and scipy.stats (with statsmodels) would double its start-up.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import special

from moodbench.analysis._effect import ALPHA


class norm:  # reads like scipy.stats.norm, whose import (with statsmodels') the report avoids
    """The standard normal's cdf/sf/ppf/isf from scipy.special (what scipy.stats.norm computes them with)."""

    @staticmethod
    def cdf(x: Any) -> Any:
        return special.ndtr(x)

    @staticmethod
    def sf(x: Any) -> Any:
        return special.ndtr(-np.asarray(x))

    @staticmethod
    def ppf(p: Any) -> Any:
        return special.ndtri(p)

    @staticmethod
    def isf(p: Any) -> Any:
        return -special.ndtri(p)


_MAX_Z = 40.0
_H = 0.04  # grid step of the numerical integration (score scale): boundaries agree with a 0.01 grid to < 1e-6
_P_FLOOR = 1e-10


def spend_obf(t: float | np.ndarray, alpha: float) -> np.ndarray:
    """Lan-DeMets O'Brien-Fleming-type alpha spent by information fraction t, two-sided in total.

    Each side spends alpha/2 with 2 - 2 Phi(z_{1-alpha/4} / sqrt(t)) (gsDesign's ``sfLDOF`` for a symmetric
    two-sided design, the DeMets and Lan 1994 tables), so the total is 4 - 4 Phi(z_{1-alpha/4} / sqrt(t))."""
    tt = np.clip(np.asarray(t, dtype=float), 1e-12, 1.0)
    return np.asarray(4.0 - 4.0 * norm.cdf(norm.isf(alpha / 4.0) / np.sqrt(tt)))


def _grid(lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Simpson nodes and weights on [lo, hi]."""
    n = max(3, int(math.ceil((hi - lo) / _H)))
    n += n % 2  # an even number of intervals
    x = np.linspace(lo, hi, n + 1)
    w = np.ones(n + 1)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    return x, w * (hi - lo) / (3.0 * n)


def _region(t: float, inner: float, outer: float) -> tuple[np.ndarray, np.ndarray]:
    """Nodes/weights of the continuation region inner < |Z| < outer on the score scale S = Z sqrt(t)."""
    r = math.sqrt(t)
    if outer <= inner:
        return np.empty(0), np.empty(0)
    if inner <= 0:
        return _grid(-outer * r, outer * r)
    a, wa = _grid(-outer * r, -inner * r)
    b, wb = _grid(inner * r, outer * r)
    return np.concatenate([a, b]), np.concatenate([wa, wb])


class _Recursion:
    """Sub-densities of the score S_k on the continuation region, look by look (drift ``theta`` per unit t)."""

    def __init__(self, theta: float = 0.0) -> None:
        self.theta = theta
        self.t_prev = 0.0
        self.nodes = np.zeros(1)
        self.mass = np.ones(1)  # weight x density at each node; at t = 0 a point mass at 0

    def _moments(self, t: float) -> tuple[float, float]:
        dt = t - self.t_prev
        return self.theta * dt, math.sqrt(dt)

    def cross(self, t: float, c: float) -> tuple[float, float]:
        """P(continue so far and Z_k >= c) and P(continue so far and Z_k <= -c)."""
        mu, sd = self._moments(t)
        b = c * math.sqrt(t)
        up = float(self.mass @ special.ndtr((self.nodes + mu - b) / sd))
        down = float(self.mass @ special.ndtr((-b - self.nodes - mu) / sd))
        return up, down

    def inside(self, t: float, f: float) -> float:
        """P(continue so far and |Z_k| < f)."""
        if f <= 0:
            return 0.0
        mu, sd = self._moments(t)
        b = f * math.sqrt(t)
        return float(self.mass @ (special.ndtr((b - self.nodes - mu) / sd) - special.ndtr((-b - self.nodes - mu) / sd)))

    def between(self, t: float, lo: float, hi: float) -> float:
        """P(continue so far and lo < Z_k < hi)."""
        if hi <= lo:
            return 0.0
        mu, sd = self._moments(t)
        r = math.sqrt(t)
        return float(self.mass @ (special.ndtr((hi * r - self.nodes - mu) / sd) - special.ndtr((lo * r - self.nodes - mu) / sd)))

    def advance(self, t: float, inner: float, outer: float) -> None:
        """Keep the paths that continue at look t: inner < |Z| < outer."""
        self._keep(t, *_region(t, inner, outer))

    def advance_between(self, t: float, lo: float, hi: float) -> None:
        """Keep the paths that continue at look t: lo < Z < hi (a one-sided futility bound below)."""
        r = math.sqrt(t)
        self._keep(t, *(_grid(lo * r, hi * r) if hi > lo else (np.empty(0), np.empty(0))))

    def _keep(self, t: float, x: np.ndarray, w: np.ndarray) -> None:
        mu, sd = self._moments(t)
        if x.size:
            dens = np.exp(-0.5 * ((x[:, None] - self.nodes[None, :] - mu) / sd) ** 2) @ self.mass / (sd * math.sqrt(2 * math.pi))
            self.mass = w * dens
        else:
            self.mass = np.zeros(0)
        self.nodes = x
        self.t_prev = t


def _check_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    t = tuple(float(x) for x in fractions)
    if not t or any(not 0 < x <= 1 for x in t) or any(b <= a for a, b in zip(t, t[1:])) or abs(t[-1] - 1.0) > 1e-12:
        raise ValueError(f"information fractions must increase strictly within (0, 1] and end at 1, got {list(fractions)}")
    return t


@functools.lru_cache(maxsize=256)
def efficacy_bounds(fractions: tuple[float, ...], alpha: float = ALPHA) -> tuple[float, ...]:
    """Two-sided z boundaries c_1..c_K spending ``alpha`` with the OBF-type function at the given fractions.

    ``inf`` where a look has (numerically) nothing to spend."""
    t = _check_fractions(fractions)
    if not 0 < alpha < 1:
        raise ValueError("alpha must lie in (0, 1)")
    spent = spend_obf(np.asarray(t), alpha)
    rec = _Recursion()
    bounds: list[float] = []
    for k, tk in enumerate(t):
        target = float(spent[k] - (spent[k - 1] if k else 0.0))
        if target <= 1e-15:
            c = math.inf
        else:
            from scipy.optimize import brentq  # only a sequential run's boundaries need it (0.7 s of import)

            c = brentq(lambda c, tk=tk, target=target: sum(rec.cross(tk, c)) - target, 0.0, _MAX_Z, xtol=1e-10)
        bounds.append(float(c))
        rec.advance(tk, 0.0, min(c, _MAX_Z))
    return tuple(bounds)


def _levels(alpha: float) -> np.ndarray:
    """Levels of the repeated-p table: a log grid plus every Holm step alpha/j, where decisions are made exactly."""
    grid = np.concatenate([np.logspace(-10, math.log10(0.99), 41), alpha / np.arange(1, 21), [alpha]])
    return np.unique(np.clip(grid, _P_FLOOR, 0.99))


@functools.lru_cache(maxsize=64)
def _table(fractions: tuple[float, ...], alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Boundaries c_k(a) (rows: levels a ascending; columns: looks) for repeated p-values and intervals."""
    levels = _levels(alpha)
    return levels, np.array([efficacy_bounds(fractions, float(a)) for a in levels])


def _p_at(fractions: tuple[float, ...], alpha: float, k: int, z: float) -> float:
    """Smallest level a whose look-k boundary |z| reaches (interpolated in log a between exact table nodes)."""
    levels, table = _table(fractions, alpha)
    c = table[:, k]  # decreasing in a
    az = abs(z)
    if az >= c[0]:
        return _P_FLOOR
    if az <= c[-1]:  # beyond 0.99: linear to (c = 0, a = 1)
        return float(1.0 - (1.0 - levels[-1]) * az / c[-1]) if c[-1] > 0 else 1.0
    finite = np.isfinite(c)
    cc, ll = c[finite][::-1], np.log(levels[finite])[::-1]
    return float(np.exp(np.interp(az, cc, ll)))


def repeated_p(z_history: Sequence[float], fractions: Sequence[float], alpha: float = ALPHA) -> float:
    """Repeated p-value after looks 1..k (``z_history`` has the k look statistics): min over looks of the level
    at which that look's boundary was reached. Exact at every level alpha/j; elsewhere interpolated."""
    t = _check_fractions(fractions)
    if len(z_history) > len(t):
        raise ValueError("more looks than planned")
    return min(_p_at(t, alpha, k, float(z)) for k, z in enumerate(z_history))


def bound_at(fractions: Sequence[float], k: int, level: float, alpha: float = ALPHA) -> float:
    """The look-k z boundary at level ``level`` (exact when ``level`` is alpha/j, computed otherwise)."""
    t = _check_fractions(fractions)
    levels, table = _table(t, alpha)
    hit = np.flatnonzero(np.isclose(levels, level, rtol=1e-12, atol=0))
    return float(table[hit[0], k]) if hit.size else efficacy_bounds(t, float(level))[k]
