"""The jinja2 environment shared by the report and the transcript pages (one place for number formats)."""

from __future__ import annotations

import math
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

TEMPLATES = Path(__file__).resolve().parent / "templates"


def _num(x: Any) -> float | None:
    if x is None or isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def fmt(x: Any, digits: int = 3) -> str:
    v = _num(x)
    return "–" if v is None else f"{v:.{digits}f}"


def signed(x: Any, digits: int = 3) -> str:
    v = _num(x)
    return "–" if v is None else f"{v:+.{digits}f}".replace("-", "−")


def pct(x: Any, digits: int = 0) -> str:
    v = _num(x)
    return "–" if v is None else f"{100 * v:.{digits}f}%"


def rel(x: Any) -> str:
    """A relative change already in percent (tau-Trait style: -28.1%)."""
    v = _num(x)
    return "–" if v is None else f"{v:+.1f}%".replace("-", "−")


def ci(low: Any, high: Any, digits: int = 3) -> str:
    lo, hi = _num(low), _num(high)
    if lo is None or hi is None:
        return "–"
    return f"[{signed(lo, digits)}, {signed(hi, digits)}]"


def pval(x: Any) -> str:
    v = _num(x)
    if v is None:
        return "–"
    return "<0.001" if v < 0.001 else f"{v:.3f}"


def slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return s[:60] or "run"


def find(items: Any, **attrs: Any) -> Any:
    """The first dict in ``items`` whose keys equal ``attrs`` (None if none): a lookup templates can test."""
    return next((x for x in items or () if all(x.get(k) == v for k, v in attrs.items())), None)


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=jinja2.select_autoescape(["html", "j2"], default_for_string=True, default=True),
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(fmt=fmt, signed=signed, pct=pct, rel=rel, pval=pval)
    env.globals.update(ci=ci, fmt=fmt, find=find)
    return env


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)
