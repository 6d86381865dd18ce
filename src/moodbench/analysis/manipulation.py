"""Manipulation check: did the simulated customers of a variant actually *sound* different?

The previous harness reported effects of a "frustrated" customer whose messages read as neutral:
the emotion never reached the model. An effect is only about emotion if the emotion is visible in
what the customer wrote, so every variant is compared with the baseline on the customer's turns:

- VADER (rule-based sentiment, offline): mean ``compound`` (-1..1) and ``neg`` share per
  conversation, averaged over the customer's turns;
- marker words: a small hand-written lexicon per emotion family (below), as hits per 100 words;
  a variant is scored on the families named in its spec (``anxiety:mild+confusion`` ->
  anxiety, confusion), an unknown custom variant on all of them;
- optionally an LLM judge (``--judge-model``) that rates 0-10 per family from the customer's
  messages alone, blind to the variant.

Each score is paired with the baseline conversation of the same (domain, task, trial) and gets a
task-clustered bootstrap CI. A variant *passes* when at least one score moves in the emotion's
direction with a CI that excludes 0 (markers or judge up, VADER compound down or neg up);
otherwise the report flags it: its effect on reward cannot be attributed to emotion.
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

from moodbench.analysis.load import Conversation, word_count
from moodbench.analysis.stats import DEFAULT_RESAMPLES, DEFAULT_SEED, paired_bootstrap

MIN_PAIRS = 10  # fewer paired conversations than this: "too few conversations to check"

# Marker words and phrases per emotion family, matched case-insensitively on word boundaries
# ("*" = any word ending). Deliberately short and obvious: they catch the phrases the variant
# prompts ask for and what customers typically write, not subtle tone. Documented in the report.
LEXICONS: dict[str, tuple[str, ...]] = {
    "frustration": ("ridiculous", "frustrat*", "forever", "annoy*", "fed up", "waste of time", "wasted", "wasting",
                    "how long", "so complicated", "still not", "again", "seriously", "ugh", "unbelievable", "come on",
                    "every single time", "finally", "taking so long", "sick of"),
    "anger": ("unacceptable", "outrageous", "angry", "furious", "manager", "supervisor", "complaint", "terrible",
              "awful", "demand*", "right now", "immediately", "incompetent", "useless", "disgust*", "how dare",
              "pathetic", "worst", "fix this", "absurd"),
    "anxiety": ("worr*", "nervous", "anxious", "afraid", "scared", "make sure", "are you sure", "double-check",
                "double check", "concerned", "panic*", "what if", "please confirm", "mistake*", "go wrong",
                "stress*", "safe", "hope so", "just to be sure", "is that okay"),
    "confusion": ("confus*", "don't understand", "do not understand", "not sure", "what does", "what do you mean",
                  "mean by", "lost", "simpler", "explain", "not following", "huh", "which one", "i'm not sure",
                  "sorry, what", "what is a", "i don't get", "complicated", "step by step", "unclear"),
    "impatience": ("quick*", "hurry", "asap", "fast*", "already", "just do it", "get on with", "no time",
                   "don't have time", "skip", "right away", "now", "how much longer", "waiting", "enough"),
    "skepticism": ("are you sure", "really", "doubt*", "prove", "how do i know", "trust", "supposedly",
                   "don't believe", "i'm not convinced", "sure about", "guarantee", "double-check", "claim*",
                   "last time", "suspicious"),
    "incoherence": ("um", "uh", "wait", "anyway", "what was i", "never mind", "or maybe", "i mean", "whatever",
                    "hmm", "where was i", "sorry i", "lost my train", "or not", "something like that"),
}
DEFAULT_FAMILIES = ("frustration", "anger", "anxiety", "confusion")
JUDGE_FAMILIES = ("frustration", "anger", "anxiety", "confusion", "impatience", "skepticism")


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
    names = [part.strip().partition(":")[0].strip() for part in variant.split("+")]
    known = [n for n in names if n in LEXICONS]
    return known or list(LEXICONS)


def marker_hits(text: str) -> dict[str, int]:
    return {family: len(p.findall(text)) for family, p in _PATTERNS.items()}


def text_scores(texts: list[str]) -> dict[str, Any]:
    """Scores of one conversation's customer turns (VADER averaged per turn; markers per 100 words)."""
    if not texts:
        return {"turns": 0, "words": 0, "vader_compound": None, "vader_neg": None, "markers": {f: 0 for f in LEXICONS},
                "marker_rate": {f: 0.0 for f in LEXICONS}}
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


def conversation_scores(c: Conversation) -> dict[str, Any]:
    """:func:`text_scores` of a conversation's customer turns, computed once (report and viewer share it)."""
    cached = c.__dict__.get("_emotion_scores")
    if cached is None:
        cached = c.__dict__["_emotion_scores"] = text_scores(c.user_texts)
    return cached


# --------------------------------------------------------------------------- optional LLM judge

JUDGE_SYSTEM = (
    "You rate the emotional tone of a customer in a customer-service chat. You see only the customer's messages. "
    "For each emotion give an integer from 0 (absent) to 10 (extreme): " + ", ".join(JUDGE_FAMILIES) + ". "
    "Reply with one JSON object and nothing else, for example: "
    + json.dumps({f: 0 for f in JUDGE_FAMILIES})
)
_JSON_OBJECT = re.compile(r"\{.*?\}", re.DOTALL)


def _judge_prompt(texts: list[str], limit: int = 6000) -> str:
    body = "\n".join(f"{i + 1}. {t}" for i, t in enumerate(texts))
    return "Customer messages:\n" + (body[:limit] if body else "(the customer wrote nothing)")


