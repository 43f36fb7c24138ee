"""The PyTorch backend of deferral: parameters are ``torch.nn.Parameter`` on CPU or CUDA.

Registered through the ``deferral.backends`` entry point ``torch``. Importing this module
imports no framework (``deferral.available_backends()`` loads it to read its
:class:`~deferral.hookspec.BackendInfo`); torch is imported inside the hooks, when the backend
is selected for a model. The values come from the core's recipe, with the NumPy backend's bits
on every device: on the CPU the reference path writes into a NumPy array that becomes the tensor; on other
devices (CUDA) uniform, normal and truncated normal values are generated on the device itself
(``deferral_torch._native``), and the other kinds are computed on the host and copied in, chunk
by chunk. The environment variable ``DEFERRAL_TORCH_NATIVE`` (:data:`NATIVE_ENV`) changes where
values are generated: see :func:`native_generation`.
"""

from __future__ import annotations

import os
import re
import sys
from typing import TYPE_CHECKING, Any

import deferral
from deferral._fill import aligned_empty, host_dtype
from deferral.hookspec import BackendInfo, Collective, MaterializeRequest

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = [
    "CHUNK_ELEMENTS",
    "NATIVE_ENV",
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
    "fill_tensor",
    "native_generation",
]

_INFO = BackendInfo(
    name="torch",
    requires=("torch",),
    install='pip install "deferral[torch]"',
    dtypes=("float16", "bfloat16", "float32", "float64"),
    default_device="cpu",
    supports_cuda=True,
    # force_reinit / set_data / load_parameters write into the existing tensors, as torch's own
    # reset_parameters() does: optimizers and modules holding them keep training the model.
    keeps_storage=True,
)

#: Elements computed on the host and copied to the device per step of materialization; the
#: extra memory materialization needs is one such chunk, never a second copy of the parameter.
CHUNK_ELEMENTS = 1 << 22

#: Environment variable choosing where uniform, normal and truncated normal values are
#: generated: unset, empty or ``auto`` (on the device for every device but the CPU), ``1``
#: (on the device everywhere, the CPU included: the tests use it to run the device code on the
#: CPU) or ``0`` (never: host reference values copied in, the behaviour before native
#: generation). The bits are the same in every mode.
NATIVE_ENV = "DEFERRAL_TORCH_NATIVE"

#: Recipe kinds that can be generated on the device (``deferral_torch._native.NATIVE_KINDS``,
#: repeated here so that deciding imports no torch).
_NATIVE_KINDS = frozenset({"uniform", "normal", "truncated_normal"})

_DEVICE = re.compile(r"(cpu|cuda|meta)(?::(\d+))?")
_ACCEPTED = ("'cpu', 'cuda' (the current CUDA device), 'cuda:N' or 'meta' (shapes only, nothing "
             "allocated; also as a torch.device)")


@deferral.hookimpl
def deferral_backend_info() -> BackendInfo:
    """Describe the backend (imports nothing)."""
    return _INFO


@deferral.hookimpl
def deferral_native(block: Any) -> torch.nn.Module:
    """The model as a ``torch.nn.Module`` tree sharing its tensors (see ``deferral_torch._module``)."""
    from ._module import native_module

    return native_module(block)


@deferral.hookimpl
def deferral_ops() -> Any:
    """Return the torch op namespace (imports torch)."""
    from . import _ops

    return _ops


