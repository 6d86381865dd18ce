"""moodbench.sim's reward (``sim/_reward.score_simulation``) gives exactly tau2's RewardInfo, on trajectories that do and don't write.

Trajectories are built the way tau2's orchestrator builds them: an environment set to the task's
initial state, each tool call answered by ``environment.get_response``. For every task several
trajectories are scored three ways — tau2's ``evaluate_simulation``, ``score_simulation`` replaying
the trajectory, and ``score_simulation`` given the environment the trajectory ran in — and the
whole RewardInfo (not only the reward) must be identical.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from tau2.evaluator.evaluator import EvaluationType, evaluate_simulation
from tau2.utils.utils import get_dict_hash

from moodbench.sim import domain_template
from moodbench.sim._env_pool import SharedRecordChanged, _build, between_tool_calls, check_lent
from moodbench.sim._reward import GOLD, score_simulation  # sim's reward, compared with tau2's evaluator itself
from moodbench.sim._tau2 import (
    AssistantMessage,
    SimulationRun,
    Task,
    TerminationReason,
    ToolCall,
    UserMessage,
    load_tasks,
    registry,
)

_TASKS: dict[str, list[Task]] = {}


def tasks(domain: str) -> list[Task]:
    if domain not in _TASKS:
        _TASKS[domain] = load_tasks(domain)
    return _TASKS[domain]


def _actions(task: Task) -> list[Any]:
    crit = task.evaluation_criteria
    return list(crit.actions or []) if crit else []


def build_trajectory(
    domain: str, task: Task, actions: list[Any], say: list[str], stop: TerminationReason, env: Any = None
) -> tuple[SimulationRun, Any]:
    """Run ``actions`` as tool calls in a fresh environment, then say ``say``; return (simulation, env)."""
    env = env if env is not None else registry.get_env_constructor(domain)()
    init = task.initial_state
    history = list(init.message_history or []) if init else []
    env.set_state(
        initialization_data=init.initialization_data if init else None,
        initialization_actions=init.initialization_actions if init else None,
        message_history=history,
    )
    messages: list[Any] = list(history)
    messages.append(AssistantMessage(role="assistant", content="Hi! How can I help you today?"))
    messages.append(UserMessage(role="user", content="I need help."))
    for i, action in enumerate(actions):
        call = ToolCall(id=f"call_{i}", name=action.name, arguments=dict(action.arguments), requestor=action.requestor)
        cls = UserMessage if action.requestor == "user" else AssistantMessage
        messages.append(cls(role="user" if action.requestor == "user" else "assistant", content=None, tool_calls=[call]))
        messages.append(env.get_response(call))
        between_tool_calls(env)  # as the conversation's agent does before its next model request
    messages.append(AssistantMessage(role="assistant", content=" ".join(say) or "Done."))
    messages.append(UserMessage(role="user", content="Thanks ###STOP###"))
    sim = SimulationRun(
        id=f"{domain}-{task.id}",
        task_id=task.id,
        start_time="2025-01-01T00:00:00",
        end_time="2025-01-01T00:00:01",
        duration=1.0,
        termination_reason=stop,
        messages=messages,
    )
    return sim, env


def variants(domain: str, task: Task, rng: random.Random) -> list[tuple[str, list[Any], list[str], TerminationReason]]:
    """Trajectories per task: gold, partial, none, reordered, extra write from another task, cut short."""
    gold = _actions(task)
    crit = task.evaluation_criteria
    say = [str(x) for x in (crit.communicate_info or [])] if crit else []
    others = [a for t in tasks(domain) if t.id != task.id for a in _actions(t)]
    extra = [rng.choice(others)] if others else []
    out = [
        ("gold", gold, say, TerminationReason.USER_STOP),
        ("gold_silent", gold, [], TerminationReason.AGENT_STOP),
        ("nothing", [], say, TerminationReason.USER_STOP),
        ("all_but_last", gold[:-1], say, TerminationReason.USER_STOP),
        ("reversed", list(reversed(gold)), say, TerminationReason.USER_STOP),
        ("gold_plus_other", gold + extra, say, TerminationReason.USER_STOP),
        ("max_steps", gold, say, TerminationReason.MAX_STEPS),
    ]
    return out


def check_task(domain: str, task: Task, rng: random.Random, only: set[str] | None = None) -> list[tuple[str, float]]:
    seen = []
    for name, actions, say, stop in variants(domain, task, rng):
        if only is not None and name not in only:
            continue
        sim, env = build_trajectory(domain, task, actions, say, stop)
        expected = outcome(
            lambda: evaluate_simulation(
                simulation=sim, task=task, evaluation_type=EvaluationType.ALL, solo_mode=False, domain=domain
            )
        )
        replayed = outcome(lambda: score_simulation(sim, task, domain))
        live = outcome(lambda: score_simulation(sim, task, domain, environment=env))
        assert replayed == expected, f"{domain}/{task.id}/{name}: replayed scoring differs from tau2"
        assert live == expected, f"{domain}/{task.id}/{name}: scoring on the live environment differs from tau2"
        if isinstance(expected, dict):
            seen.append((name, expected["reward"]))
    return seen


def outcome(fn: Any) -> dict[str, Any] | tuple[str, str]:
    """The RewardInfo as JSON, or the exception tau2 raises (e.g. an env assertion on a missing row)."""
    try:
        return fn().model_dump(mode="json")
    except Exception as exc:
        return type(exc).__name__, str(exc)


def test_mock_every_task() -> None:
    rng = random.Random(0)
    rewards = [r for t in tasks("mock") for _, r in check_task("mock", t, rng)]
    assert 0.0 in rewards and 1.0 in rewards  # both outcomes were exercised


_WRITES = ("cancel", "modify", "exchange", "return", "book", "update", "send")


@pytest.mark.parametrize("domain,only", [("retail", None), ("airline", {"gold", "all_but_last", "gold_plus_other"})])
def test_db_writing_tasks(domain: str, only: set[str] | None) -> None:
    """A retail and an airline task whose gold actions write: reward 1 on gold, 0 on DB mismatches."""
    rng = random.Random(1)
    task = next(t for t in tasks(domain) if any(a.name.startswith(_WRITES) for a in _actions(t)))
    result = dict(check_task(domain, task, rng, only))
    assert result["gold"] == 1.0
    assert result["all_but_last"] == 0.0


def test_telecom_user_db_and_env_assertions() -> None:
    rng = random.Random(2)
    chosen = [t for t in tasks("telecom") if t.evaluation_criteria and t.evaluation_criteria.actions][:2]
    for task in chosen:
        check_task("telecom", task, rng)


def test_gold_state_is_computed_once_per_task() -> None:
    task = tasks("retail")[3]
    first = GOLD.get("retail", task)
    assert GOLD.get("retail", task) is first
    copy = task.model_copy(deep=True)
    assert GOLD.get("retail", copy) is first  # same initial state and gold actions: same entry


def test_template_copies_are_independent() -> None:
    """A write in one conversation's environment never leaks into the next one's."""
    tpl = domain_template("retail")
    a, b = tpl.new_environment(), tpl.new_environment()
    order = next(o for o in a.tools.db.orders.values() if o.status == "pending")
    a.make_tool_call("cancel_pending_order", order_id=order.order_id, reason="no longer needed")
    assert a.tools.db.orders[order.order_id].status == "cancelled"
    assert b.tools.db.orders[order.order_id].status == "pending"
    assert tpl.new_environment().get_db_hash() == registry.get_env_constructor("retail")().get_db_hash()


@pytest.mark.parametrize("domain", ["retail", "airline"])
def test_shared_database_scores_like_tau2_and_leaves_the_template_pristine(domain: str) -> None:
    """A copy-on-access database: writes land in the conversation's own records, scoring equals tau2's,
    the template and the next conversation's database stay in the initial state."""
    tpl = domain_template(domain)
    assert tpl.shares_db and tpl.agent_db is not None and tpl.agent_db.lends  # tau2's own tools
    fresh = registry.get_env_constructor(domain)().get_db_hash()
    task = next(t for t in tasks(domain) if any(a.name.startswith(_WRITES) for a in _actions(t)))
    env = tpl.new_environment()
    sim, env = build_trajectory(domain, task, _actions(task), [], TerminationReason.USER_STOP, env=env)
    assert env.get_db_hash() != fresh  # the conversation wrote
    expected = evaluate_simulation(simulation=sim, task=task, evaluation_type=EvaluationType.ALL, solo_mode=False, domain=domain)
    assert score_simulation(sim, task, domain, environment=env).model_dump() == expected.model_dump()
    assert tpl.agent_db.record_fields is not None
    copied = sum(len(getattr(env.tools.db, f).owned()) for f in tpl.agent_db.record_fields)
    total = sum(len(getattr(env.tools.db, f)) for f in tpl.agent_db.record_fields)
    # only the records the tools took by key were copied; searches were lent the template's
    assert 0 < copied < total / 100
    check_lent(env)  # tau2's tools changed nothing they were lent
    again = tpl.new_environment()
    assert again.get_db_hash() == fresh
    assert get_dict_hash(tpl.agent_db.model_cls.model_validate(tpl.agent_db.dump).model_dump()) == fresh  # template untouched


