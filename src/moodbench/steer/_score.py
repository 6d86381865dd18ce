"""Language quality of a reply: its perplexity under the *unsteered* model, computed by llama-server.

Why perplexity under the unsteered model: a steered model can be very sure of its own word salad, so
its own token probabilities say nothing; the plain model finds fluent English (angry or calm) fairly
likely and word salad very unlikely.

How: llama-server has no prompt-logprob ("echo") mode, so the reply is *forced* as the generation. Its
canonical tokens come from ``/tokenize``; a grammar of exactly those token ids (``root ::= <[id1]>
<[id2]> ...``) is sent to ``/completion`` with ``n_probs: 1`` and ``post_sampling_probs: false``, and
for each generated token the server reports its log-probability from the raw logits, before the
grammar and the samplers (llama.cpp ``get_token_probabilities`` softmaxes the whole vocabulary): the
teacher-forced log-likelihood of the reply. The end-of-text token the finished grammar forces is not
counted. (A plain string grammar would let the sampler choose a fragmented tokenization, which
inflated perplexity 5-10x in a test.)

Cost: the grammar makes each forced step about as slow as a decode step, so at most
``max_tokens`` tokens of a reply are scored (the customer replies are capped near that anyway).

The reply is scored after a fixed neutral prefix and without the task's context, so the number
measures language quality and depends little on how polite the reply is.
"""

from __future__ import annotations

import math
from typing import Any

import httpx

__all__ = ["SCORING_PREFIX", "reply_perplexity", "token_grammar"]

SCORING_PREFIX = "A customer wrote this message to customer service:\n\n"


def _root_url(base_url: str) -> str:
    url = base_url.rstrip("/")
    return url.removesuffix("/v1")


def token_grammar(token_ids: list[int]) -> str:
    """A GBNF grammar matching exactly this token sequence; pure function."""
    return "root ::= " + " ".join(f"<[{int(t)}]>" for t in token_ids)


def reply_perplexity(
    base_url: str, text: str, *, client: httpx.Client | None = None, max_tokens: int = 64, timeout_s: float = 300.0
) -> dict[str, Any]:
    """``{"perplexity", "tokens", "mean_logprob"}`` of ``text`` under the model served at ``base_url``.

    ``perplexity`` is None for an empty text or when the server did not reproduce the tokens (then
    ``error`` says why). ``base_url`` may be the OpenAI ``.../v1`` URL: the native endpoints are used.
    """
    text = text.strip()
    if not text:
        return {"perplexity": None, "tokens": 0, "mean_logprob": None}
    root = _root_url(base_url)
    own = client is None
    http = client or httpx.Client(timeout=timeout_s)
    try:
        r = http.post(root + "/tokenize", json={"content": text, "add_special": False})
        r.raise_for_status()
        ids = [int(t) for t in r.json()["tokens"]][:max_tokens]
        body = {
            "prompt": SCORING_PREFIX,
            "grammar": token_grammar(ids),
            "n_predict": len(ids) + 1,
            "temperature": 0.0,
            "n_probs": 1,
            "post_sampling_probs": False,
            "cache_prompt": True,
        }
        r = http.post(root + "/completion", json=body)
        r.raise_for_status()
        data = r.json()
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        return {"perplexity": None, "tokens": 0, "mean_logprob": None, "error": f"{type(exc).__name__}: {exc}"[:200]}
    finally:
        if own:
            http.close()
    probs = [p for p in data.get("completion_probabilities") or [] if isinstance(p, dict)][: len(ids)]
    if [p.get("id") for p in probs] != ids:
        return {"perplexity": None, "tokens": len(probs), "mean_logprob": None,
                "error": "the forced generation did not reproduce the reply's tokens"}  # fmt: skip
    mean = sum(float(p["logprob"]) for p in probs) / len(probs)
    return {"perplexity": math.exp(-mean), "tokens": len(probs), "mean_logprob": mean}
