"""An example moodbench plugin: a small IT-helpdesk domain registered in tau2's registry.

Importing this module is the whole plugin: it registers the domain ``helpdesk`` (its environment
constructor) and its task set under the same name, with tau2's public registry. Then
``moodbench run --plugin helpdesk --domain helpdesk ...`` (with this folder's parent on PYTHONPATH)
runs it like any built-in domain; so do ``moodbench variants --show``, ``probe`` and ``export``.
"""

from tau2.registry import registry

from helpdesk.domain import get_environment, get_tasks, get_tasks_split

DOMAIN = "helpdesk"

if DOMAIN not in registry.get_domains():  # a module is imported once per process; this guards reloads
    registry.register_domain(get_environment, DOMAIN)
    registry.register_tasks(get_tasks, DOMAIN, get_task_splits=get_tasks_split)
