"""What counts as a secret, and how to keep secrets out of anything moodbench shows or stores.

One definition serves every place that must recognise a credential: names of environment
variables (``OPENAI_API_KEY``, ``HF_TOKEN``), keys in request arguments and headers at any depth
(``extra_headers.Authorization``, ``client_secret``), and the parts of a URL that carry one
(``http://user:KEY@host/v1?api-key=KEY``). Names are split into words (``_``, ``-``, ``.``,
camelCase) and judged word by word, because substring rules either miss ``X-Auth`` and ``Cookie``
or refuse request parameters such as ``max_tokens``, ``stop_token_ids`` or ``key_value_cache_dtype``.

Standard library only and cheap to import: the CLI checks its arguments with it before any model
library is loaded.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

__all__ = [
    "looks_secret",
    "looks_secret_param",
    "looks_secret_value",
    "mask",
    "redact_text",
    "redact_url",
    "scrub",
    "secret_keys",
    "secret_values",
    "url_secrets",
]

MASK = "***"

# A name is a secret if any of its words is one of these ...
_ANYWHERE = frozenset(
    {
        "secret",
        "secrets",
        "password",
        "passwd",
        "passphrase",
        "credential",
        "credentials",
        "authorization",
        "authentication",
        "auth",
        "cookie",
        "cookies",
        "apikey",
        "apikeys",
        "authtoken",
        "accesstoken",
        "bearer",
        "jwt",
    }
)
# ... or if its last word is one of these: ``HF_TOKEN`` and ``x-api-key`` are credentials, while
# ``max_tokens`` (plural), ``stop_token_ids``, ``key_value_cache_dtype`` and ``top_k`` are not.
_LAST = frozenset({"key", "token", "pass", "pwd", "privatekey", "secretkey", "sessiontoken", "assertion"})
# Query parameters that carry a credential in the major clouds' keyed or signed URLs although their
# names say nothing of it: Azure Functions ``?code=``, Azure SAS ``?sig=``, AWS SigV4
# ``X-Amz-Signature``/``X-Amz-Credential``, Google signed URLs ``X-Goog-Signature``, CloudFront
# ``Signature``, OAuth ``code``/``id_token``/``client_assertion``. (``token``, ``access_token``,
# ``api_key``, ``key``, ``apikey``, ``password``, ``X-Amz-Security-Token`` already look secret by name.)
_QUERY_SECRETS = frozenset(
    {
        "code",
        "sig",
        "signature",
        "x-amz-signature",
        "x-amz-credential",
        "x-amz-security-token",
        "x-goog-signature",
        "x-goog-credential",
        "x-goog-security-token",
        "x-ms-signature",
        "sas",
        "sv-sig",
        "client_assertion",
        "assertion",
        "id_token",
        "jwt",
        "hmac",
        "ticket",
        "session",
        "sessionid",
        "sid",
        "otp",
    }
)
# Values that are credentials whatever they are called: a JWT, an ``Authorization`` value, the
# well-known key formats of OpenAI, Anthropic, GitHub, Slack, AWS, Google and Hugging Face.
_SECRET_VALUE = re.compile(
    r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"
    r"|^\s*(?:Bearer|Basic|Token|Digest)\s+\S{8,}"
    r"|\b(?:sk-(?:ant-|proj-)?[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"
    r"|xox[abprs]-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16}|AIza[0-9A-Za-z_-]{30,}|hf_[A-Za-z0-9]{30,})\b"
)
# "api key" anywhere (``OPENAI_API_KEY_FILE`` names a file holding one: refused in arguments,
# harmless to scrub in the environment, where paths are skipped anyway).
_API_KEY = re.compile(r"(?:^|\s)api keys?(?:\s|$)")

# Values shorter than this (or numbers, or paths) in a credential-named variable are settings.
_MIN_ENV_SECRET = 8
# A value named explicitly (``--api-key-env``) is scrubbed from this length on.
_MIN_NAMED_SECRET = 4
# URL credentials shorter than this are not scrubbed from free text (it would mangle it).
_MIN_URL_SECRET = 4

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_SEPARATORS = re.compile(r"[^A-Za-z0-9]+")


def _words(name: str) -> list[str]:
    return [w.lower() for part in _SEPARATORS.split(str(name)) for w in _CAMEL.split(part) if w]


def looks_secret(name: str) -> bool:
    """Whether a variable, argument, header or query-parameter name looks like it holds a credential."""
    words = _words(name)
    if not words:
        return False
    if words[-1] in _LAST or any(w in _ANYWHERE for w in words):
        return True
    return bool(_API_KEY.search(" ".join(words)))


def looks_secret_param(name: str) -> bool:
    """Whether a URL query parameter carries a credential: a secret-looking name, or one of the
    clouds' signing and key parameters (``code``, ``sig``, ``X-Amz-Signature``, ...)."""
    words = _words(name)
    return (
        looks_secret(name)
        or str(name).strip().lower() in _QUERY_SECRETS
        or (bool(words) and words[-1] in {"signature", "sig", "credential", "assertion"})
    )


