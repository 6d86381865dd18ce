"""A steered or unsteered customer model answering fixed agent turns of real tau2 tasks.

Shared by calibration and the format comparison: both need "the customer model's reply to this agent
turn, for this task, in this message format", scored by the same rule-based fidelity checks a run uses
(:func:`moodbench.probe._check_user_reply`: role confusion, echo, stop token, empty), plus two checks
that steering made necessary (measured on the 0.5B): ``refusal`` (the assistant's "I can't help you
with that." instead of a customer's words: half the replies at scale 1.0) and ``self_repeat`` (the
customer repeats its own previous message: the loop that strong vectors produce across turns).

The customer's system prompt is tau2's own user-simulator prompt for the task with no emotion text
(:class:`moodbench.user.EmotionalUserSimulator` with ``persona_block=None``, i.e. byte for byte tau2's).
The customer gets no tools here (the scripted agent could not answer a tool call), so use domains
whose customers have none (mock, retail, airline; not telecom).
Formats:

* ``tau2``: tau2's role-flipped chat (agent turns as ``user``, customer turns as ``assistant``) sent to
  ``/v1/chat/completions``, as a run with ``--user-format tau2`` does;
* ``transcript``: moodbench's one-message transcript (``--user-format transcript``), built by the
  simulator's own ``_payload``;
* ``completion``: :func:`moodbench.steer._completion_format.render_completion_prompt` sent to
  ``/v1/completions``.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import asdict, dataclass
from functools import cache
from typing import Any, Literal

import httpx

__all__ = ["FORMATS", "AgentScript", "CustomerTurn", "agent_script", "customer_conversation", "customer_system_prompt"]

Format = Literal["tau2", "transcript", "completion"]
FORMATS: tuple[str, ...] = ("tau2", "transcript", "completion")

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


def _tau2_task(domain: str, task_id: str) -> Any:
    tasks = {t.id: t for t in _tasks(domain)}
    if task_id not in tasks:
        raise KeyError(f"task {task_id!r} not in domain {domain!r} (tasks: {', '.join(list(tasks)[:12])} ...)")
    return tasks[task_id]


@cache
def _tasks(domain: str) -> tuple[Any, ...]:
    from moodbench.plan import load_domain_tasks

    return tuple(load_domain_tasks(domain, None))


def _simulator(domain: str, task_id: str) -> Any:
    from moodbench.llm import ModelClient, ModelSpec
    from moodbench.user import EmotionalUserSimulator

    task = _tau2_task(domain, task_id)
    # The client is never called: the simulator is used for its prompt and its payload only.
    return EmotionalUserSimulator(tools=None, instructions=str(task.user_scenario), persona_block=None,
                                  client=ModelClient(ModelSpec(model="openai/unused")))  # fmt: skip


def customer_system_prompt(domain: str, task_id: str) -> str:
    """tau2's user-simulator system prompt for the task, with no emotion text."""
    return str(_simulator(domain, task_id).system_prompt)


def agent_script(domain: str, task_id: str, turns: int = 3) -> AgentScript:
    """tau2's greeting, the probe's identity question for the domain, a failed lookup, the probe's second question."""
    from tau2.orchestrator.orchestrator import DEFAULT_FIRST_AGENT_MESSAGE

    from moodbench.probe import _AGENT_QUESTIONS, _GENERIC_QUESTIONS

    first, second = _AGENT_QUESTIONS.get(domain, _GENERIC_QUESTIONS)
    script = (str(DEFAULT_FIRST_AGENT_MESSAGE.content), first, RETRY_TURN, second)
    return AgentScript(domain=domain, task_id=task_id, turns=script[: max(1, min(turns, len(script)))])


def _similar(previous: str | None, text: str) -> bool:
    if not previous or len(text) < 20:
        return False
    return difflib.SequenceMatcher(None, previous.lower(), text.lower(), autojunk=False).ratio() >= SELF_REPEAT_SIMILARITY


def _payload(fmt: str, domain: str, task_id: str, history: list[tuple[str, str]]) -> tuple[str, dict[str, Any]]:
    """(path, body) of the request for the customer's next message; ``history`` ends with the agent's turn."""
    sim = _simulator(domain, task_id)
    if fmt == "completion":
        from moodbench.steer._completion_format import render_completion_prompt

        prompt, stop = render_completion_prompt(sim.system_prompt, history)
        return "/completions", {"prompt": prompt, "stop": stop}
    from moodbench._tau2 import AssistantMessage, UserMessage

    state = sim.get_init_state()
    for role, text in history:
        state.messages.append(AssistantMessage(role="assistant", content=text) if role == "agent"
                              else UserMessage(role="user", content=text))  # fmt: skip
    sim.user_format = fmt
    return "/chat/completions", {"messages": sim._payload(state)}


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
) -> list[CustomerTurn]:
    """Play ``script`` against the customer model at ``base_url``; ends early at a stop token or error.

    ``base_url`` is an OpenAI-compatible ``.../v1``. Every reply is checked with the probe's rules.
    """
    from moodbench.probe import _check_user_reply

    if fmt not in FORMATS:
        raise ValueError(f"unknown customer format {fmt!r}; formats: {', '.join(FORMATS)}")
    key = f"{script.domain}:{script.task_id}"
    history: list[tuple[str, str]] = []
    out: list[CustomerTurn] = []
    with httpx.Client(timeout=timeout_s) as http:
        for k, agent_text in enumerate(script.turns):
            history.append(("agent", agent_text))
            path, body = _payload(fmt, script.domain, script.task_id, history)
            body.update(model=model, temperature=temperature, seed=seed + 1000 * k, max_tokens=max_tokens)
            try:
                r = http.post(base_url.rstrip("/") + path, json=body)
                r.raise_for_status()
                choice = r.json()["choices"][0]
            except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
                out.append(CustomerTurn(task=key, seed=seed, turn=k, agent=agent_text, reply=None,
                                        error=f"{type(exc).__name__}: {exc}"[:300]))  # fmt: skip
                break
            if fmt == "completion":
                from moodbench.steer._completion_format import clean_completion_reply

                text = clean_completion_reply(choice.get("text") or "")
            else:
                text = ((choice.get("message") or {}).get("content") or "").strip()
            checked = _check_user_reply(agent_text, text)
            previous = out[-1].reply if out and out[-1].reply else None
            turn = CustomerTurn(task=key, seed=seed, turn=k, agent=agent_text, reply=text, role_confusion=checked.role_confusion,
                                echo=checked.echo, stop=checked.stop, empty=checked.empty, refusal=bool(REFUSAL_RE.search(text)),
                                self_repeat=_similar(previous, text), finish_reason=choice.get("finish_reason"))  # fmt: skip
            out.append(turn)
            if turn.stop or turn.empty:
                break
            history.append(("customer", text))
    return out
