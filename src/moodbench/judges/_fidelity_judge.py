"""Optional LLM judge of the simulated customer (``--judge-fidelity``).

The rule-based flags in :mod:`._fidelity` catch gross failures cheaply; a judge model can also say
whether the customer expressed the intended emotion at the intended level. Its prompt and raw
answer are stored with the conversation, so a judgement can always be audited.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from moodbench._util.jsontext import first_json_object
from moodbench.judges._transcript import render_transcript

if TYPE_CHECKING:
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


def judge_fidelity(client: ModelClient, messages: Iterable[Any], scenario: str, emotion: str) -> dict[str, Any]:
    """Ask ``client`` to rate the customer; returns the prompt, raw answer and parsed verdict."""
    prompt = JUDGE_PROMPT.format(
        scenario=scenario,
        emotion=emotion or "none (a neutral customer)",
        emotion_short=emotion.split(":")[0] if emotion else "any strong emotion",
        transcript=render_transcript(messages),
    )
    completion = client.complete([{"role": "user", "content": prompt}])
    verdict: dict[str, Any] = {"prompt": prompt, "answer": completion.raw_content}
    data = first_json_object(completion.content)
    if data is None:
        verdict["parsed"] = False
        return verdict
    intensity = data.get("emotion_intensity", 0)
    verdict.update(
        parsed=True,
        stayed_in_role=bool(data.get("stayed_in_role")),
        pursued_goal=bool(data.get("pursued_goal")),
        emotion_intensity=int(intensity) if str(intensity if intensity is not None else "0").isdigit() else None,
        reason=str(data.get("reason", ""))[:500],
    )
    return verdict
