"""Bounds on what a file or a model can hand moodbench, checked before it is parsed further or stored.

Anything read from a user's file, a tau2 Results file or a model's reply is untrusted: a JSON value
nested 5,000 deep, a YAML alias bomb (947 bytes that expand to a billion values), an integer past
SQLite's 64 bits or a lone UTF-16 surrogate all parse, and then crash whoever walks, stores or prints
them later. These helpers turn each of those into a :class:`BoundError` (a ``ValueError`` with a
message naming the problem) at the door, in time linear in the input and never more than the bound.
"""

from __future__ import annotations

import math
import re
from typing import Any

import yaml

# JSON/YAML values nested deeper than this are refused (tau2 transcripts nest about 8 deep; tool
# arguments 3-4). Python's json gives up near 1,000 levels and pydantic near 255, both with crashes.
MAX_DEPTH = 64
# Values (counted as if every YAML alias were expanded) in one config or variants file.
MAX_NODES = 100_000
# SQLite's INTEGER is a signed 64-bit number; Python's int is not.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Config and variants files: far above any real one, far below what would exhaust memory.
MAX_USER_FILE_BYTES = 4 * 1024 * 1024

_SURROGATE = re.compile("[\ud800-\udfff]")


class BoundError(ValueError):
    """A value is out of the bounds moodbench accepts; the message says which bound."""


def check_tree(value: Any, what: str, *, max_depth: int = MAX_DEPTH, max_nodes: int | None = MAX_NODES) -> None:
    """Refuse ``value`` (parsed JSON/YAML) if it nests deeper than ``max_depth`` or holds more than
    ``max_nodes`` values, counting a shared (aliased) object once per reference, as every later
    walk (validation, ``repr``, ``json.dumps``) would. Iterative and stops at the bound, so an alias
    bomb or a self-referencing YAML costs at most ``max_nodes`` steps."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    seen = 0
    while stack:
        item, depth = stack.pop()
        seen += 1
        if max_nodes is not None and seen > max_nodes:
            raise BoundError(
                f"{what} holds more than {max_nodes:,} values (YAML aliases that expand, or a file far "
                "larger than any real one); write the values out plainly"
            )
        if depth > max_depth:
            raise BoundError(f"{what} nests deeper than {max_depth} levels; no real value is that deep")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend((v, depth + 1) for v in item)


def check_int(value: Any, what: str, *, low: int = INT64_MIN, high: int = INT64_MAX) -> None:
    """Refuse an integer outside ``[low, high]`` (bools and non-integers are someone else's concern)."""
    if isinstance(value, int) and not isinstance(value, bool) and not low <= value <= high:
        raise BoundError(f"{what} is {_short(value)}, outside {low}..{high}")


def finite(value: Any) -> bool:
    """A number that is neither NaN nor infinite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def clean_text(text: str) -> str:
    """``text`` with lone UTF-16 surrogates (``\\ud800`` from a JSON escape) replaced by U+FFFD: they
    cannot be encoded as UTF-8, so one of them makes every page, export and log line of a run fail."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)


def clean_strings(value: Any) -> Any:
    """``value`` with :func:`clean_text` applied to every string (keys too); the same object when
    nothing needed cleaning. Callers bound the depth first (:func:`check_tree`)."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        cleaned = {clean_text(k) if isinstance(k, str) else k: clean_strings(v) for k, v in value.items()}
        return (
            value if all(a is b for a, b in zip(cleaned.values(), value.values())) and list(cleaned) == list(value) else cleaned
        )
    if isinstance(value, list):
        items = [clean_strings(v) for v in value]
        return value if all(a is b for a, b in zip(items, value)) else items
    return value


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 30 else f"{text[:12]}...({len(text)} digits)"


# libyaml's parser when PyYAML has it (~10x faster); the constructor, where keys are checked, is Python either way.
_SAFE_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _BoundedLoader(_SAFE_LOADER):  # type: ignore[misc,valid-type]
    """PyYAML's safe loader, refusing a key given twice in one mapping (TOML refuses it too; YAML's
    last-one-wins would silently drop a setting)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: the base class reports it
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found the key {_short(key)!r} twice (YAML keeps only the last one); give each key once",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, what: str) -> Any:
    """Parse untrusted YAML: safe tags only, no duplicate keys, and within :func:`check_tree`'s bounds
    (an alias bomb is refused after parsing, which costs little: aliases are shared, not copied).

    Raises ``yaml.YAMLError`` for a syntax error or a duplicate key and :class:`BoundError` past a bound."""
    data = yaml.load(text, Loader=_BoundedLoader)  # a SafeLoader subclass
    check_tree(data, what)
    return data
