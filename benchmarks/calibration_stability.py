"""Does ``moodbench steer calibrate`` give the same answer twice? Repeat it with fresh seeds and count.

Why: the same design (qwen2.5-0.5b, frustration, 4 tasks x 2 seeds x 3 turns) once gave severe 1.0, 1.5
and "cannot be steered". The statistical coherence rule (``moodbench/steer/_coherence.py``) is meant to
pick the same severe scale, or an adjacent one on the sweep grid, in at least 80% of repetitions.

How: for each emotion, ``--repeats`` calibrations with disjoint seed sets (repetition r uses seeds
r*S+1 .. r*S+S), the same vector (built once, cached), tasks, turns and grid; prints per emotion the
chosen severe scales, the share equal to the most common one or adjacent to it, and the seconds per
calibration, and writes the JSON to ``--out``. Needs the local backend (scripts/install-local-backend.sh)
and about 10-15 minutes per calibration on 2 cores.

    python benchmarks/calibration_stability.py --emotions frustration,anger,confusion --repeats 5
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any


def stability(severes: list[float | None], grid: list[float]) -> tuple[float | None, float]:
    """The most common severe scale and the share of repetitions equal or adjacent to it on ``grid``."""
    found = [s for s in severes if s is not None]
    if not found:
        return None, 0.0
    mode = Counter(found).most_common(1)[0][0]
    near = sum(s is not None and s in grid and abs(grid.index(s) - grid.index(mode)) <= 1 for s in severes)
    return mode, near / len(severes)


def main() -> None:
    from moodbench.steer import DEFAULT_SCALES, DEFAULT_TASKS, build_vector, calibrate

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-0.5b")
    ap.add_argument("--emotions", default="frustration,anger,confusion")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=2, help="seeds per repetition")
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--format", default="completion")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/calibration-stability.json"))
    args = ap.parse_args()
    grid = sorted(s for s in DEFAULT_SCALES if s > 0)
    result: dict[str, Any] = {"model": args.model, "format": args.format, "tasks": list(DEFAULT_TASKS), "grid": grid,
                              "repeats": args.repeats, "emotions": {}}  # fmt: skip
    for emotion in [e.strip() for e in args.emotions.split(",") if e.strip()]:
        vec = build_vector(args.model, emotion)
        runs = []
        for r in range(args.repeats):
            seeds = list(range(r * args.seeds + 1, (r + 1) * args.seeds + 1))
            t0 = time.monotonic()
            cal = calibrate(
                args.model, emotion, vector=vec, seeds=seeds, turns=args.turns, fmt=args.format, save=False, plot=False
            )
            severe = cal.levels["severe"] if cal.levels else None
            runs.append({"seeds": seeds, "severe": severe, "warnings": cal.warnings, "seconds": round(time.monotonic() - t0, 1),
                         "bounded_by": cal.evidence.get("bounded_by")})  # fmt: skip
            print(f"{emotion} repetition {r + 1}/{args.repeats}: severe {severe} ({runs[-1]['seconds']:.0f}s)", flush=True)
        mode, share = stability([x["severe"] for x in runs], grid)
        result["emotions"][emotion] = {"runs": runs, "mode": mode, "equal_or_adjacent": share}
        print(f"{emotion}: severe {[x['severe'] for x in runs]}; mode {mode}; equal or adjacent {share:.0%}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
