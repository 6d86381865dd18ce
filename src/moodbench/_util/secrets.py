"""Secrets: recognising them, and keeping them out of everything moodbench writes or prints.

Interim home (the model layer's hardening replaces it with the full rules): the names that look
like credentials, the values to scrub, and the deep scrub used before anything reaches disk.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

# "token" only as a whole key or a credential-like suffix (auth_token, hf_token, AuthToken): request
# parameters such as max_tokens, stop_token_ids or skip_special_tokens are not secrets.
_SECRET_KEY = re.compile(
    r"api[_-]?key|secret|password|passwd|authorization|credential|(?:^|[_-]|auth|access|bearer|refresh|session)token$",
    re.I,
)
_SECRET_ENV = re.compile(r"(API_?KEY|TOKEN|SECRET|PASSWORD|PASSWD)", re.IGNORECASE)
_MIN_SECRET_LEN = 8


def looks_secret(name: str) -> bool:
    return bool(_SECRET_KEY.search(str(name)))


def secret_keys(value: Any) -> list[str]:
    """Keys that look like credentials, at any depth (``extra_headers: {Authorization: ...}`` too)."""
    found: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if looks_secret(str(k)):
                found.append(str(k))
            found += secret_keys(v)
    elif isinstance(value, list):
        for item in value:
            found += secret_keys(item)
    return found


def secret_values(env_names: tuple[str, ...] | list[str] = ()) -> list[str]:
    """Values to scrub: the named key variables plus any environment variable whose name looks like
    a credential. Longest first, so a key that contains another is replaced whole."""
    found: set[str] = set()
    for name, value in os.environ.items():
        if (_SECRET_ENV.search(name) and len(value) >= _MIN_SECRET_LEN and not value.isdigit()
                and not value.startswith(("/", "~", "."))):
            found.add(value)
    for name in env_names:
        named = os.environ.get(name)
        if named and len(named) >= 4:
            found.add(named)
    found |= {json.dumps(v)[1:-1] for v in found}
    return sorted(found, key=len, reverse=True)


def redact_text(text: str, secrets: list[str]) -> str:
    for value in secrets:
        if value in text:
            text = text.replace(value, "***")
    return text


def scrub(obj: Any, secrets: list[str]) -> Any:
    """``obj`` with every secret replaced by ``***`` (a JSON round trip only when one is present)."""
    if not secrets:
        return obj
    if isinstance(obj, str):
        return redact_text(obj, secrets)
    text = json.dumps(obj, default=str)
    if not any(s in text for s in secrets):
        return obj
    return json.loads(redact_text(text, secrets))
