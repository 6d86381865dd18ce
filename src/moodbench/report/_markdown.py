"""report.md: the claims and the tables a pull request or a notebook can quote.

Every value that comes from a run (model names, variant specs, directory names) goes through
:func:`md_cell` / :func:`md_text`: a model called ``a|b <img src=x>`` must neither split a table row nor
become HTML when the file is rendered.
"""

from __future__ import annotations

import re
from typing import Any

from moodbench.report._render import ci, fmt, pct, pval, signed

_SPECIAL = re.compile(r"([\\`*_\[\]|#~])")


def md_text(value: Any) -> str:
    """Plain text for markdown: markup characters backslash-escaped, ``<``/``>``/``&`` as entities, no newlines."""
    text = "" if value is None else str(value)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _SPECIAL.sub(r"\\\1", text)
    return " ".join(text.split())


def md_cell(value: Any) -> str:
    """A table cell: like :func:`md_text` (``|`` escaped, newlines folded into spaces)."""
    return md_text(value)


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    return [_row(head), "|" + "---|" * len(head), *[_row(r) for r in rows]]


def _f(x: Any) -> str:
    return fmt(x)


def markdown(data: dict[str, Any]) -> str:
    """The whole report.md."""
    multi = len(data["runs"]) > 1
    t = data["thresholds"]
    lines = [
        "# moodbench report",
        "",
        f"Generated {md_text(data['generated_at'])} from {len(data['runs'])} run(s); baseline {md_text(data['baseline'])}.",
        "",
        (
            "## The answer: effect of each emotion on reward (variant − baseline, on matched pairs)"
            if data.get("framing") == "emotion"
            else "## The answer: effect of each variant on reward (variant − baseline, on matched pairs)"
        ),
        "",
    ]
    for b in data["bottom_lines"]:
        lines += [((f"**{md_text(b['run'])}**: " if multi else "") + md_text(b["text"])), ""]
    head = [
        "run",
        "variant",
        "baseline (paired)",
        "variant (paired)",
        "Δ reward",
        "95% CI",
        "p",
        "p (Holm)",
        "claim",
        "pairs / tasks",
        "MDE",
        "Δ without flagged (claim)",
        "manipulation",
        "trust",
    ]
    unflagged = {(e["run"], e["variant"], e["domain"]): e for e in data["effects"] if e["subset"] == "unflagged"}
    rows = []
    for e in data["effects"]:
        if e["subset"] != "all" or e["domain"] != "all":
            continue
        u = unflagged.get((e["run"], e["variant"], e["domain"]), {})
        rows.append(
            [
                md_cell(e["run"]),
                md_cell(e["variant"]),
                _f(e["baseline_mean"]),
                _f(e["variant_mean"]),
                signed(e["diff"]),
                ci(*e["ci"]),
                pval(e["p"]),
                pval(e["p_adjusted"]),
                f"**{e['claim']}**",
                f"{e['n_pairs']} / {e['n_tasks']}",
                _f(e["mde"]),
                f"{signed(u.get('diff'))} {ci(*u.get('ci', [None, None]))} ({u.get('claim', '–')})",
                md_cell(e["manipulation"]),
                md_cell(e["trust"] + ("; " + "; ".join(c["text"] for c in e["caveats"]) if e["caveats"] else "")),
            ]
        )
    lines += _table(head, rows)
    fams = "; ".join(f"{md_text(f['run'])} {f['name']}: {f['size']} ({md_text(f['members'])})" for f in data["families"])
    fam = data.get("family") or {}
    lines += [
        "",
        f"Claims: one family for the whole report, {fam.get('size', 0)} test(s) (reward effects, sensitivity subsets "
        f"and dose trends; sections {fams}), Holm-adjusted p < {t['alpha']}; `too_few` below {t['min_tasks']} tasks "
        f"or {t['min_pairs']} pairs, or when every task has the same difference (no spread: no interval, no p). A claim "
        "must also hold with the excluded conversations counted as failures and as successes (its p is the largest of "
        "the three), or it is not stated as a finding. "
        "pass^k and the manipulation score's dose trend are descriptive (no claim). McNemar on these pairs is shown in "
        "report.html as a secondary statistic only.",
        "",
    ]
    lines += _sequential_lines(data)
    missing = [e for e in data["effects"] if e["subset"] == "all" and e.get("exclusions")]
    if missing:
        lines += ["### Excluded conversations and bounds", ""]
        lines += _table(
            [
                "run",
                "variant",
                "scope",
                "excluded (variant / baseline)",
                "Fisher p",
                "turns excluded / scored",
                "Δ as failures [95% CI]",
                "Δ as successes [95% CI]",
                "claim",
            ],
            [
                [
                    md_cell(e["run"]),
                    md_cell(e["variant"]),
                    md_cell(e["domain"]),
                    f"{x['excluded_variant']} / {x['excluded_baseline']} of {x['pairs_run']}",
                    pval(x["p_rate"]),
                    f"{fmt(x['turns_excluded_mean'], 1)} / {fmt(x['turns_scored_mean'], 1)}",
                    f"{signed(x['bounds']['as_failures']['diff'])} {ci(*x['bounds']['as_failures']['ci'])}",
                    f"{signed(x['bounds']['as_successes']['diff'])} {ci(*x['bounds']['as_successes']['ci'])}",
                    e["claim"] + (" (withdrawn)" if e.get("claim_withdrawn") else ""),
                ]
                for e in missing
                for x in [e["exclusions"]]
            ],
        )
        lines.append("")
    domain_rows = [e for e in data["effects"] if e["domain"] != "all"]
    if domain_rows:
        lines += ["### Per domain", ""]
        lines += _table(
            [
                "run",
                "domain",
                "subset",
                "variant",
                "baseline",
                "variant mean",
                "Δ",
                "95% CI",
                "p (Holm)",
                "claim",
                "pairs / tasks",
            ],
            [
                [
                    md_cell(e["run"]),
                    md_cell(e["domain"]),
                    e["subset"],
                    md_cell(e["variant"]),
                    _f(e["baseline_mean"]),
                    _f(e["variant_mean"]),
                    signed(e["diff"]),
                    ci(*e["ci"]),
                    pval(e["p_adjusted"]),
                    e["claim"],
                    f"{e['n_pairs']} / {e['n_tasks']}",
                ]
                for e in domain_rows
            ],
        )
        lines.append("")
    lines += ["## pass^k on matched pairs (descriptive: one task set for every k, no claim)", ""]
    lines += _table(
        ["run", "variant", "domain", "k", "tasks (dropped)", "baseline", "variant", "Δ", "95% CI"],
        [
            [
                md_cell(p["run"]),
                md_cell(p["variant"]),
                md_cell(p["domain"]),
                p["k"],
                f"{p['n_tasks']} ({p.get('dropped_tasks', 0)})",
                _f(p["baseline_mean"]),
                _f(p["variant_mean"]),
                signed(p["diff"]),
                "– (too few)" if p.get("too_few") else ci(*p["ci"]),
            ]
            for p in data["pass_hat_k"]
        ],
    )
    lines += ["", "## Design: minimum detectable effect and A/A split of the baseline", ""]
    lines += _table(
        ["run", "scope", "tasks", "trials", "family", f"MDE (drop, {t['power']:.0%} power)", "A/A Δ [95% CI]", "A/A p"],
        [
            [
                md_cell(d["run"]),
                md_cell(d["domain"]),
                d["tasks"],
                f"{d['min_trials']}-{d['max_trials']}",
                d["family_size"],
                _f(d["mde"]) + (f" ({md_text(d['mde_note'])})" if d.get("mde_note") else ""),
                (f"{signed(d['aa']['diff'])} {ci(d['aa']['ci_low'], d['aa']['ci_high'])}" if d["aa"] else "– (1 trial)"),
                pval(d["aa"]["p"]) if d["aa"] else "–",
            ]
            for d in data["designs"]
        ],
    )
    lines += [
        "",
        f"## Manipulation check ({md_text(t['manipulation_score'])} on the customer's early turns, minimum shift "
        f"{t['manipulation_min_effect']:g})",
        "",
    ]
    lines += _table(
        [
            "run",
            "variant",
            "scope",
            "pairs / tasks",
            "baseline",
            "variant",
            "shift",
            "one-sided lower bound",
            "result",
            "shift, all turns",
        ],
        [
            [
                md_cell(m["run"]),
                md_cell(m["variant"]),
                md_cell(m["domain"]),
                f"{m['n_pairs']} / {m['n_tasks']}",
                _f(m["baseline_mean"]),
                _f(m["variant_mean"]),
                signed(m["shift"]),
                signed(m["lower_bound"]),
                f"**{m['status']}**" + (" (zero spread)" if str(m.get("reason") or "").startswith("zero spread") else ""),
                _secondary(m, "markers_own", "all"),
            ]
            for m in data["manipulation"]
        ],
    )
    for a in data["runs"]:
        na = a["manipulation"].get("not_applicable") or []
        if na:
            lines += [
                "",
                (f"{md_text(a['label'])}: " if multi else "")
                + "The manipulation check does not apply to "
                + md_text(", ".join(x["variant"] for x in na))
                + ": "
                + md_text(na[0]["reason"])
                + ".",
            ]
    if data.get("methods_comparison"):
        lines += [
            "",
            "## Prompted vs steered at matched levels",
            "",
            "Each row's numbers are those of the manipulation check, the fidelity table and the reward claims; methods are not "
            "tested against each other.",
            "",
        ]
        for mc in data["methods_comparison"]:
            lines += [
                f"**{md_text(mc['run'])}: {md_text(mc['emotion'])}** ({md_text(', '.join(mc['methods']))}): {md_text(mc['summary'])}",
                "",
            ]
            lines += _table(
                [
                    "level",
                    "method",
                    "variant",
                    "scale",
                    "vector",
                    "marker shift [95% CI]",
                    "check",
                    "flagged (vs baseline)",
                    "Δ reward [95% CI]",
                    "p (Holm)",
                    "claim",
                ],
                [_comparison_row(r) for r in mc["rows"]],
            )
            lines += ["", f"Baseline {md_text(mc['baseline'])}: {pct(mc['baseline_flagged_rate'])} flagged.", ""]
    if data["dose_response"]:
        lines += ["", "## Dose-response (level 0 = baseline, 1 mild, 2 moderate, 3 severe; the trend is among levels 1-3)", ""]
        for d in data["dose_response"]:
            scales = ""
            if d.get("scales"):
                sha = (d.get("vector_sha256") or "")[:12] or "not one vector"
                scales = f"; control vector {md_text(sha)}, scales " + ", ".join(
                    f"{md_text(k)} {_scale(v)}" for k, v in d["scales"].items()
                )
            lines += [
                f"**{md_text(d['run'])}: {md_text(d['emotion'])} by {md_text(d['method'])}, {md_text(d['label'])}**: slope "
                f"{signed(d['slope'])} per level {ci(*d['ci'])}, "
                + (f"p(Holm) {pval(d['p_adjusted'])}, claim {d['claim']}" if "claim" in d else "descriptive (no claim)")
                + (f" ({md_text(d['no_claim_reason'])})" if d.get("no_claim_reason") else "")
                + f" ({d['n_tasks']} tasks){scales}",
                "",
            ]
            steered = bool(d.get("scales"))
            lines += _table(
                [
                    "level",
                    "variant",
                    *(["scale"] if steered else []),
                    "conversations",
                    "mean",
                    "Δ vs baseline (paired)",
                    "95% CI",
                ],
                [
                    [
                        f"{lv['level']} ({lv['level_name']})",
                        md_cell(lv["variant"]),
                        *([_scale(lv.get("scale"))] if steered else []),
                        lv["n"],
                        _f(lv["mean"]),
                        signed(lv["diff"]),
                        ci(*lv["ci"]),
                    ]
                    for lv in d["levels"]
                ],
            )
            lines.append("")
    if data["warnings"]:
        lines += ["", "## Warnings", ""] + [f"- {md_text(w['text'])}" for w in data["warnings"]]
    for a in data["runs"]:
        trials = a["trials"]
        lines += [
            "",
            f"## Run: {md_text(a['label'])}",
            "",
            (
                f"{md_text(a['run_dir'])}; "
                + "; ".join(
                    f"{md_text(v)}: agent {md_text(', '.join(mo['agent']) or '?')}, customer {md_text(', '.join(mo['customer']) or '?')}"
                    + (f", tau2 {md_text(', '.join(mo['tau2']))}" if mo["tau2"] else "")
                    for v, mo in a["models"].items()
                )
                + "; "
                f"{trials} trial(s), domains {md_text(', '.join(a['domains']))}. All scored conversations (= summary.json):"
            ),
            "",
        ]
        lines += _table(
            [
                "variant",
                "done/planned",
                "excluded",
                "avg reward",
                *[f"pass^{k}" for k in range(1, trials + 1)],
                "flagged",
                "exit reasons",
            ],
            [
                [
                    md_cell(v),
                    f"{s['done']}/{s['planned']}",
                    s["excluded"],
                    _f(s["avg_reward"]),
                    *[_f(s["pass_hat_k"].get(str(k))) for k in range(1, trials + 1)],
                    f"{a['fidelity']['variants'].get(v, {}).get('flagged', 0)}/{a['fidelity']['variants'].get(v, {}).get('n', 0)}",
                    md_cell(", ".join(f"{k}={n}" for k, n in s["exit_reasons"].items())),
                ]
                for v, s in a["summary"]["variants"].items()
            ],
        )
    lines += [
        "",
        "## Methods",
        "",
        f"Estimand: {md_text(data['estimand'])}. Inference: {md_text(data['method'])}. Relative change = Δ / baseline mean. "
        "See report.html (Methods) and docs/statistics.md.",
        "",
        "See report.html for conversation statistics, fidelity flags, plots and transcripts.",
        "",
    ]
    return "\n".join(lines)


