"""Emotions as data: variant files, spec parsing, and the persona block a spec puts in the customer's prompt.

A variant is a YAML file (name, description, levels mild/moderate/severe). A *spec* such as
``anxiety:mild+confusion`` picks variants and levels; it renders to one block appended to tau2's
user-simulator prompt. ``control`` renders to nothing, so the control prompt stays tau2's own.
"""

from moodbench.emotions._catalog import (
    DEFAULT_LEVEL,
    LEVELS,
    METHODS,
    Catalog,
    Part,
    SteeringData,
    SteeringPair,
    UnknownVariantError,
    Variant,
    VariantSpec,
    load_catalog,
)

__all__ = [
    "DEFAULT_LEVEL",
    "LEVELS",
    "METHODS",
    "Catalog",
    "Part",
    "SteeringData",
    "SteeringPair",
    "UnknownVariantError",
    "Variant",
    "VariantSpec",
    "load_catalog",
]
