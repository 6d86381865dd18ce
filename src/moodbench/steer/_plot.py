"""The calibration plot: manipulation and coherence against the vector's scale (matplotlib's Agg renderer).

One figure, two panels sharing the scale axis, so the inverted U is visible at a glance: the top panel
shows how far the customer moved (VADER compound difference to scale 0 with its 95% CI, and the
emotion's marker rate), the bottom panel what it cost (perplexity ratio to scale 0, flagged-reply,
stop and repetition rates, goal overlap). Incoherent scales are shaded and the chosen levels drawn as vertical lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["plot_calibration"]


def plot_calibration(cal: Any, path: str | Path) -> Path:
    """Write the plot of a :class:`moodbench.steer.Calibration` to ``path`` (PNG); returns the path."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state, renders with Agg anywhere

    rows = sorted(cal.scales, key=lambda r: r["scale"])
    xs = [r["scale"] for r in rows]
    fig = Figure(figsize=(7.5, 6.5))
    top, bottom = fig.subplots(2, 1, sharex=True)
    diff = [r["vader_diff"] if r["vader_diff"] is not None else float("nan") for r in rows]
    low = [r["ci"][0] if r["ci"][0] is not None else float("nan") for r in rows]
    high = [r["ci"][1] if r["ci"][1] is not None else float("nan") for r in rows]
    top.fill_between(xs, low, high, alpha=0.2, color="tab:blue", label="95% CI (task-clustered)")
    top.plot(xs, diff, "o-", color="tab:blue", label="VADER compound - scale 0")
    top.axhline(0, color="grey", lw=0.8)
    top.set_ylabel("sentiment shift")
    twin = top.twinx()
    twin.plot(xs, [r["markers"] if r["markers"] is not None else float("nan") for r in rows], "s--", color="tab:red",
              label=f"{cal.emotion} markers / 100 words")  # fmt: skip
    twin.set_ylabel("markers / 100 words", color="tab:red")
    h1, l1 = top.get_legend_handles_labels()
    h2, l2 = twin.get_legend_handles_labels()
    top.legend(h1 + h2, l1 + l2, loc="best", fontsize=8)
    top.set_title(f"{cal.emotion} steering of {cal.model} ({cal.method}, layers {cal.layers[0]}-{cal.layers[1]}, {cal.format} format)",
                  fontsize=10)  # fmt: skip

    ratio = [r.get("perplexity_ratio", 1.0 if r["scale"] == 0 else float("nan")) for r in rows]
    bottom.plot(xs, ratio, "o-", color="tab:purple", label="perplexity / scale 0 (unsteered model)")
    bottom.axhline(cal.thresholds["ppl_ratio_max"], color="tab:purple", ls=":", lw=0.8)
    bottom.set_ylabel("perplexity ratio")
    rates = bottom.twinx()
    rates.plot(xs, [r["flagged"] or 0 for r in rows], "^-", color="tab:orange", label="flagged replies")
    rates.plot(xs, [r["stop_rate"] or 0 for r in rows], "v-", color="tab:green", label="stop rate")
    rates.plot(xs, [r.get("repetition") or 0 for r in rows], "x-", color="tab:brown", label="repetition")
    rates.plot(xs, [r.get("goal_overlap") or 0 for r in rows], "d-", color="tab:cyan", label="goal overlap")
    rates.set_ylim(0, 1)
    rates.set_ylabel("rate")
    h1, l1 = bottom.get_legend_handles_labels()
    h2, l2 = rates.get_legend_handles_labels()
    bottom.legend(h1 + h2, l1 + l2, loc="upper left", fontsize=8)
    bottom.set_xlabel("control vector scale")
    for r in rows:
        if not r["coherent"]:
            for ax in (top, bottom):
                ax.axvspan(r["scale"] - 0.1, r["scale"] + 0.1, color="grey", alpha=0.15, lw=0)
    for level, scale in (cal.levels or {}).items():
        for ax in (top, bottom):
            ax.axvline(scale, color="black", lw=0.7, ls="--")
        twin.annotate(level, (scale, 0.02), xycoords=("data", "axes fraction"), fontsize=8, ha="center", va="bottom",
                     rotation=90, backgroundcolor="white")  # fmt: skip
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    return out