def test_shared_records_never_hand_out_the_template_by_key() -> None:
    """Every way of taking a record from Python (index, get, dict(), {**}, copy, pop) gives the conversation's
    own copy; a change through any of them leaves the next database pristine. (A loop over values() or
    items() is lent the template's records in tau2's own domains: see the tests below.)"""
    tpl = domain_template("retail")
    assert tpl.agent_db is not None
    shared: Any = tpl.agent_db.records["orders"]
    key = next(iter(shared))
    env = tpl.new_environment()
    orders = env.tools.db.orders
    views: list[Any] = [
        orders[key],
        orders.get(key),
        dict(orders)[key],
        {**orders}[key],
        orders.copy()[key],
        next(v for k, v in orders.items() if k == key),  # once taken, a loop reaches the conversation's own
    ]
    assert all(v is not shared[key] for v in views) and all(v is views[0] for v in views)
    views[0].status = "changed-by-test"
    assert shared[key].status != "changed-by-test"
    assert tpl.new_environment().tools.db.orders[key].status == shared[key].status
    lazy = tpl.new_environment().tools.db.orders
    assert next(iter(lazy.values())) is shared[key] and lazy.owned() == []  # lent, not copied
    assert len(lazy.values()) == len(shared) and lazy.owned() == []
    assert lazy[key] is not shared[key] and next(iter(lazy.values())) is lazy[key]
    popped = tpl.new_environment().tools.db.users
    user_key = next(iter(popped))
    assert popped.pop(user_key) is not tpl.agent_db.records["users"][user_key] and user_key not in popped


