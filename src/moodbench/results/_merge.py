"""Combining shard run directories (same experiment, different ``--shard``) into one."""

from __future__ import annotations

import shutil
from pathlib import Path

from moodbench._util.diff import dict_diff
from moodbench.results._store import Store, StoreError
from moodbench.results._summary import write_summary


def _check_shards(dirs: list[Path], shards: list[str | None]) -> None:
    """Refuse inputs whose cells overlap: the same shard twice, or shards of different splits.

    Overlapping cells would be dropped silently by the store's one-finished-row rule, and the
    merged plan would count them twice.
    """
    seen: dict[str, Path] = {}
    counts = {s.split("/")[1] for s in shards if s}
    if len(counts) > 1:
        raise StoreError("the run directories are shards of different splits (" + ", ".join(
            f"{d}: {s or 'unsharded'}" for d, s in zip(dirs, shards)) + "); merge shards of one --shard I/N split")
    for d, s in zip(dirs, shards):
        key = s or "unsharded"
        if key in seen:
            raise StoreError(f"{d} and {seen[key]} are the same shard ({key}); each shard may be merged once")
        seen[key] = d


def merge_runs(out_dir: Path, shard_dirs: list[Path]) -> int:
    """Copy every record (failed attempts too) and prompt of the shards into a new run directory."""
    configs, plans = [], []
    for d in shard_dirs:
        if not (d / "results.sqlite").is_file():
            raise StoreError(f"{d} is not a run directory (no results.sqlite)")
        with Store(d / "results.sqlite", readonly=True) as s:
            configs.append(s.get_meta("config") or {})
            plans.append(s.get_meta("plan") or {})
    _check_shards(shard_dirs, [c.get("shard") for c in configs])
    base = {k: v for k, v in configs[0].items() if k != "shard"}
    for d, c in zip(shard_dirs[1:], configs[1:]):
        diff = dict_diff(base, {k: v for k, v in c.items() if k != "shard"})
        if diff:
            raise StoreError(f"{d} is a different experiment than {shard_dirs[0]}:\n" + "\n".join(diff))
    if (out_dir / "results.sqlite").exists():
        raise StoreError(f"{out_dir} already holds a run; merge into a new directory")
    out_dir.mkdir(parents=True, exist_ok=True)
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
            with Store(d / "results.sqlite", readonly=True) as src:
                for record in src.records(final_only=False, with_payload=True):
                    prompts = {role: text for role in ("agent", "user")
                               if (text := src.prompt(getattr(record, f"{role}_prompt_sha256") or ""))}
                    n += int(target.insert(record, prompts))
    with (out_dir / "events.jsonl").open("a") as fh:
        for d in shard_dirs:
            ev = d / "events.jsonl"
            if ev.exists():
                fh.write(ev.read_text())
    if (shard_dirs[0] / "manifest.json").exists():
        shutil.copy(shard_dirs[0] / "manifest.json", out_dir / "manifest.json")
    write_summary(out_dir)
    return n
