"""The TensorFlow backend of deferral: parameters are trainable ``tf.Variable`` objects.

Registered through the ``deferral.backends`` entry point ``tensorflow``. Importing this module
imports no TensorFlow: ``deferral.available_backends()`` loads it to read its
:class:`~deferral.hookspec.BackendInfo`. TensorFlow is imported inside the hooks, when the
backend is first selected for a model.

Values come from the core's reference path, written by :meth:`MaterializeRequest.fill_host`
straight into a host array that TensorFlow then adopts without a copy: the array is allocated
on a 64-byte boundary and handed over through DLPack (``tf.experimental.dlpack.from_dlpack``),
and the variable takes over that buffer (see :func:`_adopted`). So the values equal the NumPy
backend's and materializing needs no memory beyond the parameter itself. ``bfloat16`` arrives
as ``uint16`` bit patterns and is reinterpreted with ``tf.bitcast``.

Variables are created under ``tf.init_scope()``: a model whose first call happens inside a
``tf.function`` gets ordinary eager variables that the function captures.

Devices are spelled the TensorFlow way: ``"/CPU:0"`` (the default) or ``"/GPU:N"``; ``"cpu"``,
``"gpu"``, ``"cuda"``, ``"cuda:N"`` (any case, with or without the leading ``/`` or a
``/device:`` prefix) are accepted too.
"""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING, Any

import deferral
from deferral._dtypes import float32_to_bfloat16_bits, parameter_host
from deferral._fill import ALIGN
from deferral.hookspec import BackendInfo, MaterializeRequest

if TYPE_CHECKING:
    import numpy as np
    import tensorflow as tf

__all__ = [
    "deferral_backend_info",
    "deferral_canonical_device",
    "deferral_is_native",
    "deferral_materialize",
    "deferral_native",
    "deferral_ops",
    "deferral_parameter_from_numpy",
    "deferral_to_native",
    "deferral_to_numpy",
]

_INFO = BackendInfo(
    name="tensorflow",
    requires=("tensorflow",),
    install='pip install "deferral[tensorflow]"',
    dtypes=("float16", "bfloat16", "float32", "float64"),
    default_device="/CPU:0",
    supports_cuda=True,
    keeps_storage=True,
)

_DEVICE = re.compile(r"^/?(?:device:)?(cpu|gpu|cuda)(?::(\d+))?$", re.IGNORECASE)
_ACCEPTED = '"/CPU:0" (also "cpu", "CPU:0"), "/GPU:N" (also "gpu", "GPU:N", "cuda", "cuda:N")'

@deferral.hookimpl
def deferral_backend_info() -> BackendInfo:
    return _INFO


@deferral.hookimpl
def deferral_ops() -> Any:
    from . import _ops

    return _ops


@deferral.hookimpl
def deferral_native(block: Any) -> Any:
    """A ``keras.Model`` sharing the model's ``tf.Variable`` objects (see ``deferral_tensorflow._keras``)."""
    from ._keras import native_model

    return native_model(block)


@deferral.hookimpl
def deferral_canonical_device(device: str | None) -> str:
    """Return ``"/CPU:0"`` or ``"/GPU:N"`` for ``device`` (``None`` gives ``"/CPU:0"``).

    Imports TensorFlow only to check that a requested GPU exists.

    Raises:
        ValueError: for a spelling not in the accepted forms, a CPU other than 0, or a GPU
            that ``tf.config.list_physical_devices("GPU")`` does not list.
    """
    if device is None:
        return _INFO.default_device
    match = _DEVICE.match(str(device).strip())
    if match is None:
        raise ValueError(
            f"backend 'tensorflow' does not know the device {device!r}. Accepted forms: "
            f"{_ACCEPTED}, e.g. initialize(device='/GPU:0')."
        )
    kind, index = match.group(1).lower(), int(match.group(2) or 0)
    if kind == "cpu":
        if index != 0:
            raise ValueError(
                f"backend 'tensorflow' places parameters on one CPU device, '/CPU:0'; "
                f"received device={device!r}. Use device='/CPU:0' (or 'cpu')."
            )
        return "/CPU:0"
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if index >= len(gpus):
        found = ", ".join(f"/GPU:{i}" for i in range(len(gpus))) or "no GPU"
        raise ValueError(
            f"backend 'tensorflow': device {device!r} (/GPU:{index}) was requested, but "
            f"TensorFlow lists {found}. Use device='/CPU:0'"
            + (f" or one of {found}" if gpus else "")
            + ", or install a CUDA build of TensorFlow (pip install \"tensorflow[and-cuda]\") "
            "on a machine with an NVIDIA GPU."
        )
    return f"/GPU:{index}"


@deferral.hookimpl
def deferral_is_native(value: Any) -> bool:
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(value, (tf.Tensor, tf.Variable))


