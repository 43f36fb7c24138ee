"""Saving a model's parameters to safetensors files and loading files or mappings into a model.

Loading is all-or-nothing: every name, shape and dtype is checked against the model before
any value is read, every problem is reported together, and the values are then put in place
inside one :func:`~deferral.parameter.transaction`, so a failure (the file changing while it
is read, an interrupt) leaves the model as it was. The file format itself is checked by
:mod:`deferral._safetensors_format`, read by :mod:`deferral._safetensors_read` and written by
:mod:`deferral._safetensors_write`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._dtypes import FLOATING, float32_to_bfloat16_bits
from ._lifecycle import checkpoint
from ._safetensors_read import SafetensorsReader
from ._safetensors_write import write_safetensors
from ._version import __version__
from .errors import CheckpointError, DeferredInitializationError
from .parameter import Intent, Parameter, transaction
from .random import SPEC_VERSION

if TYPE_CHECKING:
    import numpy as np

    from .nn._block import Block

__all__ = ["Source", "file_metadata", "load_into", "load_parameters", "save_parameters", "to_host"]


@dataclass(frozen=True)
class Source:
    """What a file or mapping holds under one name, known before its values are read.

    ``dtype`` is deferral's name (``"int64"``, ``"bfloat16"``...) or ``None`` with ``problem``
    saying why the values cannot be read.
    """

    dtype: str | None
    shape: tuple[int, ...]
    problem: str | None = None


@dataclass(frozen=True)
class _Step:
    name: str
    param: Parameter
    shape: tuple[int, ...]
    intent: Intent | None


def to_host(array: Any, dtype: str) -> np.ndarray:
    """Values as the bytes a file stores for ``dtype``: little-endian, bfloat16 as uint16 bits."""
    import numpy as np

    array = np.asarray(array)
    if dtype == "bfloat16":
        return float32_to_bfloat16_bits(array.astype(np.float32))
    return np.asarray(array, dtype=np.dtype(dtype), order="C")


def save_parameters(net: Block, path: str | os.PathLike[str]) -> None:
    """Write every parameter of ``net`` to ``path`` as a safetensors file, atomically.

    Tensor names are the structural names of ``collect_params()``; the metadata records
    ``format=deferral``, the value-spec version, the deferral version, and each parameter's
    seed and backend (as JSON strings).

    Raises:
        DeferredInitializationError: if a parameter is not materialized yet.
        CheckpointError: if the file cannot be written (nothing is left behind).
    """
    from . import registry

    params = net.collect_params()
    tensors: dict[str, tuple[str, np.ndarray]] = {}
    for name, param in params.items():
        if not param.initialized:
            raise DeferredInitializationError(
                f"save_parameters: parameter {name!r} is {param.state}; run one forward pass (or "
                "infer_shape + initialize) so every parameter exists before saving."
            )
        host = registry.load_backend(param.backend or registry.get_backend()).to_numpy(param.data())
        tensors[name] = (param.dtype, to_host(host, param.dtype))
    write_safetensors(path, tensors, file_metadata(params))


def file_metadata(params: Mapping[str, Parameter]) -> dict[str, str]:
    """The metadata of a deferral file holding ``params``: format, versions, seeds, backends."""
    return {
        "format": "deferral",
        "deferral_version": __version__,
        "spec_version": str(SPEC_VERSION),
        "seeds": json.dumps({n: p.seed for n, p in params.items()}),
        "backends": json.dumps({n: p.backend for n, p in params.items()}),
    }


def _dtype_problem(name: str, param: Parameter, dtype: str, source: str) -> str | None:
    from . import registry

    if dtype not in FLOATING:
        return (f"{name}: {source} holds {dtype} values, the parameter is floating point "
                f"(convert the tensor to one of {', '.join(FLOATING)} first)")
    intent = param._intent
    backend = registry.load_backend(intent.backend if intent else registry.get_backend())
    if dtype not in backend.info.dtypes:
        return (f"{name}: dtype {dtype} in {source}, which backend {backend.name!r} does not support "
                f"(it has {', '.join(backend.info.dtypes)}): initialize the model on a backend that has "
                f"{dtype} first (net.initialize(backend=..., dtype={dtype!r})), or convert the tensor")
    if intent is not None and intent.dtype != dtype:
        return (f"{name}: dtype {dtype} in {source}, the model was initialized with {intent.dtype} "
                f"(initialize(dtype={dtype!r}, force_reinit=True) first, or convert the file)")
    return None


def _check(name: str, param: Parameter, src: Source, source: str) -> str | None:
    """What keeps ``src`` from being loaded into ``param``, or ``None``."""
    if src.dtype is None:
        return src.problem
    shape = src.shape
    if len(shape) != len(param.shape) or any(k not in (-1, s) for k, s in zip(param.shape, shape)):
        return f"{name}: shape {shape} in {source}, the model expects {param.shape} (-1 = any)"
    return _dtype_problem(name, param, src.dtype, source)


def _plan(net: Block, sources: Mapping[str, Source], allow_missing: bool, ignore_extra: bool,
          source: str, options: tuple[str, str]) -> list[_Step]:
    """The parameters to replace, or a CheckpointError listing every problem."""
    params = net.collect_params()
    problems: list[str] = []
    missing = [n for n in params if n not in sources]
    extra = [n for n in sources if n not in params]
    if missing and not allow_missing:
        problems.append(f"missing from {source}: {', '.join(missing)} (pass {options[0]} to keep their current state)")
    if extra and not ignore_extra:
        problems.append(f"not in the model: {', '.join(extra)} (pass {options[1]} to skip them)")
    steps = []
    for name, param in params.items():
        if name in sources:
            problem = _check(name, param, sources[name], source)
            if problem is None:
                steps.append(_Step(name, param, sources[name].shape, param._intent))
            else:
                problems.append(problem)
    if problems:
        raise CheckpointError(f"cannot load {source} into {net.describe()}:\n  - " + "\n  - ".join(problems))
    return steps


def load_into(net: Block, sources: Mapping[str, Source], fetch: Callable[[str], np.ndarray], *,
              allow_missing: bool = False, ignore_extra: bool = False, source: str = "the mapping",
              seeds: Mapping[str, int] | None = None,
              options: tuple[str, str] = ("allow_missing=True", "ignore_extra=True"),
              finish: Callable[[], None] | None = None, owned: bool = False) -> None:
    """Load ``sources`` into ``net``, all or nothing; ``fetch(name)`` returns one host array
    (``owned``: a new one each call, which the backend may keep as the storage).

    A deferred model is completed and materialized on the backend it is bound to (the default
    backend if it was never initialized); known dimensions and recorded dtypes must match.
    ``finish`` runs last, inside the transaction (a file's change check).

    Raises:
        CheckpointError: listing every missing, unexpected, mis-shaped or mis-typed entry; the
            model is then unchanged.
    """
    steps = _plan(net, sources, allow_missing, ignore_extra, source, options)
    with transaction():
        for step in steps:
            dtype = sources[step.name].dtype or ""
            intent = step.intent or step.param._default_intent(dtype, (seeds or {}).get(step.name, 0))
            step.param._replace(fetch(step.name), step.shape, intent, owned=owned)
            checkpoint()  # Ctrl-C lands between entries and rolls the load back
        if finish is not None:
            finish()


def _seeds(metadata: Mapping[str, str]) -> dict[str, int]:
    """The seeds a deferral file records (``{}`` for anything else: the metadata is untrusted)."""
    try:
        seeds = json.loads(metadata.get("seeds", "{}"))
    except (ValueError, RecursionError):
        return {}
    if not isinstance(seeds, dict):
        return {}
    return {k: v for k, v in seeds.items()
            if type(v) is int and 0 <= v < 2**64}


def load_parameters(net: Block, path: str | os.PathLike[str], allow_missing: bool = False,
                    ignore_extra: bool = False) -> dict[str, str]:
    """Load a safetensors file (written by :func:`save_parameters` on any backend, or by
    another tool) into ``net``, all or nothing. Returns the file's metadata.

    Raises:
        CheckpointError: naming the file and listing every problem.
    """
    with SafetensorsReader(path) as reader:
        entries = reader.header.entries
        sources = {name: Source(e.dtype, e.shape, None if e.dtype else
                                f"{name}: dtype {e.code} in {reader.where}, which deferral cannot load")
                   for name, e in entries.items()}
        load_into(net, sources, lambda name: reader.read(entries[name]), allow_missing=allow_missing,
                  ignore_extra=ignore_extra, source=reader.where, seeds=_seeds(reader.header.metadata),
                  finish=reader.check_unchanged, owned=True)
        return reader.header.metadata
