"""tau2's Results JSON in and out: ``moodbench export`` (opens in ``tau2 view``) and ``moodbench import``.

Import turns the Results files tau2 users have (``tau2 run`` output of any release, leaderboard submissions,
moodbench's own export) into a run directory, one or more files per variant (one per domain), so
``summary``, ``report`` and ``view`` work on them and tau2 users get paired, task-clustered error bars:
pairs form on (domain, task id, trial). The installed tau2's models check each simulation, its messages and
each task, but the file is read tolerantly: fields newer than the installed tau2 are ignored, a termination
reason it does not know (``infrastructure_error``, ``timeout``, ...) is kept as written, and a file without
``info``/``tasks`` (some submissions) takes its tasks from the installed tau2 domain it names. The conventions
are tau2's: success is ``|reward - 1| <= 1e-6``; a simulation tau2 marks ``infrastructure_error`` (or a skipped
sample) is left out of averages and pass^k; a simulation stored without a reward is a failure (reward 0), as
tau2's pass^k and the leaderboard count it. Per file, tau2's own metrics are computed from the raw file by
tau2's rule and stored, so ``summary`` can show whether moodbench reproduces them.

Records are built the way the runner builds them: the exit reason from tau2's termination reason and reward
through the same classifier, the simulator-fidelity flags recomputed from the messages (none for tau2's solo
mode, which has no simulated customer), the prompts reconstructed where the file says enough (tau2's own
agent and user simulator), and whether the conversation mentions its task's scenario facts (user ids, order
ids, phone numbers), so the report can flag files whose conversations do not match their task ids.
Everything is read and checked before anything is written, and the run directory is written next to its
final place and moved in, so a bad file leaves nothing behind.
Reading and checking one file is ``_results_file.py``; this module exports, and builds the run directory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from tau2.data_model.simulation import Results, SimulationRun

from moodbench._util.errors import UsageError
from moodbench.results import (
    ConversationRecord,
    Store,
    sha256,
    storable,
    write_summary,
)
from moodbench.results._lock import LOCK_NAME, RunLock, check_export_target, write_export
from moodbench.sim._results_file import _File, _read, task_facts, tau2_file_metrics
from moodbench.sim._tasks import load_domain_tasks

__all__ = ["ImportedRun", "export_tau2", "import_tau2", "parse_import_items", "task_facts", "tau2_file_metrics"]

VARIANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@+-]*$")


def _variant_models(records: list[ConversationRecord]) -> tuple[str | None, str | None]:
    """The agent and customer models of these records (the most common, when a variant mixes several)."""
    agents = Counter(r.agent_model for r in records if r.agent_model)
    users = Counter(r.user_model for r in records if r.user_model)
    return (agents.most_common(1)[0][0] if agents else None), (users.most_common(1)[0][0] if users else None)


def export_tau2(run_dir: Path, out_file: Path, variant: str | None = None, *, force: bool = False) -> int:
    """Write the run's final conversations (optionally of one variant) as tau2 Results JSON.

    ``agent_info.llm`` / ``user_info.llm`` are the models of the exported conversations themselves (each
    variant of an imported agent comparison has its own), not the run's first model. ``out_file`` must not
    exist unless ``force`` (see :func:`moodbench.results.write_export`).
    """
    from tau2.data_model.simulation import AgentInfo, Info, UserInfo
    from tau2.environment.environment import EnvironmentInfo

    db = Path(run_dir) / "results.sqlite"
    if not db.is_file():  # opening a Store would create an empty run directory and export nothing
        raise UsageError(f"{run_dir} is not a run directory (no results.sqlite)")
    check_export_target(Path(out_file), force=force)  # before the work: a refused target costs nothing
    with Store(db, readonly=True) as store:
        config = store.get_meta("config") or {}
        if variant is not None:
            present = sorted({r.variant for r in store.records()})
            if variant not in present:
                raise UsageError(f"no variant {variant!r} in {run_dir}; its variants: {', '.join(present) or '(none)'}")
        sims: list[Any] = []
        domains, task_ids = set(), set()
        chosen = []
        for record in store.records(with_payload=True):
            if (variant is not None and record.variant != variant) or record.simulation is None:
                continue
            chosen.append(record)
            try:
                sim: Any = SimulationRun.model_validate(record.simulation)
                sim.trial = record.trial
            except ValidationError:  # newer than this tau2 (e.g. infrastructure_error): kept as the file had it
                sim = {**record.simulation, "trial": record.trial}
            sims.append(sim)
            domains.add(record.domain)
            task_ids.add((record.domain, record.task_id))
    tasks = []
    for d in sorted(domains):
        tasks += [t for t in load_domain_tasks(d, config.get("task_split")) if (d, t.id) in task_ids]
    domain = sorted(domains)[0] if domains else (config.get("domains") or ["mock"])[0]
    agent_model, user_model = _variant_models(chosen)
    if not config.get("imports"):  # a moodbench run: its config names the models; an imported file that did not stays unnamed
        agent_model = agent_model or config.get("agent_model")
        user_model = user_model or config.get("user_model") or agent_model
    info = Info(
        git_commit="moodbench",
        num_trials=int(config.get("trials", 1)),
        max_steps=int(config.get("max_steps", 100)),
        max_errors=int(config.get("max_errors", 10)),
        user_info=UserInfo(implementation="moodbench_user", llm=user_model, llm_args={"variant": variant or "all"}),
        agent_info=AgentInfo(
            implementation=config.get("agent") or "moodbench_agent", llm=agent_model, llm_args=config.get("agent_args") or {}
        ),
        environment_info=EnvironmentInfo(domain_name=domain, policy="", tool_defs=None),
        seed=config.get("seed"),
    )
    valid = [s for s in sims if isinstance(s, SimulationRun)]
    data = json.loads(Results(info=info, tasks=tasks, simulations=valid).model_dump_json())
    data["simulations"] = [s.model_dump(mode="json") if isinstance(s, SimulationRun) else s for s in sims]
    text = json.dumps(data, indent=2)
    json.loads(text)  # fail loudly here rather than in tau2 view
    write_export(out_file, text, force=force)
    return len(sims)


# --------------------------------------------------------------------------- import


def parse_import_items(args: Sequence[str]) -> list[tuple[Path, str]]:
    """``FILE=VARIANT`` arguments -> (path, variant); the last ``=`` splits (paths may contain one)."""
    items = []
    for arg in args:
        path, sep, variant = arg.rpartition("=")
        if not sep or not path or not variant:
            raise UsageError(
                f"{arg!r} is not FILE=VARIANT; write e.g. results/control.json=control results/frustrated.json=frustration"
            )
        if not VARIANT_NAME.match(variant):
            raise UsageError(
                f"{arg!r}: variant name {variant!r} may use letters, digits and _ . : @ + - (e.g. frustration:severe)"
            )
        items.append((Path(path), variant))
    return items


@dataclass
class ImportedRun:
    """What :func:`import_tau2` wrote: per variant, the simulations imported and their domains."""

    run_dir: Path
    counts: dict[str, int]
    domains: list[str]
    trials: int
    prompts: int
    notes: list[str] = field(default_factory=list)


def _existing(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any], set[tuple[str, str]]]:
    """(config, plan, {(variant, domain)}) of an existing run directory; empty for a new one."""
    if not run_dir.exists():
        return {}, {}, set()
    if not run_dir.is_dir():
        raise UsageError(f"--out {run_dir} is a file; give a directory for the run")
    if not (run_dir / "results.sqlite").is_file():
        if any(p.name != LOCK_NAME for p in run_dir.iterdir()):
            raise UsageError(
                f"--out {run_dir} exists and is not a run directory (no results.sqlite); give a new or empty directory"
            )
        return {}, {}, set()
    with Store(run_dir / "results.sqlite", readonly=True) as store:
        config, plan = store.get_meta("config") or {}, store.get_meta("plan") or {}
        present = {(r.variant, r.domain) for r in store.records()}
    return config, plan, present


def _trials_found(records: list[ConversationRecord]) -> int:
    per: Counter[tuple[str, str, str]] = Counter((r.variant, r.domain, r.task_id) for r in records)
    return max(per.values(), default=1)


def _meta(
    config: dict[str, Any], plan: dict[str, Any], files: list[_File], emotions: dict[str, str] | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    variants = list(plan.get("variants") or config.get("variants") or [])
    domains = list(plan.get("domains") or config.get("domains") or [])
    planned: dict[str, dict[str, int]] = {d: dict(v) for d, v in (plan.get("planned") or {}).items()}
    imports = list(config.get("imports") or [])
    for f in files:
        if f.variant not in variants:
            variants.append(f.variant)
        for r, _ in f.records:
            if r.domain not in domains:
                domains.append(r.domain)
            planned.setdefault(r.domain, {}).setdefault(f.variant, 0)
            planned[r.domain][f.variant] += 1
        s = f.source
        imports.append(
            {
                "file": str(f.path),
                "variant": f.variant,
                "sha256": f.sha256,
                "simulations": len(f.records),
                "domain": s.domain,
                "agent_model": s.agent_model,
                "user_model": s.user_model,
                "agent_implementation": s.agent_impl,
                "user_implementation": s.user_impl,
                "solo": s.solo,
                "tau2_git_commit": s.git_commit,
                "num_trials": s.num_trials,
                "trials_found": _trials_found([r for r, _ in f.records]),
                "tau2_metrics": f.tau2_metrics,
            }
        )
    trials = max([int(config.get("trials") or 0)] + [_trials_found([r for r, _ in f.records]) for f in files])
    first = files[0].source
    declared = dict(config.get("emotions") or {})
    if emotions is not None:
        declared.update(emotions)
    new_config = {
        "source": config.get("source", "tau2 import"),
        "agent_model": config.get("agent_model", first.agent_model),
        "user_model": config.get("user_model", first.user_model),
        "max_steps": config.get("max_steps", first.max_steps),
        "max_errors": config.get("max_errors", first.max_errors),
        "seed": config.get("seed", first.seed),
        **{k: v for k, v in config.items() if k not in ("variants", "domains", "trials", "imports", "emotions")},
        "variants": variants,
        "domains": domains,
        "trials": max(1, trials),
        "imports": imports,
        "emotions": declared,
    }
    cells = sum(len(f.records) for f in files)
    new_plan = {
        **plan,
        "planned": planned,
        "variants": variants,
        "domains": domains,
        "cells": int(plan.get("cells", 0)) + cells,
        "all_cells": int(plan.get("all_cells", 0)) + cells,
    }
    return new_config, new_plan


def _declared_emotions(variants: Sequence[str]) -> dict[str, str]:
    """``--emotions``: each variant name must be an emotion spec of moodbench's catalog (or ``control``)."""
    from moodbench.emotions import UnknownVariantError, load_catalog

    catalog = load_catalog()
    out: dict[str, str] = {}
    for v in dict.fromkeys(variants):
        try:
            spec = catalog.parse(v)
        except UnknownVariantError as exc:
            raise UsageError(
                f"--emotions: variant {v!r} is not an emotion spec of moodbench's catalog ({exc}); import it "
                "without --emotions to compare it as a plain variant"
            ) from None
        if not spec.is_control:
            out[v] = spec.canonical
    return out


