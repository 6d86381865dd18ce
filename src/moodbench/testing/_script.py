"""The scripted server's script: its keys, defaults, loading and validation (the reference is in
:mod:`moodbench.testing.scripted_server`'s docstring).

A script is checked once at load time, so a typo fails the test that wrote it, not a later request.
Only the standard library is imported (YAML lazily), since every test that starts a server pays the
import time.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

Response = dict[str, Any]

ROLES_BUILTIN = ("agent", "user", "judge")

# What a role says when the script gives it nothing: the simulated customer ends
# the conversation (so a half-written script cannot loop forever), everyone else
# says something harmless.
DEFAULT_RESPONSES: dict[str, Response] = {
    "user": {"content": "###STOP###"},
    "agent": {"content": "OK"},
    "judge": {"content": "OK"},
}
FALLBACK_RESPONSE: Response = {"content": "OK"}

TOP_LEVEL_KEYS = {"models", "seed", "latency_ms", "latency_jitter_ms", "roles", "faults", "description"}
ROLE_KEYS = {"turns", "after", "detect", "model", "latency_ms"}
FAULT_KEYS = {
    "error_500_rate",
    "error_429_rate",
    "retry_after_s",
    "timeout_rate",
    "timeout_s",
    "drop_rate",
    "drip_rate",
    "drip_bytes_per_s",
    "drip_headers",
    "huge_rate",
    "huge_bytes",
    "huge_chunked",
    "endless_rate",
    "malformed_tool_call_rate",
    "down",
    "first_n_fail",
    "require_api_key",
    "roles",
}
# Faults that answer 200 but send the reply in a way only a client with a deadline and a size
# limit survives; handle_chat writes them itself.
REPLY_FAULTS = ("drip", "huge", "endless")
RESPONSE_KEYS = {
    "content",
    "tool_calls",
    "text_tool_call",
    "style",
    "by_tool_choice",
    "echo_last",
    "empty",
    "status",
    "error",
    "retry_after_s",
    "think",
    "match",
    "else",
    "delay_ms",
    "finish_reason",
}
# At least one of these must be present, otherwise the response says nothing.
RESPONSE_PAYLOAD_KEYS = {
    "content",
    "tool_calls",
    "text_tool_call",
    "by_tool_choice",
    "echo_last",
    "empty",
    "status",
    "think",
    "match",
}
TEXT_TOOL_STYLES = ("bare", "fenced", "tagged")
TOOL_CHOICES = ("auto", "required", "none")
MALFORMED_ARGUMENTS = "{bad json"


class ScriptError(ValueError):
    """Raised at load time so a typo in a script fails the test that wrote it, not a later request."""


def load_script(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a JSON or YAML script; YAML is imported lazily because JSON is the common case."""
    text = Path(path).read_text(encoding="utf-8")
    suffix = Path(path).suffix.lower()
    if suffix in (".yaml", ".yml"):
        import yaml

        script = yaml.safe_load(text)
    else:
        try:
            script = json.loads(text)
        except json.JSONDecodeError:
            import yaml

            script = yaml.safe_load(text)
    if script is None:
        script = {}
    validate_script(script)
    return script


def validate_script(script: Any) -> None:
    """Reject malformed scripts up front, with the path of the offending part."""
    if not isinstance(script, dict):
        raise ScriptError("script must be a mapping")
    _check_keys(script, TOP_LEVEL_KEYS, "script")
    models = script.get("models", ["scripted"])
    if not isinstance(models, list) or not models or not all(isinstance(m, str) for m in models):
        raise ScriptError("script.models must be a non-empty list of strings")
    for key in ("latency_ms", "latency_jitter_ms"):
        if not isinstance(script.get(key, 0), (int, float)) or script.get(key, 0) < 0:
            raise ScriptError(f"script.{key} must be a non-negative number")
    roles = script.get("roles", {})
    if not isinstance(roles, dict):
        raise ScriptError("script.roles must be a mapping of role name -> role spec")
    for name, spec in roles.items():
        _validate_role(name, spec)
    _validate_faults(script.get("faults", {}))


def _validate_role(name: str, spec: Any) -> None:
    where = f"roles.{name}"
    if not isinstance(spec, dict):
        raise ScriptError(f"{where} must be a mapping")
    _check_keys(spec, ROLE_KEYS, where)
    turns = spec.get("turns", [])
    if not isinstance(turns, list):
        raise ScriptError(f"{where}.turns must be a list")
    for i, resp in enumerate(turns):
        validate_response(resp, f"{where}.turns[{i}]")
    after = spec.get("after", "repeat_last")
    if isinstance(after, str):
        if after not in ("repeat_last", "cycle"):
            raise ScriptError(f"{where}.after must be 'repeat_last', 'cycle' or a response")
    else:
        validate_response(after, f"{where}.after")
    if "detect" in spec:
        try:
            re.compile(spec["detect"])
        except (re.error, TypeError) as exc:
            raise ScriptError(f"{where}.detect is not a valid regex: {exc}") from exc
    if "model" in spec and not isinstance(spec["model"], str):
        raise ScriptError(f"{where}.model must be a string")
    if name not in ROLES_BUILTIN and "detect" not in spec and "model" not in spec:
        raise ScriptError(f"{where}: a custom role needs 'detect' or 'model' to ever be chosen")


