"""tau2 environments built from per-process templates instead of from the data files every time.

tau2's domain constructors (``get_environment``) read and validate the whole database from disk on
every call (~40 ms of CPU for retail, ~110 ms for airline) and its toolkits rebuild every tool's
JSON schema whenever ``get_tools()`` is asked. A run builds thousands of identical environments, so
this module loads each domain once per process and then:

* hands each conversation a database through the domain constructor's own ``db=`` parameter, so
  tau2 still builds the environment, its toolkits and its policy. For databases made of
  ``dict[str, record]`` fields (airline, retail, mock) it is copy-on-access (:class:`SharedRecords`):
  the conversation's database starts as references to the template's records and copies only the
  records its tools take (an airline database is 19 MiB and a conversation takes a handful; searches
  in tau2's own domains read the template's records, checked when the conversation ends);
  other databases (telecom) are validated from the template's dump;
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
from collections.abc import Callable, ItemsView, Iterator, Mapping, ValuesView
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from tau2.environment.environment import Environment
from tau2.utils.utils import get_dict_hash

from moodbench.sim._tau2 import registry


def canonical(value: Any) -> str:
    """tau2's canonical JSON of a dumped value (the string ``get_dict_hash`` hashes), for one record."""
    return json.dumps(value, sort_keys=True, default=str)


class SharedRecordChanged(RuntimeError):
    """A tool changed a template record lent to it by an iteration (see :class:`SharedRecords`)."""


