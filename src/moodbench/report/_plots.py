"""The report's pictures: effect per emotion with CIs, exit reasons, manipulation check, dose-response.

matplotlib with the Agg backend (no display, no network); each plot is written as a PNG next to the
report and also returned as base64 so report.html opens on its own, even when mailed alone.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.lines import Line2D

RUN_COLORS = ["#1f5fa8", "#c4551b", "#2a8a4a", "#7b3fa0", "#a07a12", "#2b8c95", "#b0306a", "#555555"]
EXIT_COLORS = {
    "success": "#2a8a4a",
    "task_failed": "#9e9e9e",
    "agent_no_tool_calls": "#e0a526",
    "invalid_tool_call": "#d9772b",
    "max_steps": "#8c6bb1",
    "too_many_errors": "#c0504d",
    "user_out_of_scope": "#4f81bd",
    "user_transfer": "#6fa8dc",
    "agent_error": "#a61c00",
    "user_error": "#b45f06",
    "context_window_exceeded": "#674ea7",
    "llm_error": "#222222",
    "harness_error": "#ff00aa",
    "infrastructure_error": "#999999",
}
plt.rcParams.update({"font.size": 10, "axes.spines.top": False, "axes.spines.right": False, "figure.dpi": 110})


def _save(fig: Any, path: Path, tight: bool = True) -> dict[str, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight" if tight else None)
    plt.close(fig)
    data = path.read_bytes()
    return {"file": f"{path.parent.name}/{path.name}", "base64": base64.b64encode(data).decode("ascii")}


def _offsets(n: int, width: float = 0.6) -> list[float]:
    if n == 1:
        return [0.0]
    step = width / (n - 1)
    return [-width / 2 + i * step for i in range(n)]


CLAIM_STYLE = {"lower": ("o", 1.0), "higher": ("o", 1.0), "no_difference": ("o", 0.8), "too_few": ("o", 0.35)}


def effect_plot(
    rows: list[dict[str, Any]], runs: list[str], path: Path, mdes: dict[str, float | None] | None = None, title: str | None = None
) -> dict[str, str]:
    """Reward difference vs baseline with its task-clustered 95% CI, pooled scope; filled = all pairs, hollow =
    pairs without simulator flags. Faint points are ``too_few``; the dashed line is the run's MDE (a drop the
    design detects with 80% power), context for a ``no_difference``, never a threshold for a claim."""
    main = [r for r in rows if r["subset"] == "all"]
    variants = list(dict.fromkeys(r["variant"] for r in main))
    fig, ax = plt.subplots(figsize=(8.2, 0.6 * max(len(variants), 1) * max(1, len(runs)) ** 0.5 + 1.6))
    ax.axvline(0, color="#444", lw=1, zorder=1)
    band = 0.72  # vertical space of one variant; each run gets an equal slot, filled above hollow
    slot = band / max(len(runs), 1)
    shown_mde = False
    for ri, run in enumerate(runs):
        color = RUN_COLORS[ri % len(RUN_COLORS)]
        m = (mdes or {}).get(run)
        if m:
            ax.axvline(-m, color=color, lw=1, ls="--", zorder=1, alpha=0.7)
            shown_mde = True
        center = -band / 2 + slot * (ri + 0.5)
        for vi, v in enumerate(variants):
            for subset, dy, filled in (("all", -0.18, True), ("unflagged", 0.18, False)):
                row = next((r for r in rows if r["run"] == run and r["variant"] == v and r["subset"] == subset), None)
                if row is None or row["diff"] is None or row["ci"][0] is None:
                    continue
                marker, alpha = CLAIM_STYLE.get(row["claim"], ("o", 1.0))
                ax.errorbar(
                    row["diff"],
                    vi + center + slot * dy,
                    xerr=[[row["diff"] - row["ci"][0]], [row["ci"][1] - row["diff"]]],
                    fmt=marker,
                    color=color,
                    mfc=color if filled else "white",
                    ms=7 if filled else 6,
                    capsize=4 if filled else 3,
                    lw=1.8 if filled else 1,
                    zorder=3 if filled else 2,
                    alpha=alpha,
                )
    ax.set_yticks(range(len(variants)))
    ax.set_yticklabels(variants)
    ax.invert_yaxis()
    lim = max([abs(x) for r in rows for x in r["ci"] if x is not None] + [abs(m) for m in (mdes or {}).values() if m] + [0.1])
    ax.set_xlim(-min(1.0, lim * 1.15 + 0.02), min(1.0, lim * 1.15 + 0.02))
    ax.set_xlabel("difference in mean reward vs baseline (variant − baseline), task-clustered 95% CI")
    ax.set_title(title or "Effect of the customer's emotion on the agent's reward")
    handles = [
        Line2D([], [], marker="o", color="#444", ls="none", label="all pairs"),
        Line2D([], [], marker="o", mfc="white", color="#444", ls="none", label="without simulator-flagged pairs"),
        Line2D([], [], marker="o", color="#444", alpha=0.35, ls="none", label="too few tasks/pairs for a claim"),
    ]
    if shown_mde:
        handles.append(Line2D([], [], color="#444", ls="--", label="− MDE (80% power)"))
    if len(runs) > 1:
        handles += [
            Line2D([], [], marker="s", color=RUN_COLORS[i % len(RUN_COLORS)], ls="none", label=run) for i, run in enumerate(runs)
        ]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, frameon=False, fontsize=9)
    ax.grid(axis="x", color="#e5e5e5", lw=0.6)
    return _save(fig, path)


def exit_reason_plot(groups: list[tuple[str, dict[str, int]]], path: Path) -> dict[str, str]:
    """Stacked horizontal bars: how each variant's conversations ended (counts)."""
    reasons = [r for r in EXIT_COLORS if any(r in g for _, g in groups)]
    reasons += sorted({r for _, g in groups for r in g} - set(reasons))
    fig, ax = plt.subplots(figsize=(8.2, 0.42 * max(len(groups), 1) + 1.7))
    left = [0.0] * len(groups)
    for reason in reasons:
        vals = [float(g.get(reason, 0)) for _, g in groups]
        ax.barh(
            range(len(groups)), vals, left=left, color=EXIT_COLORS.get(reason, "#bbbbbb"), label=reason, edgecolor="white", lw=0.5
        )
        for i, (x, start) in enumerate(zip(vals, left)):
            if x:
                ax.text(
                    start + x / 2,
                    i,
                    f"{int(x)}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if reason not in ("task_failed", "agent_no_tool_calls", "user_transfer") else "black",
                )
        left = [a + b for a, b in zip(left, vals)]
    ax.set_yticks(range(len(groups)))
    ax.set_yticklabels([name for name, _ in groups])
    ax.invert_yaxis()
    ax.set_xlabel("conversations")
    ax.set_title("How conversations ended, per variant")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=4, frameon=False, fontsize=8)
    return _save(fig, path)


