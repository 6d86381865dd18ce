"""``moodbench probe --user`` checks the other side: the model as tau2's simulated customer. For two
tasks of the domain it plays a fixed agent (tau2's greeting, then canned questions) against
:class:`moodbench.sim.EmotionalUserSimulator` for up to three customer turns, in each user format
(``tau2``'s role-flipped history and ``transcript``), and applies the rules of
:mod:`moodbench.judges` to each reply: role confusion (the customer talks like the agent), echo
(it repeats the agent's last message), premature stop (it stops, transfers or goes out of scope
before the agent did anything: every stop in these few turns is premature), empty replies and
failed requests. It recommends the format with the fewest flagged replies (ties: ``tau2``) and says
when no format makes the model a usable customer (more than ``USER_FLAGGED_MAX`` flagged).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from moodbench._util.defaults import USER_FORMATS
from moodbench.doctor._agent_probe import ProbeError, probe_spec
from moodbench.doctor._endpoint_check import EndpointCheck
from moodbench.llm import ModelClient, ModelSpec

USER_FLAGGED_MAX = 0.5
USER_TURNS = 3
AGENT_QUESTIONS: dict[str, tuple[str, str]] = {
    "mock": (
        "Sure, I can help with tasks. Which user id is this for?",
        "Thanks. What exactly should I do, and what is the task called?",
    ),
    "retail": (
        "I'd be glad to help. First I need to verify your identity: what is your email address, or your name and zip code?",
        "Thank you. Which order is this about, and what would you like to change?",
    ),
    "airline": (
        "I'd be glad to help. What is your user id?",
        "Thank you. Which reservation is this about, and what would you like to do?",
    ),
    "telecom": (
        "I'd be glad to help. What is the phone number on your account?",
        "Thank you. Could you describe the problem in a bit more detail?",
    ),
}
GENERIC_QUESTIONS = ("I'd be glad to help. How can I identify your account?", "Thank you. What would you like me to do?")


@dataclass
class UserTurn:
    agent: str
    reply: str | None
    role_confusion: bool = False
    echo: bool = False
    stop: bool = False
    empty: bool = False
    error: str | None = None

    @property
    def flagged(self) -> bool:
        return self.role_confusion or self.echo or self.stop or self.empty or self.error is not None


@dataclass
class UserFormatStats:
    format: str
    conversations: int = 0
    replies: int = 0
    flagged: int = 0
    role_confusion: int = 0
    echo: int = 0
    premature_stop: int = 0
    empty: int = 0
    errors: int = 0

    def flagged_rate(self) -> float:
        return self.flagged / self.replies if self.replies else 1.0


@dataclass
class UserProbeReport:
    model: str
    base_url: str | None
    domain: str
    tasks: list[str]
    formats: dict[str, UserFormatStats]
    conversations: dict[str, list[dict[str, Any]]]
    recommended: str | None
    usable: bool
    advice: list[str]
    endpoint: EndpointCheck | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "base_url": self.base_url,
            "domain": self.domain,
            "tasks": self.tasks,
            "endpoint": asdict(self.endpoint) if self.endpoint else None,
            "recommended_format": self.recommended,
            "usable": self.usable,
            "advice": self.advice,
            "formats": {
                f: {**{k: v for k, v in asdict(s).items() if k != "format"}, "flagged_rate": round(s.flagged_rate(), 3)}
                for f, s in self.formats.items()
            },
            "conversations": self.conversations,
        }


def agent_questions(domain: str) -> tuple[str, str]:
    """The fixed agent's two questions after tau2's greeting, for ``domain`` (a generic pair otherwise)."""
    return AGENT_QUESTIONS.get(domain, GENERIC_QUESTIONS)


def check_customer_reply(agent_text: str, reply: str) -> UserTurn:
    """The fidelity rules applied to one customer reply (every stop in these few turns is premature)."""
    from moodbench.judges import ends_conversation, is_echo, looks_like_agent
    from moodbench.results import strip_stop_tokens

    turn = UserTurn(agent=agent_text, reply=reply)
    turn.stop = ends_conversation(reply)
    clean = strip_stop_tokens(reply)
    turn.empty = not clean and not turn.stop
    turn.role_confusion = looks_like_agent(clean)
    turn.echo = is_echo(agent_text, clean)
    return turn


def _user_conversation(client: ModelClient, domain: str, task: Any, user_format: str, turns: int) -> list[UserTurn]:
    from moodbench.sim import GREETING, customer_replies

    script = (GREETING, *agent_questions(domain))[:turns]
    out: list[UserTurn] = []
    for reply in customer_replies(client, domain, task, user_format, script):
        if reply.error is not None:
            out.append(UserTurn(agent=reply.agent, reply=None, error=reply.error))
        elif reply.empty:
            out.append(UserTurn(agent=reply.agent, reply=None, empty=True))
        elif reply.tool_calls:  # telecom customers may act on their phone; the fixed agent cannot follow
            out.append(UserTurn(agent=reply.agent, reply=f"(tool call: {', '.join(reply.tool_calls)})"))
        else:
            turn = check_customer_reply(reply.agent, reply.text or "")
            out.append(turn)
            if turn.stop:
                break
    return out


def _different_customers(tasks: Sequence[Any], n: int) -> list[Any]:
    """``n`` tasks that need the agent to act, each with another customer (tau2's retail tasks 0-4 are
    one person), so a format recommendation does not rest on one scenario."""
    from moodbench.sim import task_needs_agent_tool

    candidates = [t for t in tasks if task_needs_agent_tool(t)] or list(tasks)
    chosen: list[Any] = []
    seen: set[str] = set()
    for t in candidates:
        who = str(getattr(t.user_scenario.instructions, "known_info", None) or t.user_scenario)
        if who not in seen:
            seen.add(who)
            chosen.append(t)
        if len(chosen) == n:
            break
    return chosen or candidates[:n]


def run_user_probe(
    spec: ModelSpec,
    domain: str,
    *,
    formats: Sequence[str] = USER_FORMATS,
    n_tasks: int = 2,
    turns: int = USER_TURNS,
    threads: int = 4,
) -> UserProbeReport:
    """A few customer turns per task and format; rates of the fidelity problems per format."""
    from moodbench.sim import domain_tools, load_domain_tasks

    try:
        tasks = load_domain_tasks(domain, None)
    except Exception as exc:  # noqa: BLE001 - ConfigError names the valid domains
        raise ProbeError(str(exc)) from None
    skipped: list[str] = []
    if "completion" in formats and domain_tools(domain)[1]:  # the completion format has no customer tools
        formats = [f for f in formats if f != "completion"]
        skipped.append(f"completion (its customer has no tools, and {domain} customers act on their own device)")
    chosen = _different_customers(tasks, n_tasks)
    client = ModelClient(probe_spec(spec))
    jobs = [(f, t) for f in formats for t in chosen]
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="probe-user") as pool:
        convs = list(pool.map(lambda ft: _user_conversation(client, domain, ft[1], ft[0], turns), jobs))
    stats = {f: UserFormatStats(format=f) for f in formats}
    detail: dict[str, list[dict[str, Any]]] = {f: [] for f in formats}
    for (fmt, task), conv in zip(jobs, convs):
        s = stats[fmt]
        s.conversations += 1
        s.replies += len(conv)
        s.flagged += sum(t.flagged for t in conv)
        s.role_confusion += sum(t.role_confusion for t in conv)
        s.echo += sum(t.echo for t in conv)
        s.premature_stop += int(any(t.stop for t in conv))
        s.empty += sum(t.empty for t in conv)
        s.errors += sum(t.error is not None for t in conv)
        detail[fmt].append({"task": task.id, "turns": [asdict(t) for t in conv]})
    ranked = sorted(formats, key=lambda f: (stats[f].flagged_rate(), USER_FORMATS.index(f) if f in USER_FORMATS else 9))
    best = ranked[0] if ranked else None
    usable = best is not None and stats[best].flagged_rate() <= USER_FLAGGED_MAX
    advice: list[str] = [f"not probed: {s}" for s in skipped]
    if best is not None and len(formats) > 1:
        advice.append(f"use --user-format {best} ({stats[best].flagged}/{stats[best].replies} replies flagged)")
    if not usable:
        advice.append(
            "no user format made this model a usable simulated customer: more than half of its replies were "
            "flagged; name a stronger --user-model, or results will measure the simulator, not the emotion"
        )
    return UserProbeReport(
        model=spec.model,
        base_url=spec.base_urls[0] if spec.base_urls else None,
        domain=domain,
        tasks=[t.id for t in chosen],
        formats=stats,
        conversations=detail,
        recommended=best,
        usable=usable,
        advice=advice,
    )
