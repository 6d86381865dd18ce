"""Which customer message format keeps a (steered) small model in the customer role: measured, per format.

The same scripted agent turns (:func:`moodbench.steer._customer.agent_script`, as ``moodbench probe
--user`` plays them) are answered by the customer model in each format (``tau2`` role-flipped chat,
``transcript``, ``completion``), optionally with a control vector applied, and every reply goes through
the probe's rule checks. The rates are the numbers behind choosing ``--user-format completion`` for
small local models.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from moodbench.steer._customer import FORMATS, agent_script, customer_conversation
from moodbench.steer._vector import SteeringVector

__all__ = ["DEFAULT_FORMAT_TASKS", "compare_formats"]

DEFAULT_FORMAT_TASKS: tuple[str, ...] = ("mock:create_task_1", "mock:update_task_1", "retail:0", "retail:1")


def _summary(convs: list[list[Any]], family: list[str]) -> dict[str, Any]:
    from moodbench.judges import marker_hits, text_scores
    from moodbench.results import strip_stop_tokens

    turns = [t for c in convs for t in c]
    texts = [strip_stop_tokens(t.reply or "") for t in turns]
    texts = [x for x in texts if x]
    vader = [text_scores([x])["vader_compound"] for x in texts]
    words = sum(text_scores([x])["words"] for x in texts)
    hits = sum(marker_hits(x)[f] for x in texts for f in family)
    n = len(turns)
    return {
        "conversations": len(convs),
        "replies": n,
        "flagged": sum(t.flagged for t in turns),
        "flagged_rate": sum(t.flagged for t in turns) / n if n else None,
        "role_confusion": sum(t.role_confusion for t in turns),
        "echo": sum(t.echo for t in turns),
        "premature_stop": sum(any(t.stop for t in c) for c in convs),
        "empty": sum(t.empty for t in turns),
        "refusal": sum(t.refusal for t in turns),
        "self_repeat": sum(t.self_repeat for t in turns),
        "errors": sum(t.error is not None for t in turns),
        "vader_compound": statistics.fmean(vader) if vader else None,
        "markers_per_100_words": 100.0 * hits / words if words else None,
    }


def compare_formats(
    model_path: str | Path,
    *,
    tasks: Sequence[str] = DEFAULT_FORMAT_TASKS,
    formats: Sequence[str] = FORMATS,
    vector: SteeringVector | None = None,
    scale: float = 0.0,
    emotion: str = "frustration",
    turns: int = 3,
    seeds: Sequence[int] = (1,),
    max_tokens: int = 64,
    temperature: float = 0.7,
    threads: int | None = 1,
    parallel: int = 2,
    log_path: Path | None = None,
) -> dict[str, Any]:
    """``{"formats": {fmt: rates}, "conversations": {fmt: [...]}}`` for one customer model (steered when ``vector``).

    One llama-server for all formats (``vector`` at ``scale`` on its layers, or none), so the formats
    differ only in how the conversation is sent.
    """
    from moodbench.judges import LEXICONS
    from moodbench.serve.llamacpp import LlamaCppServer

    cv = [(vector.vector, scale)] if vector is not None and scale else []
    scripts = []
    for spec in tasks:
        domain, _, task_id = spec.partition(":")
        scripts.append(agent_script(domain, task_id, turns))
    family = [emotion] if emotion in LEXICONS else list(LEXICONS)
    jobs = [(f, s, seed) for f in formats for s in scripts for seed in seeds]
    server = LlamaCppServer(model_path, ctx=4096, parallel=parallel, threads=threads, control_vectors=cv,
                            control_vector_layers=vector.layers if cv and vector else None, log_path=log_path)  # fmt: skip
    with server as srv, ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        convs = list(pool.map(lambda j: customer_conversation(srv.base_url, j[1], fmt=j[0], seed=j[2], max_tokens=max_tokens,
                                                               temperature=temperature), jobs))  # fmt: skip
    out: dict[str, Any] = {"scale": scale if cv else 0.0, "vector": str(vector.vector) if cv and vector else None, "formats": {},
                           "conversations": {}}  # fmt: skip
    for fmt in formats:
        mine = [c for (f, _, _), c in zip(jobs, convs, strict=True) if f == fmt]
        out["formats"][fmt] = _summary(mine, family)
        out["conversations"][fmt] = [[t.to_dict() for t in c] for c in mine]
    return out