def _validate_faults(faults: Any) -> None:
    if not isinstance(faults, dict):
        raise ScriptError("script.faults must be a mapping")
    _check_keys(faults, FAULT_KEYS, "faults")
    for key in sorted(k for k in FAULT_KEYS if k.endswith("_rate")):
        rate = faults.get(key, 0.0)
        if not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
            raise ScriptError(f"faults.{key} must be a number in [0, 1]")
    for key in ("drip_bytes_per_s", "huge_bytes"):
        value = faults.get(key, 1)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise ScriptError(f"faults.{key} must be a positive number")
    for key in ("drip_headers", "huge_chunked"):
        if not isinstance(faults.get(key, True), bool):
            raise ScriptError(f"faults.{key} must be true or false")
    if "require_api_key" in faults and (not isinstance(faults["require_api_key"], str) or not faults["require_api_key"]):
        raise ScriptError("faults.require_api_key must be a non-empty string")
    if "roles" in faults and (not isinstance(faults["roles"], list) or not all(isinstance(r, str) for r in faults["roles"])):
        raise ScriptError("faults.roles must be a list of role names")


def validate_response(resp: Any, where: str) -> None:
    if not isinstance(resp, dict):
        raise ScriptError(f"{where} must be a mapping, got {type(resp).__name__}")
    _check_keys(resp, RESPONSE_KEYS, where)
    if not RESPONSE_PAYLOAD_KEYS & resp.keys():
        raise ScriptError(f"{where} needs one of {sorted(RESPONSE_PAYLOAD_KEYS)}")
    if "content" in resp and not isinstance(resp["content"], str):
        raise ScriptError(f"{where}.content must be a string")
    if "tool_calls" in resp:
        calls = resp["tool_calls"]
        if not isinstance(calls, list):
            raise ScriptError(f"{where}.tool_calls must be a list")
        for i, call in enumerate(calls):
            _validate_call(call, f"{where}.tool_calls[{i}]")
    if "text_tool_call" in resp:
        _validate_call(resp["text_tool_call"], f"{where}.text_tool_call")
        if resp.get("style", "bare") not in TEXT_TOOL_STYLES:
            raise ScriptError(f"{where}.style must be one of {TEXT_TOOL_STYLES}")
    if "by_tool_choice" in resp:
        _validate_branches(resp["by_tool_choice"], where)
    if "match" in resp:
        _validate_match(resp, where)
    if "status" in resp and (not isinstance(resp["status"], int) or not 400 <= resp["status"] <= 599):
        raise ScriptError(f"{where}.status must be an HTTP error code (400-599)")
    if "delay_ms" in resp and (not isinstance(resp["delay_ms"], (int, float)) or resp["delay_ms"] < 0):
        raise ScriptError(f"{where}.delay_ms must be a non-negative number")


def _validate_branches(branches: Any, where: str) -> None:
    """``by_tool_choice``: a non-empty mapping from auto/required/none to a response."""
    if not isinstance(branches, dict) or not branches:
        raise ScriptError(f"{where}.by_tool_choice must be a non-empty mapping")
    for choice, sub in branches.items():
        if choice not in TOOL_CHOICES:
            raise ScriptError(f"{where}.by_tool_choice keys must be among {TOOL_CHOICES}")
        validate_response(sub, f"{where}.by_tool_choice.{choice}")


def _validate_match(resp: dict[str, Any], where: str) -> None:
    """``match`` rules (each ``if_contains`` or ``if_regex``, ``in``, ``then``) and the ``else`` every match needs."""
    rules = resp["match"]
    if not isinstance(rules, list):
        raise ScriptError(f"{where}.match must be a list")
    for i, rule in enumerate(rules):
        rwhere = f"{where}.match[{i}]"
        if not isinstance(rule, dict) or "then" not in rule:
            raise ScriptError(f"{rwhere} must be a mapping with 'then'")
        _check_keys(rule, {"if_contains", "if_regex", "in", "then"}, rwhere)
        if "if_contains" not in rule and "if_regex" not in rule:
            raise ScriptError(f"{rwhere} needs 'if_contains' or 'if_regex'")
        if "if_contains" in rule and not isinstance(rule["if_contains"], str):
            raise ScriptError(f"{rwhere}.if_contains must be a string")
        if "if_regex" in rule:
            try:
                re.compile(rule["if_regex"])
            except (re.error, TypeError) as exc:
                raise ScriptError(f"{rwhere}.if_regex is not a valid regex: {exc}") from exc
        if rule.get("in", "any") not in ("any", "last", "system", "all"):
            raise ScriptError(f"{rwhere}.in must be 'any', 'last', 'system' or 'all'")
        validate_response(rule["then"], f"{rwhere}.then")
    if "else" not in resp:
        raise ScriptError(f"{where}: 'match' needs an 'else' so every request gets an answer")
    validate_response(resp["else"], f"{where}.else")


def _validate_call(call: Any, where: str) -> None:
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        raise ScriptError(f"{where} must be a mapping with a string 'name'")
    _check_keys(call, {"name", "arguments", "id"}, where)
    if not isinstance(call.get("arguments", {}), (dict, str)):
        raise ScriptError(f"{where}.arguments must be a mapping or a (possibly malformed) JSON string")


def _check_keys(obj: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(k for k in obj if k not in allowed and not str(k).startswith("_"))
    if unknown:
        raise ScriptError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
