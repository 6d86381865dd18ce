"""``moodbench probe``: can this model, behind this server, act as a tau2 agent at all?

The system this project replaces spent GPU-hours on a model that never called a tool under
``tool_choice="auto"`` (it did under ``"required"``): every task scored 0 and nothing said why.
The probe answers that question in a minute, before a run. It sends a fixed battery of agent turns
(:mod:`._cases`) built from a tau2 domain's real tools and policy, with the exact
system prompt and tool schemas a run's agent uses (:class:`moodbench.sim.MoodbenchAgent`, i.e.
tau2's LLMAgent prompt) and tau2's greeting as the first assistant message. Every case goes out
under ``tool_choice`` ``auto`` and ``required`` (under ``required`` the agent gets the extra
``respond_to_user`` tool exactly as in a run, and calling it counts as a plain answer), through
:class:`moodbench.llm.ModelClient` with text recovery *off*, so a proper ``tool_calls`` entry and a
call written as text are told apart; text-written calls are found separately with
:func:`moodbench.llm.recover_text_tool_calls` (real tool names only).

Per mode it counts: replies with proper tool calls; replies with calls written as text; tool cases
with no call (missed); answer cases with a call (unwanted); tool cases whose first call names an
expected tool (right tool); calls naming tools that do not exist; arguments that are not a JSON
object; arguments that miss required parameters or name unknown ones; replies repeating the same
call; replies whose raw text holds ``<think>`` output; empty replies; failed requests; latency.

Verdict rules (first match wins; "called" means a proper or a text-written call of a real tool,
``respond_to_user`` excluded; rates are over tool cases whose request did not fail):

1. ``unusable`` when no request succeeded in any mode; or both modes were probed and the model
   called no tool in any tool case under either; or in every mode the right tool was chosen in
   fewer than ``RIGHT_TOOL_MIN`` (50%) of tool cases; or in every mode with calls at least
   ``BROKEN_CALLS_MAX`` (50%) of the calls were broken (unknown tool, arguments not JSON, arguments
   not matching the schema). Advice: another model (larger, or tuned for tool calling); when
   requests fail, the server's log.
2. ``never-calls-tools-under-auto`` when no tool case was called under ``auto`` (also when every
   ``auto`` request failed, as vLLM does without ``--enable-auto-tool-choice``). Advice:
   ``--tool-choice required`` (an ablation: the agent speaks through ``respond_to_user``); on vLLM
   ``--enable-auto-tool-choice`` with the ``--tool-call-parser`` for the model's family; another model.
3. ``needs-text-recovery`` when at least one tool case under ``auto`` (or under the only mode
   probed) was answered with a call written as text. Advice: ``--recover-text-tool-calls`` (on by
   default for ``local/`` models); on vLLM another ``--tool-call-parser`` so the calls arrive as
   proper ``tool_calls``.
4. ``ok`` otherwise. Missed or unwanted calls, ``<think>`` output, duplicates and empty replies are
   reported as notes; they do not change the verdict.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from moodbench._util.errors import UsageError
from moodbench._util.jsontext import json_values
from moodbench.doctor._cases import ProbeCase, cases_for, probe_domains
from moodbench.doctor._endpoint_check import EndpointCheck, split_model
from moodbench.llm import ContextWindowError, LLMCallError, ModelClient, ModelSpec, recover_text_tool_calls

MODES = ("auto", "required")
RIGHT_TOOL_MIN = 0.5
BROKEN_CALLS_MAX = 0.5

VERDICT_OK = "ok"
VERDICT_TEXT = "needs-text-recovery"
VERDICT_NEVER_AUTO = "never-calls-tools-under-auto"
VERDICT_UNUSABLE = "unusable"


class ProbeError(UsageError):
    """The probe could not run (unknown domain, no tools, dead endpoint); the message says what to fix."""


@dataclass
class CaseResult:
    """One case under one tool_choice mode."""

    case: str
    mode: str
    needs_tool: bool
    expected: list[str]
    error: str | None = None
    proper_calls: list[dict[str, Any]] = field(default_factory=list)
    text_calls: list[dict[str, Any]] = field(default_factory=list)
    spoke: bool = False  # answered in text, or through respond_to_user under required
    content: str | None = None
    think: bool = False
    empty: bool = False
    latency_s: float | None = None
    right_tool: bool | None = None
    invalid_names: list[str] = field(default_factory=list)  # proper calls naming no real tool
    invented_text_calls: list[str] = field(default_factory=list)  # calls written as text naming no real tool
    invalid_json: int = 0
    schema_errors: list[str] = field(default_factory=list)
    duplicate: bool = False

    @property
    def called(self) -> bool:
        return bool(self.proper_calls or self.text_calls)


@dataclass
class ModeStats:
    mode: str
    cases: int = 0
    tool_cases: int = 0
    answer_cases: int = 0
    errors: int = 0
    proper_calls: int = 0
    text_calls: int = 0
    tool_cases_proper: int = 0
    tool_cases_text: int = 0
    missed_calls: int = 0
    unwanted_calls: int = 0
    right_tool: int = 0
    calls: int = 0
    invalid_names: int = 0
    invented_text_calls: int = 0
    invented_names: list[str] = field(default_factory=list)
    invalid_json: int = 0
    schema_errors: int = 0
    broken_calls: int = 0
    duplicate_calls: int = 0
    think: int = 0
    empty: int = 0
    latency_mean_s: float | None = None
    latency_max_s: float | None = None
    errors_on_tool_cases: int = 0

    @property
    def answered_tool_cases(self) -> int:
        return self.tool_cases - self.errors_on_tool_cases

    def tool_cases_called(self, *, count_text: bool = True) -> int:
        return self.tool_cases_proper + (self.tool_cases_text if count_text else 0)

    def right_rate(self) -> float:
        return self.right_tool / self.answered_tool_cases if self.answered_tool_cases else 0.0

    def broken_rate(self) -> float:
        return self.broken_calls / self.calls if self.calls else 0.0


@dataclass
class Verdict:
    verdict: str
    reasons: list[str]
    advice: list[str]
    notes: list[str]


@dataclass
class ProbeReport:
    model: str
    base_url: str | None
    domain: str
    tools: list[str]
    system_prompt_chars: int
    modes: dict[str, ModeStats]
    results: dict[str, list[CaseResult]]
    verdict: Verdict
    endpoint: EndpointCheck | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "base_url": self.base_url,
            "domain": self.domain,
            "tools": self.tools,
            "system_prompt_chars": self.system_prompt_chars,
            "endpoint": asdict(self.endpoint) if self.endpoint else None,
            "verdict": self.verdict.verdict,
            "reasons": self.verdict.reasons,
            "advice": self.verdict.advice,
            "notes": self.verdict.notes,
            "modes": {m: {k: v for k, v in asdict(s).items() if k != "mode"} for m, s in self.modes.items()},
            "cases": {m: [asdict(r) for r in rs] for m, rs in self.results.items()},
        }


def _schema_problems(name: str, args: dict[str, Any], schemas: dict[str, dict[str, Any]]) -> list[str]:
    params = (schemas.get(name) or {}).get("parameters") or {}
    props = params.get("properties") or {}
    problems = [f"{name}: missing required {p!r}" for p in params.get("required") or [] if p not in args]
    problems += [f"{name}: unknown parameter {p!r}" for p in args if p not in props]
    return problems


def _invented_text_calls(text: str, real: set[str]) -> list[str]:
    """Names of calls written as text (``{"name": ..., "arguments": ...}``) that name no real tool.

    Recovery rightly ignores them, so without this count a model that invents tools in text would
    look like one that never tries to call a tool at all.
    """
    names: list[str] = []
    for value in json_values(text):
        for item in value if isinstance(value, list) else [value]:
            if not isinstance(item, dict):
                continue
            obj = item["function"] if isinstance(item.get("function"), dict) else item
            name = obj.get("name") or obj.get("tool") or obj.get("tool_name")
            if isinstance(name, str) and name not in real and any(k in obj for k in ("arguments", "parameters", "args", "input")):
                names.append(name)
    return names


def _probe_case(
    client: ModelClient, case: ProbeCase, mode: str, system_prompt: str, schemas: list[dict[str, Any]], tool_names: list[str]
) -> CaseResult:
    from moodbench.sim import RESPOND_TOOL, agent_turn_messages

    res = CaseResult(case=case.id, mode=mode, needs_tool=case.needs_tool, expected=list(case.expected))
    try:
        c = client.complete(
            agent_turn_messages(system_prompt, case.history, case.message),
            tools=schemas,
            tool_choice=mode,
            recover_text_tool_calls=False,
        )
    except (LLMCallError, ContextWindowError) as exc:
        res.error = f"{type(exc).__name__}: {exc}"[:500]
        return res
    by_name = {s["function"]["name"]: s["function"] for s in schemas}
    res.latency_s = round(c.latency_s, 4)
    res.think = bool(c.think_stripped)
    res.content = c.content
    spoken: list[str] = []
    seen: list[str] = []
    for t in c.tool_calls:
        if t.name == RESPOND_TOOL:
            spoken.append(str(t.arguments.get("message", "")))
            continue
        problems: list[str] = []
        if t.name not in by_name:
            problems.append(f"{t.name}: no such tool")
            res.invalid_names.append(t.name)
        elif not t.valid_json:
            problems.append(f"{t.name}: arguments are not a JSON object")
            res.invalid_json += 1
        else:
            schema = _schema_problems(t.name, t.arguments, by_name)
            problems += schema
            res.schema_errors += schema
        res.proper_calls.append(
            {"name": t.name, "arguments": t.arguments, "raw_arguments": t.raw_arguments, "problems": problems}
        )
        seen.append(t.name + (json.dumps(t.arguments, sort_keys=True) if t.valid_json else t.raw_arguments))
    if not c.tool_calls and c.content:
        for name, args in recover_text_tool_calls(c.content, list(by_name)):
            if name == RESPOND_TOOL:
                spoken.append(str(args.get("message", "")))
                continue
            schema = _schema_problems(name, args, by_name)
            res.schema_errors += schema
            res.text_calls.append({"name": name, "arguments": args, "problems": schema})
            seen.append(name + json.dumps(args, sort_keys=True))
        res.invented_text_calls = _invented_text_calls(c.content, set(by_name))
    res.duplicate = len(seen) != len(set(seen))
    text = (c.content or "").strip()
    res.spoke = any(s.strip() for s in spoken) or (bool(text) and not res.text_calls)
    res.empty = not res.called and not res.spoke
    if case.needs_tool:
        calls = res.proper_calls or res.text_calls
        res.right_tool = bool(calls and calls[0]["name"] in case.expected)
    return res


def summarize(mode: str, results: Sequence[CaseResult]) -> ModeStats:
    s = ModeStats(mode=mode, cases=len(results))
    lat = [r.latency_s for r in results if r.latency_s is not None]
    for r in results:
        s.tool_cases += int(r.needs_tool)
        s.answer_cases += int(not r.needs_tool)
        if r.error:
            s.errors += 1
            s.errors_on_tool_cases += int(r.needs_tool)
            continue
        s.proper_calls += int(bool(r.proper_calls))
        s.text_calls += int(bool(r.text_calls))
        if r.needs_tool:
            s.tool_cases_proper += int(bool(r.proper_calls))
            s.tool_cases_text += int(bool(r.text_calls))
            s.missed_calls += int(not r.called)
            s.right_tool += int(bool(r.right_tool))
        else:
            s.unwanted_calls += int(r.called)
        n_calls = len(r.proper_calls) + len(r.text_calls)
        s.calls += n_calls
        s.invalid_names += len(r.invalid_names)
        s.invented_text_calls += len(r.invented_text_calls)
        s.invented_names += [n for n in r.invented_text_calls if n not in s.invented_names]
        s.invalid_json += r.invalid_json
        s.schema_errors += len(r.schema_errors)
        s.broken_calls += sum(1 for c in r.proper_calls + r.text_calls if c["problems"])
        s.duplicate_calls += int(r.duplicate)
        s.think += int(r.think)
        s.empty += int(r.empty)
    if lat:
        s.latency_mean_s = round(statistics.fmean(lat), 4)
        s.latency_max_s = round(max(lat), 4)
    return s


def _parser_hint(model: str) -> str:
    try:
        from moodbench.serve.parsers import match_family

        rule = match_family(split_model(model)[1])
    except Exception:  # noqa: BLE001 - the table is optional here
        rule = None
    if rule is not None and rule.tool_parser:
        return f"--tool-call-parser {rule.tool_parser} (the {rule.family} row of docs/vllm-parsers.md)"
    return "the --tool-call-parser for the model's family (docs/vllm-parsers.md)"


def _mode_notes(m: str, s: ModeStats) -> list[str]:
    """What is worth knowing about one mode's replies, whatever the verdict."""
    notes: list[str] = []
    if s.errors:
        notes.append(f"{m}: {s.errors}/{s.cases} request(s) failed")
    if s.missed_calls:
        notes.append(f"{m}: no call in {s.missed_calls}/{s.tool_cases} case(s) that needed one")
    if s.unwanted_calls:
        notes.append(f"{m}: called a tool in {s.unwanted_calls}/{s.answer_cases} case(s) that needed a plain answer")
    if s.think:
        notes.append(
            f"{m}: {s.think} repl(ies) carried <think> output (moodbench strips it; it costs tokens: "
            "keep --max-tokens high, or use vLLM's --reasoning-parser)"
        )
    if s.duplicate_calls:
        notes.append(f"{m}: {s.duplicate_calls} repl(ies) repeated the same call")
    if s.empty:
        notes.append(f"{m}: {s.empty} empty repl(ies)")
    if s.invented_text_calls:
        notes.append(
            f"{m}: {s.invented_text_calls} call(s) written as text named tools that do not exist "
            f"({', '.join(repr(n) for n in s.invented_names[:6])})"
        )
    if s.invalid_names or s.invalid_json or s.schema_errors:
        notes.append(
            f"{m}: {s.invalid_names} unknown tool name(s), {s.invalid_json} non-JSON argument(s), "
            f"{s.schema_errors} schema mismatch(es)"
        )
    return notes


