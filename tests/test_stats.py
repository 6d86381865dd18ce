"""The report's statistics on stored conversations whose right answer is known by construction.

Hand-computed McNemar (the secondary statistic), summary pass^k, the records -> claims road
(``reward_effects``: paired means, family, too_few, MDE, A/A, paired pass^k), the manipulation check's
early-turn rule and gates, dose-response grouping and the planning helpers. The inference itself is
checked against statsmodels/scipy in ``test_inference.py`` and ``test_power.py``."""

from __future__ import annotations

import json
from math import comb

import numpy as np
import pytest
from scipy.stats import binomtest

from moodbench.analysis import (
    MIN_TASKS,
    Design,
    Dose,
    dose_of,
    dose_response,
    dose_response_table,
    early_user_texts,
    family_size,
    manipulation_check,
    mde,
    methods_comparison,
    paired_effect,
    planned_design,
    planned_mde,
    reward_effects,
    steering_by_variant,
)
from moodbench.analysis import _stats as stats
from moodbench.analysis._variants import families_spec
from moodbench.judges import families_of, marker_hits, parse_judge, text_scores
from moodbench.results import ConversationRecord, ExitReason, FidelityFlags, Steering, pass_hat_k

# --------------------------------------------------------------------------- McNemar


@pytest.mark.parametrize(
    ("b", "c", "expected"),
    [
        (1, 6, 2 * (1 + 7) / 2**7),  # n=7: P(X<=1) = (C(7,0)+C(7,1))/128 = 8/128; two-sided 0.125
        (0, 5, 2 * 1 / 2**5),  # 0.0625: five discordant pairs all one way is not significant at 0.05
        (2, 10, 2 * (1 + 12 + 66) / 2**12),  # 0.0385742...
        (10, 2, 2 * (1 + 12 + 66) / 2**12),  # symmetric
        (3, 3, 1.0),  # capped at 1
        (0, 0, 1.0),  # no discordant pairs: no evidence
        (0, 1, 1.0),
    ],
)
def test_mcnemar_exact_hand_computed(b: int, c: int, expected: float) -> None:
    assert stats.mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-12)


def test_mcnemar_matches_scipy_binomial_test() -> None:
    for b in range(25):
        for c in range(25):
            if b + c:
                assert stats.mcnemar_exact(b, c) == pytest.approx(binomtest(b, b + c, 0.5).pvalue, rel=1e-9, abs=1e-15)


def test_mcnemar_rejects_negative_counts() -> None:
    with pytest.raises(ValueError):
        stats.mcnemar_exact(-1, 3)


# --------------------------------------------------------------------------- pass^k (summary.json's, unpaired)


def test_pass_hat_k_hand_computed() -> None:
    by_task = {"a": [True, True, False], "b": [False, False, False], "c": [True, True, True]}
    assert pass_hat_k(by_task, 1) == pytest.approx((2 / 3 + 0 + 1) / 3)
    assert pass_hat_k(by_task, 2) == pytest.approx((comb(2, 2) / comb(3, 2) + 0 + 1) / 3)
    assert pass_hat_k(by_task, 3) == pytest.approx(1 / 3)
    assert pass_hat_k(by_task, 4) is None  # more than the trials run


def test_pass_hat_k_stops_at_the_fewest_trials_like_tau2() -> None:
    # {3/3, 2/2}: with tasks dropped per k this gave 0.5, 0.5, 1.0 (pass^3 above pass^1); tau2 stops at k = 2
    by_task = {"a": [True, True, True], "b": [False, False]}
    assert [pass_hat_k(by_task, k) for k in (1, 2, 3)] == [pytest.approx(0.5), pytest.approx(0.5), None]


# --------------------------------------------------------------------------- effects on known conversations


