"""The safetensors format: its dtypes, and the checks that turn a header into a list of tensors.

A file is an 8-byte little-endian header length ``N``, ``N`` bytes of UTF-8 JSON, then the
data. This module only looks at bytes already read: it never touches a file. The checks are
those of the format's specification and of its reference reader (the ``safetensors``
package, whose parser tests/test_checkpoint_corpus.py runs side by side with this one):

* ``N`` at most 100,000,000 and no larger than the file;
* the JSON starts with ``{``, is valid UTF-8 without lone surrogates, has no ``NaN`` or
  ``Infinity`` and no number out of float64 range, nests at most 127 levels deep, and repeats
  no key (the specification forbids duplicates; the reference parser lets some through);
* ``__metadata__`` is absent, ``null`` or a map of strings to strings;
* every other key maps to ``{"dtype": ..., "shape": [...], "data_offsets": [begin, end]}``
  (other fields ignored) with a known dtype and non-negative 64-bit integers;
* sorted by offsets, the byte ranges tile the data exactly: no hole, no overlap, nothing
  after the last one; each range holds ``prod(shape) * bits / 8`` bytes, computed without
  overflowing 64 bits, as the reference does.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from .errors import CheckpointError

__all__ = ["MAX_HEADER", "Entry", "Header", "header_length", "parse_header"]

#: The largest header the format allows (and the reference reader accepts), in bytes.
MAX_HEADER = 100_000_000
#: The deepest JSON nesting the reference parser accepts.
MAX_DEPTH = 127
_U64 = 2**64

#: Every dtype of the format: its size in bits, and the deferral/NumPy name of those deferral
#: reads (``None``: valid in a file, but no NumPy dtype holds it). bfloat16 travels as uint16 bits.
DTYPES: dict[str, tuple[int, str | None]] = {
    "BOOL": (8, "bool"), "U8": (8, "uint8"), "I8": (8, "int8"),
    "I16": (16, "int16"), "U16": (16, "uint16"), "F16": (16, "float16"), "BF16": (16, "bfloat16"),
    "I32": (32, "int32"), "U32": (32, "uint32"), "F32": (32, "float32"),
    "I64": (64, "int64"), "U64": (64, "uint64"), "F64": (64, "float64"), "C64": (64, "complex64"),
    "F4": (4, None), "F6_E2M3": (6, None), "F6_E3M2": (6, None), "F8_E5M2": (8, None),
    "F8_E4M3": (8, None), "F8_E8M0": (8, None), "F8_E4M3FNUZ": (8, None), "F8_E5M2FNUZ": (8, None),
}
#: The file code of each dtype deferral reads and writes.
CODES = {name: code for code, (_, name) in DTYPES.items() if name is not None}


@dataclass(frozen=True)
class Entry:
    """One tensor of a header: its dtype code, shape and byte range in the data section."""

    name: str
    code: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def dtype(self) -> str | None:
        """The deferral dtype name, or ``None`` for a format dtype deferral does not read."""
        return DTYPES[self.code][1]

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True)
class Header:
    """A checked header: the tensors in header order, the metadata, where the data starts."""

    entries: dict[str, Entry]
    metadata: dict[str, str]
    data_start: int


def _fail(where: str, problems: list[str]) -> CheckpointError:
    return CheckpointError(f"{where} cannot be read:\n  - " + "\n  - ".join(problems))


def header_length(prefix: bytes, file_size: int, where: str) -> int:
    """The header length ``N`` from the first 8 bytes, checked against the cap and the file size."""
    if len(prefix) < 8:
        raise CheckpointError(
            f"{where} is not a safetensors file: {file_size} bytes, fewer than the 8-byte header length"
        )
    n = int.from_bytes(prefix, "little")
    if n > MAX_HEADER:
        raise CheckpointError(
            f"{where} is not a safetensors file: its header length field says {n:,} bytes, more than "
            f"the format's limit of {MAX_HEADER:,}"
        )
    if n > file_size - 8:
        raise CheckpointError(
            f"{where} is truncated or not a safetensors file: its header claims {n} bytes, but the "
            f"file has {file_size - 8} after the length field"
        )
    return n


class _NotUsize:
    """A JSON number that is no unsigned 64-bit integer (fine where the format ignores it)."""


def _parse_int(text: str) -> int | _NotUsize:
    if text[0] != "-" and len(text) <= 20 and int(text) < _U64:
        return int(text)
    _parse_float(text)  # the reference reads other integers as float64: out of range is an error
    return _NotUsize()


def _parse_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:40]} is out of the float64 range")
    return value


def _parse_constant(text: str) -> Any:
    raise ValueError(f"{text} is not JSON")


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        twice = next(k for k, n in Counter(k for k, _ in pairs).items() if n > 1)
        raise ValueError(f"the key {twice!r} appears more than once (the format forbids duplicates)")
    return out


def _check_tree(tree: Any) -> None:
    """Refuse nesting deeper than the reference parser's limit and strings that are not UTF-8."""
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            node.encode("utf-8")  # a lone surrogate escape (\ud800) raises UnicodeEncodeError
            continue
        if not isinstance(node, (dict, list)):
            continue
        if depth > MAX_DEPTH:
            raise ValueError(f"the JSON nests deeper than {MAX_DEPTH} levels")
        if isinstance(node, dict):
            stack.extend((k, depth) for k in node)
            node = node.values()
        stack.extend((child, depth + 1) for child in node)


