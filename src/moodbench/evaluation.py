"""Scoring with tau2's own evaluator, with natural-language assertions judged by the run's judge.

tau2 judges NL assertions with a hard-wired OpenAI model. moodbench never calls a model the user did
not name: the DB, action and communicate checks are ``evaluate_simulation``'s (computed by
:mod:`moodbench.scoring`, reward-identical and cheaper); when a
task's reward basis includes NL assertions, those are judged by ``--judge-model`` (default: the
agent's model) and combined the way tau2 combines them (a product of the parts).
"""

from __future__ import annotations

import json
import re
from typing import Any

from moodbench._tau2 import RewardInfo, RewardType, SimulationRun, Task
from moodbench.llm import ModelClient
from moodbench.scoring import score_simulation
from tau2.data_model.simulation import NLAssertionCheck
from tau2.environment.environment import Environment

JUDGE_SYSTEM = (
    "You grade a customer-service conversation against expected outcomes. For each expected outcome decide "
    "whether the agent satisfied it. Answer with JSON only: "
    '{"results": [{"expectedOutcome": "...", "reasoning": "...", "metExpectation": true|false}]}'
)


def judge_nl_assertions(client: ModelClient, simulation: SimulationRun, assertions: list[str]) -> tuple[list[NLAssertionCheck], dict[str, Any]]:
    transcript = "\n".join(f"{m.role}: {m.content}" for m in simulation.messages if getattr(m, "content", None))
    prompt = f"conversation:\n{transcript}\n\nexpectedOutcomes:\n" + json.dumps(assertions, indent=1)
    completion = client.complete([{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": prompt}])
    text = completion.content or ""
    match = re.search(r"\{.*\}", text, re.DOTALL)
    checks: list[NLAssertionCheck] = []
    try:
        data = json.loads(match.group(0)) if match else {}
        for item in data.get("results", []):
            checks.append(NLAssertionCheck(nl_assertion=str(item.get("expectedOutcome", "")),
                                           met=bool(item.get("metExpectation")), justification=str(item.get("reasoning", ""))))
    except (json.JSONDecodeError, AttributeError):
        checks = []
    if len(checks) != len(assertions):  # an unreadable verdict counts as not met, and is recorded as such
        checks = [NLAssertionCheck(nl_assertion=a, met=False, justification=f"judge answer unreadable: {text[:300]}") for a in assertions]
    return checks, {"prompt": prompt, "answer": completion.raw_content}


def evaluate(domain: str, task: Task, simulation: SimulationRun, judge: ModelClient | None,
             environment: Environment | None = None) -> tuple[RewardInfo, dict[str, Any] | None]:
    """Return tau2's RewardInfo (NL part judged by ``judge``) and the judge's record, if it was asked.

    The DB/action/communicate part is :func:`moodbench.scoring.score_simulation`: the RewardInfo
    ``evaluate_simulation(..., EvaluationType.ALL)`` returns, computed with the gold state cached
    per task; ``environment`` (the one the conversation ran in) spares replaying the trajectory.
    """
    basis = set(task.evaluation_criteria.reward_basis) if task.evaluation_criteria else set()
    if RewardType.NL_ASSERTION not in basis:
        return score_simulation(simulation, task, domain, environment), None
    stripped = task.model_copy(deep=True)
    stripped.evaluation_criteria.reward_basis = [b for b in stripped.evaluation_criteria.reward_basis if b != RewardType.NL_ASSERTION]
    info = score_simulation(simulation, stripped, domain, environment)
    if info.reward_basis is None:  # terminated prematurely: tau2 already scored 0 without evaluating
        return info, None
    if judge is None:
        raise ValueError(f"task {task.id} needs an NL-assertion judge; pass --judge-model")
    checks, record = judge_nl_assertions(judge, simulation, task.evaluation_criteria.nl_assertions or [])
    nl_reward = 1.0 if all(c.met for c in checks) else 0.0
    info.reward = info.reward * nl_reward
    info.nl_assertions = checks
    info.reward_basis = task.evaluation_criteria.reward_basis
    info.reward_breakdown = {**(info.reward_breakdown or {}), RewardType.NL_ASSERTION: nl_reward}
    return info, record