class SharedRecords(dict):
    """One ``dict[str, record]`` field of a conversation's database, sharing the template's records.

    A new database starts as dicts of references to the template's (never modified) records: no
    record is copied until this conversation takes it through Python (``db[key]``, ``get``,
    ``pop``, ``dict(db)``...), and then only that record, validated from the template's
    dump exactly as a load from disk would build it, replaces the reference. Tools change records
    in place after reading them, so every record a tool takes by key is already this conversation's
    own. What a loop over ``values()`` or ``items()`` gets is below.

    Searches read many records they never change (retail's user look-up passes ~250 users, an
    airline flight search up to all 300 flights); copying each cost most of a worker's CPU at
    hundreds of conversations in flight, in the copies, their comparison at scoring and the garbage
    collector walking them. So iteration does one of two things, by the domain's template:

    * **lend** (``DBTemplate.lends``: tau2's own domains, whose searches only read): the loop gets
      the template's record itself, no copy. When the conversation ends (:meth:`check_lent`)
      every record it was lent is checked against the template's JSON; a change means a tool
      wrote to a record it reached by iterating, which could reach other conversations, so lending
      stops for the domain, the template's record is rebuilt from its dump and
      :class:`SharedRecordChanged` leaves this conversation unscored;
    * **scan** (any other domain): each record is copied as the loop reaches it, and between tool
      calls every scanned copy still equal to the template's is given back.

    Serialisation (pydantic's ``model_dump``, hence tau2's ``get_db_hash``) reads the dict at the C
    level and sees the template's record for every key not yet copied: equal to a private copy by
    construction, so hashes are those of a fully copied database (checked when the template is built).
    """

    __slots__ = ("_db", "_field", "_own", "_scanned", "_lent")

    def __init__(self, db: DBTemplate, field_name: str):
        super().__init__(db.records[field_name])
        self._db = db  # the template (read-only but for the lending repair above)
        self._field = field_name
        self._own: set[str] = set()
        self._scanned: set[str] = set()  # copied by iteration and not taken by key since
        self._lent: dict[str, BaseModel] = {}  # template records handed to a loop since the last check

    def _private(self, key: str) -> Any:
        self._scanned.discard(key)
        return self._copy(key)

    def _copy(self, key: str) -> Any:
        value = dict.__getitem__(self, key)
        if key not in self._own:
            value = type(value).model_validate(self._db.dump[self._field][key])
            dict.__setitem__(self, key, value)
            self._own.add(key)
        return value

    def _scan(self, key: str) -> Any:
        """The record as an iteration reaches it: lent (the template's) or a copy marked scanned."""
        value = dict.__getitem__(self, key)
        if key in self._own:
            return value
        if self._db.lends:
            self._lent[key] = value
            return value
        self._scanned.add(key)
        return self._copy(key)

    def _own_all(self) -> None:
        for key in list(dict.keys(self)):
            if key not in self._own:
                self._private(key)

    def owned(self) -> list[str]:
        """Keys whose record this conversation may have changed (copied or set); the rest are the template's."""
        return [k for k in self._own if dict.__contains__(self, k)]

    def between_tool_calls(self) -> int:
        """Give back the scanned copies still equal to the template's records; returns how many.

        Only between tool calls: a tool that is still running may hold a scanned record and change it.
        """
        released = 0
        for key in self._scanned:
            if key in self._own and dict.__contains__(self, key):
                if self._db.unchanged(self._field, key, dict.__getitem__(self, key)):
                    dict.__setitem__(self, key, self._db.records[self._field][key])
                    self._own.discard(key)
                    released += 1
        self._scanned.clear()
        return released

    def check_lent(self) -> int:
        """Check every record lent to this conversation's loops against the template's JSON; returns how many.

        At the end of the conversation, once per record however often it was lent. A change means
        a tool wrote to a record it reached by iterating: lending stops for the domain and
        :class:`SharedRecordChanged` is raised.
        """
        lent, self._lent = self._lent, {}
        for key, record in lent.items():
            if not self._db.unchanged(self._field, key, record):
                self._db.stop_lending(self._field, key)
                raise SharedRecordChanged(
                    f"a tool changed the record {self._field}[{key!r}] that it reached by iterating over the "
                    "database; moodbench lends such records to the searches of tau2's own domains without copying "
                    "them, so the change may have reached other conversations in this process. This conversation "
                    "is not scored and lending is off from now on; please report it with your tau2 version"
                )
        return len(lent)

    def __getitem__(self, key: str) -> Any:
        return self._private(key)

    def __iter__(self) -> Any:
        # Overriding __iter__ (even as dict's own) makes ``dict(x)`` and ``{**x}`` go through
        # keys() and __getitem__, so they too hand out private records, never the template's.
        return dict.__iter__(self)

    def get(self, key: str, default: Any = None) -> Any:
        return self._private(key) if dict.__contains__(self, key) else default

    def __setitem__(self, key: str, value: Any) -> None:
        dict.__setitem__(self, key, value)
        self._own.add(key)
        self._scanned.discard(key)

    def setdefault(self, key: str, default: Any = None) -> Any:
        if dict.__contains__(self, key):
            return self._private(key)
        self[key] = default
        return default

    def pop(self, key: str, *default: Any) -> Any:
        if dict.__contains__(self, key):
            value = self._private(key)
            dict.__delitem__(self, key)
            return value
        return dict.pop(self, key, *default)

    def popitem(self) -> tuple[str, Any]:
        key = next(reversed(dict.keys(self)))
        return key, self.pop(key)

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def values(self) -> Any:
        # Each record is lent or copied as the loop reaches it (see the class docstring), so a
        # look-up that stops at its match (retail's user search) touches only the records it passed.
        return _ScanValues(self)

    def items(self) -> Any:
        return _ScanItems(self)

    def copy(self) -> dict[str, Any]:
        self._own_all()
        return dict(dict.items(self))

    def __copy__(self) -> dict[str, Any]:
        return self.copy()

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        import copy

        return {k: copy.deepcopy(v, memo) for k, v in self.items()}

    def __reduce__(self) -> Any:
        return dict, (self.copy(),)

    def __ior__(self, other: Any) -> SharedRecords:
        self.update(other)
        return self

    def __or__(self, other: Any) -> dict[str, Any]:  # type: ignore[override]
        return {**self.copy(), **dict(other)}


class _ScanValues(ValuesView):
    """``values()`` of :class:`SharedRecords`: records copied (and marked scanned) as the loop reaches them."""

    _mapping: SharedRecords

    def __iter__(self) -> Iterator[Any]:
        records = self._mapping
        for key in dict.__iter__(records):
            yield records._scan(key)


