"""Judging tau2's natural-language assertions with the model the user named (``--judge-model``).

tau2 judges them with a hard-wired OpenAI model; moodbench never calls a model the user did not
name. This module asks the judge and parses its verdicts; ``moodbench.sim`` turns them into tau2's
own check objects and combines them into the reward the way tau2 does.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from moodbench._util.jsontext import first_json_object
from moodbench.judges._transcript import render_transcript

if TYPE_CHECKING:
    from moodbench.llm import ModelClient

JUDGE_SYSTEM = (
    "You grade a customer-service conversation against expected outcomes. For each expected outcome decide "
    "whether the agent satisfied it. Answer with JSON only: "
    '{"results": [{"expectedOutcome": "...", "reasoning": "...", "metExpectation": true|false}]}'
)
_ALL_ROLES = {"assistant": "assistant", "user": "user", "tool": "tool"}


@dataclass(frozen=True)
class AssertionVerdict:
    assertion: str
    met: bool
    justification: str


def judge_nl_assertions(
    client: ModelClient, messages: Iterable[Any], assertions: list[str]
) -> tuple[list[AssertionVerdict], dict[str, Any]]:
    """One verdict per assertion (an unreadable answer counts as not met, and says so) and the
    judge's prompt and raw answer for the record."""
    prompt = f"conversation:\n{render_transcript(messages, _ALL_ROLES)}\n\nexpectedOutcomes:\n" + json.dumps(assertions, indent=1)
    completion = client.complete([{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": prompt}])
    text = completion.content or ""
    data = first_json_object(text) or {}
    results = data.get("results")
    verdicts = (
        [
            AssertionVerdict(
                str(item.get("expectedOutcome", "")), bool(item.get("metExpectation")), str(item.get("reasoning", ""))
            )
            for item in results
            if isinstance(item, dict)
        ]
        if isinstance(results, list)
        else []
    )
    if len(verdicts) != len(assertions):
        verdicts = [AssertionVerdict(a, False, f"judge answer unreadable: {text[:300]}") for a in assertions]
    return verdicts, {"prompt": prompt, "answer": completion.raw_content}
