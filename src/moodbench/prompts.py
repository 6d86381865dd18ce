"""The exact prompts a variant produces, built by the same classes a run uses (for ``variants --show``)."""

from __future__ import annotations

from moodbench.config import ConfigError
from moodbench.llm import ModelClient, ModelSpec
from moodbench.plan import load_domain_tasks


def user_prompt_for(domain: str, task_id: str | None, persona_block: str | None) -> str:
    from moodbench.conversation import USER_NAME
    from moodbench._tau2 import registry

    tasks = load_domain_tasks(domain, None)
    by_id = {t.id: t for t in tasks}
    if task_id is None:
        task = tasks[0]
    elif task_id in by_id:
        task = by_id[task_id]
    else:
        raise ConfigError(f"unknown task id {task_id!r} in domain {domain!r}; valid ids: {', '.join(list(by_id)[:60])}")
    env = registry.get_env_constructor(domain)()
    try:
        user_tools = env.get_user_tools()
    except Exception:  # noqa: BLE001
        user_tools = None
    user = registry.get_user_constructor(USER_NAME)(
        tools=user_tools or None, instructions=str(task.user_scenario), persona_block=persona_block,
        client=ModelClient(ModelSpec(model="unused")),
    )
    return user.system_prompt
