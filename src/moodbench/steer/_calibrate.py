"""``steer calibrate``: which vector scales make the customer emotional and still a coherent customer.

Why: a control vector's effect follows an inverted U. Planning measurements on the 0.5B (frustration,
mean method): mean VADER compound +0.38 at scale 0, +0.04 at 0.8, -0.19 at 1.6 (stop tokens doubled),
-0.55 at 3.0 as word salad. So the scale of each level is measured per model and emotion, not guessed.

How: one ``llama-server`` per scale (``--control-vector-scaled FILE:SCALE`` on the vector's layer
range; scale 0 runs without a vector and is the baseline). At each scale the customer model plays the
same short scripted conversations (:func:`moodbench.steer._customer.agent_script`: tau2's greeting, the
domain's identity question, a failed lookup, ...) for each task and seed, with tau2's own customer
prompt for the task and NO emotion text, in the chosen message format.

Cost (issue 25: one emotion on the default model in <= 5 minutes on 2 cores; measured phases in
benchmarks/README.md): the conversations of a scale run 4 at a time on a server with 8 slots (decode
steps batched; a task's second seed reuses the slot holding its prompt), perplexity is scored 8 replies
at a time, two scales run at once on two single-thread servers, and the sweep stops above an onset of
incoherence (:func:`measure_scales`). Per scale:

* manipulation: VADER compound and the emotion's marker rate (hits per 100 words, the lexicons of
  :mod:`moodbench.judges`), each as the mean paired difference to scale 0 over replies
  paired by (task, turn, seed), with a task-clustered 95% bootstrap CI;
* coherence: role confusion, echo, stop-token and empty rates (the probe's rule checks); the median
  perplexity of the replies under the *unsteered* model (:mod:`._score`: catches word salad); the
  repetition rate (share of a reply's word trigrams that repeat an earlier one: catches the loops
  perplexity rewards, "it's even worse because it's even worse because ..."); and the goal overlap
  (share of the scenario's reason-for-call content words the customer said in the conversation, the
  measure of :mod:`moodbench.judges`: does it still pursue its task).

Coherence (:mod:`moodbench.steer._coherence`): each check (flagged replies, early stops, repetition,
goal overlap, perplexity under the unsteered model) is a paired, task-clustered difference to scale 0;
the differences are fitted isotonic in the scale (harm grows with the dose), and a scale is incoherent
only when the fitted excess is above the check's practical margin (:data:`THRESHOLDS`: flagged +0.20,
stops +0.20, repetition +0.15, perplexity x2, goal overlap halved) AND its 95% interval excludes 0. The
first such scale is the onset: it and every scale above it are incoherent; notes name a scale that
passed on its own above the onset, and one below it that failed the margin on its own but not credibly.
Why: the earlier point rule turned one or two noisy replies into a cliff (the same design gave severe
1.0, 1.5 and "cannot be steered"). A scale with fewer than ``min_replies_ratio`` (0.5) x scale 0's
scored replies is not judged on a handful and counts as incoherent.

Levels: ``severe`` = the largest positive scale below the onset; ``mild`` = severe/3 and ``moderate`` =
2*severe/3 (the vector's effect grows roughly linearly below the collapse, and fractions of the strongest
coherent dose keep the levels ordered and spaced). The result's ``evidence`` holds the manipulation
interval at every scale, the checks that bounded severe, and, when the sweep is too small to decide (a
check on fewer than 2 tasks, or no detectable manipulation), the design that would decide
(:func:`moodbench.steer._coherence.suggest_tasks`).
"""

from __future__ import annotations

import json
import math
import queue
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from moodbench._util.console import say
from moodbench._util.cores import usable_cores
from moodbench._util.defaults import STEER_SCALES as DEFAULT_SCALES
from moodbench._util.defaults import STEER_TASKS as DEFAULT_TASKS
from moodbench.emotions import Catalog
from moodbench.steer._customer import FORMATS, AgentScript, CustomerTurn, agent_script, customer_conversation
from moodbench.steer._errors import SteeringInputError
from moodbench.steer._scale_scores import (
    LEVEL_FRACTIONS,
    THRESHOLDS,
    _family,
    _reply_scores,
    choose_levels,
    goal_overlap,
    judge_sweep,
    repetition_rate,
    summarize_scale,
)
from moodbench.steer._servers import CalibrationServers
from moodbench.steer._vector import Method, SteeringVector, build_vector, check_vector_path

