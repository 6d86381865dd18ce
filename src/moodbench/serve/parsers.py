"""Which vLLM tool-call parser (and reasoning parser) a model family needs.

vLLM only turns a model's raw text into OpenAI ``tool_calls`` when it is started with
``--enable-auto-tool-choice --tool-call-parser NAME``; a wrong or missing parser makes every
tau2 tool call arrive as plain text and the agent fail every task, which would look like a
(very) bad model rather than a bad setup. ``moodbench serve --backend vllm`` therefore picks
the parser from the Hugging Face id with the table below and refuses to guess for families
it does not know (pass ``--tool-call-parser`` then).

Rules are tried in order and the first whose regex is found (case-insensitively, anywhere
in the id or local path) wins, so the more specific rules come first (Qwen3-Coder before
Qwen3, DeepSeek-R1-Distill before DeepSeek-R1, Hermes before Llama, ...).

The parser names were checked against the registries of vLLM 0.33.0 (the wheel's
``vllm/tool_parsers/__init__.py`` ``_TOOL_PARSERS_TO_REGISTER`` and
``vllm/reasoning/__init__.py`` ``_REASONING_PARSERS_TO_REGISTER``) and the model notes
against vLLM's ``docs/features/tool_calling.md`` and ``docs/features/reasoning_outputs.md``.
``render_doc()`` produces ``docs/vllm-parsers.md`` from this same table (a test keeps the
two in sync).

| Family | Tool parser | Reasoning parser |
| --- | --- | --- |
| xLAM | xlam | |
| Hermes (NousResearch) | hermes | |
| Qwen3-Coder | qwen3_coder | |
| Qwen3.5 and later | qwen3_coder | qwen3 |
| Qwen3 Instruct (non-thinking) | hermes | |
| Qwen3 | hermes | qwen3 |
| QwQ | hermes | deepseek_r1 |
| Qwen2.5 / Qwen2 | hermes | |
| DeepSeek-R1-Distill | (none) | deepseek_r1 |
| DeepSeek-V4 | deepseek_v4 | deepseek_v4 |
| DeepSeek-V3.2 | deepseek_v32 | deepseek_v3 |
| DeepSeek-V3.1 | deepseek_v31 | deepseek_v3 |
| DeepSeek-R1 | deepseek_v3 | deepseek_r1 |
| DeepSeek-V3 | deepseek_v3 | |
| Llama 4 | llama4_pythonic | |
| Llama 3.1 / 3.2 / 3.3 | llama3_json | |
| Magistral | mistral | mistral |
| Mistral / Mixtral / Ministral / Devstral | mistral | |
| FunctionGemma | functiongemma | |
| Gemma 4 | gemma4 | gemma4 |
| Gemma 3 | pythonic | |
| GLM-4.7 | glm47 | glm47 |
| GLM-4.5 / 4.6 | glm45 | glm45 |
| gpt-oss | openai | openai_gptoss |
| Granite 20B function calling | granite-20b-fc | |
| Granite 4 | granite4 | |
| Granite 3.x | granite | |
| InternLM 2 / 2.5 | internlm | |
| Kimi K2 Thinking | kimi_k2 | kimi_k2 |
| Kimi K2 | kimi_k2 | |
| MiniMax-M2 | minimax_m2 | minimax_m2_append_think |
| Phi-4-mini | phi4_mini_json | |
| Hunyuan-A13B | hunyuan_a13b | hunyuan_a13b |
| Jamba 1.5 | jamba | |
| OLMo 3 Think | olmo3 | olmo3 |
| OLMo 3 | olmo3 | |
| Seed-OSS | seed_oss | seed_oss |
| ERNIE 4.5 | ernie45 | ernie45 |
| LongCat-Flash | longcat | |
"""

from __future__ import annotations

import re
from dataclasses import dataclass

VLLM_VERSION_CHECKED = "0.33.0"
"""The vLLM release whose parser registries the names below were checked against."""

DOC_PATH = "docs/vllm-parsers.md"