def import_tau2(run_dir: Path, items: Sequence[tuple[Path, str]], *, emotions: bool = False) -> ImportedRun:
    """Import tau2 Results files into ``run_dir`` (new, empty, or an existing run): one file per variant and domain.

    A variant may span several files of different domains (tau2 writes one file per domain). ``emotions``
    declares that the variant names are emotion specs whose customers were given those emotions (the report
    then runs the manipulation check on them); without it, imported variants are plain variants (agents,
    prompts, settings) and the report compares each with the baseline without speaking of emotions.

    Raises :class:`UsageError` (exit 2) naming the file and the problem for a file that is not tau2 Results, a
    simulation without a task id or whose task is unknown, two files for one variant and domain, or a variant
    and domain already in ``run_dir``. All files are read and checked first; the directory is then written
    beside its target and moved into place.
    """
    run_dir = Path(run_dir)
    if not items:
        raise UsageError("nothing to import: give FILE=VARIANT, e.g. results/control.json=control results/angry.json=anger")
    paths = [Path(p).resolve() for p, _ in items]
    twice = sorted({str(p) for p in paths if paths.count(p) > 1})
    if twice:
        raise UsageError(f"{twice[0]} is named more than once; each file is imported once (FILE=VARIANT)")
    declared = _declared_emotions([v for _, v in items]) if emotions else None
    _existing(run_dir)  # a file or a foreign directory is refused before anything is created
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(run_dir, create=False, what="moodbench import") as lock:  # no run may write it meanwhile
        try:
            files, new_config, new_plan, prompts_seen = _import_locked(run_dir, items, declared)
        except BaseException:
            if created:
                lock.remove_dir_if_empty()
            raise
    counts: dict[str, int] = defaultdict(int)
    for f in files:
        counts[f.variant] += len(f.records)
    return ImportedRun(
        run_dir=run_dir,
        counts=dict(counts),
        domains=list(new_plan["domains"]),
        trials=int(new_config["trials"]),
        prompts=len(prompts_seen),
        notes=[n for f in files for n in f.notes],
    )