def _unusable_reasons(modes: dict[str, ModeStats], probed: list[str], answered: list[str]) -> list[str]:
    """Why the model cannot act as an agent at all (empty: it can, in some mode)."""
    reasons: list[str] = []
    called = [m for m in answered if modes[m].tool_cases_called() > 0]
    if len(probed) >= 2 and not called:
        reasons.append("no tool call in any case, under tool_choice auto or required")
    elif answered and all(modes[m].right_rate() < RIGHT_TOOL_MIN for m in answered):
        reasons.append(
            "chose the right tool in fewer than half of the cases that needed one, in every mode ("
            + ", ".join(f"{m} {modes[m].right_tool}/{modes[m].answered_tool_cases}" for m in answered)
            + ")"
        )
    elif called and all(modes[m].broken_rate() >= BROKEN_CALLS_MAX for m in called):
        reasons.append(
            "at least half of its calls were broken (unknown tool, non-JSON or schema-mismatched arguments) in every mode"
        )
    return reasons


def _never_auto(auto: ModeStats, modes: dict[str, ModeStats], parser: str, another: str, notes: list[str]) -> Verdict:
    """The verdict for a model that calls no tool under tool_choice=auto, with what required did instead."""
    why = (
        "every tool_choice=auto request failed"
        if auto.errors == auto.cases
        else f"no tool call in {auto.answered_tool_cases} case(s) that needed one under tool_choice=auto"
    )
    if auto.invented_text_calls:
        why += f" (it wrote {auto.invented_text_calls} call(s) as text, naming tools that do not exist)"
    req = modes.get("required")
    if req is not None and req.tool_cases_called():
        why += f", but {req.tool_cases_called()}/{req.tool_cases} under required"
    over = ""
    if req is not None and req.answer_cases and req.unwanted_calls * 2 >= req.answer_cases:
        over = (
            f"; expect over-calling: under required it called a real tool in {req.unwanted_calls}/{req.answer_cases} "
            "case(s) that needed a plain answer instead of respond_to_user"
        )
    advice = [
        (
            "run with --tool-choice required (an ablation: the agent must call a tool every turn and speaks "
            "through respond_to_user; report it as such)" + over
        ),
        f"on vLLM serve with --enable-auto-tool-choice and {parser}",
        another,
    ]
    return Verdict(VERDICT_NEVER_AUTO, [why], advice, notes)