# Every name registered in vLLM 0.33.0's _TOOL_PARSERS_TO_REGISTER / _REASONING_PARSERS_TO_REGISTER.
# Used to check the table (tests) and to warn about a typo in --tool-call-parser /
# --reasoning-parser (only a warning: plugins and newer releases add names).
VLLM_TOOL_PARSERS = frozenset(
    """
apertus beam cohere_command3 cohere_command4 deepseek_v3 deepseek_v31 deepseek_v32 deepseek_v4
deepseek_v41 dots ernie45 functiongemma gemma4 gigachat3 glm45 glm47 granite granite-20b-fc
granite4 hermes hf hunyuan_a13b hy_v3 hy_v4 inkling internlm jamba k2_horizon kimi_k2 kimi_k3
lfm2 ling3 llama3_json llama4_json llama4_pythonic longcat mimo minicpm5 minimax_m2 minimax_m3
mistral muse muse_glimmer musespark1x olmo3 openai phi4_mini_json plamo3 poolside_v1 pythonic
qwen3_coder qwen3_json qwen3_xml seed_oss step3 step3p5 step5 xlam
""".split()
)
VLLM_REASONING_PARSERS = frozenset(
    """
beam cohere_command3 cohere_command4 deepseek_r1 deepseek_v3 deepseek_v4 deepseek_v41 ernie45
gemma4 glm45 glm47 granite granite_thinking_parser hf holo2 hunyuan_a13b hy_v3 hy_v4 inkling
k2_horizon kimi_k2 kimi_k3 ling3 mimo minicpmv minimax_m2 minimax_m2_append_think minimax_m3
mistral muse muse_glimmer musespark1x nemotron_v3 olmo3 openai_gptoss plamo3 poolside_v1 qwen3
seed_oss step3 step3p5 step5
""".split()
)


@dataclass(frozen=True)
class ParserRule:
    family: str
    pattern: str  # regex, searched case-insensitively in the model id / path
    tool_parser: str | None  # None: known family without a verified tool-call format
    reasoning_parser: str | None = None
    notes: str = ""
    examples: tuple[str, ...] = ()

    def matches(self, model: str) -> bool:
        return re.search(self.pattern, model, re.IGNORECASE) is not None


