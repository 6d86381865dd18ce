"""Example tau2 agents for moodbench: does telling the agent to de-escalate shrink the emotion effect?

Two ways to write the same agent, both plain tau2 agent classes:

* ``DeescalatingAgent`` subclasses tau2's ``LLMAgent`` and calls its model itself (tau2's ``generate``,
  through litellm) with the ``llm`` and ``llm_args`` moodbench passes to its constructor (the agent model,
  its base URL, key, timeout, max_tokens and ``--agent-args``).
* ``DeescalatingModelLayerAgent`` subclasses moodbench's own agent and asks for ``client`` in its
  constructor, so its calls go through moodbench's model layer (retries, replicas, ``<think>``
  stripping, text tool-call recovery, per-call accounting).

Use either by class path, ``--agent calm_agent:DeescalatingAgent``, or import this module as a plugin,
which registers the first in tau2's registry: ``--plugin calm_agent --agent deescalating_agent``
(this folder on PYTHONPATH in both cases).
"""

from __future__ import annotations

from tau2.agent.llm_agent import AGENT_INSTRUCTION, SYSTEM_PROMPT, LLMAgent
from tau2.registry import registry

from moodbench.sim import MoodbenchAgent

__version__ = "0.1.0"

DEESCALATE = """
Some customers are upset. When a customer sounds frustrated, anxious, angry or confused:
acknowledge the feeling in one short sentence, then say exactly what you will do next.
Do not argue, do not over-apologise, and never skip a step the policy requires.
""".strip()


def _prompt(domain_policy: str) -> str:
    return SYSTEM_PROMPT.format(domain_policy=domain_policy, agent_instruction=f"{AGENT_INSTRUCTION}\n\n{DEESCALATE}")


class DeescalatingAgent(LLMAgent):
    """tau2's LLM agent with a de-escalation instruction; it calls its model itself (tau2's generate)."""

    @property
    def system_prompt(self) -> str:
        return _prompt(self.domain_policy)


class DeescalatingModelLayerAgent(MoodbenchAgent):
    """The same instruction on moodbench's own agent: its model calls go through moodbench's ``client``."""

    @property
    def system_prompt(self) -> str:
        return _prompt(self.domain_policy)


if "deescalating_agent" not in registry.get_agents():
    registry.register_agent(DeescalatingAgent, "deescalating_agent")
