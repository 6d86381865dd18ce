"""Does ``moodbench steer calibrate`` give the same answer twice? Repeat it with fresh seeds and count.

Why: the same design (qwen2.5-0.5b, frustration, 4 tasks x 2 seeds x 3 turns) once gave severe 1.0, 1.5
and "cannot be steered". The statistical coherence rule (``moodbench/steer/_coherence.py``) is meant to
pick the same severe scale, or an adjacent one on the sweep grid, in at least 80% of repetitions.

How: for each emotion, ``--repeats`` calibrations with disjoint seed sets (repetition r uses seeds
r*S+1 .. r*S+S, so repetition 0 is the default calibration, seeds 1..S), the same vector (built once,
cached), tasks, turns, grid and rules as ``moodbench steer calibrate`` (adaptive scale search
included); per emotion the chosen severe scales, the share equal to the most common one or adjacent to
it on the grid, minutes per calibration and the 1-minute load average before and after each. The JSON
(``--out``) is rewritten after every repetition, so a run cut short keeps what it measured.

``--shipped-dir DIR`` writes each emotion's repetition 0 (the default seeds) in the shipped format of
``src/moodbench/steer/data/*.calibration.json`` (only when its severe scale is detected: a shipped level
must move the customer); ``--from-json FILE`` does that from a committed result without a model
(``tests/test_steering_bench.py`` checks the shipped files are exactly that). Needs the local backend
(scripts/install-local-backend.sh); about 3-5 minutes per calibration on 2 shared cores.

    python benchmarks/calibration_stability.py --emotions anger,confusion,frustration --repeats 5 \\
        --out benchmarks/results/calibration-stability.json --shipped-dir src/moodbench/steer/data
    python benchmarks/calibration_stability.py --from-json benchmarks/results/calibration-stability.json --shipped-dir DIR
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_shipped_calibration

FMT = "completion"
# Keys of a shipped calibration, in order (the steering benchmark's, plus the evidence of point 3 of issue 25).
SHIPPED_KEYS = ("model", "emotion", "method", "layers", "format", "tasks", "seeds", "turns", "scales", "levels", "thresholds",
                "level_fractions", "warnings", "evidence", "seconds", "created_at")  # fmt: skip


def stability(severes: list[float | None], grid: list[float]) -> tuple[float | None, float]:
    """The most common severe scale and the share of repetitions equal or adjacent to it on ``grid``.

    A repetition without levels (None) counts as a miss; ties for the mode go to the smaller scale (the
    conservative dose), deterministically.
    """
    found = [s for s in severes if s is not None]
    if not found:
        return None, 0.0
    counts = Counter(found)
    top = max(counts.values())
    mode = min(s for s, c in counts.items() if c == top)
    near = sum(s is not None and s in grid and abs(grid.index(s) - grid.index(mode)) <= 1 for s in severes)
    return mode, near / len(severes)


def within_adjacent_pair(severes: list[float | None], grid: list[float]) -> float:
    """The strict reading of "the same answer or an adjacent one": the largest share of repetitions whose severe
    scales all lie on one pair of neighbouring grid scales (``stability`` allows the mode's neighbours on both
    sides, three grid scales). A repetition without levels counts as a miss."""
    if not severes:
        return 0.0
    idx = [grid.index(s) for s in severes if s is not None and s in grid]
    best = max((sum(i in (j, j + 1) for i in idx) for j in range(len(grid))), default=0)
    return best / len(severes)


def shipped(emotion_block: dict[str, Any]) -> dict[str, Any]:
    """Repetition 0's calibration in the shipped format (no replies, no local paths, a ``source``)."""
    cal = emotion_block["calibration_rep0"]
    out = {k: cal[k] for k in SHIPPED_KEYS}
    scales = ",".join(f"{r['scale']:g}" for r in cal["scales"])
    out.update(model_sha256=emotion_block["model_sha256"], pairs_sha256=emotion_block["pairs_sha256"],
               measured_with_vector_sha256=cal["vector_sha256"],
               source=(f"shipped: repetition 0 (the default seeds) of `benchmarks/calibration_stability.py` "
                       f"(moodbench.steer.calibrate, --format {FMT}, measured scales {scales}, tasks {','.join(cal['tasks'])}, "
                       f"seeds {','.join(map(str, cal['seeds']))}, {cal['turns']} turns; 2 shared CPU cores); run `moodbench "
                       f"steer calibrate --model {cal['model']} --emotion {cal['emotion']} --format {FMT}` to measure "
                       "your own"))  # fmt: skip
    return out


