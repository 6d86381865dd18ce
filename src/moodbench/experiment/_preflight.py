"""Checks before the first conversation of ``moodbench run``: refuse a setup that can only produce zeros.

Two things have burned GPU-hours before: an endpoint that is down or serves another model (every
conversation ends in ``llm_error``), and an agent model that never calls a tool under the run's
``tool_choice`` policy (every task scores 0 and looks like a result). So, before the first
conversation (``moodbench.run`` calls :func:`run_preflight`):

1. every endpoint of the run (agent, user, judge; each base URL, each once) must answer
   ``GET /v1/models`` and list the named model (the litellm provider prefix removed:
   ``openai/scripted`` -> ``scripted``, ``hosted_vllm/Qwen/Qwen2.5-7B`` -> ``Qwen/Qwen2.5-7B``).
   Provider models without a base URL, and base URLs of providers that do not speak the OpenAI
   API, are not checked (recorded as such);
2. the agent model gets the short subset of the probe battery (:mod:`._cases`,
   ``preflight=True``: a few tool cases and a plain-answer case of the run's first domain) under
   the run's ``tool_choice`` and with the same request settings as the run. If no tool case gets a
   call (text-written calls count only when ``--recover-text-tool-calls`` is on), the other
   ``tool_choice`` mode is probed too so that the advice can be specific (turn recovery on, use
   ``--tool-choice required``, fix the server's parser, another model), and the run stops.

A refusal raises :class:`PreflightError` (exit code 3; nothing is run or stored but the config and
the preflight record). The record goes to the store (meta key ``preflight``), to events.jsonl
(event ``preflight``) and, through the runner, to manifest.json (key ``preflight``).
``--skip-preflight`` skips all of it.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from moodbench._util.secrets import scrub

if TYPE_CHECKING:  # the model layer imports litellm (seconds): the CLI imports this module for PreflightError only
    from rich.console import Console

    from moodbench.doctor import EndpointCheck
    from moodbench.experiment import RunConfig
    from moodbench.llm import ModelSpec
    from moodbench.results import EventLog, Store


class PreflightError(RuntimeError):
    """The setup cannot produce a meaningful run (exit code 3); ``advice`` says what to change."""

    def __init__(self, message: str, advice: list[str] | None = None):
        super().__init__(message)
        self.advice = list(advice or [])


def check_endpoints(config: RunConfig, api_key: str | None = None) -> list[EndpointCheck]:
    """One check per distinct (model, base URL) of the run's roles; roles sharing one are named together.
    Each endpoint gets only the key named for its role (``RunConfig.key_env``); ``api_key`` is unused."""
    from moodbench.doctor import check_endpoint

    um, uu = config.resolved_user_model()
    jm, ju = config.resolved_judge_model()
    pairs: dict[tuple[str, str | None], list[str]] = {}
    for role, model, urls in (("agent", config.agent_model, list(config.agent_base_url)), ("user", um, uu), ("judge", jm, ju)):
        targets: list[str | None] = list(urls) if urls else [None]
        for url in targets:
            pairs.setdefault((model, url), []).append(role)
    timeout = min(10.0, config.timeout_s)
    checks = []
    for (model, url), roles in pairs.items():
        env = config.key_env(roles[0])
        check = check_endpoint(roles[0], model, url, api_key=os.environ.get(env) if env else None, timeout=timeout)
        check.role = ",".join(roles)
        checks.append(check)
    return checks


def _refusal_message(mode: str, recover: bool, stats: Any, verdict: Any) -> str:
    if stats.errors == stats.cases:
        first = "every probe request failed"
    elif stats.tool_cases_text and not recover:
        first = (
            f"the agent wrote its tool calls as text in {stats.tool_cases_text}/{stats.tool_cases} probe case(s) "
            "and text recovery is off"
        )
    else:
        first = f"the agent called no tool in {stats.tool_cases} probe case(s) that needed one"
    return f"{first} under tool_choice={mode}: every task would score 0 (probe verdict: {verdict.verdict}; {'; '.join(verdict.reasons)})"


def run_preflight(
    config: RunConfig,
    agent_spec: ModelSpec,
    store: Store,
    events: EventLog,
    console: Console | None = None,
    secrets: list[str] | None = None,
) -> dict[str, Any]:
    """Check endpoints and the agent's tool calling; record the result; raise :class:`PreflightError` to refuse."""
    from moodbench.doctor import MODES, ModeStats, ProbeError, cases_for, decide, run_probe

    def say(text: str) -> None:
        if console is not None:
            console.print(text, highlight=False)

    t0 = time.perf_counter()
    api_key = os.environ.get(config.api_key_env) if config.api_key_env else None
    record: dict[str, Any] = {"passed": False, "endpoints": [], "probe": None, "message": "", "advice": []}

    def finish(passed: bool, message: str, advice: list[str] | None = None) -> dict[str, Any]:
        record.update(passed=passed, message=message, advice=list(advice or []), seconds=round(time.perf_counter() - t0, 3))
        store.set_meta("preflight", scrub(record, list(secrets or [])))  # probe replies could echo a key
        events.emit("preflight", **record)
        if not passed:
            raise PreflightError(message, advice=advice)
        return record

    checks = check_endpoints(config, api_key)
    record["endpoints"] = [asdict(c) for c in checks]
    bad = [c for c in checks if not c.ok]
    if bad:
        lines = [f"{c.base_url} ({c.role}: {c.model}) {c.error}" for c in bad]
        return finish(
            False,
            "endpoint check failed: " + "; ".join(lines),
            ["start the server (e.g. `moodbench serve`) or fix the base URL / model name, then re-run"],
        )

    domain = next((d for d in config.domains if cases_for(d, preflight_only=True)), None)
    if domain is None:
        return finish(True, f"endpoints ok; no probe cases for domain(s) {', '.join(config.domains)}: tool calling not checked")
    mode = config.tool_choice
    recover = bool(config.recover_text_tool_calls)
    cases = cases_for(domain, preflight_only=True)
    threads = max(1, min(config.concurrency, len(cases)))
    try:
        report = run_probe(agent_spec, domain, modes=(mode,), cases=cases, threads=threads, as_run=True)
    except ProbeError as exc:
        return finish(False, f"probe could not run: {exc}")
    stats = report.modes[mode]
    called = stats.tool_cases_called(count_text=recover)
    probe: dict[str, Any] = {
        "domain": domain,
        "tool_choice": mode,
        "recover_text_tool_calls": recover,
        "cases": [c.id for c in cases],
        "tool_cases": stats.tool_cases,
        "tool_cases_called": called,
        "modes": {mode: asdict(stats)},
        "results": {mode: [asdict(r) for r in report.results[mode]]},
    }
    record["probe"] = probe
    if called > 0:
        verdict = decide({mode: stats}, agent_spec.model)
        probe.update(verdict=verdict.verdict, reasons=verdict.reasons, notes=verdict.notes)
        message = (
            f"{len([c for c in checks if c.checked])} endpoint(s) ok; the agent called a tool in {called}/{stats.tool_cases} "
            f"probe case(s) under tool_choice={mode}" + (" (text recovery on)" if recover else "")
        )
        say(f"preflight: {message}")
        for note in verdict.notes:
            say(f"  preflight note: {note}")
        return finish(True, message, verdict.advice)
    # Refusing: probe the other mode too, so the advice says what would work.
    other = next(m for m in MODES if m != mode)
    both: dict[str, ModeStats] = {mode: stats}
    try:
        more = run_probe(agent_spec, domain, modes=(other,), cases=cases, threads=threads, as_run=True)
        both[other] = more.modes[other]
        probe["modes"][other] = asdict(more.modes[other])
        probe["results"][other] = [asdict(r) for r in more.results[other]]
    except ProbeError:
        pass
    ordered = {m: both[m] for m in MODES if m in both}
    verdict = decide(ordered, agent_spec.model)
    probe.update(verdict=verdict.verdict, reasons=verdict.reasons, notes=verdict.notes)
    advice = list(verdict.advice)
    if verdict.verdict == "ok" or (verdict.verdict == "needs-text-recovery" and recover):
        advice.insert(0, f"under tool_choice={other} the agent does call tools: run with --tool-choice {other}")
    return finish(False, _refusal_message(mode, recover, stats, verdict), advice)
