"""Language quality of a reply: its perplexity under the *unsteered* model, computed by llama-server.

Why perplexity under the unsteered model: a steered model can be very sure of its own word salad, so
its own token probabilities say nothing; the plain model finds fluent English (angry or calm) fairly
likely and word salad very unlikely.

How: llama-server has no prompt-logprob ("echo") mode, so the reply is *forced* as the generation,
one token per request: the reply's canonical tokens come from ``/tokenize``; request ``i`` sends the
prefix and the reply's first ``i`` tokens as token ids with ``n_predict: 1``, a ``logit_bias`` of +1000
on token ``i`` (so the sampler must pick it) and ``n_probs: 1``, ``post_sampling_probs: false``: the
server reports the token's log-probability from the raw logits, before the bias and the samplers
(llama.cpp ``get_token_probabilities``). The slot keeps the prompt, so each request evaluates one new
token. Why not a grammar of the token ids (``method="grammar"``, the first implementation, kept to
cross-check): llama.cpp applies a rejected grammar to all 151k candidates at every step, which made a
forced token cost ~2.4 decode steps; the bias costs nothing, and with ``--no-cache-idle-slots`` on the
server (idle slots keep their cache) the per-token requests scored 8 replies 1.4-1.6x faster (2 shared
cores, 2026-12-05). (A plain string grammar would let the sampler choose a fragmented tokenization,
which inflated perplexity 5-10x in a test.)

Cost: one decode step and one small request per token, so at most ``max_tokens`` tokens of a reply
are scored (the customer replies are capped near that anyway).

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
    base_url: str,
    text: str,
    *,
    client: httpx.Client | None = None,
    max_tokens: int = 64,
    timeout_s: float = 300.0,
    method: str = "bias",
    id_slot: int = -1,
) -> dict[str, Any]:
    """``{"perplexity", "tokens", "mean_logprob"}`` of ``text`` under the model served at ``base_url``.

    ``perplexity`` is None for an empty text or when the server did not reproduce the tokens (then
    ``error`` says why). ``base_url`` may be the OpenAI ``.../v1`` URL: the native endpoints are used.
    ``method``: ``bias`` (one request per token, see the module doc) or ``grammar`` (one request).
    ``id_slot``: the server slot to use (-1: the server picks). Why pin: with several replies scored at
    once, a reply's next token request could land on (and clear) the slot another reply is using, since
    all scoring prompts share the prefix; measured on a calibration, that re-read half of a reply's
    context per token. Give each reply scored at once its own slot.
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
        probs = _forced_bias(http, root, ids, id_slot) if method == "bias" else _forced_grammar(http, root, ids, id_slot)
    except (httpx.HTTPError, ValueError, KeyError, TypeError, IndexError) as exc:
        return {"perplexity": None, "tokens": 0, "mean_logprob": None, "error": f"{type(exc).__name__}: {exc}"[:200]}
    finally:
        if own:
            http.close()
    if [p.get("id") for p in probs] != ids:
        return {"perplexity": None, "tokens": len(probs), "mean_logprob": None,
                "error": "the forced generation did not reproduce the reply's tokens"}  # fmt: skip
    mean = sum(float(p["logprob"]) for p in probs) / len(probs)
    return {"perplexity": math.exp(-mean), "tokens": len(probs), "mean_logprob": mean}


def _forced_bias(http: httpx.Client, root: str, ids: list[int], id_slot: int) -> list[dict[str, Any]]:
    r = http.post(root + "/tokenize", json={"content": SCORING_PREFIX, "add_special": True})
    r.raise_for_status()
    prefix = [int(t) for t in r.json()["tokens"]]
    out: list[dict[str, Any]] = []
    for i, tok in enumerate(ids):
        body = {"prompt": prefix + ids[:i], "n_predict": 1, "logit_bias": [[tok, 1000.0]], "temperature": 0.0, "n_probs": 1,
                "post_sampling_probs": False, "cache_prompt": True, "id_slot": id_slot}  # fmt: skip
        r = http.post(root + "/completion", json=body)
        r.raise_for_status()
        got = [p for p in r.json().get("completion_probabilities") or [] if isinstance(p, dict)][:1]
        if not got or got[0].get("id") != tok:
            return out + got
        out.append(got[0])
    return out


def _forced_grammar(http: httpx.Client, root: str, ids: list[int], id_slot: int) -> list[dict[str, Any]]:
    body = {
        "prompt": SCORING_PREFIX,
        "grammar": token_grammar(ids),
        "n_predict": len(ids) + 1,
        "temperature": 0.0,
        "n_probs": 1,
        "post_sampling_probs": False,
        "cache_prompt": True,
        "id_slot": id_slot,
    }
    r = http.post(root + "/completion", json=body)
    r.raise_for_status()
    return [p for p in r.json().get("completion_probabilities") or [] if isinstance(p, dict)][: len(ids)]
