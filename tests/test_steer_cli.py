"""``moodbench steer``: bad input exits 2 with the problem and the fix; the build pipeline end to end.

No model here: a header-only GGUF (chat template + layer count) stands in for the model, and a small
script stands in for the external ``llama-cvector-generator`` binary (it checks the prompt files the
way llama.cpp reads them and writes an output file), so the pipeline around it (prompt rendering,
escaping, cache key, sidecar, idempotence, ``--json``) runs for real in milliseconds.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from moodbench.cli import app

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

FAKE_GENERATOR = """#!{python}
import sys, pathlib
args = sys.argv[1:]
get = lambda flag: args[args.index(flag) + 1]
pos = pathlib.Path(get("--positive-file")).read_text().splitlines()
neg = pathlib.Path(get("--negative-file")).read_text().splitlines()
assert len(pos) == len(neg) > 0, "prompt files differ in length"
assert all("\\\\n" in line for line in pos + neg), "newlines must be escaped"
out = pathlib.Path(get("-o"))
(pathlib.Path(sys.argv[0]).parent / "seen-positive.txt").write_text("\\n".join(pos))
out.write_bytes(b"GGUF" + get("--method").encode())
print("Evaluating prompt[1/%d]" % len(pos))
"""


def _fake_model(path: Path) -> Path:
    def s(x: str) -> bytes:
        b = x.encode()
        return struct.pack("<Q", len(b)) + b

    kv = [("general.architecture", 8, "qwen2"), ("qwen2.block_count", 4, 24), ("tokenizer.chat_template", 8, CHATML)]
    body = b"GGUF" + struct.pack("<IQQ", 3, 0, len(kv))
    for key, typ, value in kv:
        body += s(key) + struct.pack("<I", typ) + (s(str(value)) if typ == 8 else struct.pack("<I", value))
    path.write_bytes(body)
    return path


@pytest.fixture()
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("MOODBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "cache"


@pytest.fixture()
def generator(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    g = tmp_path / "llama-cvector-generator"
    g.write_text(FAKE_GENERATOR.format(python=sys.executable))
    g.chmod(0o755)
    monkeypatch.setenv("MOODBENCH_CVECTOR_GENERATOR", str(g))
    return g


def _run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(app, ["steer", *args])
    return r.exit_code, r.stdout, r.stderr


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["build", "--emotion", "nope"], ["unknown emotion 'nope'", "fix"]),
        (["build", "--emotion", "control"], ["no 'steering:' pairs", "fix"]),
        (["build", "--emotion", "frustration", "--model", "no-such-model"], ["unknown model 'no-such-model'", "fix"]),
        (["build", "--emotion", "frustration", "--model", "/nope/m.gguf"], ["model file not found", "fix"]),
        (["build", "--emotion", "frustration", "--layers", "8"], ["not A-B", "fix"]),
        (["build", "--emotion", "frustration", "--method", "svd"], ["unknown method 'svd'", "fix"]),
        (["calibrate", "--emotion", "frustration", "--scales", "x"], ["--scales", "fix"]),
        (["calibrate", "--emotion", "frustration", "--format", "chat"], ["unknown customer format", "fix"]),
        (["calibrate", "--emotion", "frustration", "--tasks", "retail"], ["DOMAIN:TASK_ID", "fix"]),
    ],
)
def test_bad_input_exits_2_naming_problem_and_fix(cache: Path, args: list[str], needles: list[str]) -> None:
    code, out, err = _run(*args)
    assert code == 2, (out, err)
    for n in needles:
        assert n in err
    assert "Traceback" not in err + out


def test_missing_generator_binary_exits_2_with_the_install_command(cache: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("MOODBENCH_CVECTOR_GENERATOR", str(tmp_path / "none"))
    code, _, err = _run("build", "--emotion", "frustration", "--model", str(_fake_model(tmp_path / "m.gguf")))
    assert code == 2 and "llama-cvector-generator" in err and "install-local-backend.sh" in err


def test_a_variants_file_without_pairs_cannot_be_steered(cache: Path, tmp_path: Path) -> None:
    f = tmp_path / "grumpy.yaml"
    f.write_text("name: grumpy\ndescription: d\nlevels:\n  mild: grr\n")
    code, _, err = _run("build", "--emotion", "grumpy", "--variants-file", str(f))
    assert code == 2 and "'grumpy'" in err and "steering" in err


def test_build_writes_escaped_prompts_a_sidecar_and_is_idempotent(cache: Path, generator: Path, tmp_path: Path) -> None:
    model = _fake_model(tmp_path / "tiny.gguf")
    code, out, err = _run("build", "--emotion", "anger", "--model", str(model), "--layers", "10-20", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["emotion"] == "anger" and res["method"] == "mean" and res["layers"] == [10, 20] and not res["cached"]
    vec = Path(res["vector"])
    assert vec.parent == cache / "vectors" and vec.read_bytes() == b"GGUFmean"
    side = json.loads(vec.with_suffix(".json").read_text())
    assert side["sha256"] == res["sha256"] and side["model"] == "tiny" and len(side["pairs_sha256"]) == 64
    first = (tmp_path / "seen-positive.txt").read_text().splitlines()[0]
    assert first.startswith("<|im_start|>system\\nYou are a customer") and first.endswith(
        "<|im_start|>assistant\\nThis is unacceptable. I demand that someone fixes"
    )
    code, out, _ = _run("build", "--emotion", "anger", "--model", str(model), "--layers", "10-20", "--json")
    assert code == 0 and json.loads(out)["cached"] and json.loads(out)["vector"] == res["vector"]
    code, out, _ = _run("build", "--emotion", "anger", "--model", str(model), "--method", "pca", "--json")
    assert code == 0 and json.loads(out)["vector"] != res["vector"] and json.loads(out)["layers"] == [8, 23]
