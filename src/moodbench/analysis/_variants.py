"""What a variant spec says about intensity: emotion, method and level, for the dose-response analysis.

Specs look like ``frustration:mild``, ``frustration`` (= moderate), ``frustration:severe``, and for steered
customers ``frustration@steer:mild`` or ``frustration@both:severe``. Two variants belong to one dose-response
group when they share the emotion *and* the method (``prompt`` when no ``@method`` is given): a steered
"mild" is not the same dose as a prompted "mild". Combined specs (``anger+confusion``) have no single dose.
The baseline is level 0 of every group.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LEVEL_NUMBERS", "Dose", "dose_of", "families_spec", "methods_of"]

LEVEL_NUMBERS = {"mild": 1, "moderate": 2, "severe": 3}
DEFAULT_LEVEL = "moderate"
DEFAULT_METHOD = "prompt"


@dataclass(frozen=True)
class Dose:
    """One variant's place on its group's intensity axis."""

    emotion: str
    method: str
    level_name: str
    level: int


def dose_of(spec: str) -> Dose | None:
    """``frustration@steer:mild`` -> Dose("frustration", "steer", "mild", 1); None for combined or unknown levels."""
    text = spec.strip()
    if not text or "+" in text:
        return None
    name, _, level = text.partition(":")
    emotion, _, method = name.partition("@")
    level = level.strip() or DEFAULT_LEVEL
    if level not in LEVEL_NUMBERS or not emotion.strip():
        return None
    return Dose(emotion.strip(), method.strip() or DEFAULT_METHOD, level, LEVEL_NUMBERS[level])


def families_spec(spec: str) -> str:
    """The spec without ``@method`` parts, so ``judges.families_of`` sees ``frustration:mild``."""
    parts = []
    for part in spec.split("+"):
        name, sep, level = part.partition(":")
        parts.append(name.partition("@")[0] + sep + level)
    return "+".join(parts)


def methods_of(spec: str) -> list[str]:
    """How each part of a spec reaches the customer: ``frustration@steer+confusion`` -> ["steer", "prompt"].

    A variant whose parts are all ``steer`` gave the customer no persona block (the vector carries the emotion).
    """
    return [part.partition(":")[0].partition("@")[2].strip() or DEFAULT_METHOD for part in spec.split("+") if part.strip()]
