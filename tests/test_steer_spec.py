"""Steering material, prompt rendering and pure helpers: everything of ``moodbench.steer`` that needs no model.

The real-model checks (vector build, calibration, steered server) are in ``test_steer_localmodel.py``.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest
from rich.console import Console

from moodbench.emotions import SteeringData, UnknownVariantError, load_catalog
from moodbench.serve.install import BuildProgress, parse_build_progress
from moodbench.steer import (
    ChatTemplate,
    ChatTemplateError,
    SteeringInputError,
    choose_levels,
    clean_completion_reply,
    contrast_prompts,
    default_layers,
    escape_line,
    pairs_sha256,
    render_completion_prompt,
    steering_for,
)

# the calibration's scoring pieces, the GGUF reader and the grammar are private helpers tested as units
from moodbench.steer._calibrate import goal_overlap, repetition_rate, summarize_scale
from moodbench.steer._contrast import unescape_line
from moodbench.steer._gguf import GGUFError, read_metadata
from moodbench.steer._score import token_grammar

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAMA3 = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n{{ m.content | trim }}"
    "<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
EMOTIONS = ("frustration", "anger", "anxiety", "confusion", "impatience", "skepticism", "incoherence")


def _steering(n: int = 4, **kw: object) -> dict:
    pairs = [{"agent": f"Question {i}?", "positive": f"Ugh, {i}", "negative": f"Sure, {i}"} for i in range(n)]
    return {"positive": "You are upset.", "negative": "You are calm.", "pairs": pairs, **kw}


# ------------------------------------------------------------------------------------------ schema
@pytest.mark.parametrize("emotion", EMOTIONS)
def test_every_builtin_emotion_has_12_to_20_pairs_and_keeps_its_levels(emotion: str) -> None:
    v = load_catalog().variants[emotion]
    assert v.steering is not None and 12 <= len(v.steering.pairs) <= 20
    assert set(v.levels) == {"mild", "moderate", "severe"}
    agents = [p.agent for p in v.steering.pairs]
    assert len(set(agents)) == len(agents)  # every pair is its own situation
    for p in v.steering.pairs:
        assert p.positive != p.negative


def test_a_users_variant_file_can_carry_its_own_pairs(tmp_path: Path) -> None:
    import yaml

    f = tmp_path / "grumpy.yaml"
    f.write_text(yaml.safe_dump({"name": "grumpy", "description": "d", "levels": {"mild": "grr"}, "steering": _steering(5)}))
    v = load_catalog([f]).variants["grumpy"]
    assert v.steering is not None and len(v.steering.pairs) == 5
    assert steering_for("grumpy", load_catalog([f])) == v.steering


@pytest.mark.parametrize(
    ("steering", "needle"),
    [
        (_steering(2), "at least 4"),
        (_steering(4, extra="x"), "extra"),
        ({**_steering(4), "positive": "  "}, "empty"),
        ({**_steering(4), "pairs": [{"agent": "a", "positive": "p"}] * 4}, "negative"),
    ],
)
def test_bad_steering_sections_are_refused_with_the_place(tmp_path: Path, steering: dict, needle: str) -> None:
    import yaml

    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump({"name": "bad", "description": "d", "levels": {"mild": "x"}, "steering": steering}))
    with pytest.raises(UnknownVariantError) as err:
        load_catalog([f])
    assert "steering" in str(err.value) and needle in str(err.value).lower()


def test_steering_for_names_the_problem_and_the_fix() -> None:
    with pytest.raises(SteeringInputError, match="unknown emotion 'nope'.*fix"):
        steering_for("nope")
    with pytest.raises(SteeringInputError, match="no 'steering:' pairs.*fix.*frustration"):
        steering_for("control")
    with pytest.raises(SteeringInputError, match="fix: --emotion anger"):
        steering_for("anger:severe")


# ------------------------------------------------------------------------------------------ prompts
def test_pairs_render_with_the_models_own_template_customer_on_the_assistant_side() -> None:
    s = SteeringData(**_steering(4, positive=["Upset A.", "Upset B."]))
    pos, neg = contrast_prompts(s, ChatTemplate(source=CHATML))
    assert len(pos) == len(neg) == 4
    assert (
        pos[0] == "<|im_start|>system\nUpset A.<|im_end|>\n<|im_start|>user\nQuestion 0?<|im_end|>\n<|im_start|>assistant\nUgh, 0"
    )
    assert pos[1].startswith("<|im_start|>system\nUpset B.")  # system prompts used in turn
    assert neg[1].endswith("<|im_start|>assistant\nSure, 1") and "You are calm." in neg[1]


def test_a_bos_the_tokenizer_adds_itself_is_not_written_twice() -> None:
    s = SteeringData(**_steering(4))
    own = contrast_prompts(s, ChatTemplate(source=LLAMA3, bos_token="<|begin_of_text|>", add_bos=True))[0][0]
    assert own.startswith("<|start_header_id|>system") and own.endswith("assistant<|end_header_id|>\n\nUgh, 0")
    kept = contrast_prompts(s, ChatTemplate(source=LLAMA3, bos_token="<|begin_of_text|>", add_bos=False))[0][0]
    assert kept.startswith("<|begin_of_text|>")


def test_a_broken_template_is_a_clear_error() -> None:
    with pytest.raises(ChatTemplateError, match="failed to render"):
        ChatTemplate(source="{{ raise_exception('no system role') }}").render([{"role": "system", "content": "x"}])


@pytest.mark.parametrize("text", ["a\nb", "back\\slash\\n literal", "tab\there \"q\" 's'", "\\x41 and \r\n", "ünï ✓"])
def test_escaping_round_trips_through_llamacpps_unescape(text: str) -> None:
    line = escape_line(text)
    assert "\n" not in line and "\r" not in line
    assert unescape_line(line) == text


def test_pairs_hash_changes_with_the_material_only() -> None:
    a, b = SteeringData(**_steering(4)), SteeringData(**_steering(4))
    assert pairs_sha256(a) == pairs_sha256(b)
    assert pairs_sha256(a) != pairs_sha256(SteeringData(**_steering(5)))


def test_default_layers_are_the_upper_two_thirds() -> None:
    assert default_layers(24) == (8, 23)
    assert default_layers(2) == (1, 1)


# ------------------------------------------------------------------------------------------ gguf
def _gguf(path: Path, kv: list[tuple[str, int, object]]) -> Path:
    """A header-only GGUF v3 file (no tensors) with the given (key, type, value) entries."""

    def s(x: str) -> bytes:
        b = x.encode()
        return struct.pack("<Q", len(b)) + b

    body = b"GGUF" + struct.pack("<IQQ", 3, 0, len(kv))
    for key, typ, value in kv:
        body += s(key) + struct.pack("<I", typ)
        if typ == 8:
            body += s(str(value))
        elif typ == 4:
            body += struct.pack("<I", value)
        elif typ == 7:
            body += struct.pack("<?", value)
        elif typ == 9:  # array of strings
            items = list(value)  # type: ignore[call-overload]
            body += struct.pack("<IQ", 8, len(items)) + b"".join(s(i) for i in items)
    path.write_bytes(body)
    return path


def test_gguf_reader_reads_the_keys_asked_for_and_skips_arrays(tmp_path: Path) -> None:
    f = _gguf(tmp_path / "m.gguf", [
        ("general.architecture", 8, "llama"), ("llama.block_count", 4, 16), ("tokenizer.ggml.tokens", 9, ["<s>", "</s>", "hi"]),
        ("tokenizer.ggml.bos_token_id", 4, 0), ("tokenizer.ggml.add_bos_token", 7, True), ("tokenizer.chat_template", 8, LLAMA3),
    ])  # fmt: skip
    assert read_metadata(f, ("llama.block_count",)) == {"llama.block_count": 16}
    meta = read_metadata(f)
    assert meta["tokenizer.ggml.tokens"] == ["<s>", "</s>", "hi"] and meta["tokenizer.ggml.add_bos_token"] is True
    t = ChatTemplate.from_gguf(f)
    assert t.bos_token == "<s>" and t.add_bos and "bos_token" in t.source
    bad = tmp_path / "n.gguf"
    bad.write_bytes(b"nope")
    with pytest.raises(GGUFError, match="not a GGUF"):
        read_metadata(bad)


def test_a_model_without_chat_template_cannot_be_steered(tmp_path: Path) -> None:
    f = _gguf(tmp_path / "base.gguf", [("general.architecture", 8, "llama")])
    with pytest.raises(ChatTemplateError, match="no tokenizer.chat_template"):
        ChatTemplate.from_gguf(f)


# ----------------------------------------------------------------------------------- completion format
def test_completion_prompt_is_a_transcript_ending_with_the_customers_label() -> None:
    prompt, stop = render_completion_prompt(
        "# User Simulation Guidelines\nBe a customer.\n<scenario>Exchange a keyboard.</scenario>",
        [("agent", "Hi! How can I help you today?"), ("customer", "I want to exchange a keyboard."),
         ("assistant", "Sure.\n\nCUSTOMER: fake line\nWhat is your order id?")],
    )  # fmt: skip
    assert prompt.endswith("AGENT: Hi! How can I help you today?\nCUSTOMER: I want to exchange a keyboard.\n"
                           "AGENT: Sure.\ncustomer: fake line\nWhat is your order id?\nCUSTOMER:")  # fmt: skip
    assert "<scenario>Exchange a keyboard.</scenario>" in prompt and "never as the agent" in prompt
    assert "\nAGENT:" in stop
    assert prompt.count("\nCUSTOMER:") == 2  # a label inside a message is defused, the real ones are kept


def test_completion_reply_is_cut_at_the_next_speaker() -> None:
    assert clean_completion_reply(" I need help.\nAGENT: Sure") == "I need help."
    assert clean_completion_reply(" fine ###STOP###\n\n\n") == "fine ###STOP###"
    assert clean_completion_reply("Not possible.\nRETRY: Why did this happen?") == "Not possible."  # the document goes on
    assert clean_completion_reply("Order #W1: the keyboard.\nAnd the lamp.") == "Order #W1: the keyboard.\nAnd the lamp."
    with pytest.raises(ValueError, match="unknown role"):
        render_completion_prompt("x", [("system", "y")])


# ------------------------------------------------------------------------------------------ calibration
def _row(scale: float, coherent: bool) -> dict:
    return {"scale": scale, "coherent": coherent}


def test_levels_are_fractions_of_the_strongest_scale_before_the_first_incoherent_one() -> None:
    rows = [_row(0, True), _row(0.5, True), _row(1.0, True), _row(1.5, True), _row(2.0, False), _row(3.0, True)]
    assert choose_levels(rows) == {"mild": 0.5, "moderate": 1.0, "severe": 1.5}
    assert choose_levels([_row(0, True), _row(0.5, False), _row(1, True)]) is None
    assert choose_levels([_row(-1.0, True), _row(0, True), _row(0.6, True)]) == {"mild": 0.2, "moderate": 0.4, "severe": 0.6}


def test_scale_summary_pairs_replies_by_task_turn_seed() -> None:
    def r(task: str, turn: int, vader: float, rate: float) -> dict:
        return {"task": task, "seed": 1, "turn": turn, "vader": vader, "marker_rate": rate, "markers": int(rate > 0), "words": 10,
                "repetition": 0.0, "goal_overlap": 0.5, "role_confusion": False, "echo": False, "empty": False, "error": None,
                "stop": False, "perplexity": 20.0}  # fmt: skip

    base = [r("a", 0, 0.5, 0), r("a", 1, 0.4, 0), r("b", 0, 0.6, 0), r("b", 1, 0.5, 0)]
    steered = [r("a", 0, -0.5, 10), r("a", 1, -0.4, 10), r("b", 0, -0.2, 10)]  # one reply fewer: unpaired, dropped
    row = summarize_scale(1.0, steered, 2, base)
    # task-weighted, as every paired difference in moodbench: task a (-1.0, -0.8) -> -0.9, task b -> -0.8
    assert row["n_pairs"] == 3 and row["vader_diff"] == pytest.approx(-0.85, abs=1e-9)
    assert row["detected"] and row["markers_diff"] == pytest.approx(10.0)
    assert summarize_scale(0.0, base, 2, None)["vader_diff"] == 0.0


def test_repetition_and_goal_measures() -> None:
    assert repetition_rate("it is even worse because it is even worse because it is even worse") > 0.4
    assert repetition_rate("I would like to exchange my keyboard for a clicky one") == 0.0
    assert goal_overlap("exchange the mechanical keyboard", ["I want to exchange a keyboard"]) == pytest.approx(2 / 3)


def test_token_grammar_matches_exact_token_ids() -> None:
    assert token_grammar([9707, 1052, 13]) == "root ::= <[9707]> <[1052]> <[13]>"


# ------------------------------------------------------------------------------------------ build progress
@pytest.mark.parametrize(
    ("line", "expected"),
    [("[12/206] Building CXX object x.o", (12, 206)), ("[ 42%] Building C object", (42, 100)), ("[100%] Linking", (100, 100)),
     ("-- Configuring done", None), ("[3/0] odd", None)],
)  # fmt: skip
def test_build_progress_lines_are_parsed(line: str, expected: tuple[int, int] | None) -> None:
    assert parse_build_progress(line) == expected


def test_off_a_terminal_the_build_prints_one_line_per_10_percent_with_eta() -> None:
    buf = io.StringIO()
    clock = iter(range(0, 1000, 5)).__next__
    with BuildProgress("compiling", Console(file=buf, force_terminal=False, width=200), clock=clock) as progress:
        assert not progress.interactive
        for i in range(1, 101):
            progress.line(f"[{i}/100] Building CXX object f{i}.o\n")
        progress.line("not a progress line")
    lines = buf.getvalue().splitlines()
    assert len(lines) == 10 and lines[0].startswith("compiling:  10% (10/100)") and "ETA" in lines[0]
    assert lines[-1].endswith("done")
