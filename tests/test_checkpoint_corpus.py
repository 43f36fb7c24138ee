"""deferral's safetensors reader against the reference reader (the ``safetensors`` package).

A corpus of hand-made edge files and hypothesis-generated ones runs through both. Every file
the reference refuses must be refused with ``CheckpointError``; every file it accepts must be
read with the same tensors (names, dtypes, shapes, bytes), except files that break a rule the
specification states and the reference does not enforce (a duplicate key, a header not
starting with ``{``), or that hold tensors NumPy has no array for (sub-byte and 8-bit floats,
more than 64 dimensions, dimensions of 2**63 and more): those are refused with a message.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deferral import CheckpointError
from deferral._safetensors_format import DTYPES
from deferral._safetensors_read import read_safetensors

safetensors = pytest.importorskip("safetensors", reason="the reference reader (pip install safetensors)")
hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

_NUMPY_LESS = {code for code, (_, name) in DTYPES.items() if name is None}


def _entry(dtype: Any, shape: Any, offsets: Any) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": offsets}


def _file(header: Any, data: bytes = b"") -> bytes:
    blob = header if isinstance(header, bytes) else json.dumps(header).encode()
    return len(blob).to_bytes(8, "little") + blob + data


_F32 = b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]'
HAND_MADE: list[bytes] = [
    b"", b"\x00" * 7, struct.pack("<Q", 0), struct.pack("<Q", 2) + b"{}", struct.pack("<Q", 3) + b"{}",
    struct.pack("<Q", 100_000_001) + b"{}", struct.pack("<Q", 2**64 - 1) + b"{}",
    _file({}), _file(b" {}"), _file(b"{}   "), _file(b"{}\t\n\r"), _file(b"{}\x00"), _file(b"{}\x0c"),
    _file(b"\xef\xbb\xbf{}"), _file(b"[]"), _file(b"null"), _file(b'{"\xff":1}'),
    _file({"a": _entry("F32", [1], [0, 4])}, bytes(4)),
    _file({"a": _entry("F32", [1], [0, 4])}, bytes(8)),  # trailing bytes
    _file({"a": _entry("F32", [2], [0, 8])}, bytes(4)),  # truncated
    _file({"a": _entry("F32", [1], [4, 8])}, bytes(8)),  # a hole
    _file({"a": _entry("F32", [1], [0, 4]), "b": _entry("F32", [1], [0, 4])}, bytes(4)),  # overlap
    _file({f"t{i}": _entry("F32", [2], [0, 8]) for i in range(600)}, bytes(8)),  # 600 entries, one range
    _file(_F32 + b'},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', bytes(4)),  # duplicate name
    _file(_F32 + b'},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', bytes(8)),
    _file(b'{"a":{"dtype":"F32","shape":[1],"shape":[1],"data_offsets":[0,4]}}', bytes(4)),
    _file(b'{"__metadata__":{"k":"a","k":"b"}}'), _file(b'{"__metadata__":{},"__metadata__":{}}'),
    _file({"a": _entry("F32", [1.0], [0, 4])}, bytes(4)), _file({"a": _entry("F32", ["1"], [0, 4])}, bytes(4)),
    _file({"a": _entry("F32", [-1], [0, 4])}, bytes(4)), _file(b'{"a":{"dtype":"F32","shape":[-0],"data_offsets":[0,0]}}'),
    _file(b'{"a":{"dtype":"F32","shape":[1e0],"data_offsets":[0,4]}}', bytes(4)),
    _file(b'{"a":{"dtype":"F32","shape":[Infinity],"data_offsets":[0,4]}}', bytes(4)),
    _file(b'{"a":{"dtype":"F32","shape":[NaN],"data_offsets":[0,4]}}', bytes(4)),
    _file(_F32 + b',"x":1e400}}', bytes(4)), _file(_F32 + b',"x":1e-400}}', bytes(4)),
    _file(_F32 + b',"x":-' + b"1" * 300 + b"}}", bytes(4)), _file(_F32 + b',"x":' + b"1" * 400 + b"}}", bytes(4)),
    _file(_F32 + b',"x":' + b"9" * 5000 + b"}}", bytes(4)),
    _file(_F32 + b',"x":-1,"y":[true,null,{"z":"w"}]}}', bytes(4)),
    _file(_F32 + b',"x":"\\ud800"}}', bytes(4)), _file(b'{"\\udc00":1}'),
    _file(b'{"\\ud83d\\ude00":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', bytes(4)),
    _file(b'{"a\x01":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', bytes(4)),
    _file(b'{"a\x7f":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', bytes(4)),
    _file({"a": _entry("F32", [0, 2**64], [0, 0])}), _file({"a": _entry("F32", [0, 2**64 - 1], [0, 0])}),
    _file({"a": _entry("F32", [0, 2**63], [0, 0])}), _file({"a": _entry("F32", [0, 2**63 - 1], [0, 0])}),
    _file({"a": _entry("F32", [2**32, 2**32, 0], [0, 0])}), _file({"a": _entry("F32", [0, 2**32, 2**32], [0, 0])}),
    _file({"a": _entry("F64", [2**61], [0, 0])}), _file({"a": _entry("F64", [0, 2**61], [0, 0])}),
    _file({"a": _entry("F32", [1] * 64, [0, 4])}, bytes(4)), _file({"a": _entry("F32", [1] * 65, [0, 4])}, bytes(4)),
    _file({"a": _entry("F32", [], [0, 4])}, bytes(4)), _file({"a": _entry("F32", [0], [0, 0])}),
    _file({"b": _entry("F32", [0], [0, 0]), "a": _entry("F32", [1], [0, 4])}, bytes(4)),
    _file({"a": _entry("F32", [1], [0, 4]), "b": _entry("F32", [0], [4, 4])}, bytes(4)),
    _file({"a": _entry("F32", [1], [0, 4]), "b": _entry("F32", [0], [8, 8])}, bytes(4)),
    _file({"b": _entry("F32", [1], [4, 8]), "a": _entry("F32", [1], [0, 4])}, bytes(range(8))),
    _file({"a": _entry("F32", [1], [4, 0])}, bytes(4)), _file({"a": _entry("F32", [1], [0, 4, 4])}, bytes(4)),
    _file({"a": _entry("F32", [1], [2**64, 2**64 + 4])}, bytes(4)),
    _file({"a": {"dtype": "F32", "shape": [1]}}, bytes(4)), _file({"a": _entry("F32", None, [0, 4])}, bytes(4)),
    _file({"a": _entry("F32", [1], None)}, bytes(4)), _file({"a": _entry("F32", [1], {"0": 0, "1": 4})}, bytes(4)),
    _file({"a": _entry(1, [1], [0, 4])}, bytes(4)), _file({"a": _entry("f32", [1], [0, 4])}, bytes(4)),
    _file({"a": _entry("F33", [1], [0, 4])}, bytes(4)), _file({"a": _entry({"F32": None}, [1], [0, 4])}, bytes(4)),
    _file({"a": _entry({"F32": []}, [1], [0, 4])}, bytes(4)), _file({"a": ["F32", [1], [0, 4]]}, bytes(4)),
    _file({"a": ["F32", [1], [0, 4], 1]}, bytes(4)), _file({"a": []}), _file({"a": 1}), _file({"x": "y"}),
    _file({"__metadata__": None}), _file({"__metadata__": {"k": 1}}), _file({"__metadata__": {"k": {"a": "b"}}}),
    _file({"__metadata__": []}), _file({"__metadata__": "x"}), _file({"__metadata__": _entry("F32", [1], [0, 4])}, bytes(4)),
    _file({"__metadata__": {"format": "pt", "k": "\u00e9"}, "a": _entry("F16", [2, 2], [0, 8])}, bytes(range(8))),
    _file({"a": _entry("BOOL", [2], [0, 2])}, b"\x02\x00"), _file({"a": _entry("BF16", [2], [0, 4])}, b"\x80\x7f\xc0\x7f"),
    _file({"a": _entry("C64", [1], [0, 8])}, bytes(8)), _file({"a": _entry("U64", [1], [0, 8])}, b"\xff" * 8),
    _file({"a": _entry("F4", [1], [0, 1])}, bytes(1)), _file({"a": _entry("F4", [2], [0, 1])}, bytes(1)),
    _file({"a": _entry("F6_E2M3", [4], [0, 3])}, bytes(3)), _file({"a": _entry("F8_E4M3", [1], [0, 1])}, bytes(1)),
    _file({"": _entry("I64", [1], [0, 8])}, bytes(8)),
    *[_file(b'{"__x__":' + b"[" * d + b"]" * d + b"}") for d in (126, 127, 128, 2000)],
    *[_file(_F32 + b',"x":' + b"[" * d + b"]" * d + b"}}", bytes(4)) for d in (125, 126, 127, 5000)],
]


def _reference(raw: bytes) -> list[tuple[str, str, list[int], bytes]] | None:
    try:
        return [(n, t["dtype"], t["shape"], bytes(t["data"])) for n, t in safetensors.deserialize(raw)]
    except Exception:  # the reference refuses with SafetensorError, or a ValueError of its binding
        return None


def _duplicate_keys(raw: bytes) -> bool:
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({k for k, _ in pairs}) != len(pairs):
            raise KeyError("duplicate")
        return dict(pairs)

    n = int.from_bytes(raw[:8], "little")
    try:
        json.loads(raw[8:8 + n], object_pairs_hook=hook)
    except KeyError:
        return True
    return False


def _deviation(raw: bytes, tensors: list[tuple[str, str, list[int], bytes]]) -> str | None:
    """Why deferral may refuse a file the reference accepts (a rule of the spec, a NumPy limit)."""
    if raw[8:9] != b"{":
        return "header not starting with '{'"
    if _duplicate_keys(raw):
        return "duplicate key"
    for _, code, shape, _ in tensors:
        if code in _NUMPY_LESS:
            return "dtype without a NumPy type"
        try:
            np.broadcast_to(np.empty((), f"u{DTYPES[code][0] // 8}"), shape)
        except ValueError:  # more than 64 dimensions, or sizes past NumPy's index range
            return "shape NumPy cannot hold"
    return None


def _compare(raw: bytes, path: Path, counts: Counter[str]) -> None:
    path.write_bytes(raw)
    expected = _reference(raw)
    try:
        arrays, _ = read_safetensors(path)
    except CheckpointError as exc:
        assert str(path) in str(exc), exc
        if expected is None:
            counts["refused by both"] += 1
            return
        reason = _deviation(raw, expected)
        assert reason is not None, f"deferral refused a file the reference reads: {raw[:300]!r}\n{exc}"
        counts[f"accepted by the reference, refused by deferral: {reason}"] += 1
        return
    assert expected is not None, f"deferral accepted a file the reference refuses: {raw[:300]!r}"
    got = [(n, dtype, list(a.shape), a.astype(a.dtype.newbyteorder("<")).tobytes()) for n, (dtype, a) in arrays.items()]
    names = {"bfloat16": "BF16"} | {name: code for code, (_, name) in DTYPES.items() if name}
    assert sorted((n, names[d], s, b) for n, d, s, b in got) == sorted(expected), raw[:300]
    counts["accepted by both, same tensors"] += 1


# -- generated files: a valid layout, then zero or more mutations of the header or the bytes --

_CODES = sorted(DTYPES) + sorted(c for c in DTYPES if c not in _NUMPY_LESS) * 2 + ["F33", "f32"]
_MUTATIONS = ("none", "shift", "swap", "resize", "trailing", "truncate", "float", "negative", "string",
              "huge", "drop", "extra", "metadata", "sequence", "duplicate", "nan", "space", "byte", "cut",
              "dims")


@st.composite
def generated(draw: Any) -> bytes:
    n = draw(st.integers(0, 4))
    names = draw(st.lists(st.text("abc.é_\u2603", max_size=4), min_size=n, max_size=n, unique=True))
    pairs: list[list[Any]] = []
    offset = 0
    for name in names:
        code = draw(st.sampled_from(_CODES))
        shape = draw(st.lists(st.integers(0, 3), max_size=3))
        bits = DTYPES.get(code, (32, None))[0]
        size = int(np.prod(shape, dtype=np.int64)) * bits // 8
        pairs.append([name, _entry(code, shape, [offset, offset + size])])
        offset += size
    order = draw(st.permutations(range(n)))
    pairs = [pairs[i] for i in order]
    data = draw(st.binary(min_size=offset, max_size=offset))
    metadata = draw(st.none() | st.dictionaries(st.text("xyz", max_size=2), st.text("ab", max_size=2), max_size=2))
    if metadata is not None:
        pairs.insert(0, ["__metadata__", metadata])
    for mutation in draw(st.lists(st.sampled_from(_MUTATIONS), max_size=2)):
        data = _mutate(draw, mutation, pairs, data)
    blob = ("{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in pairs) + "}").encode()
    if draw(st.booleans()):
        blob += b" " * (-len(blob) % 8)
    raw = len(blob).to_bytes(8, "little") + blob + data
    if draw(st.integers(0, 9)) == 0:
        at = draw(st.integers(0, max(0, len(raw) - 1)))
        raw = raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at + 1:]
    return raw


def _tensor(draw: Any, pairs: list[list[Any]]) -> dict[str, Any] | None:
    tensors = [v for k, v in pairs if k != "__metadata__" and isinstance(v, dict) and len(v) == 3]
    return draw(st.sampled_from(tensors)) if tensors else None


def _mutate(draw: Any, mutation: str, pairs: list[list[Any]], data: bytes) -> bytes:
    entry = _tensor(draw, pairs)
    if mutation == "trailing":
        return data + draw(st.binary(min_size=1, max_size=8))
    if mutation == "cut":
        return data[:draw(st.integers(0, len(data)))]
    if mutation == "metadata":
        pairs.insert(0, ["__metadata__", draw(st.sampled_from([{"k": 1}, [], "x", {"k": None}, None, {}]))])
    elif mutation == "duplicate" and pairs:
        pairs.append(list(draw(st.sampled_from(pairs))))
    elif mutation == "space":
        pairs.insert(0, [" ", draw(st.sampled_from([1, None, []]))])
    elif entry is not None:
        _mutate_entry(draw, mutation, entry)
    return data


def _mutate_entry(draw: Any, mutation: str, entry: dict[str, Any]) -> None:
    offsets, shape = entry["data_offsets"], entry["shape"]
    if mutation == "shift":
        delta = draw(st.integers(-8, 8))
        entry["data_offsets"] = [offsets[0] + delta, offsets[1] + delta]
    elif mutation == "swap":
        entry["data_offsets"] = [offsets[1], offsets[0]]
    elif mutation == "resize":
        entry["data_offsets"] = [offsets[0], offsets[1] + draw(st.integers(-4, 4))]
    elif mutation in ("float", "negative", "string", "huge", "nan") and shape:
        value = {"float": 1.0, "negative": -1, "string": "1", "huge": draw(st.sampled_from([2**63, 2**64 - 1, 2**64])),
                 "nan": float("inf")}[mutation]
        shape[draw(st.integers(0, len(shape) - 1))] = value
    elif mutation == "drop":
        del entry[draw(st.sampled_from(sorted(entry)))]
    elif mutation == "extra":
        entry[draw(st.sampled_from(["x", "dtype2"]))] = draw(st.sampled_from([1, -1, [[]], "s", None, 1.5]))
    elif mutation == "sequence" and isinstance(entry["dtype"], str):
        entry["dtype"] = {entry["dtype"]: None}
    elif mutation == "dims":
        entry["shape"] = shape + [1] * draw(st.sampled_from([61, 62, 70]))


def test_the_corpus_agrees_with_the_reference_reader(tmp_path: Path) -> None:
    counts: Counter[str] = Counter()
    path = tmp_path / "corpus.safetensors"
    for raw in HAND_MADE:
        _compare(raw, path, counts)
    hand_made = sum(counts.values())

    @hypothesis.settings(max_examples=1100, deadline=None, derandomize=True, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(generated())
    def check(raw: bytes) -> None:
        _compare(raw, path, counts)

    check()
    total = sum(counts.values())
    report = f"{total} files ({hand_made} hand-made): " + "; ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
    print(report)
    assert total >= 1000, report
    assert counts["refused by both"] >= 200 and counts["accepted by both, same tensors"] >= 200, report