def looks_secret_value(value: Any) -> bool:
    """Whether a value is a credential by its shape (a JWT, ``Bearer ...``, a well-known key format)."""
    return isinstance(value, str) and bool(_SECRET_VALUE.search(value))


def secret_keys(obj: Any, _path: str = "") -> list[str]:
    """Paths of every secret-looking key at any depth: ``["api_key", "extra_headers.Cookie", "items[0].token"]``,
    and of every value shaped like a credential whatever its key (a JWT under ``X-Goog-Iap-Jwt-Assertion``
    or ``X-Custom``).

    Request arguments are stored with the run, so a key in them would be written to disk and
    shared with the results; callers refuse such arguments and point at ``--api-key-env``.
    """
    found: list[str] = []
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            path = f"{_path}.{key}" if _path else str(key)
            if looks_secret(str(key)) or looks_secret_value(value):
                found.append(path)
            found += secret_keys(value, path)
    elif isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            path = f"{_path}[{i}]"
            if looks_secret_value(item):
                found.append(path)
            found += secret_keys(item, path)
    return found


def _spellings(value: str) -> set[str]:
    """A secret as it may appear in text: raw, JSON-escaped (inside stored JSON) and percent-encoded (in URLs)."""
    return {value, json.dumps(value)[1:-1], quote(value, safe="")}


def secret_values(env_names: Iterable[str] = ()) -> list[str]:
    """Values to scrub from anything shown or stored, longest first (so a key containing another is replaced whole).

    Every environment variable whose name looks like a credential counts, even when moodbench did
    not read it (litellm picks up ``OPENAI_API_KEY`` by itself), plus the variables named in
    ``env_names`` whatever they are called (``--api-key-env MY_VAR``).
    """
    found: set[str] = set()
    for name, value in os.environ.items():
        # paths and numbers (PASSWORD_STORE_DIR, SSH_AUTH_SOCK, *_TOKEN_LIMIT) are settings, not credentials
        if looks_secret(name) and len(value) >= _MIN_ENV_SECRET and not value.isdigit() and not value.startswith(("/", "~", ".")):
            found |= _spellings(value)
    for name in env_names:
        named = os.environ.get(name)
        if named and len(named) >= _MIN_NAMED_SECRET:
            found |= _spellings(named)
    return sorted(found, key=len, reverse=True)


def _replace_values(text: str, secrets: Iterable[str]) -> str:
    for value in secrets:
        if value and value in text:
            text = text.replace(value, MASK)
    return text


# A URL written anywhere in a text (an error message, a log line, a config echoed back), and a query
# parameter written without its URL; both linear (no nested quantifiers).
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,20}://[^\s<>\"'`\\]+")
_PARAM_IN_TEXT = re.compile(r"([?&;])([A-Za-z0-9_.~%-]{1,64})=([^&#\s<>\"'`\\]+)")


