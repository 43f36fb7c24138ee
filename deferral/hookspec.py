"""The contract a backend plugin implements.

A backend is a module (or any object) with functions marked ``@deferral.hookimpl`` whose
names and arguments match the specifications below. It is registered through an entry point
in the ``deferral.backends`` group of its distribution::

    [project.entry-points."deferral.backends"]
    mybackend = "my_package.deferral_plugin"

deferral gives every loaded backend its own :class:`pluggy.PluginManager`, so each hook below
is answered by exactly one backend. Hooks are called for discovery, allocation,
materialization and conversion, never per operation: the op namespace returned by
:func:`deferral_ops` is resolved once and called directly by every forward pass.

A plugin module must not import its framework at import time (import it inside the hooks):
``deferral.available_backends()`` loads plugin modules to read their
:class:`BackendInfo`, and must import no framework.

Only :func:`deferral_backend_info`, :func:`deferral_ops`, :func:`deferral_is_native`,
:func:`deferral_to_native`, :func:`deferral_to_numpy` and :func:`deferral_parameter_from_numpy`
are required; :func:`deferral_materialize` and :func:`deferral_canonical_device` have
defaults in the core, and :func:`deferral_native` (the framework's own model object) and
:func:`deferral_materialize_native` (filling it, possibly sharded) and :func:`deferral_collective`
(arrays spread over processes) are optional. ``docs/plugins.md`` walks through a complete backend.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pluggy

from . import _fill, _progress

if TYPE_CHECKING:
    import numpy as np

    from ._regions import Region
    from .init import Recipe

__all__ = [
    "CHUNK_ELEMENTS",
    "DTYPES",
    "PROJECT",
    "BackendInfo",
    "Collective",
    "MaterializeRequest",
    "deferral_backend_info",
    "deferral_canonical_device",
    "deferral_collective",
    "deferral_is_native",
    "deferral_materialize",
    "deferral_materialize_native",
    "deferral_native",
    "deferral_ops",
    "deferral_parameter_from_numpy",
    "deferral_to_native",
    "deferral_to_numpy",
    "hookimpl",
    "hookspec",
]

#: The pluggy project name; hooks are prefixed ``deferral_``.
PROJECT = "deferral"

hookspec = pluggy.HookspecMarker(PROJECT)
#: Marker for a backend's hook implementations: ``@deferral.hookimpl``.
hookimpl = pluggy.HookimplMarker(PROJECT)

#: Elements per chunk when a backend fills a parameter piecewise (4 Mi: 16 MiB of float32).
CHUNK_ELEMENTS = 1 << 22
#: Elements whose generation costs about as much as starting the stream at a new offset
#: (:meth:`MaterializeRequest.fill_local` generates a covering span where that is cheaper).
RUN_COST = 4096
#: The widest span of global offsets :meth:`MaterializeRequest.fill_local` generates at once.
SPAN_ELEMENTS = 1 << 20


def _groups(runs: list[tuple[int, int]], span: int) -> Iterator[list[tuple[int, int]]]:
    """Consecutive runs in groups whose offsets span at most ``span`` (a longer run: alone)."""
    group: list[tuple[int, int]] = []
    for offset, length in runs:
        if group and offset + length - group[0][0] > span:
            yield group
            group = []
        group.append((offset, length))
    if group:
        yield group

#: Every floating dtype name the core knows, in the library's canonical spelling.
DTYPES = ("float16", "bfloat16", "float32", "float64")


@dataclass(frozen=True)
class BackendInfo:
    """What a backend is and what it can do; returned by :func:`deferral_backend_info`.

    Attributes:
        name: the name users select it by (``"torch"``); must equal the entry point's name.
        requires: top-level modules that must be importable for the backend to be available
            (checked with ``importlib.util.find_spec``, which imports nothing).
        install: the command that installs what is missing, shown in error messages.
        dtypes: parameter dtypes it supports, from :data:`DTYPES`.
        default_device: the device used when ``initialize()`` gives none.
        supports_cuda: whether it can place parameters on CUDA devices (tests skip on this
            capability, not on backend names).
        keeps_storage: whether re-initializing, ``set_data`` or loading a materialized
            parameter without changing its shape, dtype or device writes the new values into
            its existing storage (the backend's ``assign`` op, when the change commits) instead
            of replacing the array object, so framework objects holding it (a native model, an
            optimizer, a traced function) keep seeing the parameter.
    """

    name: str
    requires: tuple[str, ...] = ()
    install: str = ""
    dtypes: tuple[str, ...] = ("float32", "float64")
    default_device: str = "cpu"
    supports_cuda: bool = False
    keeps_storage: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MaterializeRequest:
    """Everything a backend needs to create one parameter's storage.

    The values follow the core's value recipe: :meth:`host_values` computes any slice of them
    on the host (the reference path), already rounded to ``dtype``. A backend that can
    generate on the device must produce the same bits.

    Attributes:
        name: the parameter's structural path (``"0.weight"``), for messages.
        shape: the full, known shape.
        dtype: one of :data:`DTYPES`.
        device: the canonical device string (see :func:`deferral_canonical_device`).
        trainable: whether the native object should take part in gradients.
        key: the two 64-bit words keying this parameter's Philox stream.
        recipe: the distribution, from the parameter's initializer and shape.
        region: the elements wanted, when only part of the parameter lives here (one rank's
            shard of a parameter split over a device mesh: see :mod:`deferral._regions`);
            ``None`` for the whole parameter. The local tensor has :attr:`local_shape`; its
            elements come from the runs of global offsets :meth:`batches` lists.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    device: str
    trainable: bool
    key: tuple[int, int]
    recipe: Recipe
    region: Region | None = None

    @property
    def local_shape(self) -> tuple[int, ...]:
        """The shape of the storage to fill: :attr:`shape`, or the region's local shape."""
        return self.shape if self.region is None else self.region.local_shape

    def batches(self, elements: int = CHUNK_ELEMENTS) -> Iterator[tuple[int, list[tuple[int, int]]]]:
        """``(local start, runs)`` groups of at most ``elements`` elements covering the local storage.

        Each run is ``(global flat offset, length)``; a group's runs fill consecutive local
        positions. For the whole parameter each group is one run, the same as :meth:`chunks`.
        """
        from ._regions import Region

        return (self.region or Region.full(self.shape)).batches(elements)

    def fill_local(self, out: np.ndarray) -> None:
        """Write the local elements (the region's, or all) into the flat host array ``out``.

        Runs are taken in groups spanning at most :data:`SPAN_ELEMENTS` global offsets. A long
        run is generated in place (by several threads when large). Short runs close together (a
        column shard: one run per row) are generated as the span covering their group, then
        picked out: starting the stream at a new offset costs about as much as :data:`RUN_COST`
        elements, so a span is generated whenever it wastes fewer than that per run. The
        temporaries stay below two spans.

        Raises:
            ValueError: for an ``orthogonal`` recipe on part of a parameter: the factorisation
                needs the whole matrix, which a shard must not allocate.
        """
        import numpy as np

        if self.region is None:
            self.fill_host(out)
            return
        self.require_whole_for_orthogonal()
        flat = out.reshape(-1)
        for start, runs in self.batches():
            for group in _groups(runs, SPAN_ELEMENTS):
                total = sum(length for _, length in group)
                first, last = group[0][0], group[-1][0] + group[-1][1]
                if len(group) > 1 and last - first <= total + RUN_COST * len(group):
                    span = self.host_values(first, last)
                    flat[start:start + total] = np.concatenate([span[o - first:o - first + n] for o, n in group])
                else:
                    done = start
                    for offset, length in group:
                        self.fill_host(flat[done:done + length], offset)
                        done += length
                start += total

    def require_whole_for_orthogonal(self) -> None:
        """Raise ``ValueError`` for an ``orthogonal`` recipe asked for part of a parameter."""
        if self.recipe.kind == "orthogonal" and self.region is not None and not self.region.is_full:
            from .errors import InitializerError

            raise InitializerError(
                f"parameter {self.name!r} of shape {self.shape}: an Orthogonal initializer needs "
                f"the whole matrix (a QR factorisation), but only a shard of local shape "
                f"{self.local_shape} lives on this rank, and generating the whole matrix on every "
                "rank would break the memory bound of sharded initialization. Use another "
                "initializer for this parameter, keep it replicated, or initialize it unsharded "
                "and load it as a checkpoint."
            )

    @property
    def size(self) -> int:
        """Number of elements."""
        n = 1
        for d in self.shape:
            n *= d
        return n

    def chunks(self, elements: int = CHUNK_ELEMENTS) -> Iterator[tuple[int, int]]:
        """``(start, stop)`` ranges of at most ``elements`` covering the flat parameter.

        Filling a parameter chunk by chunk from :meth:`host_values` keeps the extra host
        memory to one chunk's temporaries instead of a second full copy.
        """
        size = self.size
        for start in range(0, size, elements):
            yield start, min(start + elements, size)

    def host_values(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Flat elements ``start .. stop-1`` as a new NumPy array of the parameter's dtype.

        ``bfloat16`` has no NumPy dtype: it is returned as ``uint16`` bit patterns (the
        float32 value rounded to nearest-even once), which a backend reinterprets.
        """
        import numpy as np

        stop = self.size if stop is None else stop
        out = np.empty(max(0, stop - start), dtype=_fill.host_dtype(self.dtype))
        self.fill_host(out, start)
        return out

    def fill_host(self, out: np.ndarray, start: int = 0) -> None:
        """Write flat elements ``start .. start + out.size - 1`` into the host array ``out``.

        ``out`` must be writable and of the parameter's host dtype (``uint16`` for bfloat16).
        Large requests are generated by several threads (``deferral.set_num_threads``); the
        bits do not depend on how the work is split.
        """
        flags = out.flags
        if not (flags.writeable and flags.c_contiguous) or out.dtype != _fill.host_dtype(self.dtype):
            raise TypeError(
                f"fill_host for {self.name!r}: expected a writable, C-contiguous "
                f"{_fill.host_dtype(self.dtype)} array; received {out.dtype} "
                f"(writeable={flags.writeable}, contiguous={flags.c_contiguous})"
            )
        flat = out.reshape(-1)
        _fill.fill(self.recipe, self.key, self.shape, start, flat, self.dtype,
                   _progress.advance_elements(self.dtype))


@dataclass(frozen=True)
class Collective:
    """How the processes sharing a distributed model take part in one whole-model operation.

    Returned by :func:`deferral_collective` when some of a model's arrays are spread over
    processes (torch DTensors under FSDP2 or tensor parallelism). ``save_parameters``
    then writes one ordinary file with every process taking part, one whole parameter on the
    host at a time; ``load_parameters`` refuses such a model, saying what to do instead.

    Attributes:
        writer: whether this process writes the file (exactly one process does).
        whole: the whole value of one array as a host NumPy copy (``bfloat16`` as float32),
            gathered from every process: a collective, which every process calls for the same
            arrays in the same order.
        agree: every process calls it once with its own error message (or ``None``); it
            returns the first message any process gave (a collective), so all of them raise or
            none does.
        processes: how many processes hold the arrays (for messages).
        describe: how the arrays are spread, for messages (``"sharded over 2 processes (torch
            DTensors)"``).
        sharded_checkpoints: what saves and loads checkpoints of such a model shard by shard,
            for messages.
    """

    writer: bool
    whole: Callable[[Any], np.ndarray]
    agree: Callable[[str | None], str | None]
    processes: int = 1
    describe: str = "spread over processes"
    sharded_checkpoints: str = "the framework's distributed checkpointing"


@hookspec(firstresult=True)
def deferral_backend_info() -> BackendInfo:  # type: ignore[empty-body]
    """Describe the backend. Called when the plugin is loaded; must not import the framework.

    Example::

        @deferral.hookimpl
        def deferral_backend_info():
            return BackendInfo(name="numpy", requires=("numpy",), dtypes=("float16", "float32", "float64"))
    """


@hookspec(firstresult=True)
def deferral_ops() -> Any:
    """Return the op namespace: an object with one callable per name in ``deferral.ops.OP_NAMES``.

    Called once, when the backend is first selected; the namespace is then called directly
    by every forward pass. Each op takes and returns the backend's native arrays and
    follows the signature and semantics documented in :mod:`deferral.ops`.

    Example::

        @deferral.hookimpl
        def deferral_ops():
            from . import _ops
            return _ops
    """


@hookspec(firstresult=True)
def deferral_canonical_device(device: str | None) -> str | None:
    """Validate ``device`` and return its canonical spelling (``None`` means the default).

    Raise ``ValueError`` naming the accepted devices for one the backend cannot use. When
    unimplemented, the core accepts only ``BackendInfo.default_device``.

    Example::

        @deferral.hookimpl
        def deferral_canonical_device(device):
            return "cpu" if device in (None, "cpu") else None
    """


@hookspec(firstresult=True)
def deferral_is_native(value: Any) -> bool | None:
    """Return True when ``value`` is one of this backend's array types (no conversion needed).

    Must not import the framework to answer: look in ``sys.modules`` first.
    """


@hookspec(firstresult=True)
def deferral_to_native(value: Any, dtype: str | None, device: str) -> Any:
    """Convert a forward-pass input (a native array or a NumPy array) to a native array.

    Called for every positional argument of a model's outermost call, so keep it cheap for
    native inputs. ``dtype`` is the model's parameter dtype (``None`` keeps the input's): a
    *floating* NumPy input is cast to it, integer inputs keep their dtype, and native inputs
    are returned unchanged (as the framework itself would). NumPy inputs are placed on
    ``device``. Return ``None`` for anything that is not an array; the core then raises a
    ``TypeError`` naming the layer (for the first argument) or passes the value through.
    """


@hookspec(firstresult=True)
def deferral_to_numpy(value: Any) -> np.ndarray:  # type: ignore[empty-body]
    """Return a host NumPy copy of a native array or parameter (``bfloat16`` as ``float32``)."""


@hookspec(firstresult=True)
def deferral_parameter_from_numpy(
    array: np.ndarray, dtype: str, device: str, trainable: bool, owned: bool
) -> Any:
    """Create the backend's parameter object (e.g. ``torch.nn.Parameter``) holding ``array``.

    ``array`` is already of ``dtype`` (``uint16`` bit patterns for ``bfloat16``). Called by
    ``Parameter.set_data``, by loading and, unless :func:`deferral_materialize` is
    implemented, by materialization with the full host values.

    ``owned`` is True when the core hands over an array it has just made and that nothing else
    refers to (read from a checkpoint, generated, converted by ``set_data``): a backend that
    can should then make ``array``'s memory the storage instead of copying it, so loading
    needs no second buffer. ``array`` is then C-contiguous, writable and, when it is the
    reader's, aligned to ``deferral._fill.ALIGN`` bytes. When False the array may be the
    user's: the backend must copy it. An implementation may leave the argument out (pluggy
    passes only the arguments it names): it then always copies.
    """


@hookspec(firstresult=True)
def deferral_materialize(request: MaterializeRequest) -> Any:
    """Create a parameter's storage with the values the recipe gives.

    Optional: the default computes ``request.host_values()`` and calls
    :func:`deferral_parameter_from_numpy`. A backend implements it to allocate on the device
    and fill in chunks, or to generate natively, as long as the bits are the same.
    """


@hookspec(firstresult=True)
def deferral_native(block: Any) -> Any:
    """Return the framework's own model object for ``block``, a model bound to this backend.

    Optional: a backend without it has no native container, and :func:`deferral.native`
    says so. Called once per model by :func:`deferral.native` (which caches the result on
    the block), with every parameter either materialized or deferred as the model stands.
    The object must share storage with the model (no copies): training either one changes
    both. The torch backend returns a ``torch.nn.Module`` tree mirroring the block tree, the
    TensorFlow backend a ``keras.Model``, the JAX backend a ``flax.nnx.Module``, the NumPy
    backend the block itself.

    Example::

        @deferral.hookimpl
        def deferral_native(block):
            from my_package._module import NativeModule

            return NativeModule(block)
    """


@hookspec(firstresult=True)
def deferral_collective(values: list[Any]) -> Collective | None:
    """Return how the processes holding ``values`` cooperate, when any of them is spread over
    processes; ``None`` when every value is whole in this process.

    Optional (without it every array is taken to be whole). Called once per
    ``save_parameters`` and ``load_parameters`` call with the model's native arrays, never
    in a forward pass; it must not communicate.

    Example::

        @deferral.hookimpl
        def deferral_collective(values):
            if not any(isinstance(v, MyShardedArray) for v in values):
                return None
            return Collective(writer=my_rank() == 0, whole=gather_to_host, agree=first_error)
    """


@hookspec(firstresult=True)
def deferral_materialize_native(native: Any, requests: dict[str, MaterializeRequest]) -> Any:
    """Give the framework model ``native`` its storage and initial values, in place.

    Optional: called by :func:`deferral.materialize` for a framework object (a
    ``torch.nn.Module`` mirroring a deferral model, possibly sharded over a device mesh).
    ``requests`` maps every parameter's and buffer's structural path to its request (on the
    target device, ``region`` unset); the backend allocates each tensor's local storage and
    fills exactly the elements that live on this process (its shard, at their global flat
    offsets: set ``region`` and fill from :meth:`MaterializeRequest.batches`), so nothing is
    broadcast or gathered. Return ``native`` (any non-``None`` value).

    Example::

        @deferral.hookimpl
        def deferral_materialize_native(native, requests):
            for name, tensor in native.state_dict().items():
                fill_my_tensor(tensor, requests[name])
            return native
    """