def _conv(
    i: int,
    task: str,
    variant: str,
    trial: int,
    reward: float | None,
    *,
    exit_reason: str | None = None,
    flagged: bool = False,
    user: str = "Please help me with my order.",
    later: str = "Thanks. ###STOP###",
    domain: str = "mock",
) -> ConversationRecord:
    exit_reason = exit_reason or ("success" if reward == 1.0 else "task_failed")
    sim = {
        "messages": [
            {"role": "assistant", "content": "Hi! How can I help you today?"},
            {"role": "user", "content": user},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "name": "get_order", "arguments": {}}]},
            {"role": "tool", "id": "c1", "content": "{}", "requestor": "assistant"},
            {"role": "assistant", "content": "Done."},
            {"role": "user", "content": later},
        ]
    }
    return ConversationRecord(
        id=i,
        cell_key=f"{domain}|{task}|{variant}|{trial}",
        domain=domain,
        task_id=task,
        variant=variant,
        trial=trial,
        reward=reward,
        exit_reason=ExitReason(exit_reason),
        wall_seconds=1.0,
        simulation=sim,
        flags=FidelityFlags(any=flagged, user_echo=flagged),
    )


def _reward(c: ConversationRecord) -> float:
    """The reward of a conversation built with one: ``None`` here would be a broken fixture, not a result."""
    assert c.reward is not None
    return c.reward


def _dose(spec: str) -> Dose:
    """The dose of a variant spec the test knows is graded (``dose_of`` answers ``None`` for ungraded ones)."""
    d = dose_of(spec)
    assert d is not None
    return d


