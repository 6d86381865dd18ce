"""A light transport for OpenAI-compatible servers (vLLM, llama.cpp, SGLang, the scripted server).

``litellm.completion`` costs ~8 ms of CPU per call (provider detection, parameter mapping, cost
and logging hooks) and the openai SDK under it ~2 ms more; against a local server a retail
conversation makes ~9 calls, so the model layer alone cost more CPU than a whole conversation
should. For endpoints that *are* plain OpenAI-compatible servers (a base URL and a
``openai/`` or ``hosted_vllm/`` model), this module posts the same request body litellm would
send with one pooled, thread-safe ``httpx.Client`` (~0.6 ms per call) and returns a
``litellm.ModelResponse``, so :class:`ModelClient`'s parsing and cost accounting are unchanged.

Failures are raised as the litellm exceptions litellm itself raises for those statuses (the
httpx response attached, so ``Retry-After`` still reaches the retry logic). Everything else
(hosted APIs, other providers, unusual request parameters) keeps going through litellm, and
``ModelSpec(transport="litellm")`` sends every call through litellm.

Requests go through a :func:`~moodbench.llm._http.deadline_client`, so the call's
:class:`~moodbench.llm._http.RequestBudget` bounds the whole request and the size of the reply
(the decoded size too, so a compressed reply cannot inflate past the limit either).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlparse

import httpx

from moodbench.llm._http import ReplyTooLarge, RequestBudget, active, deadline_client
from moodbench.llm._litellm import litellm

# Providers whose requests litellm forwards unchanged to an OpenAI-compatible /chat/completions.
_PASSTHROUGH_PROVIDERS = ("openai/", "hosted_vllm/")
# Request parameters that mean the same on every OpenAI-compatible server and that litellm
# forwards as they are for these providers; any other key in --agent-args keeps litellm.
_PLAIN_PARAMS = {
    "temperature",
    "top_p",
    "seed",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "n",
    "response_format",
    "parallel_tool_calls",
    "logprobs",
    "top_logprobs",
    "user",
    "extra_body",
}
# litellm-only keys that never reach the server.
_LITELLM_KEYS = {"model", "messages", "timeout", "num_retries", "drop_params", "api_base", "api_key", "max_retries"}
# Hosted APIs have model-specific parameter rules (max_completion_tokens, no temperature...) that
# litellm knows and this module does not.
_HOSTED = ("openai.com", "azure.com", "anthropic.com", "googleapis.com", "groq.com", "mistral.ai", "together.xyz")


def fast_path_allowed(model: str, base_urls: tuple[str, ...], args: dict[str, Any]) -> bool:
    """Whether calls for this spec may skip litellm (see the module docstring)."""
    if not base_urls:
        return False
    if not model.startswith(_PASSTHROUGH_PROVIDERS):
        return False
    hosts = [urlparse(u).hostname for u in base_urls]
    if any(host is None or host.endswith(_HOSTED) for host in hosts):
        return False
    return set(args) <= _PLAIN_PARAMS


class OpenAICompatTransport:
    """``completion(messages=..., **litellm_kwargs)`` over plain HTTP; thread-safe, one pool."""

    def __init__(self, max_connections: int | None = None):
        self._http = deadline_client(max_connections=max_connections)
        # Parsed URLs by text: httpx parses a URL string on every request (4% of a conversation's CPU)
        # and a run posts to a handful of endpoints.
        self._urls: dict[str, httpx.URL] = {}

    def close(self) -> None:
        self._http.close()

    def completion(
        self,
        *,
        messages: list[dict[str, Any]],
        model: str,
        api_base: str,
        timeout: float,
        api_key: str | None = None,
        budget: RequestBudget | None = None,
        **kw: Any,
    ) -> litellm.ModelResponse:
        # litellm leaves out None-valued message keys (``content: null`` next to tool calls), which
        # some servers' chat templates reject; so does this transport.
        body: dict[str, Any] = {
            "messages": [{k: v for k, v in m.items() if v is not None} if isinstance(m, dict) else m for m in messages]
        }
        data = self._post(
            "/chat/completions", body, model=model, api_base=api_base, timeout=timeout, api_key=api_key, budget=budget, **kw
        )
        return litellm.ModelResponse(**data)

    def text_completion(
        self,
        *,
        prompt: str,
        model: str,
        api_base: str,
        timeout: float,
        api_key: str | None = None,
        budget: RequestBudget | None = None,
        **kw: Any,
    ) -> litellm.ModelResponse:
        """``/v1/completions`` (a plain continuation, no chat template), returned in the chat shape."""
        data = self._post(
            "/completions",
            {"prompt": prompt},
            model=model,
            api_base=api_base,
            timeout=timeout,
            api_key=api_key,
            budget=budget,
            **kw,
        )
        return chat_shaped(data)

    def _post(
        self,
        path: str,
        body: dict[str, Any],
        *,
        model: str,
        api_base: str,
        timeout: float,
        api_key: str | None,
        budget: RequestBudget | None,
        **kw: Any,
    ) -> dict[str, Any]:
        body = {"model": model.split("/", 1)[1], **body}
        extra = kw.pop("extra_body", None)
        for key, value in kw.items():
            if key not in _LITELLM_KEYS and value is not None:
                body[key] = value
        if isinstance(extra, dict):
            body.update(extra)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        text = api_base.rstrip("/") + path
        url = self._urls.get(text)
        if url is None:
            if len(self._urls) >= 64:
                self._urls.clear()
            url = self._urls[text] = httpx.URL(text)
        provider = model.split("/", 1)[0]
        request = self._http.build_request(
            "POST",
            url,
            content=json.dumps(body).encode(),
            headers={**headers, "Content-Type": "application/json"},
            timeout=timeout,
        )
        try:
            with active(budget):
                resp = self._http.send(request, stream=True)
                try:
                    content = _read(resp, budget)
                finally:
                    resp.close()
        except ReplyTooLarge:
            raise
        except httpx.TimeoutException as exc:
            why = (
                budget.deadline_message()
                if budget is not None and budget.tripped == "deadline"
                else f"request timed out after {timeout}s"
            )
            raise litellm.Timeout(f"{why}: {type(exc).__name__}: {exc}", model=model, llm_provider=provider) from None
        except httpx.TransportError as exc:
            raise litellm.APIConnectionError(f"{type(exc).__name__}: {exc}", llm_provider=provider, model=model) from None
        if resp.status_code != 200:
            raise _status_error(_as_read(resp, content), model, provider)
        try:
            data = json.loads(content)
        except (ValueError, RecursionError):
            raise litellm.InternalServerError(
                f"reply is not JSON: {content[:300]!r}", llm_provider=provider, model=model, response=_as_read(resp, content)
            ) from None
        if not isinstance(data, dict):
            raise litellm.InternalServerError(
                f"reply is not a JSON object: {content[:300]!r}",
                llm_provider=provider,
                model=model,
                response=_as_read(resp, content),
            )
        return data


def chat_shaped(data: dict[str, Any]) -> litellm.ModelResponse:
    """A text completion (``choices[i].text``) as a chat completion whose message holds the text, so
    one parser (``<think>`` stripping, accounting, empty-reply handling) serves both."""
    choices = []
    for i, choice in enumerate(data.get("choices") or []):
        choices.append(
            {
                "index": choice.get("index", i),
                "finish_reason": choice.get("finish_reason"),
                "message": {"role": "assistant", "content": choice.get("text") or ""},
            }
        )
    if not choices:
        raise ValueError("a text completion without choices")
    return litellm.ModelResponse(
        id=data.get("id"),
        created=data.get("created"),
        model=data.get("model"),
        choices=choices,
        usage=data.get("usage"),
        object="chat.completion",
    )


def _read(resp: httpx.Response, budget: RequestBudget | None) -> bytes:
    """The decoded body, ended (and the connection closed) as soon as it passes the budget's limit."""
    limit = budget.max_bytes if budget is not None else None
    chunks: list[bytes] = []
    size = 0
    for chunk in resp.iter_bytes():
        size += len(chunk)
        if limit is not None and size > limit:
            assert budget is not None
            budget.tripped = "size"
            raise ReplyTooLarge(f"{budget.size_message()} (decoded)", request=resp.request)
        chunks.append(chunk)
    return b"".join(chunks)


def _as_read(resp: httpx.Response, content: bytes) -> httpx.Response:
    """A closed streamed response as a read one (``.json()``, ``.text``, headers) for error reporting."""
    headers = [(k, v) for k, v in resp.headers.multi_items() if k.lower() not in ("content-encoding", "content-length")]
    return httpx.Response(resp.status_code, headers=headers, content=content, request=resp.request)


def _status_error(resp: httpx.Response, model: str, provider: str) -> Exception:
    """The litellm exception litellm raises for this status from an OpenAI-compatible server."""
    try:
        detail = resp.json()
        message = (
            (detail.get("error") or {}).get("message") if isinstance(detail.get("error"), dict) else detail.get("error") or detail
        )
    except ValueError:
        message = resp.text
    text = f"{provider.capitalize()}Exception - Error code: {resp.status_code} - {str(message)[:1500]}"
    code = resp.status_code
    common: dict[str, Any] = {"llm_provider": provider, "model": model, "response": resp}
    if code == 400:
        low = text.lower()
        if any(s in low for s in ("context length", "context window", "maximum context", "too many tokens")):
            return litellm.ContextWindowExceededError(text, **common)
        return litellm.BadRequestError(text, **common)
    if code == 401:
        return litellm.AuthenticationError(text, **common)
    if code == 403:
        return litellm.PermissionDeniedError(text, **common)
    if code == 404:
        return litellm.NotFoundError(text, **common)
    if code == 408:
        return litellm.Timeout(text, model=model, llm_provider=provider, response=resp, exception_status_code=408)
    if code == 422:
        return litellm.UnprocessableEntityError(text, **common)
    if code == 429:
        return litellm.RateLimitError(text, **common)
    if code == 503:
        return litellm.ServiceUnavailableError(text, **common)
    if code >= 500:
        return litellm.InternalServerError(text, **common)
    return litellm.APIError(code, text, llm_provider=provider, model=model, response=resp)


def transport_for(model: str, base_urls: tuple[str, ...], args: dict[str, Any]) -> OpenAICompatTransport | None:
    """A transport when the fast path applies to this model/endpoint/arguments, else None (litellm)."""
    return OpenAICompatTransport() if fast_path_allowed(model, base_urls, args) else None
