"""The stages of ``moodbench run --sequential``: run a block of tasks, take a look, stop what is decided.

Each stage runs every trial of its tasks for the baseline and for every variant still undecided (a decided
variant's arm stops: its repeated p-value stays valid whatever stopped it, see ``analysis/_sequential.py``).
After a stage the looks are replayed from the stored records, so the verdicts are a function of the data and
the stored plan only: a resumed run re-takes the same looks and continues at the first stage that is not
complete; the plan is stored first and a resume with another layout is refused by the config identity (tasks,
variants, looks and smallest effect are part of it). Every look is an ``sequential_look`` event; the store's
``sequential`` meta and the manifest hold the plan, the layout and every look's decisions.
"""

from __future__ import annotations

from collections.abc import Callable
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
    from moodbench.analysis import SEQUENTIAL_META, plan_run, run_looks, sequential_state

    config = plan.config
    baseline = baseline_of(plan.variants)
    others = [v for v in plan.variants if v != baseline]
    try:
        seq, stage_of = plan_run(
            _tasks_by_domain(plan), plan.variants, baseline, config.trials, looks=config.looks, smallest_effect=config.smallest_effect
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
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
                "sequential_stopped", look=look, of=seq.looks, early=state["stopped_early"], variants=state["variant_stopped_at_look"]
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