@deferral.hookimpl
def deferral_to_native(value: Any, dtype: str | None, device: str) -> Any:
    """Return TF tensors and variables unchanged; turn a NumPy array into a tensor on ``device``.

    A floating NumPy array is cast to ``dtype`` on the host first, as the NumPy backend casts
    (``bfloat16`` rounds to nearest-even through float32). Integer arrays keep their dtype.
    Anything else gives ``None``.
    """
    import numpy as np
    import tensorflow as tf

    if isinstance(value, (tf.Tensor, tf.Variable)):
        return value
    if not isinstance(value, np.ndarray):
        return None
    bfloat16 = False
    if dtype is not None and value.dtype.kind == "f" and value.dtype.name != dtype:
        if dtype == "bfloat16":
            value, bfloat16 = float32_to_bfloat16_bits(value.astype(np.float32)), True
        else:
            value = value.astype(dtype)
    with tf.device(device):
        tensor = tf.convert_to_tensor(value)
        if bfloat16:
            tensor = tf.bitcast(tensor, tf.bfloat16)
        # An eager constant lives on the host; a copy moves it to a GPU.
        return tf.identity(tensor) if device.startswith("/GPU") else tensor


@deferral.hookimpl
def deferral_to_numpy(value: Any) -> Any:
    """A host NumPy copy of a TF tensor or variable; ``bfloat16`` is widened to ``float32`` exactly."""
    import numpy as np
    import tensorflow as tf

    if isinstance(value, (tf.Tensor, tf.Variable)):
        if value.dtype == tf.bfloat16:
            value = tf.cast(value, tf.float32)
        return np.array(value.numpy(), copy=True)
    array = np.array(value, copy=True)
    return array.astype(np.float32) if array.dtype.name == "bfloat16" else array


@deferral.hookimpl
def deferral_parameter_from_numpy(array: Any, dtype: str, device: str, trainable: bool, owned: bool) -> Any:
    """A ``tf.Variable`` on ``device`` holding ``array``.

    ``array`` should already be of ``dtype`` (``uint16`` bit patterns for ``bfloat16``);
    other floating arrays are rounded the core's way first. An aligned array the core gives
    away (``owned``) becomes the variable's buffer on the CPU (:func:`_adopted`); anything
    else is copied.

    Raises:
        TypeError: for an array that is not floating (or ``uint16`` bits for ``bfloat16``).
    """
    import tensorflow as tf

    host = parameter_host(array, dtype, "tensorflow")
    with tf.init_scope():
        return _variable(_adopted(host) if owned else tf.convert_to_tensor(host), dtype, device, trainable)


@deferral.hookimpl
def deferral_materialize(request: MaterializeRequest) -> Any:
    """A ``tf.Variable`` with the recipe's values (constants are filled on the device).

    The values are generated into an aligned host array that becomes the variable's buffer
    (:func:`_adopted`): no copy, no second buffer.
    """
    import tensorflow as tf

    from deferral._fill import aligned_empty, host_dtype

    if request.recipe.kind == "constant":
        with tf.init_scope(), tf.device(request.device):
            scalar = _tensor(request.host_values(0, 1).reshape(()), request.dtype)
            return tf.Variable(tf.fill(request.shape, scalar), trainable=request.trainable)
    host = aligned_empty(request.shape, host_dtype(request.dtype))
    request.fill_host(host)
    with tf.init_scope():
        tensor = _adopted(host)
    return _variable(tensor, request.dtype, request.device, request.trainable)


def _adopted(host: np.ndarray) -> tf.Tensor:
    """An eager CPU tensor that uses ``host``'s memory, without copying it.

    The DLPack capsule holds a reference to ``host``; TensorFlow releases it when the last
    tensor or variable using the buffer is freed, so the memory cannot be freed under it.
    The buffer must be aligned to :data:`deferral._fill.ALIGN` bytes (TensorFlow may abort
    the process on an unaligned one): an array that is not (or is empty, or not contiguous)
    is copied instead.
    """
    import tensorflow as tf

    if host.size == 0 or host.ctypes.data % ALIGN or not host.flags.c_contiguous:
        return tf.convert_to_tensor(host)
    with tf.device("/CPU:0"):
        return tf.experimental.dlpack.from_dlpack(host.__dlpack__())


def _tensor(host: np.ndarray, dtype: str) -> tf.Tensor:
    """An eager tensor of ``dtype`` from host values in that dtype (uint16 bits for bfloat16)."""
    import tensorflow as tf

    tensor = tf.convert_to_tensor(host)
    return tf.bitcast(tensor, tf.bfloat16) if dtype == "bfloat16" else tensor


def _variable(tensor: tf.Tensor, dtype: str, device: str, trainable: bool) -> tf.Variable:
    """Create a variable on ``device`` from ``tensor`` (values in ``dtype``; bits for bfloat16).

    On the CPU the variable takes over the tensor's buffer; on a GPU it is copied there once.
    The variable is created from the whole tensor: filling a zero variable block by block with
    strided-slice assignments leaves it in TensorFlow's slow copy-on-read mode, where every
    later read copies the whole tensor (forward passes and training steps 2-4x slower).
    """
    import tensorflow as tf

    with tf.init_scope(), tf.device(device):
        if dtype == "bfloat16":
            tensor = tf.bitcast(tensor, tf.bfloat16)
        return tf.Variable(tensor, trainable=trainable)
