"""``moodbench report``: from one or more run stores to report.json (the claims) and report.html / report.md.

The report puts the answer first: per emotion, the change in reward against the baseline on matched pairs
with a task-clustered 95% interval, its Holm-adjusted p over a stated family and the *claim* that follows
(``lower``, ``higher``, ``no_difference``, ``too_few``); beside it, never folded into it, whether the
comparison is valid (did the customers sound emotional before the outcome, was the simulator behaving,
were rows excluded). When an emotion is delivered more than one way (prompted, steered with a control vector,
both), ``methods_comparison`` puts the methods side by side per level from those same numbers
(:mod:`moodbench.analysis._prompted_vs_steered`). Everything is recomputed from the SQLite stores; the per-run summary table comes from
:func:`summary_for_run` itself, so it can never disagree with summary.json.

:func:`report_data` computes the numbers (what ``moodbench report --json`` prints, fast: no pages, no
plots); :func:`build_report` adds report.json, report.md, report.html, plots and transcript pages.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from moodbench._util.errors import UsageError
from moodbench._util.secrets import mask, secret_values
from moodbench.analysis import (
    ALPHA,
    CONFIDENCE,
    EARLY_TURNS,
    FIDELITY_MAX_FLAGGED,
    FIDELITY_MAX_GAP,
    METHOD,
    MIN_PAIRS,
    MIN_TASKS,
    NOT_APPLICABLE,
    POOLED,
    POWER,
    PRIMARY,
    ReportFamily,
    conversation_stats,
    declared_emotions,
    dose_response_table,
    fidelity,
    finish_reward_effects,
    manipulation_check,
    methods_comparison,
    pairing_checks,
    report_sequential,
    reward_effects,
    steering_by_variant,
)
from moodbench.report._anatomy_section import add_anatomy, anatomy_markdown, anatomy_pages
from moodbench.report._caveats import EXCLUDED_SHARE_CAUTION, _caveats, _warnings
from moodbench.report._caveats import _missing_caveats as _missing_caveats  # re-exported for the tests
from moodbench.report._markdown import markdown
from moodbench.report._render import ci, pval, render, signed, slug
from moodbench.results import DESCRIPTIONS, FLAG_NAMES, Run, StoreError, load_run
from moodbench.results._lock import RunLock, refuse_symlinks, run_dir_of

SCHEMA = "moodbench-report/2"
ESTIMAND = (
    "task-weighted mean paired difference: per task, the mean over its matched (task, trial) pairs of "
    "variant reward - baseline reward; then the mean over tasks"
)


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


# --------------------------------------------------------------------------- loading


def _labels(runs: list[Run]) -> None:
    """Name runs after their agent model; fall back to the directory name where that is ambiguous (or where an
    imported run holds several agents: its first file's model would name them all)."""
    models = [
        str(
            r.run_dir.name
            if len({i.get("agent_model") for i in r.config.get("imports") or []}) > 1
            else r.config.get("agent_model") or r.run_dir.name
        )
        for r in runs
    ]
    used: set[str] = set()
    for r, model in zip(runs, models):
        label = model if models.count(model) == 1 else f"{model} [{r.run_dir.name}]"
        base, i = label, 2
        while label in used:
            label, i = f"{base} #{i}", i + 1
        used.add(label)
        r.label = label
    slugs: set[str] = set()
    for r in runs:
        s, i = slug(r.label), 2
        while s in slugs:
            s, i = f"{slug(r.label)}-{i}", i + 1
        slugs.add(s)
        r.slug = s


def load_runs(run_dirs: list[Path], baseline: str) -> list[Run]:
    """Load and label the runs; :class:`ReportError` (exit 2) for anything that is not a usable run."""
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
            raise ReportError(
                f"baseline {baseline!r} is not a variant of {r.run_dir} (its variants: {', '.join(r.variants) or 'none'}); "
                f"pick one with --baseline"
            )
    _labels(runs)
    return runs


# --------------------------------------------------------------------------- one run


def _analyse(run: Run, baseline: str, judge: dict[str, Any] | None, family: ReportFamily) -> dict[str, Any]:
    """Every number of one run; its claim-bearing tests join the report's ``family`` (decided later, together)."""
    variants, domains = run.variants, run.domains
    cfg = run.config
    a: dict[str, Any] = {
        "label": run.label,
        "slug": run.slug,
        "run_dir": str(run.run_dir),
        "agent_model": cfg.get("agent_model"),
        "user_model": cfg.get("user_model") or cfg.get("agent_model"),
        "judge_model": cfg.get("judge_model"),
        "source": cfg.get("source"),
        "trials": run.trials,
        "domains": domains,
        "variants": variants,
        "baseline": baseline,
        "conversations": len(run.records),
        "summary": run.summary,
        "imports": cfg.get("imports") or [],
        "excluded": {v: sum(1 for r in run.records if r.variant == v and r.excluded) for v in variants},
        "conversation_stats": conversation_stats(run.records, variants),
        "fidelity": fidelity(run.records, baseline, variants),
        "judge": {k: v for k, v in (judge or {}).items() if k != "scores"} or None,
    }
    emotions = declared_emotions(cfg, variants, baseline)
    a["emotions"] = emotions
    a["models"] = {
        v: {
            "agent": s.get("agent_models", []),
            "customer": s.get("user_models", []),
            "tau2": sorted({str(x.get("tau2_git_commit")) for x in s.get("sources", []) if x.get("tau2_git_commit")}),
        }
        for v, s in run.summary["variants"].items()
    }
    a["pairing"] = pairing_checks(run.records, baseline, variants, cfg)
    seq = None if run.sequential is None else report_sequential(run.records, run.sequential, baseline, run.trials)
    a["sequential"] = seq
    rew = reward_effects(
        run.records, baseline, variants, domains, family=family, sequential=None if seq is None else seq["final"]
    )
    manip = manipulation_check(run.records, baseline, variants, domains, judge, emotions=emotions)
    a["manipulation"] = {k: v for k, v in manip.items() if k != "checks"}
    emotional = [v for v in variants if v == baseline or v in emotions]  # doses and methods only of declared emotions
    a["dose_response"] = dose_response_table(run.records, baseline, emotional, family=family)
    a["steering"] = steering_by_variant(run.records)
    a["_pending"] = (run, rew, manip, emotional)
    return a


def _finish(a: dict[str, Any], family_size: int) -> None:
    """After the report's family is decided: MDEs at its size, caveats, methods side by side, the bottom line."""
    run, rew, manip, emotional = a.pop("_pending")
    emotions = a["emotions"]
    finish_reward_effects(rew, family_size)
    by_key = {(m["variant"], m["domain"]): m for m in manip["checks"]}
    for row in rew["effects"]:
        m = by_key.get((row["variant"], row["domain"]))
        row["manipulation"] = (None if m is None else m["status"]) if row["variant"] in emotions else NOT_APPLICABLE
        row["trust"], row["caveats"] = _caveats(row, a, by_key)
    tag = {"run": run.label}
    a["effects"] = [{**tag, **r} for r in rew["effects"]]
    a["families"] = [{**tag, **f} for f in rew["families"]]
    a["designs"] = [{**tag, **d} for d in rew["designs"]]
    a["pass_hat_k"] = [{**tag, **p} for p in rew["pass_hat_k"]]
    a["manipulation_checks"] = [{**tag, **m} for m in manip["checks"]]
    a["dose_response"] = [{**tag, **d} for d in a["dose_response"]]
    a["methods_comparison"] = [
        {**tag, **m}
        for m in methods_comparison(
            run.records, a["baseline"], emotional, effects=rew["effects"], checks=manip["checks"], fidelity=a["fidelity"]
        )
    ]
    a["bottom_line"] = bottom_line(a)


def _primary(a: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in a["effects"] if e["domain"] == POOLED and e["subset"] == "all"]


def bottom_line(a: dict[str, Any]) -> str:
    """One paragraph for the top of the report: the claims of the primary family, and what each means."""
    rows = _primary(a)
    if not rows:
        return "No variants besides the baseline."
    design: dict[str, Any] = next((d for d in a["designs"] if d["domain"] == POOLED), {})
    fam: dict[str, Any] = next((f for f in a["families"] if f["subset"] == "all"), {})
    parts = []
    claimed = [r for r in rows if r["claim"] in ("lower", "higher")]
    for r in claimed:
        cav = f" (caveat: {'; '.join(c['short'] for c in r['caveats'])})" if r["caveats"] else ""
        parts.append(
            f"{r['claim'].capitalize()} reward with {r['variant']}: {signed(r['diff'])} {ci(*r['ci'])}, "
            f"{r['baseline_mean']:.3f} → {r['variant_mean']:.3f} on {r['n_pairs']} pairs, "
            f"p(Holm) {pval(r['p_adjusted'])}{cav}."
        )
    same = [r["variant"] for r in rows if r["claim"] == "no_difference"]
    if same:
        mde_txt = (
            f"; a drop smaller than the MDE {design['mde']:.3f} could be missed"
            if design.get("mde") is not None
            else (f"; no MDE: {design['mde_note']}" if design.get("mde_note") else "")
        )
        parts.append(f"No difference claimed for {', '.join(same)} (the data are compatible with no change{mde_txt}).")
    none = {p["variant"] for p in a.get("pairing", []) if p["no_shared_task"]}
    for v in sorted(none):
        parts.append(f"{v} and the baseline {a['baseline']} share no task: there is nothing to compare.")
    small = [
        r
        for r in rows
        if r["claim"] == "too_few" and r["variant"] not in none and (r["n_tasks"] < MIN_TASKS or r["n_pairs"] < MIN_PAIRS)
    ]
    if small:
        parts.append(
            "Too few for a claim: "
            + ", ".join(f"{r['variant']} ({r['n_tasks']} tasks, {r['n_pairs']} pairs)" for r in small)
            + f"; claims need >= {MIN_TASKS} tasks and >= {MIN_PAIRS} pairs."
        )
    mute = [r for r in rows if r["claim"] == "too_few" and r not in small and r["variant"] not in none]
    if mute:  # large enough, but the data cannot say more (zero spread): say why instead of printing certainty
        parts.append(
            "No claim possible: "
            + "; ".join(f"{r['variant']}: {r.get('no_claim_reason') or 'not estimable'}" for r in mute)
            + "."
        )
    withdrawn = [r["variant"] for r in rows if r.get("claim_withdrawn")]
    if withdrawn:
        parts.append(
            f"Not stated as findings because they do not hold at every value the excluded conversations could have "
            f"had (counted as failures and as successes): {', '.join(withdrawn)}."
        )
    if fam.get("family_size"):
        left = fam["planned"] - fam["size"]
        parts.append(
            f"Family: one for the whole report, {fam['family_size']} test(s), {fam['size']} of them this run's reward "
            f"comparisons ({fam['members']}"
            + (f"; {left} too_few left out" if left else "")
            + f"), Holm, alpha {fam['alpha']:g}."
        )
    return " ".join(parts)


# --------------------------------------------------------------------------- the whole report's data


def _thresholds() -> dict[str, Any]:
    return {
        "alpha": ALPHA,
        "confidence": CONFIDENCE,
        "min_tasks": MIN_TASKS,
        "min_pairs": MIN_PAIRS,
        "power": POWER,
        "multiplicity": "holm",
        "family": "one per report: every claim of every run (reward all/unflagged, dose trends)",
        "manipulation_score": PRIMARY.key,
        "manipulation_min_effect": PRIMARY.min_effect,
        "manipulation_early_turns": EARLY_TURNS,
        "fidelity_max_flagged": FIDELITY_MAX_FLAGGED,
        "fidelity_max_gap": FIDELITY_MAX_GAP,
        "excluded_share_caution": EXCLUDED_SHARE_CAUTION,
    }


def report_data(
    runs: list[Run],
    baseline: str,
    judges: dict[str, dict[str, Any] | None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Every number of the report, in report.json's documented shape (``docs/statistics.md``)."""
    say = progress or (lambda _msg: None)
    analyses = []
    family = ReportFamily(ALPHA)
    for r in runs:
        say(f"analysing {r.label}: {len(r.records)} conversation(s)")
        analyses.append(_analyse(r, baseline, (judges or {}).get(r.slug), family))
    claim_family = family.resolve()  # one Holm correction over every claim of every run of the report
    for a in analyses:
        _finish(a, family.size)
    warnings = _warnings(analyses)
    flat = {
        key: [x for a in analyses for x in a.pop(key)]
        for key in ("effects", "families", "designs", "pass_hat_k", "manipulation_checks", "dose_response", "methods_comparison")
    }
    return mask(
        {
            "schema": SCHEMA,
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "baseline": baseline,
            # "emotion" when some variant is a declared emotion; "variant" for agent-vs-agent or prompt-vs-prompt comparisons
            "framing": "emotion" if any(a["emotions"] for a in analyses) else "variant",
            "estimand": ESTIMAND,
            "method": METHOD,
            "thresholds": _thresholds(),
            "family": claim_family,
            "families": flat["families"],
            "effects": flat["effects"],
            "pass_hat_k": flat["pass_hat_k"],
            "designs": flat["designs"],
            "manipulation": flat["manipulation_checks"],
            "dose_response": flat["dose_response"],
            "methods_comparison": flat["methods_comparison"],
            "bottom_lines": [{"run": a["label"], "text": a["bottom_line"]} for a in analyses],
            "warnings": warnings,
            "runs": analyses,
        },
        secret_values(),
    )  # the judge's URL, errors quoting an endpoint: nothing shown or written holds a credential


def build_report(
    run_dirs: list[Path],
    out: Path,
    baseline: str = "control",
    judge_model: str | None = None,
    judge_base_url: str | None = None,
    *,
    progress: Callable[[str], None] | None = None,
    pages: bool = True,
    anatomy: bool = True,
) -> ReportResult:
    """Write report.json, and with ``pages`` also report.md, report.html, plots/*.png and transcripts/ under ``out``.

    ``anatomy``: add the descriptive "How the agent failed" section (report._anatomy_section)."""
    t0 = time.perf_counter()
    say = progress or (lambda _msg: None)
    runs = load_runs([Path(d) for d in run_dirs], baseline)
    out = Path(out)
    try:
        with report_target(out):
            return _build(runs, out, baseline, judge_model, judge_base_url, say, pages, anatomy, t0)
    except StoreError as exc:  # another writer holds the run directory, or a symlink in it
        raise ReportError(str(exc)) from None
    except OSError as exc:
        raise ReportError(f"cannot write the report into {out}: {exc.strerror or exc}; choose another --out") from None


def _build(
    runs: list[Run],
    out: Path,
    baseline: str,
    judge_model: str | None,
    judge_base_url: str | None,
    say: Callable[[str], None],
    pages: bool,
    anatomy: bool,
    t0: float,
) -> ReportResult:
    out.mkdir(parents=True, exist_ok=True)
    judges = judge_runs(runs, judge_model, judge_base_url, out, say)
    data = report_data(runs, baseline, judges, say)
    measured = None
    if anatomy:
        say("failure anatomy")
        measured = add_anatomy(data, runs, baseline)
    json_path, md_path, html_path = out / "report.json", out / "report.md", out / "report.html"
    index = out / "transcripts" / "index.html"
    if pages:
        say("drawing plots")
        figures = _figures(data, out / "plots")
        if anatomy:
            figures.update(anatomy_pages(runs, data, out, measured))
        data["plots"] = {k: v["file"] for k, v in figures.items()}
        say("writing transcript pages")
        from moodbench.report._viewer import write_transcripts

        index = write_transcripts(runs, data["runs"], out)
        md_path.write_text(markdown(data) + anatomy_markdown(data), encoding="utf-8")
        html_path.write_text(
            render(
                "report.html.j2",
                data=data,
                figures=figures,
                descriptions=DESCRIPTIONS,
                flag_names=FLAG_NAMES,
                multi=len(runs) > 1,
                primary=PRIMARY,
                pooled=POOLED,
            ),
            encoding="utf-8",
        )
    json_path.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    return ReportResult(
        out_dir=out, html=html_path, markdown=md_path, json=json_path, index=index, data=data, seconds=time.perf_counter() - t0
    )


_REPORT_FILES = frozenset({"report.json", "report.md", "report.html", "plots", "transcripts"})


def _report_folder(out: Path) -> bool:
    """Empty, only what a report writes, or an earlier moodbench report (its report.json says so)."""
    names = {p.name for p in out.iterdir()}
    if all(n in _REPORT_FILES or n.startswith("judge-cache-") for n in names):
        return True
    try:
        fd = os.open(out / "report.json", os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as fh:
        return SCHEMA.split("/")[0].encode() in fh.read(200)


@contextlib.contextmanager
def report_target(out: Path) -> Iterator[None]:
    """Where the report goes, made safe: a file there is refused; inside a run directory (``RUN/report``)
    nothing may be a symlink (it would carry the pages, and the viewer, anywhere on the machine) and
    the run's lock is held while writing, so no other command writes the run directory meanwhile."""
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out {out} is a file; give a folder for the report pages")
    if out.is_dir() and not out.is_symlink() and not _report_folder(out):
        shown = ", ".join(sorted(p.name for p in out.iterdir())[:5])
        raise ReportError(
            f"--out {out} is not empty and not a moodbench report folder (it holds {shown}); moodbench "
            "overwrites no file it did not write. Choose a new folder"
        )
    run_dir = run_dir_of(out)
    if run_dir is None:
        yield
        return
    rel = Path(os.path.abspath(out)).relative_to(run_dir)
    for i in range(1, len(rel.parts)):
        if (run_dir / Path(*rel.parts[:i])).is_symlink():
            refuse_symlinks(run_dir / Path(*rel.parts[:i]), "a folder on the report's path")
    refuse_symlinks(out, "the report folder")
    with RunLock(run_dir, create=False, what="moodbench report"):
        refuse_symlinks(out, "the report folder")  # again, now that no other moodbench writer can change it
        yield


def judge_runs(
    runs: list[Run], judge_model: str | None, judge_base_url: str | None, cache_dir: Path | None, say: Callable[[str], None]
) -> dict[str, dict[str, Any] | None]:
    """The optional LLM emotion judge per run (cached under ``cache_dir`` by prompt hash)."""
    if not judge_model:
        return {}
    from moodbench.judges import judge_conversations

    out: dict[str, dict[str, Any] | None] = {}
    for r in runs:
        say(f"judging {len(r.records)} conversation(s) of {r.label} with {judge_model}")
        out[r.slug] = judge_conversations(
            [c for c in r.records if not c.excluded],
            judge_model,
            judge_base_url,
            cache_dir / f"judge-cache-{r.slug}.json" if cache_dir else None,
        )
    return out


def _figures(data: dict[str, Any], plot_dir: Path) -> dict[str, dict[str, str]]:
    from moodbench.report import _plots as plots

    labels = [a["label"] for a in data["runs"]]
    headline = [e for e in data["effects"] if e["domain"] == POOLED]
    mdes = {d["run"]: d["mde"] for d in data["designs"] if d["domain"] == POOLED}
    figures = {
        "effects": plots.effect_plot(
            headline,
            labels,
            plot_dir / "effects.png",
            mdes,
            title=None if data.get("framing") == "emotion" else "Reward difference of each variant vs the baseline",
        ),
        "exit_reasons": plots.exit_reason_plot(
            [
                ((f"{a['label']} / " if len(labels) > 1 else "") + v, s["exit_reasons"])
                for a in data["runs"]
                for v, s in a["summary"]["variants"].items()
            ],
            plot_dir / "exit_reasons.png",
        ),
    }
    checks = [m for m in data["manipulation"] if m["domain"] == POOLED]
    if checks:
        figures["manipulation"] = plots.manipulation_plot(checks, labels, plot_dir / "manipulation.png")
    if data["dose_response"]:
        figures["dose"] = plots.dose_plot(data["dose_response"], plot_dir / "dose_response.png")
    return figures