def _known_run(tasks: int = 24) -> list[ConversationRecord]:
    """``tasks`` tasks x 2 trials. 'worse' fails half the tasks control solves (one trial flagged on two tasks);
    'same' mirrors control; 'few' has 10 tasks (too_few); control solves 3 of 4 tasks."""
    convs, i = [], 0
    for t in range(tasks):
        task = f"t{t:02d}"
        ctrl = 1.0 if t % 4 else 0.0
        for trial in range(2):
            convs.append(_conv(i := i + 1, task, "control", trial, ctrl))
            convs.append(_conv(i := i + 1, task, "worse", trial, 0.0 if t < tasks // 2 else ctrl, flagged=t < 2 and trial == 0))
            convs.append(_conv(i := i + 1, task, "same", trial, ctrl))
            if t < 10:
                convs.append(_conv(i := i + 1, task, "few", trial, ctrl))
            else:
                convs.append(_conv(i := i + 1, task, "few", trial, None, exit_reason="llm_error"))
    return convs


def _row(out: dict, variant: str, subset: str = "all", domain: str = "all") -> dict:
    return next(e for e in out["effects"] if e["variant"] == variant and e["subset"] == subset and e["domain"] == domain)


def test_reward_effects_known_answer() -> None:
    convs = _known_run()
    out = reward_effects(convs, "control", ["control", "worse", "same", "few"], ["mock"])
    w = _row(out, "worse")
    # tasks 0..11 (of which 0, 4, 8 fail under control too): 9 tasks drop 1 -> 0 -> diff = -9/24 per task-weighted mean
    assert (w["n_pairs"], w["n_tasks"]) == (48, 24)
    assert w["diff"] == pytest.approx(-9 / 24)
    assert w["baseline_mean"] == pytest.approx(18 / 24) and w["variant_mean"] == pytest.approx(9 / 24)
    assert w["variant_mean"] - w["baseline_mean"] == pytest.approx(w["diff"])
    ref = paired_effect(
        [_reward(c) for c in convs if c.variant == "control"],
        [_reward(c) for c in convs if c.variant == "worse"],
        [c.task_id for c in convs if c.variant == "control"],
    )
    assert w["ci"] == pytest.approx([ref.ci_low, ref.ci_high]) and w["p"] == pytest.approx(ref.p)
    # the family: worse is claimable; same has zero spread (every task difference 0) and few is too small: both too_few,
    # left out. The unflagged worse row (46 pairs) is a second test of the one family -> Holm over 2
    fam = next(f for f in out["families"] if f["subset"] == "all")
    assert (fam["size"], fam["planned"], fam["family_size"]) == (1, 3, 2)
    assert ref.p is not None
    assert w["p_adjusted"] == pytest.approx(min(1.0, 2 * ref.p)) and w["claim"] == "lower" and w["family_size"] == 2
    same = _row(out, "same")
    assert same["claim"] == "too_few" and same["diff"] == 0 and same["ci"] == [None, None] and same["p"] is None
    assert "exactly 0" in same["no_claim_reason"] and _row(out, "same", "unflagged")["same_test_as"]
    f = _row(out, "few")
    assert f["claim"] == "too_few" and f["p_adjusted"] is None and (f["n_pairs"], f["n_tasks"]) == (20, 10)
    assert f["baseline_mean"] == pytest.approx(np.mean([1.0 if t % 4 else 0.0 for t in range(10)]))  # paired: its own 10 tasks
    # the secondary McNemar counts pairs and is labelled as such
    assert (w["mcnemar"]["baseline_only"], w["mcnemar"]["variant_only"]) == (18, 0)
    assert w["mcnemar"]["p"] == pytest.approx(2 / 2**18) and "secondary" in w["mcnemar"]["label"]
    # sensitivity family without the flagged pairs
    u = _row(out, "worse", "unflagged")
    assert u["n_pairs"] == 46 and u["family"] == "reward/unflagged"
    # one scope only with one domain; pass^k paired up to 2 on the same 24 tasks
    assert {e["domain"] for e in out["effects"]} == {"all"}
    pk = [p for p in out["pass_hat_k"] if p["variant"] == "worse"]
    assert [p["k"] for p in pk] == [1, 2] and all(p["n_tasks"] == 24 and p["dropped_tasks"] == 0 for p in pk)
    assert pk[1]["baseline_mean"] == pytest.approx(18 / 24) and pk[1]["diff"] == pytest.approx(-9 / 24)
    assert all(p["p"] is None and "claim" not in p and p["descriptive"] and p["ci"][0] is not None for p in pk)  # descriptive
    assert all(
        p["ci"] == [None, None] and p["too_few"] for p in out["pass_hat_k"] if p["variant"] == "few"
    )  # 10 tasks: no interval
    # the design: MDE from the baseline rows of each comparison's own pairs, A/A split with two trials
    d = out["designs"][0]
    assert d["tasks"] == 24 and d["family_size"] == 2 and d["aa"]["n_tasks"] == 24 and d["aa"]["diff"] == 0
    assert d["mde"] is not None and d["mde"] == w["mde"] == same["mde"] and f["mde"] is None


def test_a_significant_effect_is_claimed_even_below_the_mde() -> None:
    """No 'noise floor': a claim depends on the adjusted p only, whatever the MDE says."""
    convs = _known_run()
    out = reward_effects(convs, "control", ["control", "worse"], ["mock"])
    w = _row(out, "worse")
    assert w["claim"] == "lower" and "noise" not in json.dumps(out)


def test_several_domains_give_pooled_and_per_domain_scopes() -> None:
    convs = []
    for dom in ("retail", "airline"):
        for c in _known_run():
            convs.append(c.model_copy(update={"domain": dom, "cell_key": c.cell_key.replace("mock", dom)}))
    out = reward_effects(convs, "control", ["control", "worse", "same"], ["retail", "airline"])
    assert {e["domain"] for e in out["effects"]} == {"all", "retail", "airline"}
    pooled = _row(out, "worse")
    assert pooled["n_tasks"] == 48  # (domain, task) clusters
    assert next(f for f in out["families"] if f["subset"] == "all")["size"] == 1 * 3  # 'same' has zero spread: no test
    assert _row(out, "worse", domain="retail")["diff"] == pytest.approx(-9 / 24)


def test_early_turns_stop_at_the_first_tool_result() -> None:
    msgs = [
        {"role": "assistant", "content": "Hi"},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "?"},
        {"role": "user", "content": "two ###STOP###"},
        {"role": "user", "content": "three"},
    ]
    assert early_user_texts(msgs) == ["one", "two"]  # at most two
    msgs = [
        {"role": "user", "content": "one"},
        {"role": "tool", "content": "{}", "requestor": "assistant"},
        {"role": "user", "content": "still not working, again!"},
    ]
    assert early_user_texts(msgs) == ["one"]
    user_tool = [
        {"role": "user", "content": "one"},
        {"role": "tool", "content": "{}", "requestor": "user"},
        {"role": "user", "content": "two"},
    ]
    assert early_user_texts(user_tool) == ["one", "two"]  # the customer's own tool (telecom) reveals no outcome


# --------------------------------------------------------------------------- manipulation scores


def test_marker_lexicon_matches_words_not_substrings() -> None:
    hits = marker_hits("This is ridiculous! I want a MANAGER right now. I'm worried, are you sure?")
    assert hits["frustration"] == 1 and hits["anger"] == 2 and hits["anxiety"] >= 2
    assert marker_hits("against the manageress")["frustration"] == 0  # 'again' inside 'against' is not a hit
    assert marker_hits("against the manageress")["anger"] == 0
    assert marker_hits("I am so frustrated and frustrating")["frustration"] == 2  # stems with '*'


def test_families_of_specs() -> None:
    assert families_of("anger:severe+confusion") == ["anger", "confusion"]
    assert families_of("frustration") == ["frustration"]
    assert set(families_of("my_custom_mood")) >= {"frustration", "anger", "anxiety", "confusion"}


def test_text_scores_see_anger() -> None:
    calm = text_scores(["Hello, I would like to change my address please. Thank you."])
    angry = text_scores(["This is unacceptable and ridiculous! I demand a manager right now, this is terrible service."])
    assert angry["vader_compound"] < calm["vader_compound"]
    assert angry["vader_neg"] > calm["vader_neg"]
    assert angry["marker_rate"]["anger"] > 0 == calm["marker_rate"]["anger"]
    assert text_scores([])["vader_compound"] is None


def test_manipulation_check_uses_early_turns_a_minimum_and_the_task_gate() -> None:
    convs, i = [], 0
    for t in range(24):
        # Some baseline customers are a little worried and annoyed already: the tasks differ, so every check has spread
        # (with identical texts everywhere a check has zero spread and gives no verdict, see test_inference).
        control = "I need to update my order, please." + (" I'm worried, this is ridiculous." if t % 3 == 0 else "")
        for trial in range(2):
            convs.append(_conv(i := i + 1, f"t{t}", "control", trial, 1.0, user=control))
            convs.append(
                _conv(
                    i := i + 1,
                    f"t{t}",
                    "anger",
                    trial,
                    1.0,
                    user="This is unacceptable! I demand a manager right now. I need to update my order."
                    + (" It is for my daughter's birthday on Friday." if t % 2 else ""),
                )
            )
            convs.append(_conv(i := i + 1, f"t{t}", "anxiety", trial, 1.0, user="I need to update my order, please."))
            # emotional words only after the agent acted: a reaction to the outcome, not the emotion
            convs.append(
                _conv(
                    i := i + 1,
                    f"t{t}",
                    "frustration",
                    trial,
                    0.0,
                    user="I need to update my order, please.",
                    later="Still not done? Again? This is ridiculous. ###STOP###",
                )
            )
    out = manipulation_check(convs, "control", ["control", "anger", "anxiety", "frustration"], ["mock"])
    checks = {c["variant"]: c for c in out["checks"]}
    assert out["primary"]["score"] == "markers_own" and out["primary"]["turns"] == "early"
    assert checks["anger"]["status"] == "passed" and checks["anger"]["lower_bound"] > checks["anger"]["min_effect"]
    assert checks["anxiety"]["status"] == "failed"
    f = checks["frustration"]
    assert f["status"] == "failed" and f["shift"] <= 0  # the late words do not count
    late = next(s for s in f["secondary"] if s["score"] == "markers_own" and s["turns"] == "all")
    assert late["diff"] > 5  # ... although over all turns the markers rose
    assert all(c["family_size"] == 3 for c in out["checks"])  # Bonferroni over the checked variants
    few = manipulation_check(
        [c for c in convs if c.task_id in {f"t{k}" for k in range(10)}], "control", ["control", "anger"], ["mock"]
    )
    assert few["checks"][0]["status"] == "too_few" and few["checks"][0]["n_tasks"] == 10 < MIN_TASKS


def test_manipulation_minimum_effect_stops_a_tiny_shift() -> None:
    """One marker word in ~300: 'significant' on 24 tasks but below the minimum effect of 1 per 100 words."""
    filler = " ".join(["please update the order for me"] * 50)
    convs, i = [], 0
    for t in range(24):
        text = filler + " please" * t  # task lengths differ, so the shift per 100 words differs: the check has spread
        for trial in range(2):
            convs.append(_conv(i := i + 1, f"t{t}", "control", trial, 1.0, user=text))
            convs.append(_conv(i := i + 1, f"t{t}", "anger", trial, 1.0, user=text + " terrible"))
    c = manipulation_check(convs, "control", ["control", "anger"], ["mock"])["checks"][0]
    assert 0 < c["shift"] < 1 and c["status"] == "failed"


def test_dose_of_specs_and_families() -> None:
    assert dose_of("frustration:mild") == dose_of("frustration:mild")
    d = _dose("frustration@steer:severe")
    assert (d.emotion, d.method, d.level_name, d.level) == ("frustration", "steer", "severe", 3)
    assert (_dose("frustration").method, _dose("frustration").level) == ("prompt", 2)
    assert dose_of("anger+confusion") is None and dose_of("anger:extreme") is None
    assert families_spec("frustration@both:severe+anger") == "frustration:severe+anger"
    assert families_of(families_spec("frustration@steer:mild")) == ["frustration"]


def test_dose_response_table_groups_by_emotion_and_method() -> None:
    convs, i = [], 0
    variants = ["control", "frustration:mild", "frustration", "frustration:severe", "frustration@steer:mild", "anger"]
    words = {0: "", 1: "Ugh. ", 2: "Ugh, this is ridiculous. ", 3: "Ugh, this is ridiculous, I am fed up. "}
    for t in range(24):
        for trial in range(2):
            for v in variants:
                lv = 0 if v == "control" else (_dose(v).level if v.startswith("frustration") and "@" not in v else 0)
                rwd = 1.0 if (t + trial) % 4 >= (lv if lv < 3 else 3) else 0.0
                convs.append(_conv(i := i + 1, f"t{t}", v, trial, rwd, user=words[lv] + "Please update my order."))
    rows = dose_response_table(convs, "control", variants)
    assert {(r["emotion"], r["method"], r["outcome"]) for r in rows} == {
        ("frustration", "prompt", "reward"),
        ("frustration", "prompt", "markers_own"),
    }
    reward = next(r for r in rows if r["outcome"] == "reward")
    assert [lv["level"] for lv in reward["levels"]] == [0, 1, 2, 3]
    lv_list: list[int] = []
    vals: list[float] = []
    cl: list[tuple[str, str]] = []
    for c in convs:  # the trend is among the emotional levels: the baseline is not level 0 of the slope
        d = _dose(c.variant).level if c.variant in variants[1:4] else None
        if d is not None:
            lv_list.append(d)
            vals.append(_reward(c))
            cl.append(c.task_key)
    ref = dose_response(lv_list, vals, cl)
    assert reward["slope"] == pytest.approx(ref.slope) and reward["ci"] == pytest.approx([ref.ci_low, ref.ci_high])
    assert reward["slope"] < 0 and reward["claim"] == "lower" and reward["family_size"] == 1
    assert reward["levels"][0]["mean"] == pytest.approx(np.mean([c.reward for c in convs if c.variant == "control"]))
    score = next(r for r in rows if r["outcome"] == "markers_own")
    assert "claim" not in score and score["descriptive"]  # the manipulation score's trend is context, not a claim
    assert score["slope"] > 0 and [lv["mean"] > 0 for lv in score["levels"]] == [False, True, True, True]
    sev = reward["levels"][3]
    assert sev["n_pairs"] == 48 and sev["diff"] == pytest.approx(sev["mean"] - reward["levels"][0]["mean"])


def _steered(c: ConversationRecord, scale: float, sha: str = "ab" * 32) -> ConversationRecord:
    return c.model_copy(
        update={"steering": Steering(emotion="frustration", vector_sha256=sha, scale=scale, layers=(4, 12), method="mean")}
    )


def test_steered_groups_carry_their_scales_and_mixed_doses_are_not_hidden() -> None:
    """A steered level is a calibrated scale: dose rows name it; a variant steered with two scales has none."""
    convs, i = [], 0
    variants = ["control", "frustration@steer:mild", "frustration@steer:severe", "frustration:mild"]
    for t in range(4):
        for v in variants:
            c = _conv(i := i + 1, f"t{t}", v, 0, 1.0, user=("Ugh. " if v != "control" else "") + "Please update my order.")
            if v == "frustration@steer:mild":
                c = _steered(c, 0.5)
            elif v == "frustration@steer:severe":
                c = _steered(c, 1.5 if t < 2 else 2.0)  # two doses under one name (e.g. merged runs)
            convs.append(c)
    st = steering_by_variant(convs)
    assert set(st) == {"frustration@steer:mild", "frustration@steer:severe"}
    mild, severe = st["frustration@steer:mild"], st["frustration@steer:severe"]
    assert (mild["scale"], mild["vector_short"], mild["layers"], mild["vector_method"], mild["consistent"]) == (
        0.5,
        "ab" * 6,
        [4, 12],
        "mean",
        True,
    )
    assert not severe["consistent"] and severe["scale"] is None and severe["vector_sha256"] == "ab" * 32  # one vector, two scales
    assert sorted((d["scale"], d["n_records"]) for d in severe["distinct"]) == [(1.5, 2), (2.0, 2)]
    rows = dose_response_table(convs, "control", variants)
    steer = next(r for r in rows if r["method"] == "steer" and r["outcome"] == "reward")
    assert steer["scales"] == {"mild": 0.5, "severe": None} and steer["vector_sha256"] == "ab" * 32
    assert [lv["scale"] for lv in steer["levels"]] == [0.0, 0.5, None]
    assert not any(r["method"] == "prompt" for r in rows)  # one prompted level: no dose group
    # the comparison reads the numbers it is given and adds none: one entry, rows by level then method
    (entry,) = methods_comparison(convs, "control", variants, effects=[], checks=[], fidelity={"variants": {}, "warnings": []})
    assert [(r["level_name"], r["method"]) for r in entry["rows"]] == [("mild", "prompt"), ("mild", "steer"), ("severe", "steer")]
    assert entry["matched_levels"] == ["mild"] and all(r["reward"] is None and r["manipulation"] is None for r in entry["rows"])
    assert methods_comparison(convs, "control", ["control", "frustration:mild"], effects=[], checks=[], fidelity={}) == []


def test_planning_helpers() -> None:
    assert family_size(["control", "a", "b"]) == 2 and family_size(3, 2) == 9 and family_size(0) == 1
    d = planned_design(40, 3, ["control", "frustration"], 1)
    assert (d.tasks, d.trials, d.family_size, d.baseline_success, d.icc, d.pair_corr, d.effect_sd) == (
        40,
        3,
        1,
        0.5,
        0.5,
        0.0,
        0.05,
    )
    assert planned_mde(40, 3, 1) == pytest.approx(mde(Design(40, 3, 1, baseline_success=0.5, icc=0.5, effect_sd=0.05)))
    mde_8, mde_1, mde_80 = planned_mde(40, 3, 8), planned_mde(40, 3, 1), planned_mde(80, 3, 1)
    mde_icc = planned_mde(40, 3, 1, icc=0.8)
    assert mde_8 is not None and mde_1 is not None and mde_80 is not None and mde_icc is not None
    assert mde_8 > mde_1 > mde_80
    assert planned_mde(10, 3, 1) is None  # below MIN_TASKS: no claim possible
    assert mde_icc < mde_1


def test_parse_judge_reply() -> None:
    assert parse_judge('Sure! {"frustration": 7, "anger": 12, "anxiety": "x"}') == {"frustration": 7.0, "anger": 10.0}
    assert parse_judge("no json here") is None
    assert parse_judge(json.dumps({"other": 3})) is None
    assert parse_judge(None) is None
