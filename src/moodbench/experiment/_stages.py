"""The stages of ``moodbench run --sequential``: run a block of tasks, take a look, stop what is decided.

Each stage runs every trial of its tasks for the baseline and for every variant still undecided (a decided
variant's arm stops: its repeated p-value stays valid whatever stopped it, see ``analysis/_sequential.py``).
After a stage the looks are replayed from the stored records, so the verdicts are a function of the data and
the stored plan only: a resumed run re-takes the same looks and continues at the first stage that is not
complete; the plan is stored first and a resume with another layout is refused by the config identity (tasks,
variants, looks and smallest effect are part of it). Every look is an ``sequential_look`` event; the store's
``sequential`` meta and the manifest hold the plan, the layout and every look's decisions.

Shards (``--shard I/N``) cannot look on their own share. A shard runs its share of one stage per invocation and
stops; ``moodbench merge NEW SHARD_DIRS...`` gathers the stage, and every shard run again with ``--looks-from NEW``
replays the looks on the merged records (``complete_looks``) and runs its share of the next stage for the variants
still undecided, or stops when the merged looks decided everything. The merged run's report replays the same looks.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moodbench._util.exitcodes import ExitCode
from moodbench.experiment._config import ConfigError

if TYPE_CHECKING:
    from moodbench.experiment._loop import LoopOutcome
    from moodbench.experiment._plan import Plan
    from moodbench.results import Cell, EventLog, Store

__all__ = ["baseline_of", "run_stages"]


def baseline_of(variants: list[str]) -> str:
    """The comparisons' baseline: ``control`` when the run has it (the report's default), else the first variant."""
    return "control" if "control" in variants else variants[0]


def _tasks_by_domain(plan: Plan) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for domain, tid in plan.tasks:  # plan order
        out.setdefault(domain, []).append(tid)
    return out


def run_stages(
    plan: Plan,
    store: Store,
    events: EventLog,
    run_cells: Callable[[list[Cell]], LoopOutcome],
    manifest: Callable[..., None],
    say: Callable[[str], None],
) -> LoopOutcome | None:
    """Run the stages in order until every comparison is decided; ``run_cells`` runs one stage's missing cells.

    Returns the last stage's loop outcome (``None`` when nothing had to run). A stage that ends early (interrupt,
    endpoints down) takes no look: its outcome is returned and a resume continues it."""
    from moodbench.analysis import SEQUENTIAL_META, plan_run, run_looks, sequential_state, state_plan

    config = plan.config
    baseline = baseline_of(plan.variants)
    others = [v for v in plan.variants if v != baseline]
    try:
        seq, stage_of = plan_run(
            _tasks_by_domain(plan),
            plan.variants,
            baseline,
            config.trials,
            looks=config.looks,
            smallest_effect=config.smallest_effect,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    stored = store.get_meta(SEQUENTIAL_META)
    if isinstance(stored, dict) and isinstance(stored.get("plan"), dict):
        seq = state_plan(stored)[0]  # a resumed run keeps the plan it started with (its futility rule included)
    if config.shard:
        return _run_shard(plan, store, events, run_cells, manifest, say, (seq, stage_of, baseline, others))
    state = sequential_state(seq, stage_of, baseline, others, None)
    store.set_meta(SEQUENTIAL_META, state)
    outcome: LoopOutcome | None = None
    active = set(plan.variants)
    for look in range(1, seq.looks + 1):
        finished = store.finished_keys()
        cells = [
            c for c in plan.cells if stage_of[(c.domain, c.task_id)] == look and c.variant in active and c.key not in finished
        ]
        if cells:
            say(f"moodbench: stage {look} of {seq.looks}: {len(cells)} conversation(s) ({', '.join(sorted(active))})")
            outcome = run_cells(cells)
            if outcome.exit_code != ExitCode.OK:
                return outcome
        result = run_looks(store.records(with_payload=False), baseline, others, seq, stage_of, look)
        state = sequential_state(seq, stage_of, baseline, others, result)
        store.set_meta(SEQUENTIAL_META, state)
        manifest(sequential={k: v for k, v in state.items() if k != "stage_of"})
        last = state["looks"][-1]
        events.emit("sequential_look", look=look, of=seq.looks, ran=len(cells), decisions=last["decisions"])
        say(_describe(last, seq.looks))
        if state["stopped"]:
            events.emit(
                "sequential_stopped",
                look=look,
                of=seq.looks,
                early=state["stopped_early"],
                variants=state["variant_stopped_at_look"],
            )
            break
        active = {baseline} | {d["variant"] for d in last["decisions"] if d["status"] == "continue"}
    return outcome


def _describe(look: dict[str, Any], of: int) -> str:
    parts = []
    for d in look["decisions"]:
        what = {"claimed": f"claimed {d['claim']}", "futile": "ruled out (futility)", "final": "no claim (last look)"}.get(
            d["status"], "continues"
        )
        p = "" if d["p_repeated"] is None else f", sequential p {d['p_repeated']:.3g}"
        parts.append(f"{d['variant']}: {what}{p}")
    return f"moodbench: look {look['look']} of {of}: " + "; ".join(parts)


def _run_shard(
    plan: Plan,
    store: Store,
    events: EventLog,
    run_cells: Callable[[list[Cell]], LoopOutcome],
    manifest: Callable[..., None],
    say: Callable[[str], None],
    layout: tuple[Any, dict[tuple[str, str], int], str, list[str]],
) -> LoopOutcome | None:
    """One shard's share of the next stage the merged run (``--looks-from``) has not finished."""
    from moodbench.analysis import SEQUENTIAL_META, complete_looks, run_looks, sequential_state
    from moodbench.results import Store as ResultStore

    seq, stage_of, baseline, others = layout
    config = plan.config
    records: list[Any] = []
    if config.looks_from is not None:
        db = Path(config.looks_from) / "results.sqlite"
        if not db.is_file():
            raise ConfigError(f"--looks-from {config.looks_from} is not a run directory (no results.sqlite); name the merged run")
        with ResultStore(db, readonly=True) as merged:
            theirs = {k: v for k, v in (merged.get_meta("config") or {}).items() if k != "shard"}
            ours = {k: v for k, v in config.identity().items() if k != "shard"}
            if theirs != ours:
                raise ConfigError(
                    f"--looks-from {config.looks_from} holds another experiment than this shard; name the merge of its shards"
                )
            records = list(merged.records(with_payload=False))
    done = complete_looks(records, baseline, others, seq, stage_of, config.trials)
    result = run_looks(records, baseline, others, seq, stage_of, done) if done else None
    state = sequential_state(seq, stage_of, baseline, others, result)
    if result is not None and (result.decided or done == seq.looks):
        store.set_meta(SEQUENTIAL_META, {**state, "sharded": True})
        manifest(sequential={k: v for k, v in state.items() if k != "stage_of"})
        events.emit(
            "sequential_stopped", look=done, of=seq.looks, early=state["stopped_early"], variants=state["variant_stopped_at_look"]
        )
        say(_describe(state["looks"][-1], seq.looks) + " (merged looks): nothing left for this shard")
        return None
    active = {baseline} | (set(others) if result is None else {v for v, d in zip(others, result.final) if d.status == "continue"})
    stage = done + 1
    finished = store.finished_keys()
    cells = [c for c in plan.cells if stage_of[(c.domain, c.task_id)] == stage and c.variant in active and c.key not in finished]
    store.set_meta(SEQUENTIAL_META, {**state, "sharded": True, "shard_stage": stage})
    manifest(sequential={k: v for k, v in state.items() if k != "stage_of"})
    outcome = run_cells(cells) if cells else None
    if outcome is not None and outcome.exit_code != ExitCode.OK:
        return outcome
    events.emit("sequential_shard_stage", stage=stage, of=seq.looks, shard=config.shard, ran=len(cells), variants=sorted(active))
    say(
        f"moodbench: shard {config.shard}: its share of stage {stage} of {seq.looks} is stored ({len(cells)} new); merge every "
        "shard (moodbench merge NEW SHARD_DIR...) and run each shard again with --looks-from NEW"
    )
    return outcome