def write_shipped(emotion_block: dict[str, Any], directory: Path | None) -> Path | None:
    """Write repetition 0 in the shipped format when its severe scale is detected (else nothing)."""
    cal = emotion_block.get("calibration_rep0")
    if directory is None or not cal or not cal["levels"]:
        return None
    sev = next(r for r in cal["scales"] if r["scale"] == cal["levels"]["severe"])
    if not any(r["detected"] for r in cal["scales"] if 0 < r["scale"] <= sev["scale"]):
        print(f"{cal['emotion']}: repetition 0 detected no manipulation up to severe {sev['scale']:g}: not shipped", flush=True)
        return None
    return write_shipped_calibration(shipped(emotion_block), directory)


def table(result: dict[str, Any]) -> str:
    """The README table: per emotion the severe scale of each repetition, the levels, the share, time, load."""
    lines = ["| emotion | severe per repetition (seeds) | mode | equal or adjacent to the mode | on one adjacent pair | "
             "mild / moderate / severe of rep 0 | measured scales per rep | minutes per calibration (mean, range) | "
             "load (1-min avg, range) |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for emotion, b in result["emotions"].items():
        runs = b["runs"]
        if not runs:
            continue
        sev = ", ".join("none" if r["severe"] is None else f"{r['severe']:g}" for r in runs)
        mins = [r["seconds"] / 60 for r in runs]
        loads = [x for r in runs for x in (r["load_before"], r["load_after"])]
        lv = runs[0]["levels"]
        lv_s = "none" if not lv else f"{lv['mild']:g} / {lv['moderate']:g} / {lv['severe']:g}"
        measured = ", ".join(str(len(r["measured"])) for r in runs)
        lines.append(f"| {emotion} | {sev} | {'none' if b['mode'] is None else format(b['mode'], 'g')} | "
                     f"{b['equal_or_adjacent']:.0%} ({len(runs)} reps) | "
                     f"{within_adjacent_pair([r['severe'] for r in runs], result['grid']):.0%} | {lv_s} | {measured} | "
                     f"{sum(mins) / len(mins):.1f} ({min(mins):.1f}-{max(mins):.1f}) | "
                     f"{min(loads):.1f}-{max(loads):.1f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from moodbench.steer import DEFAULT_SCALES, DEFAULT_TASKS, SteeringError, build_vector, calibrate

    grid = sorted(s for s in DEFAULT_SCALES if s > 0)
    result: dict[str, Any] = {"model": args.model, "format": FMT, "tasks": list(DEFAULT_TASKS), "grid": grid,
                              "repeats": args.repeats, "seeds_per_repetition": args.seeds, "turns": args.turns,
                              "cpus": len(os.sched_getaffinity(0)), "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
                              "emotions": {}}  # fmt: skip

    def save() -> None:
        from moodbench.steer._calibrate import _finite

        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(_finite(result), indent=1) + "\n")
        tmp.replace(args.out)

    emotions = [e.strip() for e in args.emotions.split(",") if e.strip()]
    vectors = {}
    earlier = json.loads(args.out.read_text())["emotions"] if args.resume and args.out.is_file() else {}
    for emotion in emotions:
        t0 = time.monotonic()
        vec = vectors[emotion] = build_vector(args.model, emotion)
        result["emotions"][emotion] = {"vector": vec.vector.name, "model_sha256": vec.model_sha256,
                                       "pairs_sha256": vec.pairs_sha256, "vector_seconds": round(time.monotonic() - t0, 1),
                                       "runs": [], "mode": None, "equal_or_adjacent": 0.0}  # fmt: skip
        old = earlier.get(emotion)
        if old and old["vector"] == vec.vector.name:  # --resume: the same vector's finished repetitions are kept
            result["emotions"][emotion].update({k: old[k] for k in ("runs", "mode", "equal_or_adjacent", "calibration_rep0")
                                                if k in old})  # fmt: skip
    save()
    # repetitions interleaved over the emotions (anger 0, confusion 0, frustration 0, anger 1, ...): a run cut
    # short has the same number of repetitions (+-1) of every emotion, and every shipped file early
    for r in range(args.repeats):
        for emotion in emotions:
            block = result["emotions"][emotion]
            if any(x["repetition"] == r for x in block["runs"]):
                continue
            seeds = list(range(r * args.seeds + 1, (r + 1) * args.seeds + 1))
            load_before, t1 = _load(), time.monotonic()
            try:
                cal = calibrate(args.model, emotion, vector=vectors[emotion], seeds=seeds, turns=args.turns, fmt=FMT, save=False,
                                plot=False)  # fmt: skip
            except SteeringError as exc:  # a server that failed: recorded, the next repetition goes on
                block.setdefault("failed", []).append({"repetition": r, "seeds": seeds, "error": str(exc)[:2000]})
                save()
                print(f"{emotion} repetition {r + 1}: failed: {str(exc)[:300]}", flush=True)
                continue
            severe = cal.levels["severe"] if cal.levels else None
            block["runs"].append({
                "repetition": r, "seeds": seeds, "severe": severe, "levels": cal.levels,
                "measured": [row["scale"] for row in cal.scales],
                "detected": [row["scale"] for row in cal.scales if row["scale"] > 0 and row["detected"]],
                "bounded_by": cal.evidence.get("bounded_by"), "not_measured": cal.evidence.get("not_measured"),
                "warnings": cal.warnings, "seconds": round(time.monotonic() - t1, 1),
                "seconds_per_phase": cal.evidence.get("seconds_per_phase"), "load_before": load_before, "load_after": _load(),
                "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            })  # fmt: skip
            if r == 0:
                block["calibration_rep0"] = {k: v for k, v in cal.to_dict().items() if k not in ("replies", "path", "plot")}
                write_shipped(block, args.shipped_dir)
            block["mode"], block["equal_or_adjacent"] = stability([x["severe"] for x in block["runs"]], grid)
            save()
            x = block["runs"][-1]
            print(f"{emotion} repetition {r + 1}/{args.repeats} (seeds {seeds}): severe {severe}, measured {x['measured']}, "
                  f"{x['seconds']:.0f}s, load {x['load_before']}->{x['load_after']}", flush=True)  # fmt: skip
    for emotion in emotions:
        block = result["emotions"][emotion]
        print(f"{emotion}: severe {[x['severe'] for x in block['runs']]}; mode {block['mode']}; "
              f"equal or adjacent {block['equal_or_adjacent']:.0%}", flush=True)  # fmt: skip
    result["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    save()
    return result


def main() -> int:
    import signal

    # SIGTERM (kill, a scheduler) runs the atexit handlers that stop the llama-servers, instead of orphaning them
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-0.5b")
    ap.add_argument("--emotions", default="anger,confusion,frustration")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=2, help="seeds per repetition")
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/calibration-stability.json"))
    ap.add_argument(
        "--shipped-dir", type=Path, default=None, help="write repetition 0 of each emotion in the shipped format here"
    )
    ap.add_argument("--from-json", type=Path, default=None, help="print the table of an earlier result; run nothing")
    ap.add_argument("--resume", action="store_true", help="keep the repetitions already in --out (same vectors)")
    args = ap.parse_args()
    if args.from_json:
        result = json.loads(args.from_json.read_text())
        for block in result["emotions"].values():
            write_shipped(block, args.shipped_dir)
    else:
        result = run(args)
        print(f"written: {args.out}")
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