__all__ = [
    "DEFAULT_SCALES",
    "DEFAULT_TASKS",
    "THRESHOLDS",
    "Calibration",
    "calibrate",
    "calibration_path",
    "choose_levels",
    "goal_overlap",
    "load_calibration",
    "measure_scales",
    "repetition_rate",
    "summarize_scale",
]


@dataclass
class Calibration:
    """A calibration result (:meth:`to_dict` is the stored JSON)."""

    model: str
    emotion: str
    vector: str
    vector_sha256: str
    method: str
    layers: list[int]
    format: str
    tasks: list[str]
    seeds: list[int]
    turns: int
    scales: list[dict[str, Any]]
    levels: dict[str, float] | None
    thresholds: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)
    replies: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    created_at: str = ""
    path: str | None = None
    plot: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "emotion": self.emotion, "vector": self.vector, "vector_sha256": self.vector_sha256,
            "method": self.method, "layers": self.layers, "format": self.format, "tasks": self.tasks, "seeds": self.seeds,
            "turns": self.turns, "scales": self.scales, "levels": self.levels, "thresholds": self.thresholds,
            "level_fractions": LEVEL_FRACTIONS, "warnings": self.warnings, "evidence": self.evidence, "seconds": self.seconds,
            "created_at": self.created_at, "path": self.path, "plot": self.plot, "replies": self.replies,
        }  # fmt: skip


# ------------------------------------------------------------------------------------------ running
def _parse_tasks(tasks: Sequence[str]) -> list[AgentScript]:
    from moodbench.sim import find_task

    scripts = []
    for spec in tasks:
        domain, sep, task_id = spec.partition(":")
        if not sep or not domain or not task_id:
            raise SteeringInputError(f"task {spec!r} is not DOMAIN:TASK_ID; fix: e.g. --tasks retail:0,retail:1")
        try:
            find_task(domain, task_id)
        except Exception as exc:  # noqa: BLE001 - UsageError (domain, task) from moodbench.sim
            why = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            raise SteeringInputError(f"task {spec!r}: {why}; fix: use DOMAIN:TASK_ID of a tau2 task (e.g. retail:0)") from None
        scripts.append(AgentScript(domain=domain, task_id=task_id, turns=()))
    return scripts


def _sweep_one(base_url: str, scripts: list[AgentScript], seeds: list[int], *, fmt: str, turns: int, max_tokens: int,
               temperature: float, parallel: int, persona_block: str | None = None) -> list[CustomerTurn]:  # fmt: skip
    """Every (task, seed) conversation against one server; ``persona_block``: a prompted emotion (the
    steering benchmark's prompted arm), None for calibration (tau2's prompt unchanged)."""
    # seed-major order: the second seed of a task starts once the first has freed a slot that holds the task's
    # whole prompt, so llama-server reuses it (the slot with the longest common prefix) instead of re-reading it
    jobs = [(agent_script(s.domain, s.task_id, turns), seed) for seed in seeds for s in scripts]
    with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="calibrate") as pool:
        convs = list(pool.map(lambda js: customer_conversation(base_url, js[0], fmt=fmt, seed=js[1], max_tokens=max_tokens,
                                                                temperature=temperature, persona_block=persona_block),
                              jobs))  # fmt: skip
    return [t for conv in convs for t in conv]


def measure_scales(grid: Sequence[float], measure: Callable[[float], list[dict[str, Any]]], limits: dict[str, float], *,
                   adaptive: bool = True, lanes: int = 1) -> tuple[dict[float, list[dict[str, Any]]], list[dict[str, Any]]]:  # fmt: skip
    """Measure the scales of ``grid`` in order (0 first, then by size); returns (scale -> scored replies, skipped).

    ``lanes`` scales are measured at a time (``measure`` is called from that many threads; one llama-server
    each, so on 2 cores two single-thread servers use both). ``adaptive``: after each group the coherence
    rule (:func:`moodbench.steer._coherence.decide`) runs on the scales measured so far; once it finds an
    onset of incoherence, the larger positive scales are not measured. Why that loses nothing the rule
    would keep: every positive scale above the onset counts as incoherent anyway (harm grows with the
    scale), so measuring them could only move the onset through a less harmful larger scale pooled with
    it, i.e. bet against the monotone dose-response the rule assumes; and they are the slowest scales
    (long word salad). Skipped scales are listed with the reason; ``adaptive=False`` measures every
    scale (the steering benchmark's dose-response). A scale above the onset that was measured in the
    onset's group stays in the result and is judged like any other.
    """
    from moodbench.steer._coherence import decide

    per_scale: dict[float, list[dict[str, Any]]] = {}
    skipped: list[dict[str, Any]] = []
    onset: float | None = None
    todo = list(grid)
    width = max(1, lanes)
    with ThreadPoolExecutor(max_workers=width, thread_name_prefix="scale") as pool:
        while todo:
            if onset is not None:
                for scale in [x for x in todo if x > onset]:
                    skipped.append({"scale": scale, "why": f"above the onset of incoherence at scale {onset:g} (harm grows "
                                                           "with the scale, so they count as incoherent)"})  # fmt: skip
                    todo.remove(scale)
            group, todo = todo[:width], todo[width:]
            for scale, rows in zip(group, pool.map(measure, group), strict=True):
                per_scale[scale] = rows
            if adaptive and 0.0 in per_scale and any(x > 0 for x in per_scale):
                onset = decide(per_scale, limits).onset
    return per_scale, skipped