MANIPULATION_PANELS = (
    ("markers_own", "early", "markers/100 words, early turns (primary)"),
    ("markers_own", "all", "markers/100 words, all turns"),
    ("vader_compound", "early", "VADER compound, early turns"),
    ("judge_own", "all", "LLM judge 0-10, all turns"),
)


def manipulation_plot(checks: list[dict[str, Any]], runs: list[str], path: Path) -> dict[str, str]:
    """Per score, the paired difference of the customers' scores vs baseline with 95% CI (o = the primary check
    passed, x = it did not). Early turns are those before the agent's first tool result."""
    variants = list(dict.fromkeys(c["variant"] for c in checks))
    present = {(s["score"], s["turns"]) for c in checks for s in c["secondary"]}
    panels = [p for p in MANIPULATION_PANELS if (p[0], p[1]) in present]
    fig, axes = plt.subplots(
        1, len(panels), figsize=(3.4 * len(panels) + 1.2, 0.5 * max(len(variants), 1) + 1.8), sharey=True, squeeze=False
    )
    offs = _offsets(len(runs), 0.4)
    for ai, (key, turns, label) in enumerate(panels):
        ax = axes[0][ai]
        ax.axvline(0, color="#444", lw=1)
        for ri, run in enumerate(runs):
            color = RUN_COLORS[ri % len(RUN_COLORS)]
            for vi, v in enumerate(variants):
                c = next((x for x in checks if x["run"] == run and x["variant"] == v), None)
                d = next((s for s in (c or {}).get("secondary", []) if s["score"] == key and s["turns"] == turns), None)
                if not d or d["diff"] is None or d["ci"][0] is None:
                    continue
                ok = c is not None and c["status"] == "passed"
                ax.errorbar(
                    d["diff"],
                    vi + offs[ri],
                    xerr=[[d["diff"] - d["ci"][0]], [d["ci"][1] - d["diff"]]],
                    fmt="o" if ok else "x",
                    color=color,
                    ms=6,
                    capsize=3,
                    lw=1.5,
                )
        ax.set_title(label, fontsize=9)
        ax.set_yticks(range(len(variants)))
        ax.set_yticklabels(variants)
        ax.grid(axis="x", color="#e5e5e5", lw=0.6)
        ax.tick_params(axis="x", labelsize=8)
    axes[0][0].invert_yaxis()
    fig.suptitle("Manipulation check: customers' emotion vs baseline (o = check passed, x = not passed)", fontsize=10)
    if len(runs) > 1:
        fig.legend(
            handles=[
                Line2D([], [], marker="s", color=RUN_COLORS[i % len(RUN_COLORS)], ls="none", label=r) for i, r in enumerate(runs)
            ],
            loc="lower center",
            ncol=min(4, len(runs)),
            frameon=False,
            fontsize=8,
            bbox_to_anchor=(0.5, -0.08),
        )
    fig.tight_layout()
    return _save(fig, path)


