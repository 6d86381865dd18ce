"""Scoring with tau2's own evaluator, with natural-language assertions judged by the run's judge.

tau2 judges NL assertions with a hard-wired OpenAI model. moodbench never calls a model the user did
not name: the DB, action and communicate checks are ``evaluate_simulation``'s (computed by
:mod:`._reward`, reward-identical and cheaper); when a task's reward basis includes NL assertions,
those are judged by ``--judge-model`` (default: the agent's model) and combined the way tau2
combines them (a product of the parts).
"""

from __future__ import annotations

from typing import Any

from tau2.data_model.simulation import NLAssertionCheck
from tau2.environment.environment import Environment

from moodbench.judges import judge_nl_assertions
from moodbench.llm import ModelClient
from moodbench.sim._reward import score_simulation
from moodbench.sim._tau2 import RewardInfo, RewardType, SimulationRun, Task


class JudgeRequired(ValueError):
    """A task's reward needs an NL-assertion judge and the run has none."""


def evaluate(
    domain: str, task: Task, simulation: SimulationRun, judge: ModelClient | None, environment: Environment | None = None
) -> tuple[RewardInfo, dict[str, Any] | None]:
    """Return tau2's RewardInfo (NL part judged by ``judge``) and the judge's record, if it was asked.

    The DB/action/communicate part is :func:`._reward.score_simulation`: the RewardInfo
    ``evaluate_simulation(..., EvaluationType.ALL)`` returns, computed with the gold state cached
    per task; ``environment`` (the one the conversation ran in) spares replaying the trajectory.
    """
    crit = task.evaluation_criteria
    basis = set(crit.reward_basis) if crit else set()
    if crit is None or RewardType.NL_ASSERTION not in basis:
        return score_simulation(simulation, task, domain, environment), None
    stripped = task.model_copy(deep=True)
    assert stripped.evaluation_criteria is not None
    stripped.evaluation_criteria.reward_basis = [
        b for b in stripped.evaluation_criteria.reward_basis if b != RewardType.NL_ASSERTION
    ]
    info = score_simulation(simulation, stripped, domain, environment)
    if info.reward_basis is None:  # terminated prematurely: tau2 already scored 0 without evaluating
        return info, None
    if judge is None:
        raise JudgeRequired(f"task {task.id} needs an NL-assertion judge; pass --judge-model")
    verdicts, record = judge_nl_assertions(judge, simulation.messages, crit.nl_assertions or [])
    checks = [NLAssertionCheck(nl_assertion=v.assertion, met=v.met, justification=v.justification) for v in verdicts]
    nl_reward = 1.0 if all(c.met for c in checks) else 0.0
    info.reward = info.reward * nl_reward
    info.nl_assertions = checks
    info.reward_basis = crit.reward_basis
    info.reward_breakdown = {**(info.reward_breakdown or {}), RewardType.NL_ASSERTION: nl_reward}
    return info, record