def _scored_rows(turns: list[CustomerTurn], dose: dict[str, Any], families: list[str],
                 reasons: dict[str, str]) -> list[dict[str, Any]]:  # fmt: skip
    """One row per reply: its checks, ``dose`` (scale, or the benchmark's prompted level), the manipulation
    scores and its conversation's goal overlap (per conversation: does the customer still pursue its task)."""
    rows = [{**t.to_dict(), **dose, **_reply_scores(t.reply or "", families)} for t in turns]
    for (task, _seed), conv in _by_conversation(rows).items():
        overlap = goal_overlap(reasons[task], [_clean(r["reply"]) for r in conv])
        for r in conv:
            r["goal_overlap"] = overlap
    return rows


def _add_perplexity(base_url: str, rows: list[dict[str, Any]], *, max_tokens: int, client: Any, parallel: int = 1,
                    slots: queue.Queue[int] | None = None) -> None:  # fmt: skip
    """Each reply's perplexity under the (unsteered) model at ``base_url``, ``parallel`` requests in flight.

    Why in flight together: each forced token costs a decode step, and llama-server batches the steps of
    its busy slots into one pass over the weights (measured on 2 shared cores: 7.1 tokens/s one at a time,
    15.3 with 8 in flight); give the server at least ``parallel`` slots. ``slots``: the server's slot ids,
    shared by everything scoring on that server at once: each reply takes one for all its
    token requests (:func:`moodbench.steer._score.reply_perplexity`, ``id_slot``), so no reply clears
    another's cache; None gives this call its own ids 0..parallel-1. The numbers do not depend on the
    batching beyond float noise.
    """
    from moodbench.steer._score import reply_perplexity

    if slots is None:
        slots = queue.Queue()
        for i in range(max(1, parallel)):
            slots.put(i)
    free = slots

    def score(r: dict[str, Any]) -> float | None:
        sid = free.get()
        try:
            return reply_perplexity(base_url, _clean(r["reply"]), client=client, max_tokens=max_tokens, id_slot=sid)["perplexity"]
        finally:
            free.put(sid)

    with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="perplexity") as pool:
        for r, ppl in zip(rows, pool.map(score, rows), strict=True):
            r["perplexity"] = ppl