# Separators in HF ids vary ("Llama-3.1", "llama3.1", "Llama_3.1"): `[-_ ]?` below.
PARSER_RULES: tuple[ParserRule, ...] = (
    ParserRule(
        "xLAM",
        r"xlam",
        "xlam",
        notes="Salesforce xLAM: vLLM docs pair it with examples/tool_chat_template_xlam_llama.jinja "
        "(Llama-based) or ..._xlam_qwen.jinja (Qwen-based); pass it with `-- --chat-template FILE`.",
        examples=("Salesforce/Llama-xLAM-2-8b-fc-r",),
    ),
    ParserRule(
        "Hermes (NousResearch)",
        r"hermes",
        "hermes",
        notes="Hermes 2 Pro and later; Hermes 2 Theta has degraded tool calling (vLLM docs).",
        examples=("NousResearch/Hermes-3-Llama-3.1-8B",),
    ),
    ParserRule(
        "Qwen3-Coder",
        r"qwen3[-_ ]?coder",
        "qwen3_coder",
        notes="XML tool calls; vLLM docs name this `qwen3_xml`, an alias of the same parser "
        "class as `qwen3_coder` in 0.33.0 (older releases had two implementations).",
        examples=("Qwen/Qwen3-Coder-30B-A3B-Instruct",),
    ),
    ParserRule(
        "Qwen3.5 and later",
        r"qwen3\.[5-9]",
        "qwen3_coder",
        "qwen3",
        notes="Qwen3.5+ emit the Qwen3-Coder XML tool format; flags from community serving "
        "commands, not from vLLM's tool-calling docs table.",
        examples=("Qwen/Qwen3.5-27B",),
    ),
    ParserRule(
        "Qwen3 Instruct (non-thinking)",
        r"qwen3.*instruct",
        "hermes",
        notes="Qwen3-*-Instruct-2507, Qwen3-VL-*-Instruct, Qwen3-Next-*-Instruct never think, so no reasoning parser.",
        examples=("Qwen/Qwen3-30B-A3B-Instruct-2507",),
    ),
    ParserRule(
        "Qwen3",
        r"qwen3",
        "hermes",
        "qwen3",
        notes="Hybrid thinking models think by default; to turn it off add "
        "`-- --default-chat-template-kwargs '{\"enable_thinking\": false}'`.",
        examples=("Qwen/Qwen3-8B", "Qwen/Qwen3-30B-A3B-Thinking-2507"),
    ),
    ParserRule(
        "QwQ",
        r"qwq",
        "hermes",
        "deepseek_r1",
        notes="Reasoning parser per vLLM's reasoning-outputs table.",
        examples=("Qwen/QwQ-32B",),
    ),
    ParserRule(
        "Qwen2.5 / Qwen2",
        r"qwen2",
        "hermes",
        notes="Hermes-style tool template is in the tokenizer config. Qwen2.5-Coder often answers "
        "with ```json blocks instead of <tool_call>, which no parser picks up.",
        examples=("Qwen/Qwen2.5-7B-Instruct",),
    ),
    ParserRule(
        "DeepSeek-R1-Distill",
        r"deepseek[-_ ]?r1[-_ ]?distill",
        None,
        "deepseek_r1",
        notes="Distills of Qwen/Llama with R1's template; no verified vLLM tool-call format, pass --tool-call-parser yourself.",
        examples=("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",),
    ),
    ParserRule(
        "DeepSeek-V4",
        r"deepseek[-_ ]?v4",
        "deepseek_v4",
        "deepseek_v4",
        examples=("deepseek-ai/DeepSeek-V4",),
    ),
    ParserRule(
        "DeepSeek-V3.2",
        r"deepseek[-_ ]?v3\.?2",
        "deepseek_v32",
        "deepseek_v3",
        notes="Thinking is off by default (chat_template_kwargs thinking=true turns it on).",
        examples=("deepseek-ai/DeepSeek-V3.2",),
    ),
    ParserRule(
        "DeepSeek-V3.1",
        r"deepseek[-_ ]?v3\.?1",
        "deepseek_v31",
        "deepseek_v3",
        notes="vLLM docs pair it with examples/tool_chat_template_deepseekv31.jinja; tool "
        "calling works in non-thinking mode (the default).",
        examples=("deepseek-ai/DeepSeek-V3.1",),
    ),
    ParserRule(
        "DeepSeek-R1",
        r"deepseek[-_ ]?r1",
        "deepseek_v3",
        "deepseek_r1",
        notes="Tool calling only for R1-0528, with examples/tool_chat_template_deepseekr1.jinja (`-- --chat-template FILE`).",
        examples=("deepseek-ai/DeepSeek-R1-0528",),
    ),
    ParserRule(
        "DeepSeek-V3",
        r"deepseek[-_ ]?v3",
        "deepseek_v3",
        notes="vLLM docs pair it with examples/tool_chat_template_deepseekv3.jinja.",
        examples=("deepseek-ai/DeepSeek-V3-0324",),
    ),
    ParserRule(
        "Llama 4",
        r"llama[-_ ]?4",
        "llama4_pythonic",
        notes="vLLM docs recommend examples/tool_chat_template_llama4_pythonic.jinja "
        "(`-- --chat-template FILE`); `llama4_json` is the JSON alternative.",
        examples=("meta-llama/Llama-4-Scout-17B-16E-Instruct",),
    ),
    ParserRule(
        "Llama 3.1 / 3.2 / 3.3",
        r"llama[-_ ]?3\.[123]",
        "llama3_json",
        notes="JSON tool calling, no parallel calls. vLLM docs recommend "
        "examples/tool_chat_template_llama3.1_json.jinja (3.2: ..._llama3.2_json.jinja) from "
        "the vLLM repo (not in the wheel): `-- --chat-template FILE`. Llama 3.0 has no tool calling.",
        examples=("meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.3-70B-Instruct"),
    ),
    ParserRule(
        "Magistral",
        r"magistral",
        "mistral",
        "mistral",
        examples=("mistralai/Magistral-Small-2509",),
    ),
    ParserRule(
        "Mistral / Mixtral / Ministral / Devstral",
        r"mistral|mixtral|ministral|devstral",
        "mistral",
        notes="Uses mistral-common tokenization by default; with `--tokenizer-mode hf` vLLM docs "
        "recommend examples/tool_chat_template_mistral_parallel.jinja.",
        examples=("mistralai/Mistral-7B-Instruct-v0.3", "mistralai/Mistral-Small-3.2-24B-Instruct-2506"),
    ),
    ParserRule(
        "FunctionGemma",
        r"functiongemma",
        "functiongemma",
        notes="Needs examples/tool_chat_template_functiongemma.jinja; meant to be fine-tuned.",
        examples=("google/functiongemma-270m-it",),
    ),
    ParserRule(
        "Gemma 4",
        r"gemma[-_ ]?4",
        "gemma4",
        "gemma4",
        examples=("google/gemma-4-31b-it",),
    ),
    ParserRule(
        "Gemma 3",
        r"gemma[-_ ]?3",
        "pythonic",
        notes="Gemma 3's own template has no tool support: pass vLLM's "
        "examples/tool_chat_template_gemma3_pythonic.jinja with `-- --chat-template FILE`; "
        "expect weak tool use.",
        examples=("google/gemma-3-27b-it",),
    ),
    ParserRule(
        "GLM-4.7",
        r"glm[-_ ]?4\.7",
        "glm47",
        "glm47",
        examples=("zai-org/GLM-4.7",),
    ),
    ParserRule(
        "GLM-4.5 / 4.6",
        r"glm[-_ ]?4\.[56]",
        "glm45",
        "glm45",
        examples=("zai-org/GLM-4.5-Air", "zai-org/GLM-4.6"),
    ),
    ParserRule(
        "gpt-oss",
        r"gpt[-_ ]?oss",
        "openai",
        "openai_gptoss",
        notes="Harmony format.",
        examples=("openai/gpt-oss-20b", "openai/gpt-oss-120b"),
    ),
    ParserRule(
        "Granite 20B function calling",
        r"granite[-_ ]?20b[-_ ]?function",
        "granite-20b-fc",
        notes="Needs examples/tool_chat_template_granite_20b_fc.jinja.",
        examples=("ibm-granite/granite-20b-functioncalling",),
    ),
    ParserRule(
        "Granite 4",
        r"granite[-_ ]?4",
        "granite4",
        examples=("ibm-granite/granite-4.0-h-small",),
    ),
    ParserRule(
        "Granite 3.x",
        r"granite[-_ ]?3",
        "granite",
        notes="3.0 needs examples/tool_chat_template_granite.jinja, 3.1+ works with the HF "
        "template. Reasoning (`--reasoning-parser granite`) only with thinking=true.",
        examples=("ibm-granite/granite-3.1-8b-instruct",),
    ),
    ParserRule(
        "InternLM 2 / 2.5",
        r"internlm[-_ ]?2",
        "internlm",
        notes="vLLM docs pair it with examples/tool_chat_template_internlm2_tool.jinja; InternLM2 (not 2.5) is unstable.",
        examples=("internlm/internlm2_5-7b-chat",),
    ),
    ParserRule(
        "Kimi K2 Thinking",
        r"kimi[-_ ]?k2.*thinking",
        "kimi_k2",
        "kimi_k2",
        examples=("moonshotai/Kimi-K2-Thinking",),
    ),
    ParserRule(
        "Kimi K2",
        r"kimi[-_ ]?k2",
        "kimi_k2",
        examples=("moonshotai/Kimi-K2-Instruct",),
    ),
    ParserRule(
        "MiniMax-M2",
        r"minimax[-_ ]?m2",
        "minimax_m2",
        "minimax_m2_append_think",
        examples=("MiniMaxAI/MiniMax-M2",),
    ),
    ParserRule(
        "Phi-4-mini",
        r"phi[-_ ]?4[-_ ]?mini",
        "phi4_mini_json",
        notes="vLLM ships examples/tool_chat_template_phi4_mini.jinja for it.",
        examples=("microsoft/Phi-4-mini-instruct",),
    ),
    ParserRule(
        "Hunyuan-A13B",
        r"hunyuan[-_ ]?a13b",
        "hunyuan_a13b",
        "hunyuan_a13b",
        examples=("tencent/Hunyuan-A13B-Instruct",),
    ),
    ParserRule(
        "Jamba 1.5",
        r"jamba",
        "jamba",
        examples=("ai21labs/AI21-Jamba-1.5-Mini",),
    ),
    ParserRule(
        "OLMo 3 Think",
        r"olmo[-_ ]?3.*think",
        "olmo3",
        "olmo3",
        examples=("allenai/Olmo-3-32B-Think",),
    ),
    ParserRule(
        "OLMo 3",
        r"olmo[-_ ]?3",
        "olmo3",
        examples=("allenai/Olmo-3-7B-Instruct",),
    ),
    ParserRule(
        "Seed-OSS",
        r"seed[-_ ]?oss",
        "seed_oss",
        "seed_oss",
        examples=("ByteDance-Seed/Seed-OSS-36B-Instruct",),
    ),
    ParserRule(
        "ERNIE 4.5",
        r"ernie[-_ ]?4\.?5",
        "ernie45",
        "ernie45",
        examples=("baidu/ERNIE-4.5-21B-A3B-Thinking",),
    ),
    ParserRule(
        "LongCat-Flash",
        r"longcat",
        "longcat",
        examples=("meituan-longcat/LongCat-Flash-Chat",),
    ),
)


