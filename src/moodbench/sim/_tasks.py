"""tau2's domains and tasks, as moodbench asks for them (unknown names become usage errors).

What only reads a task (``scenario_of``, ``task_needs_agent_tool``) needs tau2's data models, not its
registry, so reading a Results file stays cheap."""

from __future__ import annotations

import importlib

from tau2.data_model.tasks import Task

from moodbench._util.errors import UsageError
from moodbench.judges import Scenario, is_write


def known_domains() -> list[str]:
    from moodbench.sim._tau2 import registry  # tau2's registry imports litellm (~5 s): only when asked

    return list(registry.get_domains())


# tau2's own domains: the registry's task loader for each is its domain module's ``get_tasks`` (tau2/registry.py
# registers exactly those; tests/test_startup.py checks it against the installed tau2), which is read here
# without importing the registry: the registry imports litellm (~2.5 s of CPU), and reading a Results file
# that carries no tasks (leaderboard submissions) needs only the tasks.
_TAU2_DOMAINS = ("airline", "mock", "retail", "telecom")


def load_domain_tasks(domain: str, split: str | None = None) -> list[Task]:
    """The tasks of ``domain`` (optionally one tau2 task split), in tau2's order."""
    if domain in _TAU2_DOMAINS:
        loader = importlib.import_module(f"tau2.domains.{domain}.environment").get_tasks
    elif domain not in known_domains():
        raise UsageError(
            f"unknown domain {domain!r}; valid domains: {', '.join(known_domains())} (a domain of your own is "
            "registered by a plugin module: name it with --plugin MODULE)"
        )
    else:
        from moodbench.sim._tau2 import registry

        loader = registry.get_tasks_loader(domain)
    try:
        return list(loader(task_split_name=split))  # what tau2.run.load_tasks calls
    except Exception as exc:  # noqa: BLE001 - tau2 raises assorted errors for bad splits
        raise UsageError(f"cannot load tasks of {domain!r} (split {split!r}): {exc}") from None


def task_needs_agent_tool(task: Task) -> bool:
    """The task's gold actions include a call the agent must make."""
    crit = task.evaluation_criteria
    return bool(crit and crit.actions and any(a.requestor == "assistant" for a in crit.actions))


def find_task(domain: str, task_id: str | None, split: str | None = None) -> Task:
    """One task by id (the domain's first when ``task_id`` is None)."""
    tasks = load_domain_tasks(domain, split)
    if task_id is None:
        return tasks[0]
    for t in tasks:
        if t.id == task_id:
            return t
    raise UsageError(f"unknown task id {task_id!r} in domain {domain!r}; valid ids: {', '.join(t.id for t in tasks[:60])}")


def scenario_of(task: Task) -> Scenario:
    """What the fidelity rules need to know about a task's customer."""
    scenario = task.user_scenario.instructions
    if isinstance(scenario, str):
        reason = scenario
    else:
        text = " ".join(str(getattr(scenario, f, "") or "") for f in ("reason_for_call", "known_info", "task_instructions"))
        reason = str(getattr(scenario, "reason_for_call", None) or text)
    gold = task.evaluation_criteria.actions if task.evaluation_criteria and task.evaluation_criteria.actions else []
    return Scenario(reason_for_call=reason, needs_agent_write=any(a.requestor == "assistant" and is_write(a.name) for a in gold))
