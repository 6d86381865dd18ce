"""Loading variant files and turning specs into persona blocks."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from moodbench._util.bounds import BoundError, load_yaml
from moodbench._util.errors import UsageError
from moodbench._util.files import read_user_text

LEVELS: tuple[str, ...] = ("mild", "moderate", "severe")
METHODS: tuple[str, ...] = ("prompt", "steer", "both")
STEERING_MIN_PAIRS = 4
STEERING_MAX_PAIRS = 200
DEFAULT_LEVEL = "moderate"
CONTROL = "control"

# The frame around the variants' text. It tells the simulated customer that the emotion changes
# how it speaks, never what it wants or how it ends the conversation, so the task stays the task.
BLOCK_HEADER = (
    "<emotional_state>\n"
    "In this conversation you also have the following emotional state and communication style. "
    "Express it consistently in every message you write as the customer.\n"
)
BLOCK_FOOTER = (
    "This changes only how you speak. Your goal, the facts of your scenario and every rule above "
    "(including when and how to end the conversation) stay exactly the same. You are the customer, "
    "never the agent.\n"
    "</emotional_state>"
)


class UnknownVariantError(UsageError):
    """A spec names a variant or level that does not exist; the message lists what does."""


def _non_empty(text: str, what: str) -> str:
    if not text or not text.strip():
        raise ValueError(f"{what} is empty")
    return text


class SteeringPair(BaseModel):
    """One contrastive pair: the same agent turn, answered with the emotion's and the calm reply opening."""

    model_config = ConfigDict(extra="forbid")

    agent: str
    positive: str
    negative: str

    @field_validator("agent", "positive", "negative")
    @classmethod
    def _filled(cls, text: str) -> str:
        return _non_empty(text, "a steering pair's text")


class SteeringData(BaseModel):
    """Contrastive material for a control vector (``moodbench steer build``): see the YAML files' header.

    ``positive``/``negative`` are the customer's system prompts (the emotion vs its calm, satisfied
    opposite; one prompt, or a list used in turn by the pairs so the vector does not learn one wording).
    Each pair answers the same agent turn with two reply openings. At least ``STEERING_MIN_PAIRS``
    pairs: a direction estimated from two or three pairs is mostly noise.
    """

    model_config = ConfigDict(extra="forbid")

    positive: str | list[str]
    negative: str | list[str]
    pairs: list[SteeringPair] = Field(min_length=STEERING_MIN_PAIRS, max_length=STEERING_MAX_PAIRS)

    @field_validator("positive", "negative")
    @classmethod
    def _prompts(cls, value: str | list[str]) -> str | list[str]:
        items = [value] if isinstance(value, str) else value
        if not items:
            raise ValueError("needs at least one system prompt")
        for text in items:
            _non_empty(text, "a steering system prompt")
        return value

    def system_prompts(self, side: str) -> list[str]:
        """The system prompts of one side (``positive`` or ``negative``) as a list."""
        value = self.positive if side == "positive" else self.negative
        return [value] if isinstance(value, str) else list(value)


class Variant(BaseModel):
    """One variant file. ``extra='forbid'`` so a typo in a user's file is an error, not a no-op."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    description: str
    levels: dict[str, str] = Field(default_factory=dict)
    steering: SteeringData | None = None
    source: str = "builtin"

    @field_validator("levels")
    @classmethod
    def _known_levels(cls, levels: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(levels) - set(LEVELS))
        if unknown:
            raise ValueError(f"unknown level(s) {unknown}; levels are {list(LEVELS)}")
        for level, text in levels.items():
            if not text or not text.strip():
                raise ValueError(f"level {level!r} has empty text")
        return levels


@dataclass(frozen=True)
class Part:
    """One emotion of a spec: which variant, at which level, and how it reaches the customer."""

    name: str
    level: str = DEFAULT_LEVEL
    method: str = "prompt"  # prompt: the persona block; steer: a control vector; both

    @property
    def prompted(self) -> bool:
        return self.method in ("prompt", "both")

    @property
    def steered(self) -> bool:
        return self.method in ("steer", "both")

    @property
    def canonical(self) -> str:
        text = self.name if self.method == "prompt" else f"{self.name}@{self.method}"
        return text if self.level == DEFAULT_LEVEL else f"{text}:{self.level}"


@dataclass(frozen=True)
class VariantSpec:
    """A parsed spec: an ordered tuple of parts. Empty means control."""

    parts: tuple[Part, ...]

    @property
    def is_control(self) -> bool:
        return not self.parts

    @property
    def canonical(self) -> str:
        """The spec's stable name, used as a key in the store (``anger:severe+confusion``, ``frustration@steer``).

        The default level and method are left implicit so ``anger`` and ``anger:moderate`` are the same cell.
        """
        if self.is_control:
            return CONTROL
        return "+".join(p.canonical for p in self.parts)

    @property
    def steered(self) -> Part | None:
        """The part that reaches the customer as a control vector (at most one; see :meth:`Catalog.parse`)."""
        return next((p for p in self.parts if p.steered), None)

    def __str__(self) -> str:
        return self.canonical


class Catalog:
    """All variants known to a run: the shipped ones plus any from ``--variants-file``."""

    def __init__(self, variants: dict[str, Variant]):
        self.variants = variants

    def names(self) -> list[str]:
        return list(self.variants)

    def parse(self, spec: str) -> VariantSpec:
        """Parse ``a:level+b@steer`` into a :class:`VariantSpec`, refusing unknown names, levels and methods.

        ``NAME[@METHOD][:LEVEL]`` per part: ``frustration`` (prompted, moderate), ``anger@steer:severe``
        (a control vector alone), ``frustration@both:mild`` (prompted and steered). Parts join with ``+``.
        """
        text = spec.strip()
        if not text:
            raise UnknownVariantError("empty variant spec; " + self._valid_names())
        parts: list[Part] = []
        for raw in text.split("+"):
            head, _, level = raw.strip().partition(":")
            name, _, method = head.strip().partition("@")
            name, level, method = name.strip(), (level.strip() or DEFAULT_LEVEL), (method.strip() or "prompt")
            if name not in self.variants:
                raise UnknownVariantError(f"unknown variant {name!r} in spec {spec!r}; " + self._valid_names())
            if name == CONTROL:
                if len(text.split("+")) > 1 or ":" in raw or "@" in raw:
                    raise UnknownVariantError("'control' takes no level or method and cannot be combined with other variants")
                return VariantSpec(())
            if method not in METHODS:
                raise UnknownVariantError(
                    f"unknown method {method!r} in {raw.strip()!r}; methods: "
                    "NAME (prompted), NAME@steer (a control vector), NAME@both"
                )
            if level not in LEVELS:
                raise UnknownVariantError(f"unknown level {level!r} for variant {name!r}; valid levels: {', '.join(LEVELS)}")
            variant = self.variants[name]
            if method in ("prompt", "both") and level not in variant.levels:
                raise UnknownVariantError(f"variant {name!r} has no level {level!r}; it has: {', '.join(variant.levels)}")
            if method in ("steer", "both") and variant.steering is None:
                raise UnknownVariantError(
                    f"variant {name!r} has no 'steering:' pairs, so it cannot be steered; use "
                    f"{name!r} (prompted) or add contrastive pairs to its file"
                )
            if any(p.name == name for p in parts):
                raise UnknownVariantError(f"variant {name!r} appears twice in spec {spec!r}")
            parts.append(Part(name, level, method))
        if sum(p.steered for p in parts) > 1:
            raise UnknownVariantError(
                f"{spec!r} steers more than one emotion: llama.cpp adds control vectors together and steered emotions "
                "interfere, so moodbench steers one emotion per variant; steer one and prompt the others "
                "(e.g. frustration@steer+confusion)"
            )
        return VariantSpec(tuple(parts))

    def parse_many(self, specs: list[str] | str) -> list[VariantSpec]:
        """Parse a comma-separated list (or a list) of specs; duplicates are refused."""
        items = specs.split(",") if isinstance(specs, str) else specs
        parsed = [self.parse(s) for s in items if s.strip()]
        seen: set[str] = set()
        for p in parsed:
            if p.canonical in seen:
                raise UnknownVariantError(f"variant spec {p.canonical!r} is listed twice")
            seen.add(p.canonical)
        return parsed

    def persona_block(self, spec: VariantSpec) -> str | None:
        """The text appended to tau2's user prompt, or None when nothing is prompted (control, pure steering)."""
        prompted = [p for p in spec.parts if p.prompted]
        if not prompted:
            return None
        body = "\n".join(self.variants[p.name].levels[p.level].strip() + "\n" for p in prompted)
        return BLOCK_HEADER + "\n" + body + "\n" + BLOCK_FOOTER

    def _valid_names(self) -> str:
        return (
            f"valid variants: {', '.join(self.variants)}; levels: {', '.join(LEVELS)}; methods: @steer, @both "
            "(e.g. anger:severe+confusion, frustration@steer)"
        )


def _load_file(path: Path | str, text: str, source: str) -> list[Variant]:
    try:  # bounded: an alias bomb or a key given twice is refused (libyaml's parser when PyYAML has it)
        data = load_yaml(text, f"variants file {path}")
    except yaml.YAMLError as exc:
        raise UnknownVariantError(f"{path}: not valid YAML: {exc}") from exc
    except BoundError as exc:
        raise UnknownVariantError(f"{path}: {exc}") from None
    items = (
        data if isinstance(data, list) else (data.get("variants") if isinstance(data, dict) and "variants" in data else [data])
    )
    if not isinstance(items, list):
        raise UnknownVariantError(f"{path}: 'variants' must be a list of variants (name, description, levels), got {items!r:.80}")
    out = []
    for item in items:
        if not isinstance(item, dict):
            raise UnknownVariantError(f"{path}: each variant must be a mapping with name, description, levels")
        try:
            out.append(Variant(**{**item, "source": source}))
        except ValidationError as exc:
            raise UnknownVariantError(f"{path}: invalid variant: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from exc
    return out


def load_catalog(extra_files: list[Path] | None = None) -> Catalog:
    """Shipped variants, then the user's files (which may add variants but not redefine shipped ones)."""
    variants: dict[str, Variant] = {}
    data_dir = resources.files("moodbench.emotions") / "data"
    for entry in sorted(data_dir.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            for v in _load_file(entry.name, entry.read_text(encoding="utf-8"), "builtin"):
                variants[v.name] = v
    builtin = set(variants)
    for path in extra_files or []:
        p = Path(path)
        for v in _load_file(p, read_user_text(p, "variants file", UnknownVariantError), str(p)):
            if v.name in builtin:
                raise UnknownVariantError(f"{p}: variant {v.name!r} is built in; give your variant another name")
            if v.name in variants:  # a second definition would silently replace the first
                raise UnknownVariantError(f"{p}: variant {v.name!r} is already defined in {variants[v.name].source}")
            if not v.levels and v.steering is None:
                raise UnknownVariantError(
                    f"{p}: variant {v.name!r} needs at least one level ({', '.join(LEVELS)}) or 'steering:' pairs"
                )
            variants[v.name] = v
    # put control first, then the rest in file order
    ordered = {CONTROL: variants.pop(CONTROL)} if CONTROL in variants else {}
    ordered.update(variants)
    return Catalog(ordered)