def _load_json(blob: bytes) -> dict[str, Any]:
    if blob[:1] != b"{":
        raise ValueError("the header must begin with '{' (byte 0x7B), as the format requires")
    text = blob.decode("utf-8")
    try:
        tree = json.loads(text, object_pairs_hook=_unique, parse_int=_parse_int,
                          parse_float=_parse_float, parse_constant=_parse_constant)
    except RecursionError:
        raise ValueError(f"the JSON nests deeper than {MAX_DEPTH} levels") from None
    _check_tree(tree)
    return tree


def _usize(value: Any) -> bool:
    return type(value) is int and 0 <= value < _U64


def _fields(name: str, raw: Any) -> tuple[Any, Any, Any] | str:
    """``(dtype, shape, data_offsets)`` of an entry (an object, or the 3-item array form the
    reference also reads), or what is wrong with it."""
    if isinstance(raw, list) and len(raw) == 3:
        return raw[0], raw[1], raw[2]
    if not isinstance(raw, dict):
        return f"{name}: expected an object with dtype, shape and data_offsets, received {type(raw).__name__}"
    missing = [k for k in ("dtype", "shape", "data_offsets") if k not in raw]
    if missing:
        return f"{name}: missing {', '.join(missing)}"
    return raw["dtype"], raw["shape"], raw["data_offsets"]


def _entry(name: str, raw: Any) -> Entry | str:
    fields = _fields(name, raw)
    if isinstance(fields, str):
        return fields
    code, shape, offsets = fields
    if isinstance(code, dict) and len(code) == 1 and None in code.values():
        code = next(iter(code))  # {"F32": null}: serde's map form of a dtype, which the reference reads
    if not isinstance(code, str) or code not in DTYPES:
        return f"{name}: unknown dtype {code!r} (the format's dtypes: {', '.join(DTYPES)})"
    if not isinstance(shape, list) or not all(_usize(d) for d in shape):
        return f"{name}: the shape must be a list of non-negative integers below 2**64, received {shape!r}"[:300]
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_usize(v) for v in offsets):
        return f"{name}: data_offsets must be [begin, end], integers below 2**64, received {offsets!r}"[:300]
    return Entry(name, code, tuple(shape), offsets[0], offsets[1])