class _ScanItems(ItemsView):
    """``items()`` of :class:`SharedRecords`, copying like :class:`_ScanValues`."""

    _mapping: SharedRecords

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        records = self._mapping
        for key in dict.__iter__(records):
            yield key, records._scan(key)


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
    records: dict[str, dict[str, BaseModel]] = field(default_factory=dict)  # the template's own records
    # Iterations hand out the template's records instead of copies (tau2's own domains; see SharedRecords).
    lends: bool = False

    def stop_lending(self, field_name: str, key: str) -> None:
        """A lent record was changed: lend no more, and rebuild that record from the dump for new databases."""
        self.lends = False
        record = self.records[field_name][key]
        self.records[field_name][key] = type(record).model_validate(self.dump[field_name][key])

    @classmethod
    def of(cls, db: BaseModel) -> DBTemplate:
        dump = db.model_dump()
        fields = _record_fields(db, dump)
        record_json = {f: {k: r.model_dump_json() for k, r in getattr(db, f).items()} for f in fields} if fields else {}
        records = {f: dict(getattr(db, f)) for f in fields} if fields else {}
        return cls(
            model_cls=type(db),
            dump=dump,
            exact_hash=get_dict_hash(dump),
            record_fields=fields,
            record_json=record_json,
            records=records,
        )

    def copy(self) -> BaseModel:
        """A new, independent database equal to the template (validated from its dump)."""
        return self.model_cls.model_validate(self.dump)

    def share(self) -> BaseModel:
        """A new database equal to the template whose records are copied on access (:class:`SharedRecords`).

        Only for record-structured databases (``record_fields`` set).
        """
        assert self.record_fields is not None
        fields: dict[str, Any] = {f: SharedRecords(self, f) for f in self.record_fields}
        return self.model_cls.model_construct(**fields)

    def unchanged(self, field_name: str, key: str, record: BaseModel) -> bool:
        """Whether ``record`` has the pydantic JSON of the template's record under ``key`` (the one change test)."""
        return record.model_dump_json() == self.record_json[field_name].get(key)

    def changed_records(self, db: BaseModel) -> dict[tuple[str, str], BaseModel | None]:
        """Records of ``db`` whose pydantic JSON differs from the template's (``None``: key removed).

        Only for record-structured databases (``record_fields`` set).
        """
        assert self.record_fields is not None
        changed: dict[tuple[str, str], BaseModel | None] = {}
        for f in self.record_fields:
            current: dict[str, BaseModel] = getattr(db, f)
            if isinstance(current, SharedRecords):  # records never copied are the template's own
                candidates = [(key, dict.__getitem__(current, key)) for key in current.owned()]
            else:
                candidates = list(current.items())
            for key, record in candidates:
                if not self.unchanged(f, key, record):
                    changed[(f, key)] = record
            template = self.record_json[f]
            if len(current) != len(template) or not dict.keys(current) >= template.keys():  # C-level key check
                for key in template:
                    if key not in current:
                        changed[(f, key)] = None
        return changed

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
    shares_db: bool = False  # agent database copy-on-access (SharedRecords), checked in _build
    _frozen: bool = False

    def new_environment(self, *, freeze_gc: bool = False) -> Environment:
        """A fresh environment in the domain's initial state, built by tau2's own constructor.

        ``freeze_gc``: the first time, move the templates (hundreds of thousands of long-lived
        objects) out of the cyclic GC's reach (see :func:`_freeze_long_lived`); a process-wide
        act, so only the CLI's runs opt in.
        """
        if freeze_gc and not self._frozen:
            self._frozen = True
            _freeze_long_lived()
        kwargs: dict[str, Any] = {}
        if self.takes_db and self.agent_db is not None:
            kwargs["db"] = self.agent_db.share() if self.shares_db else self.agent_db.copy()
        if self.takes_user_db and self.user_db is not None:
            kwargs["user_db"] = self.user_db.copy()
        return self.constructor(**kwargs)


