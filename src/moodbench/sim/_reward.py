"""tau2's reward, computed without tau2's per-conversation database work.

``tau2.evaluator.evaluator.evaluate_simulation(..., EvaluationType.ALL)`` spends ~2/3 of a retail
conversation's CPU on databases: it builds two environments from the data files, replays the
task's gold actions into one (the same for every conversation of a task), replays the conversation
into the other, and hashes both whole databases with pydantic + ``json.dumps``. This module gives
the same :class:`RewardInfo` from tau2's own pieces, composed differently:

* **gold once per task**: the gold environment (initial state + gold actions, exactly as tau2 sets
  it up) is built once per task and process; what is kept is its tau2 hash and the canonical JSON
  of the records that differ from the domain's initial database;
* **no replay**: the conversation's own environment already holds the state tau2 would rebuild by
  replaying the trajectory (same initial state, same tool calls, same order). When no environment
  is given, the trajectory is replayed into a fresh one, exactly as tau2 does;
* **no whole-database hash**: for databases made of ``dict[str, record]`` fields (retail, airline,
  mock) equality of tau2 hashes is decided record by record: records whose pydantic JSON equals the
  initial database's are equal to it, the few that changed are compared in tau2's canonical JSON
  (``json.dumps(..., sort_keys=True, default=str)``, what tau2 hashes). Other databases (telecom)
  are hashed with tau2's own ``get_db_hash``.

The action and communicate checks are tau2's evaluators, called as they are. ``tests/test_scoring.py``
checks reward identity with ``evaluate_simulation`` on many trajectories, database writes included.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from tau2.data_model.message import Message
from tau2.data_model.simulation import DBCheck, EnvAssertionCheck
from tau2.environment.environment import Environment
from tau2.evaluator.evaluator_action import ActionEvaluator
from tau2.evaluator.evaluator_communicate import CommunicateEvaluator

from moodbench.sim._env_pool import DBTemplate, canonical, domain_template
from moodbench.sim._tau2 import RewardInfo, RewardType, SimulationRun, Task, TerminationReason

_STOPPED = {TerminationReason.AGENT_STOP, TerminationReason.USER_STOP}
_ENV_BASES = {RewardType.DB, RewardType.ENV_ASSERTION}


@dataclass(frozen=True)
class DBState:
    """What decides whether two databases have equal tau2 hashes.

    ``changed``: canonical JSON of every record that differs from the domain's initial database
    (``None`` for a removed record), for record-structured databases; else ``exact_hash``.
    """

    exact_hash: str | None
    changed: dict[tuple[str, str], str | None] | None


def db_state(
    db: Any, template: DBTemplate | None, *, exact: bool = False, records: dict[tuple[str, str], Any] | None = None
) -> DBState:
    """The comparable state of one database (``None`` database: no such side in this domain).

    ``records``: ``template.changed_records(db)`` when the caller already has it.
    """
    if db is None:
        return DBState(None, None)
    if template is None or template.record_fields is None or type(db) is not template.model_cls:
        return DBState(db_hash(db), None)
    if records is None:
        records = template.changed_records(db)
    changed = {key: (None if rec is None else canonical(rec.model_dump())) for key, rec in records.items()}
    return DBState(db_hash(db) if exact else None, changed)


def db_hash(db: Any) -> str:
    """tau2's hash of a database (``ToolKitBase.get_db_hash``'s definition)."""
    from tau2.utils.utils import get_dict_hash

    return get_dict_hash(db.model_dump())


def same_db(a: DBState, b: DBState, template: DBTemplate | None) -> bool:
    """Whether two databases would get equal tau2 hashes."""
    if a.changed is None or b.changed is None or template is None:
        return a.exact_hash == b.exact_hash
    for key in a.changed.keys() | b.changed.keys():
        va = a.changed[key] if key in a.changed else template.template_canonical(*key)
        vb = b.changed[key] if key in b.changed else template.template_canonical(*key)
        if va != vb:
            return False
    return True


def _state_of(env: Environment, side: str, template: DBTemplate | None, exact: bool = False) -> DBState:
    toolkit = env.tools if side == "agent" else env.user_tools
    db = getattr(toolkit, "db", None) if toolkit is not None else None
    if db is None:
        return DBState(None, None)
    if template is None or template.record_fields is None or type(db) is not template.model_cls:
        # tau2's own definition, through the environment, for databases scored whole.
        return DBState(env.get_db_hash() if side == "agent" else env.get_user_db_hash(), None)
    return db_state(db, template, exact=exact)


@dataclass(frozen=True)
class GoldState:
    agent: DBState
    user: DBState


class _GoldCache:
    """Gold-replay database states per (domain, task's initial state and gold actions), per process."""

    def __init__(self) -> None:
        self._states: dict[tuple[str, str], GoldState] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._lock = threading.Lock()

    @staticmethod
    def key(domain: str, task: Task) -> tuple[str, str]:
        crit = task.evaluation_criteria
        actions = [a.model_dump_json() for a in (crit.actions or [])] if crit else []
        initial = task.initial_state.model_dump_json() if task.initial_state is not None else ""
        return domain, f"{task.id}\x00{initial}\x00{actions}"

    def get(self, domain: str, task: Task) -> GoldState:
        key = self.key(domain, task)
        state = self._states.get(key)
        if state is not None:
            return state
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:  # one thread computes a task's gold state; the others wait for it
            state = self._states.get(key)
            if state is None:
                state = self._states[key] = _gold_state(domain, task)
        return state

    def clear(self) -> None:
        with self._lock:
            self._states.clear()
            self._locks.clear()


def _initial(task: Task) -> tuple[Any, Any, list[Message]]:
    init = task.initial_state
    if init is None:
        return None, None, []
    return init.initialization_data, init.initialization_actions, list(init.message_history or [])


def _gold_state(domain: str, task: Task) -> GoldState:
    """The gold environment exactly as tau2's EnvironmentEvaluator sets it up, reduced to its DB states."""
    tpl = domain_template(domain)
    data, actions, history = _initial(task)
    gold = tpl.new_environment()
    gold.set_state(initialization_data=data, initialization_actions=actions, message_history=history)
    for action in task.evaluation_criteria.actions or []:
        try:
            gold.make_tool_call(tool_name=action.name, requestor=action.requestor, **action.arguments)
        except Exception:  # noqa: BLE001 - tau2 ignores failing gold actions too (its warning is silenced)
            pass
    return GoldState(agent=_state_of(gold, "agent", tpl.agent_db), user=_state_of(gold, "user", tpl.user_db))


GOLD = _GoldCache()


def environment_reward(domain: str, task: Task, trajectory: list[Message], environment: Environment | None = None) -> RewardInfo:
    """tau2's ``EnvironmentEvaluator.calculate_reward`` (non-solo), with the cached gold state.

    ``environment``: the environment the conversation ran in (its final state). Without it, the
    trajectory is replayed into a fresh environment, as tau2 does.
    """
    crit = task.evaluation_criteria
    if crit is None:
        return RewardInfo(reward=1.0, info={"note": "No evaluation criteria"})
    if crit.actions is None and crit.env_assertions is None:
        return RewardInfo(
            reward=1.0, db_check=DBCheck(db_match=True, db_reward=1.0), info={"note": "No expected actions or env assertions"}
        )
    tpl = domain_template(domain)
    if environment is None:
        data, actions, _ = _initial(task)
        environment = tpl.new_environment()
        environment.set_state(initialization_data=data, initialization_actions=actions, message_history=trajectory)
    gold = GOLD.get(domain, task)
    agent_state = _state_of(environment, "agent", tpl.agent_db)
    agent_match = same_db(agent_state, gold.agent, tpl.agent_db)
    user_match = same_db(_state_of(environment, "user", tpl.user_db), gold.user, tpl.user_db)
    db_match = agent_match and user_match
    db_reward = 1.0 if db_match else 0.0
    checks = []
    assertion_reward = 1.0
    for assertion in crit.env_assertions or []:
        met = environment.run_env_assertion(assertion, raise_assertion_error=False)
        check = EnvAssertionCheck(env_assertion=assertion, met=met, reward=1.0 if met else 0.0)
        checks.append(check)
        assertion_reward *= check.reward
    reward = 1.0
    breakdown: dict[RewardType, float] = {}
    if RewardType.DB in crit.reward_basis:
        breakdown[RewardType.DB] = db_reward
        reward *= db_reward
    if RewardType.ENV_ASSERTION in crit.reward_basis:
        breakdown[RewardType.ENV_ASSERTION] = assertion_reward
        reward *= assertion_reward
    return RewardInfo(
        reward=reward,
        db_check=DBCheck(db_match=db_match, db_reward=db_reward),
        env_assertions=checks,
        reward_basis=crit.reward_basis,
        reward_breakdown=breakdown,
    )


def score_simulation(simulation: SimulationRun, task: Task, domain: str, environment: Environment | None = None) -> RewardInfo:
    """What ``evaluate_simulation(simulation, task, EvaluationType.ALL, solo_mode=False, domain)`` returns.

    Pass ``environment`` (the environment the conversation ran in) to skip tau2's replay.
    """
    if simulation.termination_reason not in _STOPPED:
        return RewardInfo(
            reward=0.0,
            reward_basis=None,
            info={"note": f"Simulation terminated prematurely. Termination reason: {simulation.termination_reason.value}"},
        )
    crit = task.evaluation_criteria
    if crit is None:
        return RewardInfo(reward=1.0, reward_basis=None, info={"note": "No evaluation criteria"})
    messages = simulation.messages
    env_info = environment_reward(domain, task, messages, environment)
    action_info = ActionEvaluator.calculate_reward(task=task, full_trajectory=messages)
    comm_info = CommunicateEvaluator.calculate_reward(task=task, full_trajectory=messages)
    basis = set(crit.reward_basis)
    reward = 1.0
    breakdown: dict[RewardType, float] = {}
    for bases, part in ((_ENV_BASES, env_info), ({RewardType.ACTION}, action_info)):
        if basis & bases:
            breakdown.update(part.reward_breakdown or {})
            reward *= part.reward
    if RewardType.NL_ASSERTION in basis:
        raise ValueError("NL assertions are part of the reward basis, but they are not being evaluated.")
    if RewardType.COMMUNICATE in basis:
        breakdown.update(comm_info.reward_breakdown or {})
        reward *= comm_info.reward
    return RewardInfo(
        reward=reward,
        db_check=env_info.db_check,
        env_assertions=env_info.env_assertions,
        action_checks=action_info.action_checks,
        nl_assertions=None,
        communicate_checks=comm_info.communicate_checks,
        reward_basis=crit.reward_basis,
        reward_breakdown=breakdown,
        info={"env": env_info.info, "nl": None, "communicate": comm_info.info, "action": action_info.info},
    )
