"""tau2's domains and tasks, as moodbench asks for them (unknown names become usage errors)."""

from __future__ import annotations

from moodbench._util.errors import UsageError
from moodbench.sim._tau2 import Task, load_tasks, registry


def known_domains() -> list[str]:
    return list(registry.get_domains())


def load_domain_tasks(domain: str, split: str | None = None) -> list[Task]:
    """The tasks of ``domain`` (optionally one tau2 task split), in tau2's order."""
    if domain not in known_domains():
        raise UsageError(f"unknown domain {domain!r}; valid domains: {', '.join(known_domains())} (a domain of your own is "
                         "registered by a plugin module: name it with --plugin MODULE)")
    try:
        return list(load_tasks(domain, split) if split else load_tasks(domain))
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