class UnknownModelFamily(ValueError):
    """No tool-call parser is known for this model and none was given."""


@dataclass(frozen=True)
class ResolvedParsers:
    tool_parser: str
    reasoning_parser: str | None
    rule: ParserRule | None  # the matching table row, if any (flags may override it)


def match_family(model: str) -> ParserRule | None:
    """The first rule whose regex is found in ``model`` (an HF id or a local path)."""
    for rule in PARSER_RULES:
        if rule.matches(model):
            return rule
    return None


def _is_none(value: str | None) -> bool:
    return value is not None and value.strip().lower() in {"none", ""}


def resolve_parsers(
    model: str,
    tool_call_parser: str | None = None,
    reasoning_parser: str | None = None,
) -> ResolvedParsers:
    """The parsers to start vLLM with: the flags when given, else the family table.

    ``reasoning_parser="none"`` drops the table's reasoning parser. Raises
    ``UnknownModelFamily`` when no tool parser is given and the table has none.
    """
    rule = match_family(model)
    tool = tool_call_parser
    if tool is None or _is_none(tool):
        tool = rule.tool_parser if rule else None
    if not tool:
        if rule is not None:
            why = f"the {rule.family} family has no verified vLLM tool-call format"
            if rule.notes:
                why += f" ({rule.notes})"
        else:
            why = "its model family is not in the parser table"
        raise UnknownModelFamily(
            f"Don't know which vLLM tool-call parser {model!r} needs: {why}. "
            f"Pass --tool-call-parser NAME (e.g. hermes, llama3_json, mistral, pythonic); "
            f"see {DOC_PATH} (or `moodbench.serve.parsers.markdown_table()`) for the known "
            f"families and vLLM's tool-calling docs for all parser names."
        )
    if reasoning_parser is not None:
        reasoning = None if _is_none(reasoning_parser) else reasoning_parser
    else:
        reasoning = rule.reasoning_parser if rule else None
    return ResolvedParsers(tool, reasoning, rule)


