"""Saving and loading parameters in the safetensors format, and loading from mappings.

The file is an 8-byte little-endian header length, a JSON header (each tensor's dtype,
shape and byte range, plus string metadata) and the raw little-endian bytes. Reading it
parses JSON and copies bytes: nothing is unpickled or executed. Loading is all-or-nothing:
every problem is collected first, reported together, and the model is changed only when
there are none.
"""

from __future__ import annotations

import json
import mmap
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._dtypes import ITEMSIZE, float32_to_bfloat16_bits
from ._version import __version__
from .errors import CheckpointError, DeferredInitializationError
from .parameter import Parameter, transaction
from .random import SPEC_VERSION

if TYPE_CHECKING:
    import numpy as np

    from .nn._block import Block

__all__ = ["load_arrays", "load_parameters", "read_safetensors", "save_parameters"]

_CODES = {"float16": "F16", "bfloat16": "BF16", "float32": "F32", "float64": "F64"}
_DTYPES = {code: name for name, code in _CODES.items()}
_MAX_HEADER = 100 * 2**20


def _host(array: Any, dtype: str) -> np.ndarray:
    """A parameter's values as the bytes the file stores (bfloat16 as uint16 bits)."""
    import numpy as np

    array = np.asarray(array)
    if dtype == "bfloat16":
        return float32_to_bfloat16_bits(array.astype(np.float32))
    return np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<"))


def save_parameters(net: Block, path: str | os.PathLike[str]) -> None:
    """Write every parameter of ``net`` to ``path`` as a safetensors file.

    Tensor names are the structural names of ``collect_params()``; the metadata records
    ``format=deferral``, the value-spec version, the deferral version, and each parameter's
    seed and backend (as JSON strings). The file is written to a temporary name and renamed,
    so a crash never leaves a half-written checkpoint under ``path``.

    Raises:
        DeferredInitializationError: if a parameter is not materialized yet.
    """
    from . import registry

    params = net.collect_params()
    arrays: dict[str, np.ndarray] = {}
    for name, param in params.items():
        if not param.initialized:
            raise DeferredInitializationError(
                f"save_parameters: parameter {name!r} is {param.state}; run one forward pass (or "
                "infer_shape + initialize) so every parameter exists before saving."
            )
        arrays[name] = _host(registry.load_backend(param.backend).to_numpy(param.data()), param.dtype)
    header: dict[str, Any] = {}
    offset = 0
    for name, param in params.items():
        size = arrays[name].nbytes
        header[name] = {"dtype": _CODES[param.dtype], "shape": list(param.shape), "data_offsets": [offset, offset + size]}
        offset += size
    header["__metadata__"] = {
        "format": "deferral",
        "deferral_version": __version__,
        "spec_version": str(SPEC_VERSION),
        "seeds": json.dumps({n: p.seed for n, p in params.items()}),
        "backends": json.dumps({n: p.backend for n, p in params.items()}),
    }
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(len(blob).to_bytes(8, "little"))
        f.write(blob)
        for name in params:
            f.write(arrays[name].tobytes())
    os.replace(tmp, target)


