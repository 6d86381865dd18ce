"""Finding JSON inside model replies: one scanner for tool calls written as text and judge answers.

Models wrap JSON in prose, code fences and ``//`` comments. Instead of a regex per caller (greedy
``{.*}`` swallows two objects, lazy ``{.*?}`` cuts nested ones), every caller scans with
``json.JSONDecoder.raw_decode`` from each ``{`` or ``[``, which finds exactly the values a JSON
parser would accept.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

_DECODER = json.JSONDecoder()
# A ``//`` comment running to the end of its line, outside strings (judges copy the schema's comments).
_LINE_COMMENT = re.compile(r'("(?:[^"\\]|\\.)*")|//[^\n]*')


def json_values(text: str) -> Iterator[Any]:
    """Every JSON object or array that starts somewhere in ``text`` (outermost ones only), in order."""
    i, n = 0, len(text)
    while i < n:
        if text[i] in "{[":
            try:
                value, end = _DECODER.raw_decode(text, i)
            except json.JSONDecodeError:
                i += 1
                continue
            yield value
            i = end
        else:
            i += 1


def strip_line_comments(text: str) -> str:
    """``text`` without ``// ...`` comments (string contents are kept as they are)."""
    return _LINE_COMMENT.sub(lambda m: m.group(1) or "", text)


def json_objects(text: str | None) -> Iterator[dict[str, Any]]:
    """The JSON objects in a reply, first with ``//`` comments kept, else with them removed."""
    if not text:
        return
    found = False
    for value in json_values(text):
        if isinstance(value, dict):
            found = True
            yield value
    if not found and "//" in text:
        for value in json_values(strip_line_comments(text)):
            if isinstance(value, dict):
                yield value


def first_json_object(text: str | None) -> dict[str, Any] | None:
    """The first JSON object of a reply, or None."""
    return next(json_objects(text), None)