def _build(domain: str) -> DomainTemplate:
    constructor = registry.get_env_constructor(domain)
    try:
        params: Mapping[str, inspect.Parameter] = inspect.signature(constructor).parameters
    except (TypeError, ValueError):
        params = {}
    env = constructor()
    agent_db = DBTemplate.of(env.tools.db) if env.tools is not None and getattr(env.tools, "db", None) is not None else None
    user_db = (
        DBTemplate.of(env.user_tools.db)
        if env.user_tools is not None and getattr(env.user_tools, "db", None) is not None
        else None
    )
    tool_env = constructor()  # tools come from an environment nobody else uses
    try:
        user_tools = tool_env.get_user_tools()
    except Exception:  # noqa: BLE001 - tau2 raises when a domain has no user tools
        user_tools = None
    tpl = DomainTemplate(
        domain=domain,
        constructor=constructor,
        agent_db=agent_db,
        user_db=user_db,
        takes_db="db" in params,
        takes_user_db="user_db" in params,
        tools=tool_env.get_tools(),
        user_tools=user_tools or None,
    )
    # A copy must be indistinguishable from a database loaded from disk; if not, load from disk.
    probe = tpl.new_environment()
    if (agent_db is not None and probe.get_db_hash() != agent_db.exact_hash) or (
        user_db is not None and probe.get_user_db_hash() != user_db.exact_hash
    ):
        tpl.takes_db = tpl.takes_user_db = False
        return tpl
    # The same for a shared database, before and after every record was copied by access.
    if tpl.takes_db and agent_db is not None and agent_db.record_fields is not None:
        tpl.shares_db = True
        probe = tpl.new_environment()
        first = probe.get_db_hash()
        for f in agent_db.record_fields:
            getattr(probe.tools.db, f)._own_all()
        if first != agent_db.exact_hash or probe.get_db_hash() != agent_db.exact_hash:
            tpl.shares_db = False
        # tau2's own tools only read what their searches iterate (checked at each conversation's end all the same)
        agent_db.lends = tpl.shares_db and _is_tau2s(env.tools)
    return tpl


def _is_tau2s(tools: Any) -> bool:
    """Whether a toolkit's class is tau2's own (not a user domain's, nor a subclass of tau2's in one)."""
    return type(tools).__module__.startswith("tau2.domains.")


def _freeze_long_lived() -> None:
    """Move every object alive now out of the cyclic garbage collector's reach (``gc.freeze``).

    A retail database is ~100k Python objects, an airline one ~200k. Every full collection walks
    all of them: at 64-256 conversations in flight that was ~45 ms of CPU per conversation, more
    than the conversation itself. The templates live for the whole run, so they are frozen once;
    objects frozen by the way are still freed by reference counting, only cycles among them wait.
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


def _shared_fields(environment: Environment) -> list[SharedRecords]:
    db = getattr(environment.tools, "db", None) if environment.tools is not None else None
    return [v for v in vars(db).values() if isinstance(v, SharedRecords)] if isinstance(db, BaseModel) else []


def between_tool_calls(environment: Environment) -> int:
    """Give back the records the environment's searches copied and left unchanged (see :class:`SharedRecords`).

    Call it only while none of this environment's tool calls is running (before a model request).
    Returns how many records were given back.
    """
    return sum(f.between_tool_calls() for f in _shared_fields(environment) if f._scanned)


def check_lent(environment: Environment) -> int:
    """At the end of a conversation: check the records its searches were lent (see :class:`SharedRecords`).

    Raises :class:`SharedRecordChanged` if a tool changed one; returns how many were checked.
    """
    return sum(f.check_lent() for f in _shared_fields(environment) if f._lent)


def new_environment(domain: str, *, freeze_gc: bool = False) -> Environment:
    """A fresh tau2 environment of ``domain`` in its initial state (cheap after the first)."""
    return domain_template(domain).new_environment(freeze_gc=freeze_gc)


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