def _secondary(m: dict[str, Any], score: str, turns: str) -> str:
    s = next((x for x in m["secondary"] if x["score"] == score and x["turns"] == turns), None)
    return "–" if not s or s["diff"] is None else f"{signed(s['diff'])} {ci(*s['ci'])}"


def _scale(x: Any) -> str:
    return "–" if x is None else f"{x:g}"


def _comparison_row(r: dict[str, Any]) -> list[Any]:
    """One (level, method) row of the prompted-vs-steered table."""
    st, m, f, w = r.get("steering"), r.get("manipulation"), r["fidelity"], r.get("reward")
    if st is None:
        vector = "–"
    elif not st["consistent"]:
        vector = f"mixed ({len(st['distinct'])})"
    else:
        vector = md_cell(st["vector_short"]) + (f" (layers {st['layers'][0]}-{st['layers'][1]})" if st.get("layers") else "")
    gap = "–" if f["gap"] is None else f"{100 * f['gap']:+.0f} pts"
    return [
        r["level_name"],
        md_cell(r["method"]),
        md_cell(r["variant"]),
        _scale(None if st is None else st["scale"]),
        vector,
        "–" if m is None else f"{signed(m['shift'], 2)} {ci(m['ci'][0], m['ci'][1], 2)}",
        "–" if m is None else m["status"],
        f"{pct(f['flagged_rate'])} ({gap})",
        "–" if w is None else f"{signed(w['diff'])} {ci(*w['ci'])}",
        "–" if w is None else pval(w["p_adjusted"]),
        "–" if w is None else f"**{w['claim']}**",
    ]