def _mask_urls(text: str) -> str:
    if "://" in text:
        text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    if "=" in text:
        text = _PARAM_IN_TEXT.sub(
            lambda m: (
                f"{m.group(1)}{m.group(2)}={MASK}"
                if m.group(3) != MASK and looks_secret_param(unquote(m.group(2)))
                else m.group(0)
            ),
            text,
        )
    return text


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` fit to show or store: every value in ``secrets`` (longest first, as the helpers here return
    them) and every credential written into a URL in it (userinfo, secret query parameters) become ``***``."""
    return _mask_urls(_replace_values(text, secrets))


def _split(url: str) -> Any:
    try:
        return urlsplit(url)
    except ValueError:  # e.g. an unbalanced IPv6 bracket: not a URL we can take apart
        return None


def redact_url(url: str) -> str:
    """``url`` fit to show: userinfo becomes ``***@`` and secret-looking query parameters ``***``.

    ``http://user:KEY@gpu1:8000/v1?api-key=KEY&x=1`` -> ``http://***@gpu1:8000/v1?api-key=***&x=1``.
    The real URL is still the one requests go to; this is only its printable form.
    """
    parts = _split(url)
    if parts is None or not parts.netloc:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        netloc = MASK + "@" + netloc.rpartition("@")[2]
    query = parts.query
    if query:
        pieces = []
        for piece in query.split("&"):
            name, eq, _ = piece.partition("=")
            pieces.append(f"{name}={MASK}" if eq and looks_secret_param(unquote(name)) else piece)
        query = "&".join(pieces)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def url_secrets(url: str) -> list[str]:
    """The credential substrings of ``url`` (password, a lone user name used as a token, secret query
    values), raw and decoded, plus the Basic-auth header value they become; longest first: scrub
    them from any text that may quote the URL or the request."""
    parts = _split(url)
    if parts is None:
        return []
    found: set[str] = set()
    userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
    if userinfo:
        user, colon, password = userinfo.partition(":")
        # a user name alone is often the token itself (https://TOKEN@host); next to a password it is just a name
        for piece in [password] if colon else [user]:
            if len(unquote(piece)) >= _MIN_URL_SECRET:
                found |= _spellings(piece) | _spellings(unquote(piece))
                basic = f"{unquote(user)}:{unquote(password)}".encode()
                found.add(base64.b64encode(basic).decode())
    for name, value in parse_qsl(parts.query, keep_blank_values=False):
        if looks_secret_param(name) and len(value) >= _MIN_URL_SECRET:
            found |= _spellings(value) | {quote(value, safe="-_.~"), quote(value)}
    return sorted(found, key=len, reverse=True)


def mask(obj: Any, secrets: Iterable[str] = ()) -> Any:
    """THE function every output goes through (text, JSON, HTML, SQLite, events, manifest, errors):
    ``obj`` with every value in ``secrets`` and every credential written into a URL (userinfo, the
    query parameters :func:`looks_secret_param` knows) replaced by ``***``, in every string, dict keys
    included, at any depth.

    Dicts, lists and tuples are rebuilt only where something changed (the input is left alone, and
    returned itself when there is nothing to mask); other values are returned as they are.
    """
    values = sorted({s for s in secrets if s}, key=len, reverse=True)

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return redact_text(value, values)
        if isinstance(value, Mapping):
            items = [(walk(k) if isinstance(k, str) else k, walk(v)) for k, v in value.items()]
            if all(k is k0 and v is v0 for (k, v), (k0, v0) in zip(items, value.items())):
                return value
            return dict(items)
        if isinstance(value, (list, tuple)):
            seq = [walk(v) for v in value]
            if all(a is b for a, b in zip(seq, value)):
                return value
            return seq if isinstance(value, list) else tuple(seq)
        return value

    return walk(obj)


def scrub(obj: Any, secrets: Iterable[str]) -> Any:
    """:func:`mask` under its older name (kept for callers that pass the secrets explicitly)."""
    return mask(obj, secrets)