def decide(modes: dict[str, ModeStats], model: str = "") -> Verdict:
    """Apply the verdict rules of the module docstring to per-mode statistics."""
    probed = [m for m in MODES if m in modes]
    reasons: list[str] = []
    notes: list[str] = []
    parser = _parser_hint(model)
    for m in probed:
        notes += _mode_notes(m, modes[m])
    another = "try another model (larger, or tuned for tool calling)"
    answered = [m for m in probed if modes[m].errors < modes[m].cases]
    if not answered:
        return Verdict(
            VERDICT_UNUSABLE,
            ["no request succeeded"],
            ["the endpoint answered no chat request: read the server's log (wrong model name? context too small?)"],
            notes,
        )
    reasons += _unusable_reasons(modes, probed, answered)
    if reasons:
        return Verdict(VERDICT_UNUSABLE, reasons, [another, f"on vLLM check {parser} and the chat template"], notes)
    auto = modes.get("auto")
    if auto is not None and auto.tool_cases_called() == 0:
        return _never_auto(auto, modes, parser, another, notes)
    key = "auto" if auto is not None else (probed[0] if len(probed) == 1 else None)
    if key is not None and modes[key].tool_cases_text > 0:
        s = modes[key]
        why = f"{s.tool_cases_text}/{s.tool_cases} tool case(s) under {key} came back as a call written in the text"
        advice = [
            (
                "run with --recover-text-tool-calls (on by default for local/ models): moodbench turns such text into "
                "real calls and counts them per conversation"
            ),
            (
                f"on vLLM restart with {parser} so calls arrive as proper tool_calls; llama.cpp's server only "
                "recognises <tool_call> tags"
            ),
        ]
        return Verdict(VERDICT_TEXT, [why], advice, notes)
    return Verdict(VERDICT_OK, ["calls tools as proper tool_calls"], [], notes)


