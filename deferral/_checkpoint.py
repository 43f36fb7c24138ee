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

    from .hookspec import Collective
    from .nn._block import Block
    from .registry import Backend

__all__ = ["Source", "file_metadata", "load_into", "load_parameters", "save_parameters", "save_values", "to_host"]


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
    seed and backend (as JSON strings). A model whose parameters are spread over processes
    (sharded with FSDP2 or tensor parallelism) is saved by every process together: see
    :func:`save_values`.

    Raises:
        DeferredInitializationError: if a parameter is not materialized yet, or has no values
            (the ``meta`` device).
        CheckpointError: if the file cannot be written (nothing is left behind).
    """
    from . import registry

    params = net.collect_params()
    for name, param in params.items():
        if not param.initialized or param.device == "meta":
            raise DeferredInitializationError(
                f"save_parameters: parameter {name!r} is "
                f"{'on the meta device (no values)' if param.initialized else param.state}; "
                f"{_WHAT_FIRST[param.initialized]} so every parameter has values before saving."
            )
    backend = registry.load_backend(next(iter(params.values())).backend or registry.get_backend()) if params else None
    save_values(path, params, {name: p.data() for name, p in params.items()}, backend)


_WHAT_FIRST = {False: "run one forward pass (or infer_shape + initialize)",
               True: "fill it first with deferral.materialize(net, device=...)"}


def save_values(path: str | os.PathLike[str], params: Mapping[str, Parameter], values: Mapping[str, Any],
                backend: Backend | None) -> None:
    """Write ``values`` (native arrays of ``backend``, named and typed as ``params``) as a deferral file.

    When the backend says some values are spread over processes
    (:func:`~deferral.hookspec.deferral_collective`), every process must call this, with the
    same names in the same order: each parameter in turn is gathered whole on the host (a
    collective), written by the one writing process and dropped, so memory holds one whole
    parameter at a time, never the model. If the writer fails, every process raises the
    same :class:`CheckpointError`.
    """
    from . import registry

    collective = None if backend is None else backend.collective(list(values.values()))
    if collective is None:
        tensors = {}
        for name, param in params.items():
            host = registry.load_backend(param.backend or registry.get_backend()).to_numpy(values[name])
            tensors[name] = (param.dtype, to_host(host, param.dtype))
        write_safetensors(path, tensors, file_metadata(params))
        return
    entries = {name: (p.dtype, _Whole(values[name], p.dtype, collective)) for name, p in params.items()}
    error: BaseException | None = None
    if collective.writer:
        try:
            write_safetensors(path, entries, file_metadata(params))  # type: ignore[arg-type]
        except BaseException as exc:  # any failure (memory, Ctrl-C): the others must not wait forever
            error = exc
    for _, entry in entries.values():  # every process gathers every parameter, in file order
        try:
            entry.gathered()
        except BaseException as exc:
            error = error or exc
    message = collective.agree(None if error is None else str(error) or type(error).__name__)
    if error is not None:
        raise error
    if message is not None:
        raise CheckpointError(f"save_parameters: the process writing {os.fspath(path)!r} failed: {message}")


class _Whole:
    """One parameter of a file written by several processes, gathered only when its bytes are written.

    :func:`write_safetensors` reads ``shape`` and ``nbytes`` for the header, then converts the
    entries with NumPy in file order, one at a time.
    """

    def __init__(self, value: Any, dtype: str, collective: Collective) -> None:
        import numpy as np

        from ._fill import host_dtype

        self.value, self.param_dtype, self.collective = value, dtype, collective
        self.shape = tuple(int(d) for d in value.shape)
        self.dtype = np.dtype(host_dtype(dtype))
        self.nbytes = self.dtype.itemsize * int(np.prod(self.shape, dtype=np.int64))
        self.done = False

    def gathered(self) -> np.ndarray | None:
        """The whole parameter's file bytes (a collective), once; ``None`` when already gathered."""
        if self.done:
            return None
        self.done = True
        return to_host(self.collective.whole(self.value), self.param_dtype)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        host = self.gathered()
        if host is None:
            raise RuntimeError("a parameter of a distributed save was gathered twice")
        return host if dtype is None else host.astype(dtype, copy=False)


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
    _refuse_distributed(net, steps, source)
    with transaction():
        for step in steps:
            dtype = sources[step.name].dtype or ""
            intent = step.intent or step.param._default_intent(dtype, (seeds or {}).get(step.name, 0))
            step.param._replace(fetch(step.name), step.shape, intent, owned=owned)
            checkpoint()  # Ctrl-C lands between entries and rolls the load back
        if finish is not None:
            finish()


def _refuse_distributed(net: Block, steps: list[_Step], source: str) -> None:
    """Refuse to load into parameters spread over processes (every process would hold the whole model)."""
    from . import registry

    held = [(s.name, s.param) for s in steps if s.param._data is not None]
    if not held:
        return
    collective = registry.load_backend(held[0][1].backend or registry.get_backend()).collective(
        [p._data for _, p in held])
    if collective is not None:
        raise CheckpointError(
            f"cannot load {source} into {net.describe()}: its parameters are {collective.describe} "
            f"({held[0][0]!r} among them), and loading would make every process hold the whole "
            "model's values until the load is complete. Load the file before sharding the model (net.load_parameters(path), "
            "then shard it), or save and load it shard by shard with "
            f"{collective.sharded_checkpoints}. Nothing was changed."
        )


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
