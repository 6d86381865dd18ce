"""Is an endpoint up, and does it serve the model a run names? (``GET {base_url}/models``)"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from moodbench._util.secrets import redact_text, redact_url, url_secrets

# Providers whose base URL speaks the OpenAI API, so ``GET {base}/models`` lists what it serves.
OPENAI_COMPATIBLE = {
    "openai",
    "hosted_vllm",
    "openai_like",
    "custom_openai",
    "text-completion-openai",
    "lm_studio",
    "llamafile",
    "ollama",
    "ollama_chat",
    "vllm",
}


def split_model(model: str) -> tuple[str | None, str]:
    """``openai/scripted`` -> (``openai``, ``scripted``); ``hosted_vllm/Qwen/Qwen2.5-7B`` -> (``hosted_vllm``, ``Qwen/Qwen2.5-7B``).

    Only a known litellm provider is taken as a prefix, so ``Qwen/Qwen2.5-7B`` keeps its organisation.
    """
    head, sep, rest = model.partition("/")
    if not sep:
        return None, model
    try:
        import litellm

        providers = {str(getattr(p, "value", p)) for p in litellm.provider_list}
    except Exception:  # noqa: BLE001 - litellm missing or changed: fall back to the common ones
        providers = set(OPENAI_COMPATIBLE) | {"anthropic", "gemini", "vertex_ai", "bedrock", "azure", "mistral", "groq"}
    return (head, rest) if head in providers else (None, model)


@dataclass
class EndpointCheck:
    """What ``GET {base_url}/models`` said about one role's endpoint."""

    role: str
    model: str
    base_url: str | None
    served_name: str
    checked: bool = False
    ok: bool = True
    served: list[str] = field(default_factory=list)
    error: str | None = None
    note: str | None = None


def _served_matches(name: str, served: Iterable[str]) -> bool:
    for s in served:
        if s == name or s == f"{name}:latest" or name == f"{s}:latest":
            return True
    return False


def check_endpoint(
    role: str, model: str, base_url: str | None, api_key: str | None = None, timeout: float = 10.0
) -> EndpointCheck:
    """Is ``base_url`` up, and does it serve ``model``? Provider models without a base URL are skipped."""
    provider, name = split_model(model)
    # the check is stored and printed: it names the URL with any credentials masked
    check = EndpointCheck(role=role, model=model, base_url=redact_url(base_url) if base_url else None, served_name=name)
    if not base_url:
        check.note = "provider model without base URL: not checked"
        return check
    if provider is not None and provider not in OPENAI_COMPATIBLE:
        check.note = f"{provider} base URL is not OpenAI-compatible: not checked"
        return check
    from moodbench.serve.health import AuthRequired, HealthError, list_models

    check.checked = True
    try:
        served = list_models(base_url, timeout=timeout, api_key=api_key)
    except AuthRequired as exc:
        check.ok, check.error = (
            False,
            f"{redact_text(str(exc), url_secrets(base_url))}; name the key's variable with --api-key-env",
        )
        return check
    except HealthError as exc:
        check.ok, check.error = False, f"does not answer: {redact_text(str(exc), url_secrets(base_url))}"
        return check
    check.served = served
    if not served:
        check.ok, check.error = False, "answers /v1/models with an empty list (still loading?)"
    elif not _served_matches(name, served):
        check.ok = False
        check.error = (
            f"serves {', '.join(repr(s) for s in served)}, not {name!r}; "
            f"use --{role}-model {(provider + '/') if provider else ''}{served[0]} or point the base URL at the right server"
        )
    return check
