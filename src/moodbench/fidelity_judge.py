"""Optional LLM judge of the simulated customer (``--judge-fidelity``).

The rule-based flags in :mod:`moodbench.fidelity` catch gross failures cheaply; a judge model can
also say whether the customer expressed the intended emotion at the intended level. Its prompt and
raw answer are stored with the conversation, so a judgement can always be audited.
"""

from __future__ import annotations

import json
import re
from typing import Any

from moodbench._tau2 import AssistantMessage, SimulationRun, UserMessage
from moodbench.llm import ModelClient

JUDGE_PROMPT = """You evaluate a SIMULATED CUSTOMER in a customer-service conversation (not the agent).

The customer was given this scenario:
<customer_scenario>
{scenario}
</customer_scenario>

The customer was asked to show this emotional state: {emotion}

Conversation:
<conversation>
{transcript}
</conversation>

Answer with JSON only, no other text:
{{"stayed_in_role": true|false,      // did the customer always speak as the customer (never as the agent)?
  "pursued_goal": true|false,        // did the customer pursue the scenario's reason for calling?
  "emotion_intensity": 0|1|2|3,      // how strongly the customer expressed {emotion_short}: 0 none, 1 mild, 2 moderate, 3 severe
  "reason": "one sentence"}}"""

LEVEL_TO_INTENSITY = {"control": 0, "mild": 1, "moderate": 2, "severe": 3}


def judge_fidelity(client: ModelClient, simulation: SimulationRun, scenario: str, emotion: str) -> dict[str, Any]:
    lines = []
    for m in simulation.messages:
        if isinstance(m, UserMessage) and m.content:
            lines.append(f"CUSTOMER: {m.content}")
        elif isinstance(m, AssistantMessage) and m.content:
            lines.append(f"AGENT: {m.content}")
    prompt = JUDGE_PROMPT.format(scenario=scenario, emotion=emotion or "none (a neutral customer)",
                                 emotion_short=emotion.split(":")[0] if emotion else "any strong emotion",
                                 transcript="\n".join(lines))
    completion = client.complete([{"role": "user", "content": prompt}])
    text = completion.content or ""
    verdict: dict[str, Any] = {"prompt": prompt, "answer": completion.raw_content}
    match = re.search(r"\{.*\}", text, re.DOTALL)
    try:
        data = json.loads(re.sub(r"//[^\n]*", "", match.group(0))) if match else None
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        verdict["parsed"] = False
        return verdict
    verdict.update(parsed=True, stayed_in_role=bool(data.get("stayed_in_role")), pursued_goal=bool(data.get("pursued_goal")),
                   emotion_intensity=int(data.get("emotion_intensity", 0) or 0) if str(data.get("emotion_intensity", "0")).isdigit() else None,
                   reason=str(data.get("reason", ""))[:500])
    return verdict
