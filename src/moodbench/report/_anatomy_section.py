"""The report's "How the agent failed" section: failure anatomy, flipping tasks, information delivery.

Numbers come from :mod:`moodbench.analysis._anatomy` and :mod:`moodbench.analysis._delivery`; they are
**descriptive** (task-clustered 95% intervals, no claim, not in the report's Holm family). This module adds
them to the report's data (``report.json`` key ``anatomy``, plus a warning per delivery caveat), draws the
one plot, writes report.md's section and the side-by-side pages of the pairs that flipped
(``transcripts/RUN/pair-BASEID-VARID.html``); :func:`pair_page` renders any such page on demand for
``moodbench view``.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from moodbench.analysis import POOLED
from moodbench.analysis._anatomy import (
    APOLOGY_LEXICON,
    BEHAVIOURS,
    COMPONENTS,
    DESCRIPTIVE,
    EMPATHY_LEXICON,
    ID_PATTERN,
    INVALID_ARGUMENTS,
    MEASURES,
    anatomy_effects,
    conversation_anatomy,
    flipping_tasks,
)
from moodbench.analysis._delivery import DELIVERY_MAX_GAP, delivery, delivery_effects
from moodbench.report._markdown import md_cell, md_text
from moodbench.report._render import ci, fmt, pct, render, signed
from moodbench.results import STOP_TOKENS, ConversationRecord, Run

__all__ = ["PAIR_PAGE", "add_anatomy", "anatomy_markdown", "anatomy_pages", "first_divergence", "pair_pages", "render_pair"]

PAIR_PAGE = re.compile(r"^pair-(\d+)-(\d+)\.html$")
METHOD = (
    "per conversation from the stored record; variant − baseline on matched (task, trial) pairs where both sides have the "
    "measure, task-weighted mean with a task-clustered t(G−1) 95% interval (the report's estimator), no claim"
)


def pair_name(base_id: int | None, var_id: int | None) -> str:
    return f"pair-{base_id}-{var_id}.html"


# --------------------------------------------------------------------------- report.json


def add_anatomy(data: dict[str, Any], runs: list[Run], baseline: str) -> dict[int, dict[str, float | None]]:
    """Add ``data["anatomy"]`` (fields only added, never renamed) and a warning per delivery caveat.

    Returns the per-conversation measures (by record ``id()``), for :func:`anatomy_pages`."""
    cache: dict[int, dict[str, float | None]] = {}
    effects: list[dict[str, Any]] = []
    flips: list[dict[str, Any]] = []
    deliveries: list[dict[str, Any]] = []
    multi = len(runs) > 1
    for run in runs:
        tag = {"run": run.label}
        effects += [{**tag, **r} for r in anatomy_effects(run.records, baseline, run.variants, cache=cache)]
        for f in flipping_tasks(run.records, baseline, run.variants):
            for x in f["flips"]:
                x["page"] = f"transcripts/{run.slug}/{pair_name(x['baseline_id'], x['variant_id'])}"
            flips.append({**tag, "run_slug": run.slug, **f})
        for d in delivery_effects(run.records, baseline, run.variants):
            headline = next(
                (
                    e
                    for e in data.get("effects", [])
                    if e.get("run") == run.label
                    and e.get("variant") == d["variant"]
                    and e.get("domain") == POOLED
                    and e.get("subset") == "all"
                ),
                None,
            )
            d["reward_claim"] = None if headline is None else headline.get("claim")
            deliveries.append({**tag, **d})
            if d["caveat"]:
                data.setdefault("warnings", []).append(
                    {"level": "warn", "text": (f"{run.label}: " if multi else "") + d["caveat"]}
                )
                _caveat_effects(data, run.label, d)
    data["anatomy"] = {
        "status": DESCRIPTIVE,
        "method": METHOD,
        "measures": MEASURES,
        "components": list(COMPONENTS),
        "behaviours": list(BEHAVIOURS),
        "definitions": {
            "id_pattern": ID_PATTERN.pattern,
            "invalid_arguments": INVALID_ARGUMENTS.pattern,
            "apology_lexicon": list(APOLOGY_LEXICON),
            "empathy_lexicon": list(EMPATHY_LEXICON),
            "delivery_max_gap": DELIVERY_MAX_GAP,
        },
        "effects": effects,
        "flipping_tasks": flips,
        "delivery": deliveries,
    }
    return cache


def _caveat_effects(data: dict[str, Any], label: str, d: dict[str, Any]) -> None:
    """Put the delivery caveat beside the variant's pooled reward effects (``caveats``; trust at least caution).

    The claim is untouched: like every validity caveat it says how far to believe it, and the effect on the pairs
    where both customers stated every fact stands beside it in the section."""
    full = d["reward_all_delivered"]
    text = (
        f"{d['caveat']} (there: {signed(full['diff'])} {ci(*full['ci'])} on {full['n_pairs']} pairs; "
        f"all pairs {signed(d['reward_all']['diff'])})"
    )
    for e in data.get("effects", []):
        if e.get("run") == label and e.get("variant") == d["variant"] and e.get("domain") == POOLED:
            e.setdefault("caveats", []).append(
                {"kind": "delivered_less", "level": "caution", "short": "customer delivered less", "text": text}
            )
            if e.get("trust") == "ok":
                e["trust"] = "caution"


# --------------------------------------------------------------------------- pages


def anatomy_pages(
    runs: list[Run], data: dict[str, Any], out: Path, measured: dict[int, dict[str, float | None]] | None = None
) -> dict[str, dict[str, str]]:
    """The section's plot and the side-by-side page of every flipped pair; returns the figure.

    ``measured``: what :func:`add_anatomy` returned (saves measuring the flipped conversations again)."""
    from moodbench.report._plots import anatomy_plot

    an = data["anatomy"]
    by_run = {r.label: r for r in runs}
    for f in an["flipping_tasks"]:
        run = by_run[f["run"]]
        records = {c.id: c for c in run.records}
        folder = Path(out) / "transcripts" / run.slug
        folder.mkdir(parents=True, exist_ok=True)
        for x in f["flips"]:
            b, v = records.get(x["baseline_id"]), records.get(x["variant_id"])
            if b is not None and v is not None:
                (folder / pair_name(b.id, v.id)).write_text(render_pair(run, b, v, measured), encoding="utf-8")
    labels = [r.label for r in runs]
    return {
        "anatomy": anatomy_plot(an["effects"], labels, [list(COMPONENTS), list(BEHAVIOURS)], Path(out) / "plots" / "anatomy.png")
    }


def _comparable(m: dict[str, Any]) -> tuple[Any, ...]:
    return (
        m.get("role"),
        (m.get("content") or "").strip() if isinstance(m.get("content"), str) else None,
        tuple((tc.get("name"), str(tc.get("arguments"))) for tc in (m.get("tool_calls") or [])),
    )


def first_divergence(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> int | None:
    """Index of the first message where two transcripts differ (role, text or tool calls); ``None`` if identical."""
    for i, (x, y) in enumerate(zip(a, b)):
        if _comparable(x) != _comparable(y):
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


_LABELS = {"assistant": "Agent", "user": "Customer", "tool": "Tool result"}
FOLD_AT = 600  # characters of a tool result shown open


def _messages(c: ConversationRecord) -> list[dict[str, Any]]:
    """The transcript as the pair page shows it: tool results and arguments as stored (compact JSON, not
    re-indented as on the single-conversation page: a report writes many of these pages)."""
    out = []
    for m in c.messages:
        role = str(m.get("role"))
        content = m.get("content") if isinstance(m.get("content"), str) else None
        badges = []
        if (m.get("raw_data") or {}).get("invalid_json_arguments"):
            badges.append("invalid JSON arguments")
        if content and any(t in content for t in STOP_TOKENS):
            badges.append("ends the conversation")
        out.append(
            {
                "role": role,
                "label": _LABELS.get(role, role),
                "content": content,
                "error": bool(m.get("error")),
                "folded": role == "tool" and len(content or "") > FOLD_AT,
                "badges": badges,
                "tool_calls": [
                    {
                        "name": tc.get("name"),
                        "arguments": tc.get("arguments")
                        if isinstance(tc.get("arguments"), str)
                        else json.dumps(tc.get("arguments") or {}, ensure_ascii=False),
                    }
                    for tc in (m.get("tool_calls") or [])
                ],
            }
        )
    return out


def _side(run: Run, c: ConversationRecord, measured: dict[int, dict[str, float | None]] | None) -> dict[str, Any]:
    from moodbench.report._viewer import _reward, outcome, page_name

    known = (measured or {}).get(id(c))
    return {
        "c": c,
        "outcome": outcome(c),
        "messages": _messages(c),
        "reward": _reward(c.reward_info),
        "anatomy": known if known is not None else conversation_anatomy(c),
        "delivery": delivery(c),
        "page": page_name(c),
        "gold": [a.model_dump() for a in c.task_facts.gold_actions] if c.task_facts else [],
        "writes": [w.model_dump() for w in c.task_facts.write_calls] if c.task_facts else [],
    }


def render_pair(
    run: Run, base: ConversationRecord, var: ConversationRecord, measured: dict[int, dict[str, float | None]] | None = None
) -> str:
    """The side-by-side page of one matched pair: baseline left, variant right, first divergent message marked."""
    left, right = _side(run, base, measured), _side(run, var, measured)
    n = max(len(left["messages"]), len(right["messages"]))
    rows = [
        (left["messages"][i] if i < len(left["messages"]) else None, right["messages"][i] if i < len(right["messages"]) else None)
        for i in range(n)
    ]
    return render(
        "pair.html.j2",
        run=run.label,
        run_slug=run.slug,
        left=left,
        right=right,
        rows=rows,
        diverge=first_divergence(base.messages, var.messages),
        measures=MEASURES,
        components=list(COMPONENTS),
    )


def pair_pages(run_dirs: list[Path]) -> Callable[[str, int, int], str | None]:
    """For ``moodbench view``: render the pair page of two records of one run (same task and trial), or ``None``.

    The runs are loaded on the first request (and labelled as the report labels them, so the URLs match)."""
    lock = threading.Lock()
    loaded: list[Run] = []

    def runs() -> list[Run]:
        with lock:
            if not loaded:
                from moodbench.report._builder import _labels
                from moodbench.results import load_run

                loaded.extend(load_run(Path(d)) for d in run_dirs)
                _labels(loaded)
            return loaded

    def page(run_slug: str, base_id: int, var_id: int) -> str | None:
        run = next((r for r in runs() if r.slug == run_slug), None)
        if run is None:
            return None
        records = {c.id: c for c in run.records}
        b, v = records.get(base_id), records.get(var_id)
        if b is None or v is None or b.domain != v.domain or b.task_id != v.task_id or b.trial != v.trial:
            return None
        return render_pair(run, b, v)

    return page


# --------------------------------------------------------------------------- report.md


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    return [_row(head), "|" + "---|" * len(head), *[_row(r) for r in rows]]


def _eff(e: dict[str, Any]) -> str:
    return f"{signed(e['diff'])} {ci(*e['ci'])}"


def anatomy_markdown(data: dict[str, Any]) -> str:
    """report.md's "How the agent failed" section (empty when the report has no anatomy)."""
    an = data.get("anatomy")
    if not an:
        return ""
    lines = [
        "",
        "## How the agent failed",
        "",
        f"*{md_text(an['status'])}*: {md_text(an['method'])}. Definitions in docs/statistics.md (Failure anatomy).",
        "",
    ]
    lines += _table(
        ["run", "variant", "measure", "baseline", "variant mean", "Δ [95% CI]", "pairs / tasks"],
        [
            [
                md_cell(e["run"]),
                md_cell(e["variant"]),
                md_cell(e["measure"]),
                fmt(e["baseline_mean"]),
                fmt(e["variant_mean"]),
                _eff(e),
                f"{e['n_pairs']} / {e['n_tasks']}",
            ]
            for e in an["effects"]
        ],
    )
    lines += ["", "### Did the customer deliver the task?", ""]
    lines += _table(
        [
            "run",
            "variant",
            "facts stated Δ [95% CI]",
            "all facts stated (baseline / variant)",
            "Δ reward, all pairs",
            "Δ reward, pairs with all facts stated",
            "caveat",
        ],
        [
            [
                md_cell(d["run"]),
                md_cell(d["variant"]),
                _eff(d["share"]),
                f"{pct(d['complete_rate']['baseline'])} / {pct(d['complete_rate']['variant'])}",
                f"{_eff(d['reward_all'])} (n={d['reward_all']['n_pairs']})",
                f"{_eff(d['reward_all_delivered'])} (n={d['reward_all_delivered']['n_pairs']})",
                md_cell(d["caveat"] or "–"),
            ]
            for d in an["delivery"]
        ],
    )
    lines += ["", "### Tasks that flip (success under the baseline vs the variant, matched trials)", ""]
    if not an["flipping_tasks"]:
        lines += ["No task changed outcome between the baseline and a variant.", ""]
    else:
        lines += _table(
            ["run", "variant", "task", "baseline / variant successes", "lost", "gained", "side by side"],
            [
                [
                    md_cell(f["run"]),
                    md_cell(f["variant"]),
                    md_cell(f"{f['domain']}/{f['task_id']}"),
                    f"{f['baseline_successes']} / {f['variant_successes']} of {f['trials']}",
                    f["lost"],
                    f["gained"],
                    ", ".join(f"[trial {x['trial']}]({x['page']})" for x in f["flips"]),
                ]
                for f in an["flipping_tasks"]
            ],
        )
    lines.append("")
    return "\n".join(lines)