def _sequential_lines(data: dict[str, Any]) -> list[str]:
    """A ``run --sequential``'s looks: where it stopped, each look's decisions, the boundaries it used."""
    out: list[str] = []
    for a in data["runs"]:
        seq = a.get("sequential")
        if not seq:
            continue
        out += [f"### Sequential design: {md_text(a['label'])}", "", md_text(seq["summary"]) + ".", ""]
        if seq.get("looks"):
            out += [
                f"{seq['spending']} alpha spending over {seq['looks_planned']} looks (stages of {', '.join(map(str, seq['stages']))} "
                f"tasks); claims by Holm over the variants on repeated p-values; {md_text(seq['futility_text'])}. The pooled rows "
                "above show "
                "the sequential p and the repeated 95% interval (valid whenever the run stopped); the fixed-design ones are "
                "in report.json (`sequential`).",
                "",
            ]
            rows = []
            for look in seq["looks"]:
                for d in look["decisions"]:
                    rows.append(
                        [
                            str(look["look"]),
                            str(look["tasks"]),
                            md_cell(d["variant"]),
                            f"{seq['bounds'][look['look'] - 1]:.3f}",
                            "–" if d["z"] is None else f"{d['z']:+.2f}",
                            pval(d["p_repeated"]),
                            ci(d["ci_low"], d["ci_high"]),
                            md_cell(d["status"] + (f" {d['claim']}" if d["claim"] else "")),
                        ]
                    )
            out += _table(["look", "tasks", "variant", "|z| bound", "z", "sequential p", "repeated 95% CI", "decision"], rows)
            out += [""]
    return out