def parse_judge(text: str | None) -> dict[str, float] | None:
    """The first JSON object in the reply with numeric 0-10 ratings, or None if unusable."""
    if not text:
        return None
    for match in _JSON_OBJECT.finditer(text):
        try:
            data = json.loads(match.group(0))
        except ValueError:
            continue
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
    convs: list[Conversation],
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

    spec = ModelSpec(model=judge_model, base_urls=(judge_base_url,) if judge_base_url else (), api_key_env=api_key_env,
                     max_tokens=200, max_retries=2, timeout_s=60.0, args={"temperature": 0})
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

    def one(c: Conversation) -> None:
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
                scores[c.id] = result

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(one, todo))
    if cache_path:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache_path.write_text(json.dumps(cache))
    return {"model": judge_model, "base_url": judge_base_url, "judged": len(scores), "failed": failed, "scores": scores}


# --------------------------------------------------------------------------- the check

def _own(score: dict[str, Any], families: list[str]) -> float:
    return sum(score["marker_rate"][f] for f in families)


def _judge_own(j: dict[str, float] | None, families: list[str]) -> float | None:
    if not j:
        return None
    vals = [j[f] for f in families if f in j] or list(j.values())
    return max(vals) if vals else None


METRICS = (
    # key, label, direction an emotional customer should move it
    ("markers_own", "emotion markers / 100 words (own families)", +1),
    ("vader_compound", "VADER compound", -1),
    ("vader_neg", "VADER negativity", +1),
    ("judge_own", "LLM judge 0-10 (own families)", +1),
)


def manipulation_check(
    convs: list[Conversation],
    baseline: str,
    variants: list[str],
    judge: dict[str, Any] | None = None,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> dict[str, Any]:
    """Per variant: mean scores, paired differences with CIs, and whether the check passed."""
    judge_scores = (judge or {}).get("scores", {})
    scored = {c.id: conversation_scores(c) for c in convs if not c.excluded}
    by_variant: dict[str, dict[tuple, Conversation]] = defaultdict(dict)
    for c in convs:
        if not c.excluded:
            by_variant[c.variant][c.pair_key] = c
    base = by_variant.get(baseline, {})
    out: dict[str, Any] = {"baseline": baseline, "min_pairs": MIN_PAIRS, "lexicons": {k: list(v) for k, v in LEXICONS.items()},
                           "judge": {k: v for k, v in (judge or {}).items() if k != "scores"} or None, "variants": {}}
    for v in variants:
        fam = families_of(v) if v != baseline else list(DEFAULT_FAMILIES)
        mine = by_variant.get(v, {})
        means: dict[str, float | None] = {}
        values: dict[str, list[float]] = defaultdict(list)
        for c in mine.values():
            s = scored[c.id]
            if s["vader_compound"] is not None:
                values["vader_compound"].append(s["vader_compound"])
                values["vader_neg"].append(s["vader_neg"])
            values["markers_own"].append(_own(s, fam))
            values["markers_all"].append(sum(s["marker_rate"].values()))
            j = _judge_own(judge_scores.get(c.id), fam)
            if j is not None:
                values["judge_own"].append(j)
        for key in ("markers_own", "markers_all", "vader_compound", "vader_neg", "judge_own"):
            vals = values.get(key, [])
            means[key] = sum(vals) / len(vals) if vals else None
        entry: dict[str, Any] = {"families": fam, "n": len(mine), "means": means,
                                 "family_rates": {f: (sum(scored[c.id]["marker_rate"][f] for c in mine.values()) / len(mine) if mine else None)
                                                  for f in LEXICONS}}
        if v == baseline:
            out["variants"][v] = {**entry, "is_baseline": True}
            continue
        keys = sorted(set(base) & set(mine))
        diffs: dict[str, Any] = {}
        for key, label, direction in METRICS:
            a: list[float] = []
            b: list[float] = []
            clusters = []
            for k in keys:
                sb, sv = scored[base[k].id], scored[mine[k].id]
                if key == "judge_own":
                    x, y = _judge_own(judge_scores.get(base[k].id), fam), _judge_own(judge_scores.get(mine[k].id), fam)
                elif key == "markers_own":
                    x, y = _own(sb, fam), _own(sv, fam)
                else:
                    x, y = sb[key], sv[key]
                if x is None or y is None:
                    continue
                a.append(x)
                b.append(y)
                clusters.append(k[:2])
            if not a:
                if key != "judge_own" or judge_scores:
                    diffs[key] = {"label": label, "direction": direction, "n_pairs": 0, "mean": None, "low": None, "high": None,
                                  "moved": False}
                continue
            boot = paired_bootstrap(a, b, clusters, n_resamples=n_resamples, seed=seed)
            moved = boot.excludes_zero and (boot.mean or 0) * direction > 0
            diffs[key] = {"label": label, "direction": direction, **boot.to_dict(), "moved": moved}
        n_pairs = len(keys)
        passed = any(d["moved"] for d in diffs.values())
        if n_pairs < MIN_PAIRS:
            status, text = "too_few", f"Too few paired conversations ({n_pairs}) to check the manipulation (need >= {MIN_PAIRS})."
        elif passed:
            moved = ", ".join(d["label"] for d in diffs.values() if d["moved"])
            status, text = "passed", f"Customers differ from the baseline ({moved})."
        else:
            status, text = "failed", ("Customers do NOT differ detectably from the baseline on any score: the emotion may not have "
                                      "reached the simulated customer, so reward differences cannot be attributed to it.")
        out["variants"][v] = {**entry, "is_baseline": False, "n_pairs": n_pairs, "diffs": diffs, "status": status, "verdict": text}
    return out
