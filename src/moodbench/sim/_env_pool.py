"""tau2 environments built from per-process templates instead of from the data files every time.

tau2's domain constructors (``get_environment``) read and validate the whole database from disk on
every call (~40 ms of CPU for retail, ~110 ms for airline) and its toolkits rebuild every tool's
JSON schema whenever ``get_tools()`` is asked. A run builds thousands of identical environments, so
this module loads each domain once per process and then:

* hands each conversation a fresh database validated from the template's dump (retail ~20 ms),
  through the domain constructor's own ``db=`` / ``user_db=`` parameters, so tau2 still builds the
  environment, its toolkits and its policy;
* keeps one list of tool objects per domain, built from an environment of its own (never from the
  template), because the agent and user only read tool schemas; tools run through the
  conversation's environment.

It also keeps what :mod:`._reward` needs to compare databases record by record: the
template's per-record JSON. Nothing in tau2 is patched.
"""

from __future__ import annotations

import gc
import inspect
import json
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from tau2.environment.environment import Environment
from tau2.utils.utils import get_dict_hash

from moodbench.sim._tau2 import registry


def canonical(value: Any) -> str:
    """tau2's canonical JSON of a dumped value (the string ``get_dict_hash`` hashes), for one record."""
    return json.dumps(value, sort_keys=True, default=str)


@dataclass
class DBTemplate:
    """One database (agent- or user-side) of a domain as loaded from tau2's data files.

    ``record_fields`` are the top-level fields that are ``dict[str, BaseModel]`` (users, orders,
    reservations...). When every field is such a dict and pydantic serialises the database as the
    composition of its records, two databases have equal tau2 hashes exactly when, for every key,
    their records have equal canonical JSON; that lets scoring look only at records that changed.
    ``record_json`` holds each template record's pydantic JSON, the cheap change detector.
    """

    model_cls: type[BaseModel]
    dump: dict[str, Any]
    exact_hash: str
    record_fields: tuple[str, ...] | None
    record_json: dict[str, dict[str, str]] = field(default_factory=dict)
    _adapters: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, db: BaseModel) -> DBTemplate:
        dump = db.model_dump()
        fields = _record_fields(db, dump)
        record_json = {f: {k: r.model_dump_json() for k, r in getattr(db, f).items()} for f in fields} if fields else {}
        return cls(model_cls=type(db), dump=dump, exact_hash=get_dict_hash(dump), record_fields=fields, record_json=record_json)

    def copy(self) -> BaseModel:
        """A new, independent database equal to the template (validated from its dump)."""
        return self.model_cls.model_validate(self.dump)

    def changed_records(self, db: BaseModel) -> dict[tuple[str, str], BaseModel | None]:
        """Records of ``db`` whose pydantic JSON differs from the template's (``None``: key removed).

        Only for record-structured databases (``record_fields`` set).
        """
        assert self.record_fields is not None
        changed: dict[tuple[str, str], BaseModel | None] = {}
        for f in self.record_fields:
            current: dict[str, BaseModel] = getattr(db, f)
            template = self.record_json[f]
            for key, record in current.items():
                if record.model_dump_json() != template.get(key):
                    changed[(f, key)] = record
            if len(current) != len(template) or any(k not in current for k in template):
                for key in template:
                    if key not in current:
                        changed[(f, key)] = None
        return changed

    def restore(self, db: BaseModel, changed: dict[tuple[str, str], BaseModel | None] | None = None) -> None:
        """Put a record-structured database back into the template's state, in place.

        Only the records that differ are rebuilt (validated from the template's dump), and each
        field's key order is made the template's again, so the database is indistinguishable
        from a fresh copy at the cost of the change detection (a few ms) instead of a copy.
        """
        assert self.record_fields is not None
        if changed is None:
            changed = self.changed_records(db)
        from pydantic import TypeAdapter

        for (f, key), _ in changed.items():
            current: dict[str, Any] = getattr(db, f)
            original = self.dump[f].get(key)
            if original is None:
                current.pop(key, None)
            else:
                adapter = self._adapters.get(f)
                if adapter is None:
                    adapter = self._adapters[f] = TypeAdapter(self.model_cls.model_fields[f].annotation)  # type: ignore[arg-type]
                current[key] = adapter.validate_python({key: original})[key]
        for f in self.record_fields:
            current = getattr(db, f)
            if list(current) != list(self.dump[f]):
                ordered = {k: current[k] for k in self.dump[f]}
                current.clear()
                current.update(ordered)

    def template_canonical(self, f: str, key: str) -> str | None:
        value = self.dump[f].get(key)
        return None if value is None else canonical(value)