def probe_spec(spec: ModelSpec) -> ModelSpec:
    """The spec a probe calls with: no empty-reply retries (empties are a finding), at most one retry."""
    return replace(spec, empty_retries=0, max_retries=min(spec.max_retries, 1))


def run_probe(
    spec: ModelSpec,
    domain: str,
    *,
    modes: Sequence[str] = MODES,
    cases: Sequence[ProbeCase] | None = None,
    threads: int = 4,
    as_run: bool = False,
) -> ProbeReport:
    """Send the domain's battery under each mode (concurrently) and return numbers plus verdict.

    ``as_run`` keeps the run's retry settings (preflight: a flaky reply must not refuse a run);
    otherwise empty replies are not retried away, because they are one of the things measured.
    """
    client = ModelClient(spec if as_run else probe_spec(spec))
    battery = list(cases) if cases is not None else cases_for(domain)
    if not battery:
        raise ProbeError(f"no probe cases for domain {domain!r}; domains with cases: {', '.join(probe_domains())}")
    from moodbench.sim import agent_setup

    try:
        setups = {m: agent_setup(domain, m, client) for m in modes}
    except ValueError as exc:
        raise ProbeError(str(exc)) from None
    jobs = [(m, c) for m in modes for c in battery]
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="probe") as pool:
        done = list(
            pool.map(lambda mc: _probe_case(client, mc[1], mc[0], setups[mc[0]][0], setups[mc[0]][1], setups[mc[0]][2]), jobs)
        )
    results = {m: [r for r in done if r.mode == m] for m in modes}
    stats = {m: summarize(m, results[m]) for m in modes}
    first = setups[modes[0]]
    return ProbeReport(
        model=spec.model,
        base_url=spec.base_urls[0] if spec.base_urls else None,
        domain=domain,
        tools=first[2],
        system_prompt_chars=len(first[0]),
        modes=stats,
        results=results,
        verdict=decide(stats, spec.model),
    )
