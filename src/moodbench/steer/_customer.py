"""A steered or unsteered customer model answering fixed agent turns of real tau2 tasks.

Shared by calibration and the format comparison: both need "the customer model's reply to this agent
turn, for this task, in this message format", scored by the same rule-based fidelity checks a run uses
(:func:`moodbench.doctor.check_customer_reply`: role confusion, echo, stop token, empty), plus two checks
that steering made necessary (measured on the 0.5B): ``refusal`` (the assistant's "I can't help you
with that." instead of a customer's words: half the replies at scale 1.0) and ``self_repeat`` (the
customer repeats its own previous message: the loop that strong vectors produce across turns).

The customer's system prompt is tau2's own user-simulator prompt for the task with no emotion text
(the run's own simulator with ``persona_block=None``, i.e. byte for byte tau2's).
The customer gets no tools here (the scripted agent could not answer a tool call), so use domains
whose customers have none (mock, retail, airline; not telecom).
Formats:

* ``tau2``: tau2's role-flipped chat (agent turns as ``user``, customer turns as ``assistant``) sent to
  ``/v1/chat/completions``, as a run with ``--user-format tau2`` does;
* ``transcript``: moodbench's one-message transcript (``--user-format transcript``);
* ``completion``: the transcript continuation of ``moodbench.sim`` sent to ``/v1/completions``.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import asdict, dataclass
from typing import Any

from moodbench._util.defaults import USER_FORMATS

__all__ = ["FORMATS", "AgentScript", "CustomerTurn", "agent_script", "customer_conversation", "customer_system_prompt"]

FORMATS: tuple[str, ...] = USER_FORMATS

#: An agent turn that gives an emotional customer something to react to (a failed lookup), used as the
#: third turn of every script.
RETRY_TURN = "I'm sorry, I could not find anything with those details. Could you please give them to me again?"

#: An assistant-style refusal: a customer asks for help, it does not decline to give it.
REFUSAL_RE = re.compile(
    r"\bI(?: am|'m)? (?:sorry,? (?:but )?I )?(?:can't|cannot|can not|am unable to|'m unable to|am not able to) "
    r"(?:help|assist)\b|\bI'm sorry, but I (?:can't|cannot)\b",
    re.IGNORECASE,
)
SELF_REPEAT_SIMILARITY = 0.9  # a reply this similar to the customer's own previous reply is a loop


@dataclass(frozen=True)
class AgentScript:
    """The fixed agent side of one probe conversation."""

    domain: str
    task_id: str
    turns: tuple[str, ...]


@dataclass
class CustomerTurn:
    """One customer reply and the fidelity checks run on it."""

    task: str
    seed: int
    turn: int
    agent: str
    reply: str | None
    role_confusion: bool = False
    echo: bool = False
    stop: bool = False
    empty: bool = False
    refusal: bool = False
    self_repeat: bool = False
    error: str | None = None
    finish_reason: str | None = None

    @property
    def flagged(self) -> bool:
        """Any problem a run's fidelity rules would flag, or one of the two steering checks."""
        return (self.role_confusion or self.echo or self.stop or self.empty or self.refusal or self.self_repeat
                or self.error is not None)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "flagged": self.flagged}


def customer_system_prompt(domain: str, task_id: str) -> str:
    """tau2's user-simulator system prompt for the task, with no emotion text."""
    from moodbench.sim import customer_system_prompt as prompt_for
    from moodbench.sim import find_task

    return prompt_for(domain, find_task(domain, task_id))


def agent_script(domain: str, task_id: str, turns: int = 3) -> AgentScript:
    """tau2's greeting, the probe's identity question for the domain, a failed lookup, the probe's second question."""
    from moodbench.doctor import agent_questions
    from moodbench.sim import GREETING

    first, second = agent_questions(domain)
    script = (GREETING, first, RETRY_TURN, second)
    return AgentScript(domain=domain, task_id=task_id, turns=script[: max(1, min(turns, len(script)))])


def _similar(previous: str | None, text: str) -> bool:
    if not previous or len(text) < 20:
        return False
    return difflib.SequenceMatcher(None, previous.lower(), text.lower(), autojunk=False).ratio() >= SELF_REPEAT_SIMILARITY


def customer_conversation(
    base_url: str,
    script: AgentScript,
    *,
    fmt: str = "tau2",
    seed: int = 1,
    temperature: float = 0.7,
    max_tokens: int = 64,
    timeout_s: float = 600.0,
    model: str = "local",
    persona_block: str | None = None,
) -> list[CustomerTurn]:
    """Play ``script`` against the customer model at ``base_url``; ends early at a stop token or error.

    The customer is the run's own simulator (:func:`moodbench.sim.customer_replies`, the format's real
    request through the model layer), so calibration measures exactly what a run would send.
    ``base_url`` is an OpenAI-compatible ``.../v1``. Every reply is checked with the probe's rules.
    ``persona_block``: the prompted emotion (:meth:`moodbench.emotions.Catalog.persona_block`) appended to
    the customer's prompt as a run appends it; None (calibration) sends tau2's prompt unchanged, so the
    same checks can compare a prompted customer with a steered one.
    """
    from moodbench.doctor import check_customer_reply
    from moodbench.llm import ModelClient, ModelSpec
    from moodbench.sim import customer_replies, find_task

    if fmt not in FORMATS:
        raise ValueError(f"unknown customer format {fmt!r}; formats: {', '.join(FORMATS)}")
    spec = ModelSpec(
        model=f"openai/{model}",
        base_urls=(base_url,),
        args={"temperature": temperature},
        max_tokens=max_tokens,
        timeout_s=timeout_s,
        max_retries=1,
        empty_retries=0,
    )
    key = f"{script.domain}:{script.task_id}"
    out: list[CustomerTurn] = []
    replies = customer_replies(
        ModelClient(spec),
        script.domain,
        find_task(script.domain, script.task_id),
        fmt,
        script.turns,
        persona_block=persona_block,
        seed=seed,
    )
    for k, reply in enumerate(replies):
        if reply.error is not None or reply.tool_calls:
            out.append(
                CustomerTurn(
                    task=key,
                    seed=seed,
                    turn=k,
                    agent=reply.agent,
                    reply=None,
                    error=reply.error or f"the customer called {', '.join(reply.tool_calls or [])}",
                )
            )
            break
        text = reply.text or ""
        checked = check_customer_reply(reply.agent, text)
        previous = out[-1].reply if out and out[-1].reply else None
        turn = CustomerTurn(
            task=key,
            seed=seed,
            turn=k,
            agent=reply.agent,
            reply=text,
            role_confusion=checked.role_confusion,
            echo=checked.echo,
            stop=checked.stop,
            empty=checked.empty or reply.empty,
            refusal=bool(REFUSAL_RE.search(text)),
            self_repeat=_similar(previous, text),
            finish_reason=reply.finish_reason,
        )
        out.append(turn)
        if turn.stop or turn.empty:
            break
    return out