def _default_threads() -> int:
    return max(1, usable_cores() // 2)


def _default_lanes() -> int:
    """Scales measured at once: one single-thread llama-server per core (2 on 2 cores), at most 3."""
    return max(1, min(3, usable_cores()))


def calibrate(
    model: str | Path,
    emotion: str,
    *,
    scales: Sequence[float] = DEFAULT_SCALES,
    tasks: Sequence[str] = DEFAULT_TASKS,
    seeds: int | Sequence[int] = 2,
    turns: int = 3,
    fmt: str = "tau2",
    method: Method = "mean",
    layers: tuple[int, int] | None = None,
    vector: SteeringVector | None = None,
    catalog: Catalog | None = None,
    max_tokens: int = 64,
    temperature: float = 0.7,
    parallel: int = 4,
    threads: int | None = None,
    thresholds: dict[str, float] | None = None,
    plot: bool = True,
    save: bool = True,
    console: Any = None,
    log_dir: Path | None = None,
    adaptive: bool = True,
    lanes: int | None = None,
) -> Calibration:
    """Sweep ``scales`` for the (model, emotion) vector and map mild/moderate/severe to scales.

    Builds the vector first when needed (cached). ``tasks`` are ``DOMAIN:TASK_ID`` of real tau2 tasks;
    ``seeds`` a count (1..n) or explicit seeds: replies per scale = tasks x seeds x turns (fewer when a
    customer stops early). ``fmt``: the customer message format (``tau2``, ``transcript``,
    ``completion``) the run will use. The result is stored beside the vector as
    ``<vector>.calibration.json`` (+ ``.png`` plot) unless ``save=False``.

    ``threads`` per llama-server defaults to half the CPUs shared by the ``lanes`` (at least 1): with all
    cores and other work on the machine, llama.cpp's spinning thread barriers collapsed decoding from ~17
    to 1-4 tokens/s (measured on 2 shared cores, again 2.8 vs 13 tokens/s in 2026-12), while one thread kept ~15-17.

    ``parallel`` conversations are in flight per scale, on a server with twice as many slots (the idle
    ones keep their prompts for reuse), and that many slots score perplexity together: llama-server
    batches the decode steps of busy slots (8 in flight: ~2.8x the tokens/s of one, 2 shared cores).
    ``lanes`` scales are measured at once (default: one per CPU, at most 3), each on its own llama-server
    with ``threads`` threads, and scores its replies' perplexity on its own unsteered server
    (:mod:`moodbench.steer._servers`); separate single-thread processes use both of 2 cores without
    llama.cpp's thread barriers. ``adaptive`` (default): positive scales above an onset of incoherence are
    not measured (:func:`measure_scales`); the result's ``evidence`` lists them (``not_measured``) and the
    seconds per phase (``seconds_per_phase``).
    """
    if fmt not in FORMATS:
        raise SteeringInputError(f"unknown customer format {fmt!r}; fix: --format {' or --format '.join(FORMATS)}")
    grid = sorted({float(s) for s in scales} | {0.0}, key=lambda s: (abs(s), s))
    if len(grid) < 2:
        raise SteeringInputError("calibration needs at least one scale besides 0; fix: e.g. --scales 0,1,2")
    if turns < 1:
        raise SteeringInputError("turns must be >= 1; fix: --turns 3")
    seed_list = list(range(1, int(seeds) + 1)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list:
        raise SteeringInputError("calibration needs at least one seed; fix: --seeds 2")
    from moodbench.serve.install import LocalBackendMissing, llama_server_path

    scripts = _parse_tasks(tasks)
    reasons = {f"{s.domain}:{s.task_id}": _reason_for_call(s.domain, s.task_id) for s in scripts}
    try:
        llama_server_path()
    except LocalBackendMissing as exc:
        raise SteeringInputError(str(exc)) from None
    vec = vector or build_vector(model, emotion, method=method, layers=layers, catalog=catalog, console=console)
    check_vector_path(vec.vector)
    limits = {**THRESHOLDS, **(thresholds or {})}
    lanes = lanes or _default_lanes()
    threads = threads or max(1, usable_cores() // (2 * lanes))
    families = _family(emotion)
    logs = log_dir or vec.vector.parent / "logs"
    t0 = time.monotonic()
    conversations = len(scripts) * len(seed_list)
    slots = 2 * max(1, parallel)  # idle slots keep their prompts for the next conversation of the same task
    # wall seconds summed over the lanes, and the CPU seconds the llama-servers used (load-independent cost)
    phases: dict[str, float] = {"server_start": 0.0, "conversations": 0.0, "perplexity": 0.0, "server_cpu": 0.0}
    servers = CalibrationServers(vec, slots=slots, threads=threads, logs=logs, phases=phases)

    def sweep(base_url: str) -> list[CustomerTurn]:
        return _sweep_one(base_url, scripts, seed_list, fmt=fmt, turns=turns, max_tokens=max_tokens, temperature=temperature,
                          parallel=parallel)  # fmt: skip

    try:
        servers.open_scorers(lanes)
        import httpx

        with httpx.Client(timeout=300, limits=httpx.Limits(max_connections=4 * slots)) as http:

            def measure(scale: float) -> list[dict[str, Any]]:
                say(console, f"scale {scale:g}: {conversations} conversations x {turns} turns ({fmt} format) ...")
                with servers.scorer() as (scorer, free):
                    t1 = time.monotonic()
                    if scale == 0:
                        got = sweep(scorer.base_url)
                    else:
                        srv = servers.start(scale)
                        try:
                            got = sweep(srv.base_url)
                        finally:
                            servers.stop(srv)
                    t2 = time.monotonic()
                    rows = _scored_rows(got, {"scale": scale}, families, reasons)
                    # perplexity under the unsteered model now, not at the end: the adaptive search needs the verdict
                    _add_perplexity(scorer.base_url, rows, max_tokens=max_tokens, client=http, parallel=slots, slots=free)
                    t3 = time.monotonic()
                servers.add(conversations=t2 - t1, perplexity=t3 - t2)
                say(console, f"  {len(rows)} replies in {t2 - t1:.0f}s, perplexity in {t3 - t2:.0f}s")
                return rows

            per_scale, skipped = measure_scales(grid, measure, limits, adaptive=adaptive, lanes=lanes)
    finally:
        servers.close()

    table, levels, evidence, warnings = judge_sweep(per_scale, conversations, limits, n_tasks=len(scripts),
                                                    seeds=len(seed_list), grid=grid)  # fmt: skip
    if skipped:
        evidence["not_measured"] = skipped
        listed = ", ".join(f"{x['scale']:g}" for x in skipped)
        warnings.append(f"scale(s) {listed} not measured: {skipped[0]['why']}")
    phases["total"] = time.monotonic() - t0
    evidence["seconds_per_phase"] = {k: round(v, 1) for k, v in phases.items()}
    cal = Calibration(
        model=vec.model, emotion=emotion, vector=str(vec.vector), vector_sha256=vec.sha256, method=vec.method,
        layers=list(vec.layers), format=fmt, tasks=list(tasks), seeds=seed_list, turns=turns, scales=table, levels=levels,
        thresholds=limits, warnings=warnings, evidence=evidence, replies=[r for rows in per_scale.values() for r in rows],
        seconds=round(time.monotonic() - t0, 1), created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )  # fmt: skip
    if save:
        path = calibration_path(vec, fmt)
        if plot:
            from moodbench.steer._plot import plot_calibration

            cal.plot = str(plot_calibration(cal, path.with_suffix(".png")))
        cal.path = str(path)
        path.write_text(json.dumps(_finite(cal.to_dict()), indent=2) + "\n")
    return cal


def calibration_path(vec: SteeringVector, fmt: str = "tau2") -> Path:
    """``<vector>.calibration.json`` for the tau2 format, ``<vector>.<format>.calibration.json`` for the others."""
    return vec.calibration_path if fmt == "tau2" else vec.vector.with_suffix(f".{fmt}.calibration.json")


def load_calibration(vec: SteeringVector, fmt: str = "tau2") -> dict[str, Any] | None:
    """The calibration of this vector (and format): your own (``moodbench steer calibrate``) if you
    have one, else a shipped one measured for the same model file, pairs, method and layer range
    (:func:`shipped_calibration`), else None."""
    try:
        data = json.loads(calibration_path(vec, fmt).read_text())
        if data.get("vector_sha256") == vec.sha256:
            return data
    except (OSError, ValueError):
        pass
    return shipped_calibration(vec, fmt)


def shipped_calibration(vec: SteeringVector, fmt: str) -> dict[str, Any] | None:
    """A calibration that ships with moodbench (``steer/data/*.calibration.json``), when it was measured
    on the same model file (sha256), contrastive pairs (sha256), method, layer range and customer
    format as ``vec``: a vector built from those is the same direction, so its levels apply. Each file
    records how it was measured; ``moodbench steer calibrate`` replaces it with your own measurement."""
    from importlib import resources

    for entry in (resources.files("moodbench.steer") / "data").iterdir():
        if not entry.name.endswith(".calibration.json"):
            continue
        data = json.loads(entry.read_text(encoding="utf-8"))
        if (
            data.get("model_sha256") == vec.model_sha256
            and data.get("pairs_sha256") == vec.pairs_sha256
            and data.get("method") == vec.method
            and tuple(data.get("layers") or ()) == tuple(vec.layers)
            and data.get("format") == fmt
            and data.get("emotion") == vec.emotion
        ):
            return {**data, "vector_sha256": vec.sha256, "shipped": entry.name}
    return None


def _by_conversation(rows: list[dict[str, Any]]) -> dict[tuple[str, int], list[dict[str, Any]]]:
    out: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault((r["task"], r["seed"]), []).append(r)
    return out


def _reason_for_call(domain: str, task_id: str) -> str:
    """What the customer should get across (the words the fidelity rules look for)."""
    from moodbench.sim import find_task, scenario_of

    return scenario_of(find_task(domain, task_id)).reason_for_call


def _clean(text: str | None) -> str:
    from moodbench.results import strip_stop_tokens

    return strip_stop_tokens(text or "")


def _finite(obj: Any) -> Any:
    """NaN/inf -> None, so the stored JSON is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj
