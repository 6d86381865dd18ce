"""Reading a GGUF file's metadata (key/value header), without the ``gguf`` package or the tensors.

Why our own reader: steering needs three or four values from the header (the chat template, the BOS/EOS
token text, the layer count), the format is simple and versioned (magic ``GGUF``, version 2 or 3,
little-endian), and the header of a 0.5 GB model is read in milliseconds. Arrays whose values are not
asked for (the 150k-token vocabulary) are skipped with seeks instead of being decoded.

Format (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md): ``magic u32, version u32,
tensor_count u64, kv_count u64``, then ``kv_count`` times ``key: string, type: u32, value``; a string
is ``u64 length + UTF-8 bytes``; an array is ``item type u32, count u64, items``.
"""

from __future__ import annotations

import struct
from collections.abc import Collection
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["GGUFError", "read_metadata"]

_MAGIC = b"GGUF"
# type id -> struct format of one scalar (little-endian)
_SCALARS: dict[int, str] = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_MAX_STRING = 64 << 20  # a chat template is a few KB; anything this long is a corrupt file, not metadata


class GGUFError(ValueError):
    """The file is not a GGUF model (or its header is damaged)."""


def _read(fh: BinaryIO, n: int) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise GGUFError("unexpected end of file in the GGUF header")
    return data


def _u32(fh: BinaryIO) -> int:
    return int(struct.unpack("<I", _read(fh, 4))[0])


def _u64(fh: BinaryIO) -> int:
    return int(struct.unpack("<Q", _read(fh, 8))[0])


def _string(fh: BinaryIO) -> str:
    n = _u64(fh)
    if n > _MAX_STRING:
        raise GGUFError(f"implausible string length {n} in the GGUF header")
    return _read(fh, n).decode("utf-8", errors="replace")


def _skip_string(fh: BinaryIO) -> None:
    fh.seek(_u64(fh), 1)


def _value(fh: BinaryIO, typ: int, keep: bool) -> Any:
    if typ in _SCALARS:
        fmt = _SCALARS[typ]
        return struct.unpack(fmt, _read(fh, struct.calcsize(fmt)))[0]
    if typ == _STRING:
        if keep:
            return _string(fh)
        _skip_string(fh)
        return None
    if typ == _ARRAY:
        item, count = _u32(fh), _u64(fh)
        if not keep:
            if item in _SCALARS:
                fh.seek(struct.calcsize(_SCALARS[item]) * count, 1)
            else:
                for _ in range(count):
                    _value(fh, item, False)
            return None
        return [_value(fh, item, True) for _ in range(count)]
    raise GGUFError(f"unknown GGUF value type {typ}")


def read_metadata(path: str | Path, keys: Collection[str] | None = None) -> dict[str, Any]:
    """The header's key/value pairs (only ``keys`` when given: other values are skipped, not decoded)."""
    out: dict[str, Any] = {}
    with open(path, "rb") as fh:
        if _read(fh, 4) != _MAGIC:
            raise GGUFError(f"{path} is not a GGUF file (bad magic)")
        version = _u32(fh)
        if version not in (2, 3):
            raise GGUFError(f"{path}: unsupported GGUF version {version}")
        _u64(fh)  # tensor count
        for _ in range(_u64(fh)):
            key = _string(fh)
            typ = _u32(fh)
            keep = keys is None or key in keys
            value = _value(fh, typ, keep)
            if keep:
                out[key] = value
            if keys is not None and len(out) == len(keys):
                break
    return out