def _record_fields(db: BaseModel, dump: dict[str, Any]) -> tuple[str, ...] | None:
    """The DB's fields if all are dicts of records and its dump composes from theirs, else None."""
    cls = type(db)
    decorators = cls.__pydantic_decorators__
    if decorators.model_serializers or decorators.field_serializers or db.__pydantic_extra__:
        return None
    fields = tuple(cls.model_fields)
    for f in fields:
        value = getattr(db, f)
        if not isinstance(value, dict) or not all(isinstance(r, BaseModel) for r in value.values()):
            return None
        if dump[f] != {k: r.model_dump() for k, r in value.items()}:
            return None
    return fields


@dataclass
class DomainTemplate:
    """Everything about one domain that is the same for all its conversations in this process."""

    domain: str
    constructor: Callable[..., Environment]
    agent_db: DBTemplate | None
    user_db: DBTemplate | None
    takes_db: bool
    takes_user_db: bool
    tools: list[Any]
    user_tools: list[Any] | None
    _pool: list[BaseModel] = field(default_factory=list)
    _lent: weakref.WeakKeyDictionary[Environment, BaseModel] = field(default_factory=weakref.WeakKeyDictionary)
    _final: weakref.WeakKeyDictionary[Environment, Any] = field(default_factory=weakref.WeakKeyDictionary)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def poolable(self) -> bool:
        return self.takes_db and self.agent_db is not None and self.agent_db.record_fields is not None

    def new_environment(self, *, pooled: bool = False, freeze_gc: bool = False) -> Environment:
        """A fresh environment in the domain's initial state, built by tau2's own constructor.

        ``pooled``: reuse a database given back with :meth:`release` (restored to the initial
        state) instead of copying the template; the caller must :meth:`release` the environment.
        ``freeze_gc``: move long-lived objects out of the cyclic GC's reach when the pool grows
        (see :func:`_freeze_long_lived`); a process-wide act, so only the CLI's runs opt in.
        """
        kwargs: dict[str, Any] = {}
        db = None
        if self.takes_db and self.agent_db is not None:
            if pooled and self.poolable:
                with self._lock:
                    db = self._pool.pop() if self._pool else None
            if db is None:
                db = self.agent_db.copy()
                if pooled and self.poolable and freeze_gc:
                    _freeze_long_lived()  # the pool keeps it (and the template) for the rest of the run
            kwargs["db"] = db
        if self.takes_user_db and self.user_db is not None:
            kwargs["user_db"] = self.user_db.copy()
        env = self.constructor(**kwargs)
        if pooled and self.poolable:
            with self._lock:
                self._lent[env] = kwargs["db"]
        return env

    def note_final_state(self, env: Environment, changed: dict[tuple[str, str], BaseModel | None]) -> None:
        """Scoring computed which records of ``env``'s database differ from the template, and no
        tool will run in ``env`` again: :meth:`release` may restore from this instead of diffing
        the database a second time (~8 ms for retail, ~24 ms for airline)."""
        with self._lock:
            if env in self._lent:
                self._final[env] = (env.tools.db, changed)

    def release(self, env: Environment) -> None:
        """Give back the database of an environment from ``new_environment(pooled=True)``.

        Call it only when nothing will use ``env`` again. The database is restored to the
        initial state (only changed records are rebuilt) and reused by a later conversation.
        """
        with self._lock:
            db = self._lent.pop(env, None)
            final = self._final.pop(env, None)
        if db is None or self.agent_db is None:
            return
        changed = final[1] if final is not None and final[0] is db else None  # else: diff it here
        try:
            self.agent_db.restore(db, changed)
        except Exception:  # noqa: BLE001 - a database that cannot be restored is simply dropped
            return
        with self._lock:
            self._pool.append(db)