def _import_locked(
    run_dir: Path, items: Sequence[tuple[Path, str]], declared: dict[str, str] | None
) -> tuple[list[_File], dict[str, Any], dict[str, Any], set[str]]:
    """The import proper, run while holding ``run_dir``'s lock: read and check every file, build the new
    run directory beside it and swap it in."""
    config, plan, present = _existing(run_dir)
    files = [_read(Path(p), v) for p, v in items]
    by_cell: dict[tuple[str, str], list[_File]] = defaultdict(list)
    for f in files:
        by_cell[(f.variant, f.source.domain)].append(f)
    for (v, d), fs in by_cell.items():
        if len(fs) > 1:
            raise UsageError(
                f"variant {v!r} is given two files of domain {d!r} ({fs[0].path}, {fs[1].path}); a variant takes one "
                "file per domain: merge them with tau2 first or import one as another variant"
            )
        if (v, d) in present:
            raise UsageError(
                f"{fs[0].path}: variant {v!r} already has {d!r} conversations in {run_dir}; import this file as another "
                f"variant ({fs[0].path}={v}-2) or into a new --out"
            )
    new_config, new_plan = _meta(config, plan, files, declared)

    tmp = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.import-", dir=run_dir.parent))
    stage = tmp / "run"
    prompts_seen: set[str] = set()
    try:
        if (run_dir / "results.sqlite").is_file():
            shutil.copytree(run_dir, stage, symlinks=True)  # a link is copied as a link, never followed
        else:
            stage.mkdir()
        with Store(stage / "results.sqlite") as store:
            store.set_meta("config", new_config)
            store.set_meta("plan", new_plan)
            for f in files:
                for record, prompts in f.records:
                    store.insert(storable(record), prompts)
                    prompts_seen.update(sha256(t) for t in prompts.values())
        write_summary(stage)
        old = tmp / "old"
        os.replace(run_dir, old)
        try:
            os.replace(stage, run_dir)
        except OSError:
            os.replace(old, run_dir)  # put the original back before reporting the failure
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return files, new_config, new_plan, prompts_seen