def dose_plot(rows: list[dict[str, Any]], path: Path) -> dict[str, str]:
    """Per dose-response group: paired difference from the baseline per level (level 0 = baseline) with 95% CI,
    reward on the left, the manipulation score on the right, and the fitted trend slope in the legend."""
    groups = list(dict.fromkeys((r["run"], r["emotion"], r["method"]) for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.6), squeeze=False)
    for ai, outcome in enumerate(("reward", "markers_own")):
        ax = axes[0][ai]
        ax.axhline(0, color="#444", lw=1)
        for gi, g in enumerate(groups):
            r = next((x for x in rows if (x["run"], x["emotion"], x["method"]) == g and x["outcome"] == outcome), None)
            if r is None:
                continue
            color = RUN_COLORS[gi % len(RUN_COLORS)]
            pts = [lv for lv in r["levels"] if lv["level"] == 0 or (lv["diff"] is not None and lv["ci"][0] is not None)]
            xs = [lv["level"] + 0.06 * (gi - (len(groups) - 1) / 2) for lv in pts]
            ys = [0.0 if lv["level"] == 0 else lv["diff"] for lv in pts]
            err = [
                [0.0 if lv["level"] == 0 else lv["diff"] - lv["ci"][0] for lv in pts],
                [0.0 if lv["level"] == 0 else lv["ci"][1] - lv["diff"] for lv in pts],
            ]
            slope = "–" if r["slope"] is None else f"{r['slope']:+.3f}/level"
            scales = "" if not r.get("scales") else " x " + "/".join("–" if v is None else f"{v:g}" for v in r["scales"].values())
            ax.errorbar(
                xs,
                ys,
                yerr=err,
                fmt="o-",
                color=color,
                capsize=3,
                lw=1.4,
                label=f"{g[1]} ({g[2]}{scales}{', ' + g[0] if len(groups) > 1 else ''}): {slope}",
            )
        ax.set_xticks([0, 1, 2, 3])
        ax.set_xticklabels(["baseline", "mild", "moderate", "severe"])
        ax.set_ylabel("Δ reward vs baseline" if outcome == "reward" else "Δ markers/100 words (early turns)")
        ax.grid(axis="y", color="#e5e5e5", lw=0.6)
        ax.legend(fontsize=8, frameon=False)
    fig.suptitle("Dose-response: effect per intensity level, paired with the baseline (95% CI)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


RUN_MARKERS = ("o", "s", "^", "D", "v", "P")


def anatomy_plot(rows: list[dict[str, Any]], runs: list[str], groups: list[list[str]], path: Path) -> dict[str, str]:
    """Failure anatomy: the paired difference variant − baseline with its task-clustered 95% CI, one row per measure,
    one color per variant (marker per run); left the reward components (share passed), right the agent behaviours
    (per conversation, symmetric-log axis so counts and 0/1 rates share it). Descriptive: no claims.

    Two axes rather than one per measure: the plot is drawn on every report, and small multiples cost seconds."""
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    index = {(r["run"], r["variant"], r["measure"]): r for r in rows}
    nv, nr = max(len(variants), 1), max(len(runs), 1)
    heights = [max(len(g), 1) for g in groups]
    fig, axes = plt.subplots(1, len(groups), figsize=(11.5, 0.3 * max(heights) * max(1.0, (nv * nr) ** 0.5) + 1.6), squeeze=False)
    offs = _offsets(nv * nr, 0.6)
    for ax, measures, title in zip(axes[0], groups, ("reward components (share passed)", "agent behaviour (per conversation)")):
        ax.axvline(0, color="#444", lw=0.8, zorder=1)
        for vi, v in enumerate(variants):
            for ri, run in enumerate(runs):  # one errorbar call per series: a report draws this plot every time
                pts = [
                    (r["diff"], mi + offs[vi * nr + ri], r["ci"])
                    for mi, m in enumerate(measures)
                    if (r := index.get((run, v, m))) is not None and r["diff"] is not None
                ]
                if not pts:
                    continue
                lo = [d - (c[0] if c[0] is not None else d) for d, _, c in pts]
                hi = [(c[1] if c[1] is not None else d) - d for d, _, c in pts]
                ax.errorbar(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    xerr=[lo, hi],
                    fmt=RUN_MARKERS[ri % len(RUN_MARKERS)],
                    ms=4,
                    capsize=2,
                    lw=1.1,
                    ls="none",
                    color=RUN_COLORS[vi % len(RUN_COLORS)],
                )
        ax.set_yticks(range(len(measures)))
        ax.set_yticklabels(
            [
                m.replace("_", " ") + ("" if any(r["measure"] == m and r["diff"] is not None for r in rows) else " (n/a)")
                for m in measures
            ]
        )
        ax.set_ylim(len(measures) - 0.5, -0.5)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", color="#eeeeee", lw=0.5)
    if len(groups) > 1:  # behaviours: symmetric log beyond +-1, readable tick labels
        ax = axes[0][1]
        lim = (
            max([abs(x) for r in rows if r["measure"] in groups[1] for x in (r["diff"], *r["ci"]) if x is not None] + [1.0])
            * 1.15
        )
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlim(-lim, lim)
        ticks = [t for t in (-100, -30, -10, -3, -1, -0.5, 0, 0.5, 1, 3, 10, 30, 100) if abs(t) <= lim]
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{t:g}" for t in ticks])
        ax.minorticks_off()
    handles = [
        Line2D([], [], marker="o", color=RUN_COLORS[i % len(RUN_COLORS)], ls="none", label=v) for i, v in enumerate(variants)
    ]
    if len(runs) > 1:
        handles += [
            Line2D([], [], marker=RUN_MARKERS[i % len(RUN_MARKERS)], color="#444", ls="none", label=run)
            for i, run in enumerate(runs)
        ]
    fig.legend(handles=handles, loc="lower center", ncol=min(6, len(handles)) or 1, frameon=False, fontsize=8)
    fig.suptitle("How the agent failed: variant − baseline, task-clustered 95% CI (descriptive)", fontsize=11)
    fig.subplots_adjust(left=0.15, right=0.98, top=0.88, bottom=0.16, wspace=0.5)
    return _save(fig, path, tight=False)  # laid out by hand: a tight box draws the figure twice
