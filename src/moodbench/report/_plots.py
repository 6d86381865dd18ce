"""The report's three pictures: effect per emotion with CIs, exit reasons, manipulation check.

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
from matplotlib.patches import Patch

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
}
plt.rcParams.update({"font.size": 10, "axes.spines.top": False, "axes.spines.right": False, "figure.dpi": 110})


def _save(fig: Any, path: Path) -> dict[str, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight")
    plt.close(fig)
    data = path.read_bytes()
    return {"file": f"{path.parent.name}/{path.name}", "base64": base64.b64encode(data).decode("ascii")}


def _offsets(n: int, width: float = 0.6) -> list[float]:
    if n == 1:
        return [0.0]
    step = width / (n - 1)
    return [-width / 2 + i * step for i in range(n)]


def effect_plot(rows: list[dict[str, Any]], runs: list[str], path: Path, noise: float | None = None) -> dict[str, str]:
    """Reward difference vs baseline with 95% CI; filled = all conversations, hollow = without flagged."""
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    fig, ax = plt.subplots(figsize=(8.2, 0.6 * max(len(variants), 1) * max(1, len(runs)) ** 0.5 + 1.6))
    if noise:
        ax.axvspan(-noise, noise, color="#eeeeee", zorder=0)
    ax.axvline(0, color="#444", lw=1, zorder=1)
    band = 0.72  # vertical space of one variant; each run gets an equal slot, filled above hollow
    slot = band / max(len(runs), 1)
    for ri, run in enumerate(runs):
        color = RUN_COLORS[ri % len(RUN_COLORS)]
        center = -band / 2 + slot * (ri + 0.5)
        for vi, v in enumerate(variants):
            row = next((r for r in rows if r["run"] == run and r["variant"] == v), None)
            if row is None or row["diff"] is None:
                continue
            y = vi + center - slot * 0.18
            ax.errorbar(row["diff"], y, xerr=[[row["diff"] - row["low"]], [row["high"] - row["diff"]]], fmt="o", color=color, ms=7,
                        capsize=4, lw=1.8, zorder=3, alpha=1.0 if row["enough_pairs"] else 0.45)
            u = row.get("unflagged")
            if u and u.get("diff") is not None:
                ax.errorbar(u["diff"], vi + center + slot * 0.18, xerr=[[u["diff"] - u["low"]], [u["high"] - u["diff"]]], fmt="o",
                            mfc="white", color=color, ms=6, capsize=3, lw=1, ls="none", zorder=2, alpha=0.8)
    ax.set_yticks(range(len(variants)))
    ax.set_yticklabels(variants)
    ax.invert_yaxis()
    lim = max([abs(x) for r in rows for x in (r.get("low"), r.get("high")) if x is not None] + [0.1])
    ax.set_xlim(-min(1.0, lim * 1.15 + 0.02), min(1.0, lim * 1.15 + 0.02))
    ax.set_xlabel("difference in average reward vs baseline (variant − baseline), 95% CI")
    ax.set_title("Effect of the customer's emotion on the agent's reward")
    handles = [Line2D([], [], marker="o", color="#444", ls="none", label="all conversations"),
               Line2D([], [], marker="o", mfc="white", color="#444", ls="none", label="without simulator-flagged pairs")]
    if len(runs) > 1:
        handles += [Line2D([], [], marker="s", color=RUN_COLORS[i % len(RUN_COLORS)], ls="none", label=run) for i, run in enumerate(runs)]
    if noise:
        handles.append(Patch(color="#eeeeee", label=f"baseline noise floor (±{noise:.2f})"))  # type: ignore[arg-type]
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
        ax.barh(range(len(groups)), vals, left=left, color=EXIT_COLORS.get(reason, "#bbbbbb"), label=reason, edgecolor="white", lw=0.5)
        for i, (x, start) in enumerate(zip(vals, left)):
            if x:
                ax.text(start + x / 2, i, f"{int(x)}", ha="center", va="center", fontsize=8,
                        color="white" if reason not in ("task_failed", "agent_no_tool_calls", "user_transfer") else "black")
        left = [a + b for a, b in zip(left, vals)]
    ax.set_yticks(range(len(groups)))
    ax.set_yticklabels([name for name, _ in groups])
    ax.invert_yaxis()
    ax.set_xlabel("conversations")
    ax.set_title("How conversations ended, per variant")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=4, frameon=False, fontsize=8)
    return _save(fig, path)


def manipulation_plot(rows: list[dict[str, Any]], runs: list[str], metrics: list[tuple[str, str]], path: Path) -> dict[str, str]:
    """Per metric, the paired difference of the customers' emotion scores vs baseline with 95% CI."""
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics) + 1.2, 0.5 * max(len(variants), 1) + 1.8), sharey=True,
                             squeeze=False)
    offs = _offsets(len(runs), 0.4)
    for ai, (key, label) in enumerate(metrics):
        ax = axes[0][ai]
        ax.axvline(0, color="#444", lw=1)
        for ri, run in enumerate(runs):
            color = RUN_COLORS[ri % len(RUN_COLORS)]
            for vi, v in enumerate(variants):
                row = next((r for r in rows if r["run"] == run and r["variant"] == v), None)
                d = (row or {}).get("diffs", {}).get(key)
                if not d or d.get("mean") is None:
                    continue
                ok = d.get("moved")
                ax.errorbar(d["mean"], vi + offs[ri], xerr=[[d["mean"] - d["low"]], [d["high"] - d["mean"]]], fmt="o" if ok else "x",
                            color=color, ms=6, capsize=3, lw=1.5)
        ax.set_title(label, fontsize=9)
        ax.set_yticks(range(len(variants)))
        ax.set_yticklabels(variants)
        ax.grid(axis="x", color="#e5e5e5", lw=0.6)
        ax.tick_params(axis="x", labelsize=8)
    axes[0][0].invert_yaxis()
    fig.suptitle("Manipulation check: customers' emotion vs baseline (o = moved as expected, x = no detectable change)", fontsize=10)
    if len(runs) > 1:
        fig.legend(handles=[Line2D([], [], marker="s", color=RUN_COLORS[i % len(RUN_COLORS)], ls="none", label=r) for i, r in enumerate(runs)],
                   loc="lower center", ncol=min(4, len(runs)), frameon=False, fontsize=8, bbox_to_anchor=(0.5, -0.08))
    fig.tight_layout()
    return _save(fig, path)
