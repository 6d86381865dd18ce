"""tau2's Results JSON in and out: ``moodbench export`` (opens in ``tau2 view``) and ``moodbench import``."""

from __future__ import annotations

import json
from pathlib import Path

from moodbench._util.errors import UsageError
from moodbench.results import Store
from moodbench.sim._tasks import load_domain_tasks
from moodbench.sim._tau2 import Results, SimulationRun


def export_tau2(run_dir: Path, out_file: Path, variant: str | None = None) -> int:
    """Write the run's final conversations (optionally of one variant) as tau2 Results JSON."""
    from tau2.data_model.simulation import AgentInfo, Info, UserInfo
    from tau2.environment.environment import EnvironmentInfo

    db = Path(run_dir) / "results.sqlite"
    if not db.is_file():  # opening a Store would create an empty run directory and export nothing
        raise UsageError(f"{run_dir} is not a run directory (no results.sqlite)")
    with Store(db, readonly=True) as store:
        config = store.get_meta("config") or {}
        if variant is not None:
            present = sorted({r.variant for r in store.records()})
            if variant not in present:
                raise UsageError(f"no variant {variant!r} in {run_dir}; its variants: {', '.join(present) or '(none)'}")
        sims, domains, task_ids = [], set(), set()
        for record in store.records(with_payload=True):
            if (variant is not None and record.variant != variant) or record.simulation is None:
                continue
            sim = SimulationRun.model_validate(record.simulation)
            sim.trial = record.trial
            sims.append(sim)
            domains.add(record.domain)
            task_ids.add((record.domain, record.task_id))
    tasks = []
    for d in sorted(domains):
        tasks += [t for t in load_domain_tasks(d, config.get("task_split")) if (d, t.id) in task_ids]
    domain = sorted(domains)[0] if domains else (config.get("domains") or ["mock"])[0]
    info = Info(
        git_commit="moodbench",
        num_trials=int(config.get("trials", 1)),
        max_steps=int(config.get("max_steps", 100)),
        max_errors=int(config.get("max_errors", 10)),
        user_info=UserInfo(implementation="moodbench_user", llm=config.get("user_model") or config.get("agent_model"),
                           llm_args={"variant": variant or "all"}),
        agent_info=AgentInfo(implementation="moodbench_agent", llm=config.get("agent_model"), llm_args=config.get("agent_args") or {}),
        environment_info=EnvironmentInfo(domain_name=domain, policy="", tool_defs=None),
        seed=config.get("seed"),
    )
    results = Results(info=info, tasks=tasks, simulations=sims)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(results.model_dump_json(indent=2))
    json.loads(out_file.read_text())  # fail loudly here rather than in tau2 view
    return len(sims)
