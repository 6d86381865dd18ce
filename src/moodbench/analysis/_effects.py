"""The answer to the project's question: how much does each emotion change the agent's reward?

For each variant and scope (all domains together, and each domain), conversations are paired with
the baseline's conversation of the same (domain, task, trial), which ran with the same seed.
Per pair we have two rewards and two successes:

- ``diff``: mean reward difference (variant - baseline) with a task-clustered paired bootstrap CI;
- ``relative_pct``: the same difference relative to the baseline's mean on the pairs, in percent
  (how tau-Trait reports its "average drop");
- ``mcnemar_p``: exact McNemar test on success, Holm-corrected across the variants of one scope;
- the same numbers once more on the pairs where *neither* conversation carries a simulator-fidelity
  flag, so a reader can see whether the effect survives removing broken simulated customers.

Conversations that ended in ``llm_error``/``harness_error`` are excluded (and counted), since they
measure the endpoint or the harness, not the agent. Thresholds are module constants; the report
prints them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from moodbench.analysis._stats import (
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    holm,
    mcnemar_exact,
    noise_floor,
    paired_bootstrap,
)
from moodbench.results import ConversationRecord

MIN_PAIRS = 10  # below this many matched pairs no conclusion is drawn (the interval is still shown)
MIN_TASKS = 3  # a task-clustered bootstrap over fewer tasks cannot say much either
ALPHA = 0.05  # family-wise level for the Holm-corrected McNemar tests
SUBSETS = ("all", "unflagged")  # all conversations / pairs where neither side has a simulator flag


def _pairs(base: dict[tuple, ConversationRecord], var: dict[tuple, ConversationRecord], subset: str) -> list[tuple[ConversationRecord, ConversationRecord]]:
    keys = sorted(set(base) & set(var))
    out = [(base[k], var[k]) for k in keys]
    if subset == "unflagged":
        out = [(b, v) for b, v in out if not b.flagged and not v.flagged]
    return out


def _effect(pairs: list[tuple[ConversationRecord, ConversationRecord]], *, n_resamples: int, seed: int) -> dict[str, Any]:
    base_r = [float(b.reward) for b, _ in pairs]  # type: ignore[arg-type]
    var_r = [float(v.reward) for _, v in pairs]  # type: ignore[arg-type]
    clusters = [b.task_key for b, _ in pairs]
    boot = paired_bootstrap(base_r, var_r, clusters, n_resamples=n_resamples, seed=seed)
    b_only = sum(1 for b, v in pairs if b.success and not v.success)
    v_only = sum(1 for b, v in pairs if v.success and not b.success)
    n = len(pairs)
    base_mean = sum(base_r) / n if n else None
    var_mean = sum(var_r) / n if n else None
    relative = (100.0 * (var_mean - base_mean) / base_mean) if var_mean is not None and base_mean else None
    return {
        "n_pairs": n,
        "n_tasks": boot.n_clusters,
        "baseline_mean": base_mean,
        "variant_mean": var_mean,
        "diff": boot.to_dict(),
        "relative_pct": relative,
        "both_success": sum(1 for b, v in pairs if b.success and v.success),
        "both_fail": sum(1 for b, v in pairs if not b.success and not v.success),
        "baseline_only_success": b_only,
        "variant_only_success": v_only,
        "mcnemar_p": mcnemar_exact(b_only, v_only) if n else None,
        "enough_pairs": n >= MIN_PAIRS and boot.n_clusters >= MIN_TASKS,
    }


def verdict(effect: dict[str, Any], noise: float | None = None) -> str:
    """One sentence a reader can act on; says so in words when the data cannot support a claim."""
    n, tasks = effect["n_pairs"], effect["n_tasks"]
    if n == 0:
        return "No matched pairs: the baseline and this variant share no scored (task, trial)."
    d = effect["diff"]
    ci = f"{d['mean']:+.3f} (95% CI {d['low']:+.3f} to {d['high']:+.3f})"
    if not effect["enough_pairs"]:
        why = f"{n} pair(s)" if n < MIN_PAIRS else f"{tasks} task(s)"
        return f"Too few pairs for a conclusion ({why}; need >= {MIN_PAIRS} pairs over >= {MIN_TASKS} tasks). Observed {ci}."
    p = effect.get("mcnemar_p_holm")
    ptxt = f"McNemar p(Holm) = {p:.3g}" if p is not None else "McNemar n/a"
    if d["excludes_zero"]:
        direction = "Lower" if d["mean"] < 0 else "Higher"
        sig = "significant" if p is not None and p < ALPHA else "not significant on success"
        text = f"{direction} reward than the baseline: {ci}; {ptxt} ({sig})."
    else:
        text = f"No detectable difference: {ci} includes 0; {ptxt}."
    if noise is not None and abs(d["mean"]) < noise:
        text += f" |diff| is below the baseline's trial-to-trial noise floor ({noise:.3f})."
    return text


def _index(convs: Iterable[ConversationRecord]) -> dict[str, dict[tuple, ConversationRecord]]:
    out: dict[str, dict[tuple, ConversationRecord]] = defaultdict(dict)
    for c in convs:
        if not c.excluded:
            out[c.variant][c.pair_key] = c
    return out


def baseline_noise(convs: Iterable[ConversationRecord], baseline: str) -> dict[str, Any]:
    rewards: dict[tuple, dict[int, float]] = defaultdict(dict)
    for c in convs:
        if c.variant == baseline and not c.excluded:
            rewards[c.task_key][c.trial] = float(c.reward)  # type: ignore[arg-type]
    return noise_floor(rewards)


def compute_effects(
    convs: list[ConversationRecord],
    baseline: str,
    variants: list[str],
    domains: list[str],
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> dict[str, Any]:
    """Effects of every non-baseline variant, per scope ("all" and each domain) and subset."""
    others = [v for v in variants if v != baseline]
    excluded: defaultdict[str, int] = defaultdict(int)
    for c in convs:
        if c.excluded:
            excluded[c.variant] += 1
    scopes: dict[str, Any] = {}
    for scope in ["all", *domains]:
        scoped = [c for c in convs if scope == "all" or c.domain == scope]
        idx = _index(scoped)
        base = idx.get(baseline, {})
        noise = baseline_noise(scoped, baseline)
        block: dict[str, Any] = {"noise_floor": noise, "baseline_scored": len(base), "subsets": {}}
        for subset in SUBSETS:
            effects = {v: _effect(_pairs(base, idx.get(v, {}), subset), n_resamples=n_resamples, seed=seed) for v in others}
            adjusted = holm([effects[v]["mcnemar_p"] for v in others])
            for v, p in zip(others, adjusted):
                effects[v]["mcnemar_p_holm"] = p
                effects[v]["verdict"] = verdict(effects[v], noise.get("mean_abs_diff"))
                var = idx.get(v, {})
                effects[v]["variant_scored"] = len(var)
                effects[v]["unpaired"] = len(set(var) ^ set(base))
            block["subsets"][subset] = effects
        scopes[scope] = block
    return {
        "baseline": baseline,
        "variants": others,
        "excluded": {v: excluded.get(v, 0) for v in variants},
        "thresholds": {"min_pairs": MIN_PAIRS, "min_tasks": MIN_TASKS, "alpha": ALPHA,
                       "n_resamples": n_resamples, "seed": seed, "confidence": 0.95},
        "scopes": scopes,
    }
