"""litellm, imported once and configured, and the transport that calls it within a deadline.

Importing litellm through this module is what keeps ``import moodbench.llm`` offline and quiet:
without ``LITELLM_LOCAL_MODEL_COST_MAP`` litellm fetches its remote cost map at import (about
10 s when offline). The variable is only given a default, so a user's own setting wins.

:class:`LitellmTransport` is the transport for everything the light one (``_fast.py``) does not
serve. litellm builds its own HTTP clients, so by default neither the whole-request deadline nor
the reply-size limit would reach its requests. Where litellm accepts a client for a call, this
transport hands it one built on :func:`moodbench.llm._http.deadline_client`:

* providers litellm drives with the openai SDK get an ``openai.OpenAI`` over that client
  (``_OPENAI_SDK_PROVIDERS``), built for the call's base URL and key;
* providers on litellm's own HTTP handler get that handler over that client (``_HTTP_HANDLER_PROVIDERS``).

Both lists were checked against the scripted server with litellm 1.110 (the budget counts the
requests that went through the client; ``tests/test_llm_deadline.py`` keeps checking the ones
moodbench's users rely on). Every other provider (Azure, Vertex, Cohere, watsonx, Cloudflare, ...)
builds its client inside litellm with no hook, and gets the weaker bound that is left: the call
runs in a worker thread that is abandoned at the deadline. The conversation goes on at once and
the breaker counts the failure, but the abandoned request may go on reading in the background
until the provider's own timeouts end it, and no size limit applies to it.

Every call, hooked or not, runs in such a thread, so a provider path that stops honouring its
hook in a later litellm release is still bounded (a few seconds later than the deadline).
"""

from __future__ import annotations

import contextvars
import os
import threading
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm  # after the cost-map default above
import openai
from litellm.llms.custom_httpx.http_handler import HTTPHandler

from moodbench._util.liblogs import quiet_unless_shown
from moodbench.llm._http import RequestBudget, active, deadline_client

quiet_unless_shown()  # litellm's loggers stay silent unless a caller asked for them (moodbench -v)

litellm.suppress_debug_info = True

# Providers litellm calls through an openai SDK client passed as ``client=`` (its "custom openai" path).
_OPENAI_SDK_PROVIDERS = frozenset(
    {
        "openai",
        "custom_openai",
        "litellm_proxy",
        "lm_studio",
        "llamafile",
        "nvidia_nim",
        "perplexity",
        "deepinfra",
        "cerebras",
        "sambanova",
        "github",
    }
)
# Providers litellm calls through its own HTTPHandler passed as ``client=``.
_HTTP_HANDLER_PROVIDERS = frozenset(
    {
        "hosted_vllm",
        "ollama",
        "ollama_chat",
        "anthropic",
        "gemini",
        "groq",
        "mistral",
        "together_ai",
        "deepseek",
        "openrouter",
        "xai",
        "fireworks_ai",
        "huggingface",
        "databricks",
        "azure_ai",
        "bedrock",
        "lemonade",
    }
)
# How much later than the deadline the worker thread is abandoned when the client hook should
# have ended the request itself (it reports the real error; the thread bound is only the
# backstop, so it leaves room for litellm's first-call imports on a slow machine).
_HOOKED_GRACE_S = 5.0


class LitellmTransport:
    """``completion(messages=..., budget=..., **litellm_kwargs)`` through litellm; thread-safe.

    One instance per :class:`~moodbench.llm.ModelClient`: it owns one pooled deadline client and
    the openai SDK clients built over it (one per base URL and key).
    """

    def __init__(self) -> None:
        # litellm's and the openai SDK's own clients follow redirects; so does this one.
        self._http = deadline_client(follow_redirects=True)
        self._handler = HTTPHandler(client=self._http)
        self._openai: dict[tuple[str, str], openai.OpenAI] = {}
        self._hooks: dict[tuple[str, str | None, str | None], Any] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self._http.close()

    def hook_for(self, model: str, api_base: str | None, api_key: str | None) -> Any:
        """The ``client=`` litellm should use for this call, or None where litellm offers no hook."""
        key = (model, api_base, api_key)
        if key not in self._hooks:  # provider detection costs litellm some work: once per endpoint
            hook = self._find_hook(model, api_base, api_key)
            with self._lock:
                self._hooks[key] = hook
        return self._hooks[key]

    def _find_hook(self, model: str, api_base: str | None, api_key: str | None) -> Any:
        try:
            _, provider, dynamic_key, dynamic_base = litellm.get_llm_provider(model, api_base=api_base, api_key=api_key)
        except Exception:  # noqa: BLE001 - an unknown provider: litellm itself will say so
            return None
        if provider in _HTTP_HANDLER_PROVIDERS:
            return self._handler
        if provider not in _OPENAI_SDK_PROVIDERS:
            return None
        base, key = api_base or dynamic_base, api_key or dynamic_key
        if provider == "openai" and not base:
            from litellm.llms.openai.common_utils import get_openai_credentials

            creds = get_openai_credentials(api_base, api_key)  # litellm's own resolution (globals, env, default)
            base, key = creds.api_base, creds.api_key
        if not base or not key:
            return None  # litellm raises its own "no key" error
        with self._lock:
            client = self._openai.get((base, key))
            if client is None:
                # max_retries=0: the only retries are ModelClient's (litellm sets it per call too).
                # The openai SDK is built on httpx2 and takes an httpx client as a "legacy" one
                # (openai/_httpx2.py); the tests check that its requests really go through it.
                client = openai.OpenAI(
                    base_url=base,
                    api_key=key,
                    http_client=self._http,  # type: ignore[arg-type]
                    max_retries=0,
                )
                self._openai[(base, key)] = client
        return client

    def completion(self, *, budget: RequestBudget | None = None, **kw: Any) -> Any:
        if budget is None:
            return litellm.completion(**kw)
        hook = self.hook_for(kw["model"], kw.get("api_base"), kw.get("api_key"))
        if hook is not None:
            kw["client"] = hook
        return _within(
            budget, lambda: litellm.completion(**kw), grace=_HOOKED_GRACE_S if hook is not None else 0.0, model=kw["model"]
        )

    def text_completion(self, *, prompt: str, budget: RequestBudget | None = None, **kw: Any) -> Any:
        """``litellm.text_completion`` (``/v1/completions`` for OpenAI-compatible providers), in the chat shape."""
        from moodbench.llm._fast import chat_shaped

        kw.pop("tools", None)
        kw.pop("tool_choice", None)

        def call() -> Any:
            response = litellm.text_completion(prompt=prompt, **kw)
            data = response.model_dump() if hasattr(response, "model_dump") else dict(response)
            return chat_shaped(data)

        if budget is None:
            return call()
        hook = self.hook_for(kw["model"], kw.get("api_base"), kw.get("api_key"))
        if hook is not None:
            kw["client"] = hook
        return _within(budget, call, grace=_HOOKED_GRACE_S if hook is not None else 0.0, model=kw["model"])


def _within(budget: RequestBudget, call: Any, *, grace: float, model: str) -> Any:
    """Run ``call`` in a worker thread under ``budget``; give up on it ``grace`` seconds after the deadline."""
    outcome: dict[str, Any] = {}
    done = threading.Event()
    context = contextvars.copy_context()  # litellm keeps per-call state in context variables

    def run() -> None:
        try:
            with active(budget):
                outcome["value"] = context.run(call)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name="moodbench-model-call", daemon=True).start()
    if not done.wait(max(0.0, budget.remaining()) + grace):
        budget.tripped, budget.abandoned = "deadline", True
        provider = model.split("/", 1)[0] if "/" in model else "litellm"
        raise litellm.Timeout(
            f"{budget.deadline_message()}; the call was abandoned in its worker thread", model=model, llm_provider=provider
        )
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