@deferral.hookimpl
def deferral_is_native(value: Any) -> bool:
    """True for a ``torch.Tensor`` (``nn.Parameter`` included); never imports torch."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


@deferral.hookimpl
def deferral_canonical_device(device: Any) -> str:
    """Validate a device and return ``"cpu"``, ``"cuda:N"`` or ``"meta"`` (``None`` means ``"cpu"``).

    Accepts ``"cpu"``, ``"cuda"`` (the current CUDA device), ``"cuda:N"``, ``"meta"`` (parameters
    with a shape and no storage, filled later by ``deferral.materialize``) and the same as a
    ``torch.device``.

    Raises:
        ValueError: for any other spelling (listing the accepted ones), or a CUDA device this
            process cannot use: CUDA unavailable, or an index past the last device.
    """
    if device is None:
        return "cpu"
    text = device if isinstance(device, str) else str(device)
    match = _DEVICE.fullmatch(text.strip())
    if match is None or (match[1] == "cpu" and match[2] is not None):
        raise ValueError(
            f"the torch backend cannot place parameters on device {device!r}. "
            f"Use one of: {_ACCEPTED}."
        )
    if match[1] in ("cpu", "meta"):  # FSDP2 names its meta tensors' device 'meta:0'
        return match[1]
    return _cuda_device(text, None if match[2] is None else int(match[2]))


def _cuda_device(asked: str, index: int | None) -> str:
    """Check that CUDA device ``index`` (``None``: the current one) exists; return ``cuda:N``."""
    import torch

    if not torch.cuda.is_available():
        raise ValueError(
            f"device {asked!r} was requested, but CUDA is not available to PyTorch "
            f"{torch.__version__} in this process: torch.cuda.is_available() is False, so no "
            f"CUDA device exists here (built with CUDA: {torch.version.cuda or 'no'}); only 'cpu' "
            "does. Use device='cpu', or run on a "
            "machine with an NVIDIA GPU and a CUDA build of PyTorch."
        )
    count = torch.cuda.device_count()
    if index is None:
        index = torch.cuda.current_device()
    if index >= count:
        existing = ", ".join(f"cuda:{i}" for i in range(count))
        raise ValueError(
            f"device {asked!r} does not exist: this process sees {count} CUDA device(s) "
            f"({existing}). Use one of those, or 'cuda' for the current device."
        )
    return f"cuda:{index}"


def _torch_dtype(dtype: str) -> torch.dtype:
    import torch

    return getattr(torch, dtype)  # float16, bfloat16, float32, float64 are torch's names too


def _host_tensor(array: np.ndarray, dtype: str) -> torch.Tensor:
    """Wrap host values already of ``dtype`` (uint16 bits for bfloat16) as a CPU tensor.

    Shares memory with ``array`` when it is writable, contiguous and native-endian; copies
    otherwise (``torch.from_numpy`` rejects or warns about the rest).
    """
    import numpy as np

    from deferral._dtypes import round_to

    wanted = np.dtype(np.uint16 if dtype == "bfloat16" else dtype)
    if array.dtype != wanted:
        array = round_to(np.asarray(array, dtype=np.float64), dtype)
    if not (array.flags.writeable and array.flags.c_contiguous):
        array = np.array(array, order="C")
    return _adopt(array, dtype)


def _adopt(array: np.ndarray, dtype: str) -> torch.Tensor:
    """The CPU tensor sharing the memory of ``array``: writable, C-contiguous, of ``dtype``'s
    host dtype (uint16 bits for bfloat16)."""
    import torch

    if dtype == "bfloat16":
        return torch.from_numpy(array.view("int16")).view(torch.bfloat16)
    return torch.from_numpy(array)


def native_generation(device_type: str, kind: str) -> bool:
    """Whether values of recipe ``kind`` for a ``device_type`` tensor are generated on the device.

    Only ``uniform``, ``normal`` and ``truncated_normal`` ever are; ``constant`` and
    ``orthogonal`` always come from the host. For those kinds the answer follows
    :data:`NATIVE_ENV` (read at each call): by default every device but the CPU (where the
    multithreaded reference path is faster), with ``DEFERRAL_TORCH_NATIVE=1`` every device,
    with ``DEFERRAL_TORCH_NATIVE=0`` none.

    Raises:
        ValueError: when :data:`NATIVE_ENV` holds anything else.

    Example:
        >>> native_generation("cuda", "orthogonal")  # a QR factorisation: always on the host
        False
    """
    mode = os.environ.get(NATIVE_ENV)
    if not mode:  # unset: the common case, decided without string work
        return kind in _NATIVE_KINDS and device_type != "cpu"
    mode = mode.strip().lower()
    if mode not in ("", "auto", "0", "1"):
        raise ValueError(
            f"{NATIVE_ENV} must be 0 (values from the host), 1 (generated on every device, the CPU "
            f"included) or auto (generated on devices other than the CPU); received {mode!r}"
        )
    if kind not in _NATIVE_KINDS or mode == "0":
        return False
    return mode == "1" or device_type != "cpu"


@deferral.hookimpl
def deferral_materialize(request: MaterializeRequest) -> torch.nn.Parameter:
    """Allocate the parameter (or its ``request.region``) on its device with the reference values.

    On the CPU the reference path writes into an aligned NumPy array
    (:func:`deferral._fill.aligned_empty`) that becomes the tensor's storage through
    ``torch.from_numpy``: no second copy, and NumPy's huge-page allocation makes first writing
    the memory several times cheaper than into ``torch.empty``'s. On another device the tensor
    is created with ``torch.empty`` there and filled by :func:`fill_tensor`. On the ``meta``
    device nothing is allocated and no value is made: the parameter only has its shape and
    dtype (``deferral.materialize`` fills it later).
    """
    import torch

    device_type = "cpu" if request.device == "cpu" else request.device.split(":")[0]
    if device_type == "cpu" and not native_generation("cpu", request.recipe.kind):
        host = aligned_empty(request.local_shape, host_dtype(request.dtype))
        request.fill_local(host)
        return torch.nn.Parameter(_adopt(host, request.dtype), requires_grad=request.trainable)
    values = torch.empty(request.local_shape, dtype=_torch_dtype(request.dtype), device=request.device)
    fill_tensor(values, request)
    return torch.nn.Parameter(values, requires_grad=request.trainable)


def fill_tensor(values: torch.Tensor, request: MaterializeRequest) -> None:
    """Write the values of ``request`` (the whole parameter, or its region) into ``values``.

    ``values`` is a contiguous tensor of ``request.local_shape`` and dtype, on any device.
    Where :func:`native_generation` says so (by default: uniform, normal and truncated normal
    on any device but the CPU), the values are generated on the device in bounded chunks by
    ``deferral_torch._native.fill`` (a shard's short runs in one vectorized pass per chunk).
    Otherwise, on the CPU the reference path writes straight into the tensor's memory (no
    second copy); on another device each chunk of :data:`CHUNK_ELEMENTS` values is computed
    on the host and copied in, so the extra memory is one chunk. Every way gives the NumPy
    backend's bits. A ``meta`` tensor is left as it is.
    """
    import numpy as np
    import torch

    if values.device.type == "meta":
        return
    if native_generation(values.device.type, request.recipe.kind):
        from . import _native

        _native.fill(values, request)
    elif values.device.type == "cpu":
        host = values.view(torch.int16).numpy().view(np.uint16) if request.dtype == "bfloat16" else values.numpy()
        request.fill_local(host)
    else:
        _copy_in_chunks(values, request)


def _copy_in_chunks(values: torch.Tensor, request: MaterializeRequest) -> None:
    """Fill ``values`` (any device) chunk by chunk from the host reference."""
    import numpy as np

    request.require_whole_for_orthogonal()
    flat = values.view(-1)
    for start, runs in request.batches(CHUNK_ELEMENTS):
        parts = [request.host_values(offset, offset + length) for offset, length in runs]
        host = parts[0] if len(parts) == 1 else np.concatenate(parts)
        flat[start:start + host.size].copy_(_host_tensor(host, request.dtype))


@deferral.hookimpl
def deferral_materialize_native(native: Any, requests: dict[str, MaterializeRequest]) -> Any:
    """Allocate a ``torch.nn.Module``'s local storage and fill each rank's shards in place.

    Plain tensors get the whole parameter; a DTensor (FSDP2, tensor parallelism, 2-D meshes,
    FSDP2's strided sharding over TP) gets exactly the elements this rank holds
    (``deferral_torch._distributed``).
    """
    from ._distributed import materialize_module

    return materialize_module(native, requests)


@deferral.hookimpl
def deferral_parameter_from_numpy(
    array: np.ndarray, dtype: str, device: str, trainable: bool, owned: bool
) -> torch.nn.Parameter:
    """A ``torch.nn.Parameter`` on ``device`` holding ``array``'s values.

    ``array`` is of ``dtype`` (``uint16`` bit patterns for bfloat16); other floating arrays
    are rounded to it once, the way the core rounds reference values. On the CPU an array the
    core gives away (``owned``) becomes the parameter's memory; anything else is copied.
    """
    import numpy as np

    host = _host_tensor(np.asarray(array), dtype)
    return _parameter(host.to(device=device, copy=not owned), trainable)


def _parameter(values: torch.Tensor, trainable: bool) -> torch.nn.Parameter:
    import torch

    return torch.nn.Parameter(values, requires_grad=trainable)


@deferral.hookimpl
def deferral_to_native(value: Any, dtype: str | None, device: str) -> torch.Tensor | None:
    """Return a tensor for a forward-pass input, or ``None`` for a non-array.

    A ``torch.Tensor`` (or a tensor-like object whose class implements ``__torch_function__``,
    which torch's functions accept) is returned unchanged. A NumPy array goes to ``device``; a
    floating one is cast to ``dtype`` (the model's), integer and boolean ones keep their dtype.
    """
    # A tensor (or a tensor-like that torch's functions accept through the same protocol) is
    # taken as it is. Tested on its class rather than with isinstance(value, torch.Tensor):
    # the op dispatch reads type(value), and torch.compile would guard, in Python on every
    # call, that two paths to torch.Tensor stay one class.
    if getattr(type(value), "__torch_function__", None) is not None:
        return value
    import numpy as np

    if not isinstance(value, np.ndarray):
        return None
    import torch

    if not (value.flags.writeable and value.flags.c_contiguous and value.dtype.isnative):
        value = np.array(value, order="C", dtype=value.dtype.newbyteorder("="))
    tensor = torch.from_numpy(value)
    target = _torch_dtype(dtype) if dtype is not None and value.dtype.kind == "f" else tensor.dtype
    return tensor.to(device=device, dtype=target)


@deferral.hookimpl
def deferral_collective(values: list[Any]) -> Collective | None:
    """For DTensors (FSDP2, tensor parallelism): the ranks of the default process group save
    together, rank 0 writing (``deferral_torch._distributed.collective``)."""
    from ._distributed import collective

    return collective(values)


@deferral.hookimpl
def deferral_to_numpy(value: Any) -> np.ndarray:
    """A detached host NumPy copy of a tensor or parameter; bfloat16 becomes float32.

    A DTensor (a parameter sharded with FSDP2 or tensor parallelism) is made whole first
    with ``full_tensor()``: a collective, so every rank of its mesh must ask for it (as
    ``net.get_weights()`` on every rank does), in the same order.
    """
    import numpy as np
    import torch

    if not isinstance(value, torch.Tensor):
        return np.array(value, copy=True)
    tensor_module = sys.modules.get("torch.distributed.tensor")
    if tensor_module is not None and isinstance(value, tensor_module.DTensor):
        value = value.full_tensor()
    if value.is_meta:
        raise deferral.DeferredInitializationError(
            f"a tensor of shape {tuple(value.shape)} is on the meta device: it has no values. "
            "Fill the model first with deferral.materialize(net, device='cpu') (or 'cuda')."
        )
    tensor = value.detach()
    dtype = torch.float32 if tensor.dtype == torch.bfloat16 else tensor.dtype
    return tensor.to(device="cpu", dtype=dtype, copy=True).resolve_conj().resolve_neg().numpy()
