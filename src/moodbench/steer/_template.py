"""The model's own chat template, read from its GGUF and rendered with jinja2 the way HF/llama.cpp do.

Why the model's own template: a control vector is the difference of hidden states on the positive and
negative prompts, so the prompts must look exactly like what the model sees when it serves (llama-server
``--jinja`` renders the same ``tokenizer.chat_template``). Hard-coding one family's tokens (Qwen's
``<|im_start|>``) would silently build garbage vectors for every other model.

Rendering follows transformers' ``apply_chat_template``: a sandboxed environment, ``trim_blocks`` and
``lstrip_blocks``, the ``loopcontrols`` extension, ``raise_exception`` and a ``tojson`` that keeps
non-ASCII text, and ``bos_token``/``eos_token`` as the vocabulary's text for the header's token ids.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from moodbench.steer._gguf import read_metadata

__all__ = ["ChatTemplate", "ChatTemplateError"]

_KEYS = (
    "tokenizer.chat_template",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.add_bos_token",
    "general.architecture",
)


class ChatTemplateError(ValueError):
    """The model has no usable chat template (the message says what to do)."""


@dataclass(frozen=True)
class ChatTemplate:
    """A chat template plus the special-token text it may refer to."""

    source: str
    bos_token: str = ""
    eos_token: str = ""
    add_bos: bool = False

    @classmethod
    def from_gguf(cls, path: str | Path) -> ChatTemplate:
        """Read ``tokenizer.chat_template`` (and BOS/EOS text when the template uses them) from a GGUF."""
        meta = read_metadata(path, _KEYS)
        source = meta.get("tokenizer.chat_template")
        if not isinstance(source, str) or not source.strip():
            raise ChatTemplateError(
                f"{path} has no tokenizer.chat_template in its metadata, so steering prompts cannot be rendered "
                "the way the model is served; use an instruct model GGUF that carries its chat template"
            )
        bos = eos = ""
        if "bos_token" in source or "eos_token" in source:  # only then decode the (large) vocabulary
            tokens = read_metadata(path, ("tokenizer.ggml.tokens",)).get("tokenizer.ggml.tokens") or []
            bos_id, eos_id = meta.get("tokenizer.ggml.bos_token_id"), meta.get("tokenizer.ggml.eos_token_id")
            bos = tokens[bos_id] if isinstance(bos_id, int) and 0 <= bos_id < len(tokens) else ""
            eos = tokens[eos_id] if isinstance(eos_id, int) and 0 <= eos_id < len(tokens) else ""
        return cls(source=source, bos_token=bos, eos_token=eos, add_bos=bool(meta.get("tokenizer.ggml.add_bos_token")))

    def render(self, messages: list[dict[str, Any]], *, add_generation_prompt: bool = True) -> str:
        """The prompt text for ``messages``.

        When the tokenizer adds BOS itself (``add_bos_token``) a BOS written by the template is removed,
        so the tokenized prompt does not start with two of them (llama.cpp tokenizes these lines with
        ``add_bos`` from the vocabulary).
        """
        from jinja2 import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise TemplateError(message)

        def tojson(value: Any, indent: int | None = None) -> str:
            return json.dumps(value, ensure_ascii=False, indent=indent)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
        env.filters["tojson"] = tojson
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        try:
            text = env.from_string(self.source).render(
                messages=messages, add_generation_prompt=add_generation_prompt, bos_token=self.bos_token,
                eos_token=self.eos_token, tools=None,
            )  # fmt: skip
        except TemplateError as exc:
            raise ChatTemplateError(f"the model's chat template failed to render: {exc}") from exc
        if self.add_bos and self.bos_token and text.startswith(self.bos_token):
            text = text[len(self.bos_token) :]
        return text
