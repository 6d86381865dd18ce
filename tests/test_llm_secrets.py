"""Secrets: one definition of what looks like a credential, and the model layer never showing one.

The first half pins :mod:`moodbench._util.secrets` (names, paths, values, URLs). The second drives
``ModelClient`` over real HTTP with credentials in the base URL and credentials in the
environment: requests still carry them where the user put them, and nothing the model layer
shows (errors, endpoint labels, the breaker's message) or sends to a custom base URL leaks one.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from moodbench._util.secrets import looks_secret, redact_text, redact_url, scrub, secret_keys, secret_values, url_secrets
from scripted import ScriptedServer, scripted_client, start_scripted_server

KEY = "sk-url-sentinel-5f1d2c3b4a"
ENV_KEY = "sk-env-sentinel-9e8d7c6b5a"
MESSAGES = [{"role": "system", "content": "You grade things."}, {"role": "user", "content": "hi"}]

# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    "name",
    [
        "Authorization",
        "Proxy-Authorization",
        "Ocp-Apim-Subscription-Key",
        "X-Auth",
        "X-Auth-Token",
        "X-Api-Key",
        "x-goog-api-key",
        "api-key",
        "Cookie",
        "Set-Cookie",
        "key",
        "token",
        "password",
        "passwd",
        "api_key",
        "apiKey",
        "apikey",
        "access_token",
        "accessToken",
        "AuthToken",
        "refresh_token",
        "client_secret",
        "clientSecret",
        "private_key",
        "credentials",
        "OPENAI_API_KEY",
        "HF_TOKEN",
        "GITHUB_TOKEN",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "MOODBENCH_TEST_KEY",
        "DB_PASSWORD",
    ],
)
def test_credential_names_look_secret(name: str) -> None:
    assert looks_secret(name)


@pytest.mark.parametrize(
    "name",
    [
        "max_tokens",
        "max_completion_tokens",
        "stop_token_ids",
        "skip_special_tokens",
        "top_k",
        "top_p",
        "logprobs",
        "top_logprobs",
        "key_value_cache_dtype",
        "kv_cache_dtype",
        "logit_bias",
        "temperature",
        "seed",
        "n",
        "tokens",
        "keys",
        "keyboard",
        "author",
        "HF_TOKEN_PATH",
        "TOKENIZERS_PARALLELISM",
        "KEYRING_BACKEND",
        "session_id",
        "key_id",
        "monkey",
        "",
        "123",
    ],
)
def test_request_parameters_do_not_look_secret(name: str) -> None:
    assert not looks_secret(name)


def test_secret_keys_are_found_at_any_depth_with_their_paths() -> None:
    args = {
        "temperature": 0,
        "max_tokens": 64,
        "api_key": "x",
        "extra_headers": {"Cookie": "c", "X-Request-Id": "r"},
        "extra_body": {"skip_special_tokens": False, "stop_token_ids": [2], "auth": {"token": "t"}},
        "items": [{"name": "a"}, {"client_secret": "s"}],
    }
    assert secret_keys(args) == [
        "api_key",
        "extra_headers.Cookie",
        "extra_body.auth",
        "extra_body.auth.token",
        "items[1].client_secret",
    ]
    assert secret_keys({"max_tokens": 1, "extra_body": {"stop_token_ids": [1]}}) == []


# --------------------------------------------------------------------------- values


def test_secret_values_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_API_KEY", 'sk-"quoted"-1234567890')
    monkeypatch.setenv("SOME_TOKEN", "tok-short")
    monkeypatch.setenv("SOME_TOKEN_LIMIT", "123456789")  # a number: a setting
    monkeypatch.setenv("PASSWORD_STORE_DIR", "/home/u/.password-store")  # a path: a setting
    monkeypatch.setenv("MY_VAR", "abcd")  # not credential-named, but named by the user
    values = secret_values(["MY_VAR"])
    assert 'sk-"quoted"-1234567890' in values and 'sk-\\"quoted\\"-1234567890' in values  # raw and JSON-escaped
    assert "tok-short" in values and "abcd" in values
    assert "123456789" not in values and "/home/u/.password-store" not in values
    assert values == sorted(values, key=len, reverse=True)
    assert redact_text('key sk-"quoted"-1234567890 and abcd', values) == "key *** and ***"


def test_urls_are_redacted_and_their_credentials_listed() -> None:
    url = f"http://alice:{KEY}@gpu1:8000/v1?api-key={KEY}&model=x"
    assert redact_url(url) == "http://***@gpu1:8000/v1?api-key=***&model=x"
    assert redact_url(f"https://{KEY}@host/v1") == "https://***@host/v1"
    assert redact_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"
    found = url_secrets(url)
    assert KEY in found and "alice" not in found  # a user name beside a password is not a secret
    assert base64.b64encode(f"alice:{KEY}".encode()).decode() in found  # the Basic header it becomes
    assert KEY in url_secrets(f"https://{KEY}@host/v1")  # a lone user name is the token
    assert url_secrets("http://127.0.0.1:8000/v1?model=x") == []
    assert "p%40ss-word" in url_secrets("http://u:p%40ss-word@h/") and "p@ss-word" in url_secrets("http://u:p%40ss-word@h/")


def test_scrub_is_deep_and_leaves_its_input_alone() -> None:
    obj: dict[str, Any] = {"a": [f"x{KEY}y", {"b": (KEY, 3)}], KEY: None, "n": 1.5}
    out = scrub(obj, [KEY])
    assert out == {"a": ["x***y", {"b": ("***", 3)}], "***": None, "n": 1.5}
    assert obj["a"][0] == f"x{KEY}y"
    assert scrub(obj, []) is obj


def test_the_secrets_module_imports_nothing_heavy() -> None:
    code = (
        "import sys; import moodbench._util.secrets; "
        "print([m for m in ('httpx', 'litellm', 'pydantic', 'tau2', 'moodbench.llm') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(Path(__file__).resolve().parent.parent / "src")},
    )
    assert out.stdout.strip() == "[]", out.stderr


# --------------------------------------------------------------------------- the model layer


@pytest.fixture(params=["auto", "litellm"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _client(base_urls: tuple[str, ...], transport: str, health: Any = None, model: str = "openai/scripted", **spec: Any) -> Any:
    return scripted_client(base_urls, health, model=model, transport=transport, **{"timeout_s": 10, **spec})


def _with_key(srv: ScriptedServer) -> str:
    return f"http://alice:{KEY}@{srv.host}:{srv.port}/v1"


def test_credentials_in_the_base_url_are_used_but_never_shown(tmp_path: Path, transport: str) -> None:
    from moodbench.llm import EndpointHealth, LLMCallError

    script = {"roles": {"judge": {"turns": [{"content": "fine"}, {"status": 500, "error": "boom"}]}}}
    health = EndpointHealth(1)
    with start_scripted_server(script, tmp_path) as srv:
        client = _client((_with_key(srv),), transport, health, max_retries=0)
        completion = client.complete(MESSAGES)
        with pytest.raises(LLMCallError) as info:
            client.complete([*MESSAGES, {"role": "assistant", "content": "x"}])  # turn 1: a 500
        logged = srv.requests()
    # the request went to the real URL: its user info became the request's Basic credentials
    assert logged[0]["authorization"] == "Basic " + base64.b64encode(f"alice:{KEY}".encode()).decode()
    assert completion.content == "fine"
    shown = [completion.endpoint, client.spec.describe(), str(info.value), info.value.endpoint, health.down, health.last_error]
    assert all(isinstance(s, str) for s in shown)
    assert not [s for s in shown if KEY in s], shown
    assert completion.endpoint == f"http://***@{srv.host}:{srv.port}/v1" == health.down


def test_a_refused_connection_to_a_url_with_credentials_shows_no_key(tmp_path: Path, transport: str) -> None:
    from moodbench.llm import EndpointHealth, LLMCallError

    health = EndpointHealth(1)
    client = _client((f"http://alice:{KEY}@127.0.0.1:9/v1",), transport, health, max_retries=0)
    with pytest.raises(LLMCallError) as info:
        client.complete(MESSAGES)
    assert KEY not in str(info.value) and KEY not in (health.down or "") + (health.last_error or "")
    assert "127.0.0.1:9" in str(info.value)


def test_replica_labels_show_no_credentials(tmp_path: Path) -> None:
    with start_scripted_server({}, tmp_path) as a, start_scripted_server({}, tmp_path) as b:
        client = _client((_with_key(a), _with_key(b)), "auto", max_in_flight_per_endpoint=1)
        endpoints = {client.complete(MESSAGES).endpoint for _ in range(4)}
        assert client._router is not None
        labels = list(client._router.snapshot())
    assert len(endpoints) == 2 and not [e for e in endpoints | set(labels) if KEY in e]


# --------------------------------------------------------------------------- 401 from a custom base URL


@pytest.mark.parametrize("model", ["openai/scripted", "hosted_vllm/scripted"])
def test_environment_keys_never_go_to_a_custom_base_url_and_401_says_why(
    tmp_path: Path, transport: str, model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moodbench.llm import LLMCallError

    for name in ("OPENAI_API_KEY", "HOSTED_VLLM_API_KEY", "LITELLM_API_KEY"):
        monkeypatch.setenv(name, ENV_KEY)
    monkeypatch.setenv("MY_SERVER_KEY", "right-key-123")
    with start_scripted_server({"faults": {"require_api_key": "right-key-123"}}, tmp_path) as srv:
        with pytest.raises(LLMCallError) as info:
            _client((srv.base_url,), transport, model=model, max_retries=3).complete(MESSAGES)
        refused = srv.requests()
        done = _client((srv.base_url,), transport, model=model, api_key_env="MY_SERVER_KEY").complete(MESSAGES)
        accepted = srv.requests()[len(refused) :]
    message = " ".join(str(info.value).split())
    assert "401" in message and "wants an API key" in message and "--api-key-env NAME" in message, message
    assert len(refused) == 1  # a missing key is not retried
    assert ENV_KEY not in json.dumps(refused + accepted)  # the environment's key was never sent
    assert [r["authorization"] for r in accepted] == ["Bearer right-key-123"] and done.content


def test_a_rejected_named_key_is_reported_as_rejected(tmp_path: Path, transport: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from moodbench.llm import LLMCallError

    monkeypatch.setenv("MY_SERVER_KEY", "wrong-key-456")
    with (
        start_scripted_server({"faults": {"require_api_key": "right-key-123"}}, tmp_path) as srv,
        pytest.raises(LLMCallError) as info,
    ):
        _client((srv.base_url,), transport, api_key_env="MY_SERVER_KEY", max_retries=0).complete(MESSAGES)
    message = " ".join(str(info.value).split())
    assert "401" in message and "MY_SERVER_KEY" in message and "rejected" in message and "wrong-key-456" not in message
