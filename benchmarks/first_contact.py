"""First contact: a fresh ``./demo`` from a clean clone with empty caches, then a second one, phase by phase.

    .venv/bin/python benchmarks/first_contact.py                 # clone HEAD, demo twice, print the phases
    .venv/bin/python benchmarks/first_contact.py --json out.json --keep /tmp/fc

What a newcomer gets: the committed checkout (``git clone`` of HEAD, so uncommitted edits are not measured) is
cloned into a temporary directory, and ``./demo`` runs there with a new ``.venv``, an empty moodbench cache
(``MOODBENCH_CACHE_DIR``: no llama.cpp build, no model, no vector) and an empty pip cache (``PIP_CACHE_DIR``),
so every download and build happens. Each line the demo prints is timestamped as it arrives; the phases are
cut at the lines that start them (the venv, the sources download, the llama.cpp build, the model, the
vector, the servers and preflight, the conversations, the report). Then ``./demo`` runs again in the same
clone (everything cached, finished conversations kept) and is timed whole.

The conversations' cost is also printed per llama-server (from their logs: tokens generated, and the
seconds their slots spent generating), and the run's tokens per second of wall time: conversation lengths
vary from run to run (the customer samples at temperature 0.7), so tokens per second compares runs better
than seconds. Nothing here asserts a time. The issue's targets: <= 10 min for the first, <= 10 s for the
second, on 2 quiet cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, machine

#: (phase, pattern of the demo line that starts it), in the order the demo prints them.
PHASES = [
    ("venv and pip install", r"==> 1/4"),
    ("llama.cpp sources", r"Downloading llama-cpp-python"),
    ("llama.cpp build (cmake, compile)", r"^Building llama-server"),
    ("model download and sha256", r"^(Fetching|Downloading) .*(carrier|hub)|^model \S+:"),
    ("control vector", r"Building the \w+ control vector"),
    ("servers start and preflight", r"starting local llama.cpp server"),
    ("conversations", r"conversation\(s\) to run"),
    ("report", r"==> 4/4"),
]

_TIMING = re.compile(r"(prompt eval|\s eval) time =\s+([\d.]+) ms /\s+(\d+) tokens")


def run_demo(clone: Path, env: dict[str, str]) -> tuple[list[tuple[float, str]], float, int]:
    """Run ``./demo`` in ``clone``; every output line with its second since launch, the wall time, the exit code."""
    t0 = time.monotonic()
    proc = subprocess.Popen(
        ["./demo"], cwd=clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    lines: list[tuple[float, str]] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append((time.monotonic() - t0, line.rstrip("\n")))
    rc = proc.wait()
    return lines, time.monotonic() - t0, rc


def phases(lines: list[tuple[float, str]], total: float) -> list[dict[str, Any]]:
    """Seconds per phase: from the first line matching a phase's pattern to the next phase's start."""
    starts: list[tuple[str, float]] = []
    for name, pattern in PHASES:
        hit = next((t for t, text in lines if re.search(pattern, re.sub(r"\x1b\[[0-9;]*m", "", text).strip())), None)
        if hit is not None and all(name != n for n, _ in starts):
            starts.append((name, hit))
    starts.sort(key=lambda item: item[1])
    out = []
    for k, (name, t) in enumerate(starts):
        end = starts[k + 1][1] if k + 1 < len(starts) else total
        out.append({"phase": name, "start_s": round(t, 1), "seconds": round(end - t, 1)})
    return out


def server_costs(run: Path) -> list[dict[str, Any]]:
    """Tokens each llama-server of the run processed and generated, and its slots' seconds doing so."""
    out = []
    for log in sorted(run.glob("llamacpp-*.log")):
        text = log.read_text(errors="replace")
        argv = next((ln.split() for ln in text.splitlines() if ln.startswith("$ ")), [])
        threads = argv[argv.index("--threads") + 1] if "--threads" in argv else "default"
        sums = {"prompt eval": [0.0, 0], "eval": [0.0, 0]}
        for kind, ms, tokens in _TIMING.findall(text):
            key = "prompt eval" if kind.startswith("prompt") else "eval"
            sums[key][0] += float(ms) / 1000
            sums[key][1] += int(tokens)
        out.append(
            {
                "server": log.stem,
                "threads": threads,
                "prompt_tokens": sums["prompt eval"][1],
                "prompt_slot_s": round(sums["prompt eval"][0], 1),
                "generated_tokens": sums["eval"][1],
                "generate_slot_s": round(sums["eval"][0], 1),
            }
        )
    return out


def conversations(run: Path) -> dict[str, Any]:
    con = sqlite3.connect(f"file:{run / 'results.sqlite'}?mode=ro", uri=True)
    n, tokens, first, last = con.execute(
        "SELECT count(*), sum(agent_completion_tokens + user_completion_tokens), min(started_at), max(finished_at)"
        " FROM simulations"
    ).fetchone()
    con.close()
    from datetime import datetime

    wall = (datetime.fromisoformat(last) - datetime.fromisoformat(first)).total_seconds()
    return {"conversations": n, "generated_tokens": tokens, "wall_s": round(wall, 1), "tokens_per_s": round(tokens / wall, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, help="also write the measurements here")
    ap.add_argument("--keep", type=Path, help="clone into this (new) directory and keep it; default: a temporary one")
    args = ap.parse_args()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    where = args.keep or Path(tempfile.mkdtemp(prefix="moodbench-first-contact-"))
    where.mkdir(parents=True, exist_ok=True)
    clone = where / "repo"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(MOODBENCH_CACHE_DIR=str(where / "cache"), PIP_CACHE_DIR=str(where / "pip-cache"))
    print(f"machine: {machine()}\nclone of {head} in {clone}; empty caches in {where}", flush=True)

    lines, first, rc = run_demo(clone, env)
    if rc != 0:
        print("\n".join(text for _, text in lines[-30:]))
        raise SystemExit(f"the first ./demo exited with {rc}")
    _, second, rc2 = run_demo(clone, env)
    result = {
        "machine": machine(),
        "commit": head,
        "first_demo_s": round(first, 1),
        "second_demo_s": round(second, 1),
        "second_rc": rc2,
        "phases": phases(lines, first),
        "run": conversations(clone / "demo-run"),
        "servers": server_costs(clone / "demo-run"),
    }
    print(f"\nfirst ./demo: {first:.0f} s ({first / 60:.1f} min; target <= 600 s); second: {second:.1f} s (target <= 10 s)")
    for p in result["phases"]:
        print(f"  {p['phase']:<36} {p['seconds']:>7.1f} s   (from {p['start_s']:.0f} s)")
    r = result["run"]
    print(
        f"conversations: {r['conversations']} in {r['wall_s']} s, {r['generated_tokens']} tokens generated, {r['tokens_per_s']} tokens/s"
    )
    for s in result["servers"]:
        print(
            f"  {s['server']}: --threads {s['threads']}, prompt {s['prompt_tokens']} tokens ({s['prompt_slot_s']} slot-s), "
            f"generated {s['generated_tokens']} tokens ({s['generate_slot_s']} slot-s)"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
