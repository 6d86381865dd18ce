"""How emotional a customer sounded: VADER sentiment, marker words per emotion, and an optional LLM judge.

These scores are what the manipulation check compares between a variant's customers and the
baseline's (``moodbench.analysis``), and what calibrating a steering vector measures:

- VADER (rule-based sentiment, offline): ``compound`` (-1..1) and ``neg`` share, averaged over turns;
- marker words: a small hand-written lexicon per emotion family (below), as hits per 100 words;
  a variant is scored on the families named in its spec (``anxiety:mild+confusion`` -> anxiety,
  confusion), an unknown custom variant on all of them;
- optionally an LLM judge that rates 0-10 per family from the customer's messages alone, blind to
  the variant (cached by prompt hash; its failures are counted, never fatal).
"""

from __future__ import annotations

import json
import re
import threading
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from hashlib import sha256
from pathlib import Path
from typing import Any

from moodbench._util.jsontext import json_objects
from moodbench.judges._transcript import render_transcript
from moodbench.results import ConversationRecord

# Marker words and phrases per emotion family, matched case-insensitively on word boundaries
# ("*" = any word ending). Deliberately short and obvious: they catch the phrases the variant
# prompts ask for and what customers typically write, not subtle tone. Documented in the report.
LEXICONS: dict[str, tuple[str, ...]] = {
    "frustration": (
        "ridiculous",
        "frustrat*",
        "forever",
        "annoy*",
        "fed up",
        "waste of time",
        "wasted",
        "wasting",
        "how long",
        "so complicated",
        "still not",
        "again",
        "seriously",
        "ugh",
        "unbelievable",
        "come on",
        "every single time",
        "finally",
        "taking so long",
        "sick of",
    ),
    "anger": (
        "unacceptable",
        "outrageous",
        "angry",
        "furious",
        "manager",
        "supervisor",
        "complaint",
        "terrible",
        "awful",
        "demand*",
        "right now",
        "immediately",
        "incompetent",
        "useless",
        "disgust*",
        "how dare",
        "pathetic",
        "worst",
        "fix this",
        "absurd",
    ),
    "anxiety": (
        "worr*",
        "nervous",
        "anxious",
        "afraid",
        "scared",
        "make sure",
        "are you sure",
        "double-check",
        "double check",
        "concerned",
        "panic*",
        "what if",
        "please confirm",
        "mistake*",
        "go wrong",
        "stress*",
        "safe",
        "hope so",
        "just to be sure",
        "is that okay",
    ),
    "confusion": (
        "confus*",
        "don't understand",
        "do not understand",
        "not sure",
        "what does",
        "what do you mean",
        "mean by",
        "lost",
        "simpler",
        "explain",
        "not following",
        "huh",
        "which one",
        "i'm not sure",
        "sorry, what",
        "what is a",
        "i don't get",
        "complicated",
        "step by step",
        "unclear",
    ),
    "impatience": (
        "quick*",
        "hurry",
        "asap",
        "fast*",
        "already",
        "just do it",
        "get on with",
        "no time",
        "don't have time",
        "skip",
        "right away",
        "now",
        "how much longer",
        "waiting",
        "enough",
    ),
    "skepticism": (
        "are you sure",
        "really",
        "doubt*",
        "prove",
        "how do i know",
        "trust",
        "supposedly",
        "don't believe",
        "i'm not convinced",
        "sure about",
        "guarantee",
        "double-check",
        "claim*",
        "last time",
        "suspicious",
    ),
    "incoherence": (
        "um",
        "uh",
        "wait",
        "anyway",
        "what was i",
        "never mind",
        "or maybe",
        "i mean",
        "whatever",
        "hmm",
        "where was i",
        "sorry i",
        "lost my train",
        "or not",
        "something like that",
    ),
}
DEFAULT_FAMILIES = ("frustration", "anger", "anxiety", "confusion")
JUDGE_FAMILIES = ("frustration", "anger", "anxiety", "confusion", "impatience", "skepticism")


_WORD = re.compile(r"[A-Za-z0-9']+")


def word_count(text: str) -> int:
    return len(_WORD.findall(text))


def _compile(words: Iterable[str]) -> re.Pattern[str]:
    parts = []
    for w in words:
        esc = re.escape(w).replace(r"\*", r"[\w']*").replace(r"\ ", r"\s+")
        parts.append(rf"(?<![\w']){esc}(?![\w'])" if not w.endswith("*") else rf"(?<![\w']){esc}")
    return re.compile("|".join(parts), re.IGNORECASE)


_PATTERNS = {family: _compile(words) for family, words in LEXICONS.items()}
_vader_lock = threading.Lock()
_vader = None


def _analyzer():
    """VADER's analyzer loads its lexicon from disk once; reuse it."""
    global _vader
    with _vader_lock:
        if _vader is None:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

            _vader = SentimentIntensityAnalyzer()
    return _vader


