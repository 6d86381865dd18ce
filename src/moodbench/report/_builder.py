"""``moodbench report``: from one or more run stores to report.html / report.md / report.json + plots.

The report puts the answer first: per emotion, the change in reward against the baseline with a
95% CI, and next to it whether that number can be trusted (enough pairs, did the customers really
sound emotional, was the simulator behaving). Everything is recomputed from the SQLite stores;
per-variant averages, pass^k and exit reasons come from :func:`summary_for_run` itself, so the
report can never disagree with summary.json.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from moodbench._util.errors import UsageError
from moodbench.analysis import (
    ALPHA,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    FIDELITY_MAX_FLAGGED,
    FIDELITY_MAX_GAP,
    METRICS,
    MIN_PAIRS,
    MIN_TASKS,
    compute_effects,
    conversation_stats,
    fidelity,
    manipulation_check,
)
from moodbench.judges import LEXICONS, judge_conversations
from moodbench.report import _plots as plots
from moodbench.report._render import ci, pval, rel, render, signed, slug
from moodbench.results import DESCRIPTIONS, FLAG_NAMES, Run, StoreError, load_run

EXCLUDED_SHARE_CAUTION = 0.10  # more than 10% of a variant's planned conversations excluded: say so
TRUST_ORDER = {"ok": 0, "caution": 1, "inconclusive": 2, "unreliable": 3}


class ReportError(UsageError):
    """Bad input (not a run directory, unknown baseline): nothing was written."""


@dataclass
class ReportResult:
    out_dir: Path
    html: Path
    markdown: Path
    json: Path
    index: Path
    data: dict[str, Any]
    seconds: float


def _labels(runs: list[Run]) -> None:
    """Name runs after their agent model; fall back to the directory name where that is ambiguous."""
    models = [str(r.config.get("agent_model") or r.run_dir.name) for r in runs]
    used: set[str] = set()
    for r, model in zip(runs, models):
        label = model if models.count(model) == 1 else f"{model} [{r.run_dir.name}]"
        base, i = label, 2
        while label in used:
            label, i = f"{base} #{i}", i + 1
        used.add(label)
        r.label = label


def _trust(row: dict[str, Any]) -> tuple[str, list[str]]:
    """Combine the checks into one word plus the reasons, worst first."""
    level, reasons = "ok", []

    def bump(new: str, reason: str) -> None:
        nonlocal level
        reasons.append(reason)
        if TRUST_ORDER[new] > TRUST_ORDER[level]:
            level = new

    if row["manipulation"] == "failed":
        bump("unreliable", "manipulation check failed")
    if any(w["kind"] == "low_fidelity" for w in row["fidelity_warnings"]):
        bump("unreliable", "simulator fidelity too low")
    if not row["enough_pairs"]:
        bump("inconclusive", f"too few pairs ({row['n_pairs']})")
    if any(w["kind"] == "fidelity_gap" for w in row["fidelity_warnings"]):
        bump("caution", "fidelity differs from baseline")
    if row["manipulation"] == "too_few":
        bump("caution", "manipulation not checkable")
    if row["planned"] and row["excluded"] / row["planned"] > EXCLUDED_SHARE_CAUTION:
        bump("caution", f"{row['excluded']}/{row['planned']} excluded (errors)")
    if row["noise"] is not None and row["diff"] is not None and abs(row["diff"]) < row["noise"]:
        bump("caution", "below noise floor")
    return level, reasons


def _analyse(run: Run, baseline: str, judge: dict[str, Any] | None, n_resamples: int, seed: int) -> dict[str, Any]:
    variants, domains = run.variants, run.domains
    effects = compute_effects(run.records, baseline, variants, domains, n_resamples=n_resamples, seed=seed)
    manip = manipulation_check(run.records, baseline, variants, judge, n_resamples=n_resamples, seed=seed)
    conv = conversation_stats(run.records, variants)
    fid = fidelity(run.records, baseline, variants)
    cfg = run.config
    return {
        "label": run.label,
        "slug": run.slug,
        "run_dir": str(run.run_dir),
        "agent_model": cfg.get("agent_model"),
        "user_model": cfg.get("user_model") or cfg.get("agent_model"),
        "judge_model": cfg.get("judge_model"),
        "trials": run.trials,
        "domains": domains,
        "variants": variants,
        "baseline": baseline,
        "conversations": len(run.records),
        "summary": run.summary,
        "effects": effects,
        "manipulation": manip,
        "conversation_stats": conv,
        "fidelity": fid,
        "judge": {k: v for k, v in (judge or {}).items() if k != "scores"} or None,
    }


def _headline(a: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    baseline = a["baseline"]
    summ = a["summary"]["variants"]
    scope = a["effects"]["scopes"]["all"]
    noise = scope["noise_floor"].get("mean_abs_diff")
    fid = a["fidelity"]["variants"]
    base_row = {
        "run": a["label"], "run_slug": a["slug"], "variant": baseline, "avg_reward": summ[baseline]["avg_reward"],
        "pass_hat_k": summ[baseline]["pass_hat_k"], "done": summ[baseline]["done"], "planned": summ[baseline]["planned"],
        "excluded": summ[baseline]["excluded"], "noise_floor": scope["noise_floor"],
        "fidelity_rate": fid[baseline]["flagged_rate"],
        "fidelity_warnings": [w for w in a["fidelity"]["warnings"] if w["variant"] == baseline],
    }
    rows = []
    for v in a["effects"]["variants"]:
        e = scope["subsets"]["all"][v]
        u = scope["subsets"]["unflagged"][v]
        m = a["manipulation"]["variants"].get(v, {})
        row = {
            "run": a["label"], "run_slug": a["slug"], "variant": v,
            "avg_reward": summ[v]["avg_reward"], "baseline_avg_reward": summ[baseline]["avg_reward"],
            "pass_hat_k": summ[v]["pass_hat_k"], "done": summ[v]["done"], "planned": summ[v]["planned"],
            "excluded": summ[v]["excluded"],
            "n_pairs": e["n_pairs"], "n_tasks": e["n_tasks"], "diff": e["diff"]["mean"], "low": e["diff"]["low"],
            "high": e["diff"]["high"], "relative_pct": e["relative_pct"], "p": e["mcnemar_p"], "p_holm": e["mcnemar_p_holm"],
            "enough_pairs": e["enough_pairs"], "verdict": e["verdict"], "noise": noise,
            "unflagged": {"n_pairs": u["n_pairs"], "diff": u["diff"]["mean"], "low": u["diff"]["low"], "high": u["diff"]["high"],
                          "p_holm": u["mcnemar_p_holm"], "enough_pairs": u["enough_pairs"], "relative_pct": u["relative_pct"],
                          "verdict": u["verdict"]},
            "manipulation": m.get("status"), "manipulation_text": m.get("verdict"),
            "fidelity_rate": fid[v]["flagged_rate"],
            "fidelity_warnings": [w for w in a["fidelity"]["warnings"] if w["variant"] in (v, baseline)],
        }
        row["trust"], row["trust_reasons"] = _trust(row)
        rows.append(row)
    return base_row, rows


def bottom_line(rows: list[dict[str, Any]], baseline: str) -> str:
    """One sentence for the top of the report: which effects can be believed, and which cannot."""
    solid = [r for r in rows if r["trust"] in ("ok", "caution") and r["low"] is not None and (r["low"] > 0 or r["high"] < 0)]
    null = [r for r in rows if r["trust"] == "ok" and r not in solid]
    shaky = [r for r in rows if r not in solid and r not in null]
    parts = []
    if solid:
        parts.append("Effects on reward vs " + repr(baseline) + ": " + "; ".join(
            f"{r['variant']} {signed(r['diff'])} {ci(r['low'], r['high'])} ({rel(r['relative_pct'])})"
            + (" — with caution" if r["trust"] == "caution" else "") for r in solid) + ".")
    if null:
        parts.append("No detectable effect: " + ", ".join(r["variant"] for r in null) + " (checks passed, CI includes 0).")
    if shaky:
        parts.append("Not trustworthy: " + "; ".join(f"{r['variant']} ({r['trust_reasons'][0] if r['trust_reasons'] else r['trust']})"
                                                    for r in shaky) + ".")
    return " ".join(parts) or "No variants besides the baseline."


def _warnings(analyses: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for a in analyses:
        prefix = f"{a['label']}: " if len(analyses) > 1 else ""
        for v, m in a["manipulation"]["variants"].items():
            if m.get("status") == "failed":
                out.append({"level": "bad", "text": f"{prefix}{v}: {m['verdict']}"})
        for w in a["fidelity"]["warnings"]:
            out.append({"level": "bad" if w["kind"] == "low_fidelity" else "warn", "text": prefix + w["message"]})
        excl = {v: n for v, n in a["effects"]["excluded"].items() if n}
        if excl:
            out.append({"level": "warn", "text": prefix + "excluded from all effects (llm_error/harness_error, re-run to retry): "
                        + ", ".join(f"{v}={n}" for v, n in excl.items())})
        noise = a["effects"]["scopes"]["all"]["noise_floor"]
        if a["trials"] < 2:
            out.append({"level": "info", "text": prefix + "one trial per task: no noise floor (run with --trials >= 2 to measure it)."})
        elif noise.get("mean_abs_diff") is not None:
            out.append({"level": "info", "text": prefix + f"baseline noise floor: two trials of the baseline differ by {noise['mean_abs_diff']:.3f} "
                        f"in average reward on average; {noise['flip_rate']:.0%} of task outcomes flip between trials."})
        if a["judge"] and a["judge"].get("failed"):
            out.append({"level": "warn", "text": prefix + f"LLM judge failed on {a['judge']['failed']} conversation(s) (left out of the judge score)."})
    for r in rows:
        if not r["enough_pairs"]:
            out.append({"level": "warn", "text": (f"{r['run']}: " if len(analyses) > 1 else "") + f"{r['variant']}: {r['verdict']}"})
    return out


def _markdown(data: dict[str, Any]) -> str:
    lines = ["# moodbench report", "", f"Generated {data['generated_at']} from {len(data['runs'])} run(s); baseline `{data['baseline']}`.", "",
             "## The answer: effect of each emotion on reward (variant − baseline)", "",
             *[(f"**{b['run']}**: " if len(data["runs"]) > 1 else "") + b["bottom_line"] for b in data["baseline_rows"]], "",
             "| run | variant | avg reward | baseline | Δ reward | 95% CI | relative | McNemar p (Holm) | pairs | Δ without flagged | manipulation | trust |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in data["headline"]:
        u = r["unflagged"]
        lines.append(f"| {r['run']} | {r['variant']} | {_f(r['avg_reward'])} | {_f(r['baseline_avg_reward'])} | {signed(r['diff'])} | "
                     f"{ci(r['low'], r['high'])} | {rel(r['relative_pct'])} | {pval(r['p_holm'])} | {r['n_pairs']} | "
                     f"{signed(u['diff'])} {ci(u['low'], u['high'])} (n={u['n_pairs']}) | {r['manipulation']} | {r['trust']}"
                     f"{': ' + '; '.join(r['trust_reasons']) if r['trust_reasons'] else ''} |")
    lines += ["", "Verdicts:", ""]
    lines += [f"- **{r['run']} / {r['variant']}**: {r['verdict']}" for r in data["headline"]]
    if data["warnings"]:
        lines += ["", "## Warnings", ""] + [f"- {w['text']}" for w in data["warnings"]]
    for a in data["runs"]:
        trials = a["trials"]
        lines += ["", f"## Run: {a['label']}", "", (f"`{a['run_dir']}`; agent `{a['agent_model']}`, user `{a['user_model']}`, "
                                                    f"{trials} trial(s), domains {', '.join(a['domains'])}."), "",
                  "| variant | done/planned | excluded | avg reward | " + " | ".join(f"pass^{k}" for k in range(1, trials + 1)) + " | flagged | exit reasons |",
                  "|---|---|---|---|" + "---|" * trials + "---|---|"]
        for v, s in a["summary"]["variants"].items():
            f = a["fidelity"]["variants"].get(v, {})
            lines.append(f"| {v} | {s['done']}/{s['planned']} | {s['excluded']} | {_f(s['avg_reward'])} | "
                         + " | ".join(_f(s["pass_hat_k"].get(str(k))) for k in range(1, trials + 1))
                         + f" | {f.get('flagged', 0)}/{f.get('n', 0)} | " + ", ".join(f"{k}={n}" for k, n in s["exit_reasons"].items()) + " |")
        lines += ["", "Manipulation check (paired difference vs baseline, 95% CI):", "",
                  "| variant | families | pairs | Δ markers/100 words | Δ VADER compound | Δ VADER neg | Δ judge | result |", "|---|---|---|---|---|---|---|---|"]
        for v, m in a["manipulation"]["variants"].items():
            if m.get("is_baseline"):
                continue
            cells = [_md_diff(m["diffs"].get(key)) for key in ("markers_own", "vader_compound", "vader_neg", "judge_own")]
            lines.append(f"| {v} | {', '.join(m['families'])} | {m['n_pairs']} | " + " | ".join(cells) + f" | {m['status']} |")
    lines += ["", "See report.html for conversation statistics, fidelity flags, plots and transcripts.", ""]
    return "\n".join(lines)


def _md_diff(x: dict[str, Any] | None) -> str:
    return "–" if not x or x.get("mean") is None else f"{signed(x['mean'])} {ci(x['low'], x['high'])}"


def _f(x: Any) -> str:
    return "–" if x is None else f"{x:.3f}"


def build_report(
    run_dirs: list[Path],
    out: Path,
    baseline: str = "control",
    judge_model: str | None = None,
    judge_base_url: str | None = None,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    progress: Callable[[str], None] | None = None,
) -> ReportResult:
    """Write report.html, report.md, report.json, plots/*.png and transcripts/ under ``out``."""
    t0 = time.perf_counter()
    say = progress or (lambda _msg: None)
    if not run_dirs:
        raise ReportError("give at least one run directory")
    runs: list[Run] = []
    for d in run_dirs:
        try:
            runs.append(load_run(Path(d)))
        except StoreError as exc:
            raise ReportError(str(exc)) from exc
    for r in runs:
        if baseline not in r.variants:
            raise ReportError(f"baseline {baseline!r} is not a variant of {r.run_dir} (its variants: {', '.join(r.variants) or 'none'}); "
                              f"pick one with --baseline")
    _labels(runs)
    slugs: set[str] = set()
    for r in runs:
        s, i = slug(r.label), 2
        while s in slugs:
            s, i = f"{slug(r.label)}-{i}", i + 1
        slugs.add(s)
        r.slug = s
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    analyses = []
    for r in runs:
        judge = None
        if judge_model:
            say(f"judging {len(r.records)} conversation(s) of {r.label} with {judge_model}")
            judge = judge_conversations([c for c in r.records if not c.excluded], judge_model, judge_base_url,
                                        out / f"judge-cache-{r.slug}.json")
        say(f"analysing {r.label}: {len(r.records)} conversation(s)")
        analyses.append(_analyse(r, baseline, judge, n_resamples, seed))

    baseline_rows, headline = [], []
    for a in analyses:
        b, rows = _headline(a)
        b["bottom_line"] = bottom_line(rows, baseline)
        baseline_rows.append(b)
        headline.extend(rows)
    warnings = _warnings(analyses, headline)

    say("drawing plots")
    labels = [a["label"] for a in analyses]
    plot_dir = out / "plots"
    noise = baseline_rows[0]["noise_floor"].get("mean_abs_diff") if len(analyses) == 1 else None
    figures = {
        "effects": plots.effect_plot(headline, labels, plot_dir / "effects.png", noise),
        "exit_reasons": plots.exit_reason_plot(
            [((f"{a['label']} / " if len(analyses) > 1 else "") + v, s["exit_reasons"]) for a in analyses for v, s in a["summary"]["variants"].items()],
            plot_dir / "exit_reasons.png"),
    }
    manip_rows = [{"run": a["label"], "variant": v, "diffs": m.get("diffs", {})}
                  for a in analyses for v, m in a["manipulation"]["variants"].items() if not m.get("is_baseline")]
    metric_list = [(k, label) for k, label, _ in METRICS if k != "judge_own" or any(a["judge"] for a in analyses)]
    if manip_rows:
        figures["manipulation"] = plots.manipulation_plot(manip_rows, labels, metric_list, plot_dir / "manipulation.png")

    say("writing transcript pages")
    from moodbench.report._viewer import write_transcripts

    index = write_transcripts(runs, analyses, out)

    data = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "baseline": baseline,
        "runs": analyses,
        "baseline_rows": baseline_rows,
        "headline": headline,
        "warnings": warnings,
        "thresholds": {
            "min_pairs": MIN_PAIRS, "min_tasks": MIN_TASKS, "alpha": ALPHA, "n_resamples": n_resamples, "seed": seed,
            "fidelity_max_flagged": FIDELITY_MAX_FLAGGED, "fidelity_max_gap": FIDELITY_MAX_GAP,
            "excluded_share_caution": EXCLUDED_SHARE_CAUTION,
        },
        "plots": {k: v["file"] for k, v in figures.items()},
    }
    json_path = out / "report.json"
    json_path.write_text(json.dumps(data, indent=1, default=str))
    md_path = out / "report.md"
    md_path.write_text(_markdown(data))
    html_path = out / "report.html"
    html_path.write_text(render(
        "report.html.j2", data=data, figures=figures, descriptions=DESCRIPTIONS, flag_names=FLAG_NAMES,
        lexicons=LEXICONS, metrics=METRICS, multi=len(analyses) > 1,
    ))
    return ReportResult(out_dir=out, html=html_path, markdown=md_path, json=json_path, index=index, data=data,
                        seconds=time.perf_counter() - t0)
