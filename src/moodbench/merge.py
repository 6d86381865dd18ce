"""Combining shard run directories (same experiment, different ``--shard``) into one."""

from __future__ import annotations

import shutil
from pathlib import Path

from moodbench.config import ConfigError, config_diff
from moodbench.store import Store
from moodbench.summary import write_summary


def merge_runs(out_dir: Path, shard_dirs: list[Path]) -> int:
    configs, plans = [], []
    for d in shard_dirs:
        if not (d / "results.sqlite").exists():
            raise ConfigError(f"{d} is not a run directory (no results.sqlite)")
        with Store(d / "results.sqlite") as s:
            configs.append(s.get_meta("config") or {})
            plans.append(s.get_meta("plan") or {})
    base = {k: v for k, v in configs[0].items() if k != "shard"}
    for d, c in zip(shard_dirs[1:], configs[1:]):
        diff = config_diff(base, {k: v for k, v in c.items() if k != "shard"})
        if diff:
            raise ConfigError(f"{d} is a different experiment than {shard_dirs[0]}:\n" + "\n".join(diff))
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / "results.sqlite").exists():
        raise ConfigError(f"{out_dir} already holds a run; merge into a new directory")
    n = 0
    with Store(out_dir / "results.sqlite") as target:
        planned: dict[str, dict[str, int]] = {}
        for p in plans:
            for dom, per in p.get("planned", {}).items():
                for v, k in per.items():
                    planned.setdefault(dom, {}).setdefault(v, 0)
                    planned[dom][v] += k
        target.set_meta("config", {**base, "shard": None})
        target.set_meta("plan", {**plans[0], "planned": planned, "cells": sum(p.get("cells", 0) for p in plans)})
        for d in shard_dirs:
            with Store(d / "results.sqlite") as src:
                for row in src.rows(final_only=False, with_payload=True):
                    rec = {k: v for k, v in row.data.items() if k != "id"}
                    prompts = {}
                    for role in ("agent", "user"):
                        sha = rec.get(f"{role}_prompt_sha256")
                        if sha:
                            prompts[role] = src.prompt(sha) or ""
                    n += int(target.insert(rec, {r: t for r, t in prompts.items() if t}))
    for d in shard_dirs:
        ev = d / "events.jsonl"
        if ev.exists():
            with (out_dir / "events.jsonl").open("a") as fh:
                fh.write(ev.read_text())
    shutil.copy(shard_dirs[0] / "manifest.json", out_dir / "manifest.json") if (shard_dirs[0] / "manifest.json").exists() else None
    write_summary(out_dir)
    return n