def _find_user_call(tpl: Any, index: int) -> ToolCall:
    """retail's user search by name and zip for the ``index``-th user (the loop passes ``index`` others)."""
    user = list(tpl.agent_db.records["users"].values())[index]
    args = {"first_name": user.name.first_name, "last_name": user.name.last_name, "zip": user.address.zip}
    return ToolCall(id="find", name="find_user_id_by_name_zip", arguments=args, requestor="assistant")


def test_searches_of_tau2_domains_are_lent_the_template_and_checked() -> None:
    """tau2's retail user search reads 300 users without copying one; the check at the end of the
    conversation passes; nothing was copied, and scoring sees the initial database."""
    tpl = domain_template("retail")
    env = tpl.new_environment()
    call = _find_user_call(tpl, 300)
    for _ in range(3):
        reply = env.get_response(call)
        assert not reply.error and between_tool_calls(env) == 0
    users = env.tools.db.users
    assert users.owned() == [] and len(users._lent) == 301
    assert check_lent(env) == 301 and users._lent == {}
    assert env.get_db_hash() == registry.get_env_constructor("retail")().get_db_hash()


def test_a_tool_that_changes_a_lent_record_is_caught_and_lending_stops() -> None:
    """If a tool wrote to a record its loop was lent, the end-of-conversation check raises, lending stops
    for the domain in this process and new databases get a rebuilt record, not the changed one."""
    tpl = _build("retail")  # a template of its own: the process-wide one stays as it is
    assert tpl.agent_db is not None and tpl.agent_db.lends
    env = tpl.new_environment()
    users: Any = env.tools.db.users
    key, record = next(iter(users.items()))  # a loop reaching a record (lent)
    record.email = "changed-by-a-tool@example.com"  # what a misbehaving tool would do
    assert record is tpl.agent_db.records["users"][key]  # it was the template's own record
    with pytest.raises(SharedRecordChanged, match=r"users\['"):
        check_lent(env)
    assert not tpl.agent_db.lends
    later = tpl.new_environment()
    assert dict.__getitem__(later.tools.db.users, key).email != "changed-by-a-tool@example.com"
    assert later.get_db_hash() == registry.get_env_constructor("retail")().get_db_hash()
    assert next(iter(later.tools.db.users.values())) is not tpl.agent_db.records["users"][key]  # copies now


def test_other_domains_scan_copies_and_give_back_the_unchanged_ones() -> None:
    """Without lending (any domain not tau2's own), a search copies what its loop passes; between tool
    calls the unchanged copies are given back, a changed one is kept and scored."""
    tpl = _build("retail")
    assert tpl.agent_db is not None
    tpl.agent_db.lends = False
    env = tpl.new_environment()
    assert not env.get_response(_find_user_call(tpl, 300)).error
    users = env.tools.db.users
    assert len(users.owned()) == 301 and all(users._scanned)
    assert between_tool_calls(env) == 301 and users.owned() == []
    key, record = next(iter(users.items()))  # a loop that changes what it reaches
    assert record is not tpl.agent_db.records["users"][key]
    record.email = "changed@example.com"
    other_key = list(users)[1]
    assert users[other_key] is users[other_key]  # taken by key: kept even though unchanged
    next(iter(users.values()))
    assert between_tool_calls(env) == 0 and sorted(users.owned()) == sorted([key, other_key])
    assert users[key].email == "changed@example.com"
    changed = tpl.agent_db.changed_records(env.tools.db)
    assert list(changed) == [("users", key)]


@pytest.mark.slow
@pytest.mark.parametrize("domain,count", [("retail", 15), ("airline", 8), ("telecom", 6)])
def test_many_tasks(domain: str, count: int) -> None:
    rng = random.Random(3)
    pool = [t for t in tasks(domain) if t.evaluation_criteria is not None]
    for task in rng.sample(pool, min(count, len(pool))):
        check_task(domain, task, rng)
