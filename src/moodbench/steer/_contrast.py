"""Contrastive prompts for ``llama-cvector-generator``: a variant's ``steering`` pairs in the model's chat format.

Each pair becomes two prompts that differ only in the emotion: ``[system = the positive (or negative)
system prompt, user = the agent's turn]`` rendered with the model's own chat template and its
generation prompt, followed by the reply opening. The customer model writes the *assistant* side
(tau2 flips roles for the simulated customer), so the opening sits exactly where its replies will be.

The generator reads one prompt per line and un-escapes ``\\n``, ``\\r``, ``\\t``, ``\\\\``, ``\\'``,
``\\"`` and ``\\xNN`` (llama.cpp ``string_process_escapes``), so :func:`escape_line` escapes backslashes
first and then the line breaks: every rendered prompt round-trips byte for byte.
"""

from __future__ import annotations

import hashlib
import json

from moodbench.emotions import SteeringData
from moodbench.steer._template import ChatTemplate

__all__ = ["CONTRAST_FORMAT_VERSION", "contrast_prompts", "escape_line", "pairs_sha256", "unescape_line"]

#: Bumped whenever the rendering below changes, so cached vectors built the old way are not reused.
CONTRAST_FORMAT_VERSION = 1


def escape_line(text: str) -> str:
    """One prompt as one line of a cvector-generator prompt file; pure function."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


def unescape_line(line: str) -> str:
    """The inverse of :func:`escape_line` for the escapes it writes (what llama.cpp does when reading)."""
    out: list[str] = []
    i = 0
    mapping = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", "'": "'", '"': '"'}
    while i < len(line):
        ch = line[i]
        if ch == "\\" and i + 1 < len(line) and line[i + 1] in mapping:
            out.append(mapping[line[i + 1]])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def contrast_prompts(steering: SteeringData, template: ChatTemplate) -> tuple[list[str], list[str]]:
    """``(positive, negative)`` prompt texts (unescaped), one per pair, same order; pure function."""
    pos_sys, neg_sys = steering.system_prompts("positive"), steering.system_prompts("negative")
    positive: list[str] = []
    negative: list[str] = []
    for i, pair in enumerate(steering.pairs):
        for systems, opening, out in ((pos_sys, pair.positive, positive), (neg_sys, pair.negative, negative)):
            head = template.render(
                [{"role": "system", "content": systems[i % len(systems)]}, {"role": "user", "content": pair.agent}],
                add_generation_prompt=True,
            )
            out.append(head + opening)
    return positive, negative


def pairs_sha256(steering: SteeringData) -> str:
    """Digest of the steering material (and of the rendering version): part of a vector's cache key."""
    payload = {"format": CONTRAST_FORMAT_VERSION, "steering": steering.model_dump(mode="json")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