def families_of(variant: str) -> list[str]:
    """Emotion families a variant spec names (``anger:severe+confusion`` -> anger, confusion)."""
    names = [part.strip().partition(":")[0].partition("@")[0].strip() for part in variant.split("+")]
    known = [n for n in names if n in LEXICONS]
    return known or list(LEXICONS)


def marker_hits(text: str) -> dict[str, int]:
    return {family: len(p.findall(text)) for family, p in _PATTERNS.items()}


def text_scores(texts: list[str]) -> dict[str, Any]:
    """Scores of one conversation's customer turns (VADER averaged per turn; markers per 100 words)."""
    if not texts:
        return {
            "turns": 0,
            "words": 0,
            "vader_compound": None,
            "vader_neg": None,
            "markers": {f: 0 for f in LEXICONS},
            "marker_rate": {f: 0.0 for f in LEXICONS},
        }
    analyzer = _analyzer()
    polar = [analyzer.polarity_scores(t) for t in texts]
    words = sum(word_count(t) for t in texts)
    hits: dict[str, int] = defaultdict(int)
    for t in texts:
        for family, n in marker_hits(t).items():
            hits[family] += n
    rate = {f: (100.0 * hits[f] / words if words else 0.0) for f in LEXICONS}
    return {
        "turns": len(texts),
        "words": words,
        "vader_compound": sum(p["compound"] for p in polar) / len(polar),
        "vader_neg": sum(p["neg"] for p in polar) / len(polar),
        "markers": {f: hits[f] for f in LEXICONS},
        "marker_rate": rate,
    }


# --------------------------------------------------------------------------- optional LLM judge

JUDGE_SYSTEM = (
    "You rate the emotional tone of a customer in a customer-service chat. You see only the customer's messages. "
    "For each emotion give an integer from 0 (absent) to 10 (extreme): " + ", ".join(JUDGE_FAMILIES) + ". "
    "Reply with one JSON object and nothing else, for example: " + json.dumps({f: 0 for f in JUDGE_FAMILIES})
)


def _judge_prompt(texts: list[str], limit: int = 6000) -> str:
    body = render_transcript(({"role": "user", "content": t} for t in texts), {"user": ""}, numbered=True)
    return "Customer messages:\n" + (body[:limit] if body else "(the customer wrote nothing)")


def parse_judge(text: str | None) -> dict[str, float] | None:
    """The first JSON object in the reply with numeric 0-10 ratings, or None if unusable."""
    if not text:
        return None
    for data in json_objects(text):
        if isinstance(data, dict):
            out = {}
            for f in JUDGE_FAMILIES:
                v = data.get(f)
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    out[f] = float(min(10.0, max(0.0, v)))
            if out:
                return out
    return None


def judge_conversations(
    convs: list[ConversationRecord],
    judge_model: str,
    judge_base_url: str | None,
    cache_path: Path | None = None,
    *,
    api_key_env: str | None = None,
    workers: int = 8,
) -> dict[str, Any]:
    """Ask the judge about every conversation with customer text (cached by prompt hash).

    Returns ``{"scores": {row_id: {family: 0-10}}, "failed": n, "model": ...}``; failures are
    counted, never fatal, so one flaky judge call cannot cost the whole report.
    """
    from moodbench.llm import LLMCallError, ModelClient, ModelSpec

    spec = ModelSpec(
        model=judge_model,
        base_urls=(judge_base_url,) if judge_base_url else (),
        api_key_env=api_key_env,
        max_tokens=200,
        max_retries=2,
        timeout_s=60.0,
        args={"temperature": 0},
    )
    client = ModelClient(spec)
    cache: dict[str, Any] = {}
    if cache_path and cache_path.exists():
        try:
            cache = json.loads(cache_path.read_text())
        except ValueError:
            cache = {}
    todo = [c for c in convs if c.user_texts]
    scores: dict[int, dict[str, float]] = {}
    failed = 0
    lock = threading.Lock()

    def one(c: ConversationRecord) -> None:
        nonlocal failed
        prompt = _judge_prompt(c.user_texts)
        key = sha256(f"{judge_model}\n{JUDGE_SYSTEM}\n{prompt}".encode()).hexdigest()
        if key in cache and cache[key] is not None:
            result = cache[key]
        else:
            try:
                reply = client.complete([{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": prompt}])
                result = parse_judge(reply.content)
            except LLMCallError:
                result = None
            with lock:
                cache[key] = result
        with lock:
            if result is None:
                failed += 1
            else:
                scores[c.id or 0] = result

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(one, todo))
    if cache_path:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache_path.write_text(json.dumps(cache))
    return {"model": judge_model, "base_url": judge_base_url, "judged": len(scores), "failed": failed, "scores": scores}