def unknown_parser_warnings(resolved: ResolvedParsers) -> list[str]:
    """Warnings for parser names that vLLM VLLM_VERSION_CHECKED does not register."""
    out = []
    if resolved.tool_parser not in VLLM_TOOL_PARSERS:
        out.append(
            f"--tool-call-parser {resolved.tool_parser!r} is not a built-in parser of vLLM "
            f"{VLLM_VERSION_CHECKED} (fine if it comes from --tool-parser-plugin or another release)."
        )
    if resolved.reasoning_parser and resolved.reasoning_parser not in VLLM_REASONING_PARSERS:
        out.append(f"--reasoning-parser {resolved.reasoning_parser!r} is not a built-in parser of vLLM {VLLM_VERSION_CHECKED}.")
    return out


def markdown_table() -> str:
    lines = [
        "| Family | Matches (regex) | `--tool-call-parser` | `--reasoning-parser` | Example ids | Notes |",
        "| --- | --- | --- | --- | --- | --- |",
    ]

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    for r in PARSER_RULES:
        lines.append(
            "| "
            + " | ".join(
                [
                    cell(r.family),
                    f"`{cell(r.pattern)}`",
                    f"`{r.tool_parser}`" if r.tool_parser else "(none: pass one)",
                    f"`{r.reasoning_parser}`" if r.reasoning_parser else "",
                    ", ".join(f"`{e}`" for e in r.examples),
                    cell(r.notes),
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def render_doc() -> str:
    """The text of docs/vllm-parsers.md (regenerate with
    ``python -c "from moodbench.serve.parsers import render_doc; print(render_doc(), end='')" > docs/vllm-parsers.md``)."""
    return f"""# vLLM tool-call and reasoning parsers by model family

`moodbench serve --backend vllm --model HF_ID` starts
`vllm serve HF_ID --enable-auto-tool-choice --tool-call-parser X [--reasoning-parser R]`
with `X` and `R` from this table. Without the right tool-call parser vLLM returns tool calls
as plain text and a tau2 agent fails every task, so for a model whose family is not listed
moodbench stops with exit code 2 and asks for `--tool-call-parser NAME`
(and optionally `--reasoning-parser NAME`; `--reasoning-parser none` drops the table's one).

Rules are tried top to bottom; the first regex found (case-insensitively) anywhere in the
model id or local path wins. Parser names were checked against the parser registries of
**vLLM {VLLM_VERSION_CHECKED}** (`vllm/tool_parsers/__init__.py` and
`vllm/reasoning/__init__.py` in the released wheel), notes against vLLM's
`docs/features/tool_calling.md` and `docs/features/reasoning_outputs.md`. Older vLLM
releases lack some of these names (e.g. `glm47`, `gemma4`, `deepseek_v4`); vLLM rejects an
unknown `--tool-call-parser` at start-up, which moodbench reports with the end of the log.

Chat templates named below live in the `examples/` folder of the vLLM repository (they are
not installed with the wheel); pass one after `--`:
`moodbench serve --backend vllm --model M -- --chat-template /path/to/template.jinja`.

This file is generated from `src/moodbench/serve/parsers.py` (`render_doc()`); edit the table there.

{markdown_table()}"""