def _expected_bytes(entry: Entry) -> int | str:
    """The bytes ``entry``'s dtype and shape need, or why the reference would refuse them."""
    count = 1
    for d in entry.shape:
        count *= d
        if count >= _U64:
            return f"{entry.name}: the element count of shape {list(entry.shape)} overflows 64 bits"
    bits = count * DTYPES[entry.code][0]
    if bits >= _U64:
        return f"{entry.name}: the size of a {entry.code} tensor of shape {list(entry.shape)} overflows 64 bits"
    if bits % 8:
        return f"{entry.name}: {count} {entry.code} elements do not fill whole bytes"
    return bits // 8


def _layout_problems(entries: list[Entry], data_size: int) -> list[str]:
    """The ranges sorted by offsets must tile ``[0, data_size)`` and match their tensors."""
    problems = []
    position = 0
    for entry in sorted(entries, key=lambda e: (e.begin, e.end)):
        if entry.begin != position or entry.end < entry.begin:
            what = "overlaps the tensor before it" if entry.begin < position else "leaves a hole before it"
            if entry.end < entry.begin:
                what = "ends before it begins"
            problems.append(f"{entry.name}: byte range [{entry.begin}, {entry.end}) {what} "
                            f"(the data so far ends at {position})")
        position = max(position, entry.end)
        expected = _expected_bytes(entry)
        if isinstance(expected, str):
            problems.append(expected)
        elif expected != entry.end - entry.begin:
            problems.append(f"{entry.name}: byte range [{entry.begin}, {entry.end}) does not hold a "
                            f"{entry.code} tensor of shape {list(entry.shape)} ({expected} bytes)")
    if position > data_size:
        problems.append(f"the tensors need {position} bytes of data, the file has {data_size}: it is truncated")
    elif position < data_size:
        problems.append(f"{data_size - position} bytes after the last tensor: the format allows none")
    return problems


def _metadata(raw: Any, problems: list[str]) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        problems.append("__metadata__ must map strings to strings")
        return {}
    return raw


def parse_header(blob: bytes, data_size: int, where: str) -> Header:
    """Check a header (the ``N`` JSON bytes) against the format and a data section of ``data_size`` bytes.

    Raises:
        CheckpointError: naming ``where`` and listing every problem found.
    """
    try:
        tree = _load_json(blob)
    except (UnicodeError, ValueError) as exc:
        raise CheckpointError(f"{where}: the header is not valid safetensors JSON ({exc}); the file is "
                              "corrupted or not a safetensors file") from exc
    problems: list[str] = []
    metadata = _metadata(tree.pop("__metadata__", None), problems)
    entries = [_entry(name, raw) for name, raw in tree.items()]
    problems += [e for e in entries if isinstance(e, str)]
    if problems:
        raise _fail(where, problems)
    checked = [e for e in entries if isinstance(e, Entry)]
    problems = _layout_problems(checked, data_size)
    if problems:
        raise _fail(where, problems)
    return Header({e.name: e for e in checked}, metadata, 8 + len(blob))


def numpy_problem(entry: Entry) -> str | None:
    """Why ``entry`` cannot become a NumPy array (dtype without NumPy type, too many or too
    large dimensions), or ``None``."""
    import numpy as np

    if entry.dtype is None:
        return (f"{entry.name}: dtype {entry.code} is valid safetensors, but deferral reads only "
                f"{', '.join(CODES.values())}")
    try:
        np.broadcast_to(np.empty((), host_dtype(entry.dtype)), entry.shape)
    except ValueError as exc:
        return f"{entry.name}: NumPy cannot hold a tensor of shape {list(entry.shape)[:70]} ({exc})"
    return None


def host_dtype(dtype: str) -> Any:
    """The little-endian NumPy dtype that holds ``dtype``'s bytes (uint16 bits for bfloat16)."""
    import numpy as np

    return np.dtype("uint16" if dtype == "bfloat16" else dtype).newbyteorder("<")