def read_safetensors(path: str | os.PathLike[str]) -> tuple[dict[str, tuple[str, np.ndarray]], dict[str, str]]:
    """Read a safetensors file: ``({name: (dtype, host array)}, metadata)``.

    Host arrays are copies in the file's dtype (bfloat16 as uint16 bits).

    Raises:
        CheckpointError: listing every problem (truncated file, bad header, unknown dtype,
            byte ranges that do not match shapes or the file).
    """
    import numpy as np

    problems: list[str] = []
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise CheckpointError(f"cannot read {str(path)!r}: {exc}") from exc
    with open(path, "rb") as f:
        if size < 8:
            raise CheckpointError(f"{str(path)!r} is not a safetensors file: {size} bytes, fewer than the 8-byte header length")
        n = int.from_bytes(f.read(8), "little")
        if n > min(_MAX_HEADER, size - 8):
            raise CheckpointError(
                f"{str(path)!r} is truncated or not a safetensors file: its header claims {n} bytes, "
                f"but the file has {size - 8} after the length field"
            )
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{str(path)!r}: the header is not valid JSON ({exc}); the file is corrupted") from exc
        if not isinstance(header, dict):
            raise CheckpointError(f"{str(path)!r}: the header is not a JSON object; the file is corrupted")
        metadata = header.pop("__metadata__", {}) or {}
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            problems.append("__metadata__ must map strings to strings")
            metadata = {}
        buffer_size = size - 8 - n
        entries: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
        for name, entry in header.items():
            try:
                dtype = _DTYPES[entry["dtype"]]
                shape = tuple(int(d) for d in entry["shape"])
                begin, end = (int(v) for v in entry["data_offsets"])
            except (KeyError, TypeError, ValueError):
                problems.append(f"{name}: unsupported or malformed entry {entry!r} (dtypes: {', '.join(_DTYPES)})")
                continue
            expected = ITEMSIZE[dtype]
            for d in shape:
                expected *= d
            if any(d < 0 for d in shape) or not 0 <= begin <= end or end - begin != expected:
                problems.append(f"{name}: byte range [{begin}, {end}) does not hold a {dtype} tensor of shape {shape}")
            elif end > buffer_size:
                problems.append(f"{name}: byte range ends at {end}, past the end of the data ({buffer_size} bytes): the file is truncated")
            else:
                entries[name] = (dtype, shape, begin, end)
        if problems:
            raise CheckpointError(f"{str(path)!r} cannot be read:\n  - " + "\n  - ".join(problems))
        arrays: dict[str, tuple[str, np.ndarray]] = {}
        if entries:
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                for name, (dtype, shape, begin, end) in entries.items():
                    host = "<u2" if dtype == "bfloat16" else np.dtype(dtype).newbyteorder("<")
                    raw = np.frombuffer(mapped, dtype=host, count=(end - begin) // ITEMSIZE[dtype], offset=8 + n + begin)
                    arrays[name] = (dtype, raw.astype(raw.dtype.newbyteorder("="), copy=True).reshape(shape))
                    del raw
    return arrays, metadata


def load_arrays(net: Block, arrays: Mapping[str, tuple[str, np.ndarray]], allow_missing: bool = False,
                ignore_extra: bool = False, source: str = "the mapping",
                seeds: Mapping[str, int] | None = None,
                options: tuple[str, str] = ("allow_missing=True", "ignore_extra=True")) -> None:
    """Load ``{structural name: (dtype, host array)}`` into ``net``, all or nothing.

    Shapes fill unknown dimensions (a deferred model is completed and materialized on the
    backend it is bound to, or the default backend if it was never initialized); known
    dimensions and recorded dtypes must match.

    Raises:
        CheckpointError: listing every missing, unexpected, mis-shaped or mis-typed parameter;
            the model is then unchanged.
    """
    params = net.collect_params()
    problems: list[str] = []
    missing = [n for n in params if n not in arrays]
    extra = [n for n in arrays if n not in params]
    if missing and not allow_missing:
        problems.append(f"missing from {source}: {', '.join(missing)} (pass {options[0]} to keep their current state)")
    if extra and not ignore_extra:
        problems.append(f"not in the model: {', '.join(extra)} (pass {options[1]} to skip them)")
    plan: list[tuple[Parameter, Any, tuple[int, ...], Any]] = []
    for name, param in params.items():
        if name not in arrays:
            continue
        dtype, host = arrays[name]
        shape = tuple(int(d) for d in host.shape)
        if len(shape) != len(param.shape) or any(k not in (-1, s) for k, s in zip(param.shape, shape)):
            problems.append(f"{name}: shape {shape} in {source}, the model expects {param.shape} (-1 = any)")
            continue
        intent = param._intent
        if intent is not None and intent.dtype != dtype:
            problems.append(
                f"{name}: dtype {dtype} in {source}, the model was initialized with {intent.dtype} "
                f"(initialize(dtype={dtype!r}, force_reinit=True) first, or convert the file)"
            )
            continue
        plan.append((param, host, shape, intent))
    if problems:
        raise CheckpointError(f"cannot load {source} into {net.describe()}:\n  - " + "\n  - ".join(problems))
    with transaction():
        for param, host, shape, intent in plan:
            if intent is None:
                name = _name_of(params, param)
                seed = (seeds or {}).get(name)
                intent = param._default_intent(arrays[name][0], seed if isinstance(seed, int) and seed >= 0 else 0)
            param._replace(host, shape, intent)


def _name_of(params: Mapping[str, Parameter], param: Parameter) -> str:
    return next(n for n, p in params.items() if p is param)


def load_parameters(net: Block, path: str | os.PathLike[str], allow_missing: bool = False,
                    ignore_extra: bool = False) -> dict[str, str]:
    """Load a file written by :func:`save_parameters` (any backend) into ``net``. Returns the metadata."""
    arrays, metadata = read_safetensors(path)
    try:
        seeds = json.loads(metadata.get("seeds", "{}"))
    except json.JSONDecodeError:
        seeds = {}
    load_arrays(net, arrays, allow_missing, ignore_extra, source=repr(str(path)),
                seeds=seeds if isinstance(seeds, dict) else None)
    return metadata
