"""Combining shard run directories (same experiment, different ``--shard``) into one."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path

from moodbench._util.diff import dict_diff
from moodbench.results._lock import RunLock
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
        raise StoreError(
            "the run directories are shards of different splits ("
            + ", ".join(f"{d}: {s or 'unsharded'}" for d, s in zip(dirs, shards))
            + "); merge shards of one --shard I/N split"
        )
    for d, s in zip(dirs, shards):
        key = s or "unsharded"
        if key in seen:
            raise StoreError(f"{d} and {seen[key]} are the same shard ({key}); each shard may be merged once")
        seen[key] = d


def _read_own(path: Path) -> bytes | None:
    """A file of a shard's run directory, never through a symlink (which could point anywhere)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreError(
            f"{path} cannot be read ({exc.strerror or exc}); moodbench reads no symlink in a run directory"
        ) from None
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def _check_out(out_dir: Path) -> None:
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise StoreError(f"{out_dir} is not a directory; merge into a new directory")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        what = "already holds a run" if (out_dir / "results.sqlite").exists() else "is not empty"
        raise StoreError(f"{out_dir} {what}; merge into a new directory (nothing was changed)")


def merge_runs(out_dir: Path, shard_dirs: list[Path]) -> int:
    """Copy every record (failed attempts too) and prompt of the shards into a new run directory.

    ``out_dir`` must be new or empty. The merged run is built in a staging directory beside it (holding
    its own run lock) and moved into place with one ``rename`` at the end, so a merge killed at any
    moment leaves no partial run that looks real (only a ``.NAME.merge-*`` folder to delete), and a
    directory that became non-empty meanwhile (another command wrote it) is refused, not overwritten.
    """
    out_dir = Path(out_dir)
    configs, plans, sequential = [], [], []
    for d in shard_dirs:
        if not (d / "results.sqlite").is_file():
            raise StoreError(f"{d} is not a run directory (no results.sqlite)")
        with Store(d / "results.sqlite", readonly=True) as s:
            configs.append(s.get_meta("config") or {})
            plans.append(s.get_meta("plan") or {})
            sequential.append(s.get_meta("sequential"))
    layouts = {json.dumps([(q or {}).get(k) for k in ("plan", "stage_of")], sort_keys=True) for q in sequential}
    if any(sequential) and len(shard_dirs) > 1 and (len(layouts) > 1 or not all(c.get("shard") for c in configs)):
        raise StoreError(
            "a run --sequential decided its looks on its own conversations and cannot be merged with other runs, only "
            "with the other shards of its own --sequential --shard split; report the runs side by side instead "
            "(moodbench report RUN1 RUN2 ...)"
        )
    _check_shards(shard_dirs, [c.get("shard") for c in configs])
    base = {k: v for k, v in configs[0].items() if k != "shard"}
    for d, c in zip(shard_dirs[1:], configs[1:]):
        diff = dict_diff(base, {k: v for k, v in c.items() if k != "shard"})
        if diff:
            raise StoreError(f"{d} is a different experiment than {shard_dirs[0]}:\n" + "\n".join(diff))
    _check_out(out_dir)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.merge-", dir=out_dir.parent))
    except OSError as exc:
        raise StoreError(f"cannot write beside {out_dir}: {exc.strerror or exc}; merge into a writable directory") from None
    stage = tmp / "run"
    stage.mkdir()
    n = 0
    try:
        with RunLock(stage, create=False, what="moodbench merge"):
            with Store(stage / "results.sqlite") as target:
                planned: dict[str, dict[str, int]] = {}
                for p in plans:
                    for dom, per in p.get("planned", {}).items():
                        for v, k in per.items():
                            planned.setdefault(dom, {}).setdefault(v, 0)
                            planned[dom][v] += k
                target.set_meta("config", {**base, "shard": None})
                target.set_meta("plan", {**plans[0], "planned": planned, "cells": sum(p.get("cells", 0) for p in plans)})
                if sequential[0] and len(shard_dirs) == 1:  # one sequential run copied: its plan, layout and looks
                    target.set_meta("sequential", sequential[0])
                elif sequential[0]:  # shards of one sequential run: the plan and layout; the report replays the looks
                    target.set_meta("sequential", {**sequential[0], "sharded": True, "looks": [], "looks_run": None})
                for d in shard_dirs:
                    with Store(d / "results.sqlite", readonly=True) as src:
                        for record in src.records(final_only=False, with_payload=True):
                            prompts = {
                                role: text
                                for role in ("agent", "user")
                                if (text := src.prompt(getattr(record, f"{role}_prompt_sha256") or ""))
                            }
                            n += int(target.insert(record, prompts))
                target.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            with (stage / "events.jsonl").open("ab") as fh:
                for d in shard_dirs:
                    fh.write(_read_own(d / "events.jsonl") or b"")
            manifest = _read_own(shard_dirs[0] / "manifest.json")
            if manifest is not None:
                (stage / "manifest.json").write_bytes(manifest)
            write_summary(stage)
        _check_out(out_dir)
        try:
            os.rename(stage, out_dir)  # atomic; onto an existing directory only when it is still empty
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise StoreError(
                    f"{out_dir} was written by another command during the merge; nothing was changed. Merge into a new directory"
                ) from None
            raise StoreError(f"cannot move the merged run into {out_dir}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return n