def _build(domain: str) -> DomainTemplate:
    constructor = registry.get_env_constructor(domain)
    try:
        params: Mapping[str, inspect.Parameter] = inspect.signature(constructor).parameters
    except (TypeError, ValueError):
        params = {}
    env = constructor()
    agent_db = DBTemplate.of(env.tools.db) if env.tools is not None and getattr(env.tools, "db", None) is not None else None
    user_db = DBTemplate.of(env.user_tools.db) if env.user_tools is not None and getattr(env.user_tools, "db", None) is not None else None
    tool_env = constructor()  # tools come from an environment nobody else uses
    try:
        user_tools = tool_env.get_user_tools()
    except Exception:  # noqa: BLE001 - tau2 raises when a domain has no user tools
        user_tools = None
    tpl = DomainTemplate(domain=domain, constructor=constructor, agent_db=agent_db, user_db=user_db,
                         takes_db="db" in params, takes_user_db="user_db" in params,
                         tools=tool_env.get_tools(), user_tools=user_tools or None)
    # A copy must be indistinguishable from a database loaded from disk; if not, load from disk.
    probe = tpl.new_environment()
    if (agent_db is not None and probe.get_db_hash() != agent_db.exact_hash) or (
            user_db is not None and probe.get_user_db_hash() != user_db.exact_hash):
        tpl.takes_db = tpl.takes_user_db = False
    return tpl


def _freeze_long_lived() -> None:
    """Move every object alive now out of the cyclic garbage collector's reach (``gc.freeze``).

    A retail database is ~100k Python objects, an airline one ~200k, and a run keeps one per
    conversation in flight (the pool) for its whole length. Every full collection walks all of
    them: at 64-256 conversations in flight that was ~45 ms of CPU per conversation, more than
    the conversation itself. Templates and pooled databases are frozen when they are created;
    objects frozen by the way are still freed by reference counting, only cycles among them
    would wait (and the pool stops growing once it covers the concurrency).
    """
    gc.freeze()


_templates: dict[str, DomainTemplate] = {}
_lock = threading.Lock()


def domain_template(domain: str) -> DomainTemplate:
    """The process-wide template of ``domain`` (built on first use; thread-safe)."""
    tpl = _templates.get(domain)
    if tpl is None:
        with _lock:
            tpl = _templates.get(domain)
            if tpl is None:
                tpl = _templates[domain] = _build(domain)
    return tpl


def new_environment(domain: str, *, pooled: bool = False, freeze_gc: bool = False) -> Environment:
    """A fresh tau2 environment of ``domain`` in its initial state (cheap after the first).

    ``pooled=True``: its database is reused later once :func:`release_environment` gives it back.
    """
    return domain_template(domain).new_environment(pooled=pooled, freeze_gc=freeze_gc)


def release_environment(domain: str, env: Environment) -> None:
    """Hand back the database of a pooled environment that will not be used again."""
    domain_template(domain).release(env)


_schema_json: dict[int, tuple[Any, str]] = {}


def tool_schema(tool: Any) -> dict[str, Any]:
    """``tool.openai_schema`` (~0.2 ms of pydantic JSON-schema work per tool per conversation in
    tau2), generated once for the shared tools of :func:`domain_tools`. Each caller gets its own
    copy, so nobody can edit the schema another conversation sends."""
    hit = _schema_json.get(id(tool))
    if hit is not None and hit[0] is tool:
        return json.loads(hit[1])
    schema = tool.openai_schema
    if any(tool is t for tpl in list(_templates.values()) for t in (*tpl.tools, *(tpl.user_tools or ()))):
        _schema_json[id(tool)] = (tool, json.dumps(schema))  # the tuple keeps the tool (and its id) alive
    return schema


def domain_tools(domain: str) -> tuple[list[Any], list[Any] | None]:
    """(agent tools, user tools or None) of ``domain``: new lists of shared, read-only tool objects."""
    tpl = domain_template(domain)
    return list(tpl.tools), (list(tpl.user_tools) if tpl.user_tools else None)
