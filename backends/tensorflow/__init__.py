"""The TensorFlow backend of deferral: parameters are trainable ``tf.Variable`` objects.

Registered through the ``deferral.backends`` entry point ``tensorflow``. Importing this module
imports no TensorFlow: ``deferral.available_backends()`` loads it to read its
:class:`~deferral.hookspec.BackendInfo`. TensorFlow is imported inside the hooks, when the
backend is first selected for a model.

Values come from the core's reference path (``MaterializeRequest.host_values``) and are copied
into the variable unchanged, so they are bit-identical to the NumPy backend's; ``bfloat16``
arrives as ``uint16`` bit patterns and is reinterpreted with ``tf.bitcast``. Large parameters
are filled in row blocks, so the host never holds more than one block of values.

Devices are spelled the TensorFlow way: ``"/CPU:0"`` (the default) or ``"/GPU:N"``; ``"cpu"``,
``"gpu"``, ``"cuda"`` and ``"cuda:N"`` are accepted too.
"""

from __future__ import annotations

import sys
from typing import Any

import deferral
from deferral.hookspec import BackendInfo, MaterializeRequest

from ._device import canonical_device

__all__ = [
    "deferral_backend_info",
    "deferral_canonical_device",
    "deferral_is_native",
    "deferral_materialize",
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
)


@deferral.hookimpl
def deferral_backend_info() -> BackendInfo:
    return _INFO


@deferral.hookimpl
def deferral_ops() -> Any:
    from . import _ops

    return _ops


@deferral.hookimpl
def deferral_canonical_device(device: str | None) -> str:
    """Return ``"/CPU:0"`` or ``"/GPU:N"``.

    Raises:
        ValueError: for a spelling it does not know, or a GPU TensorFlow does not list.
    """
    return canonical_device(device)


@deferral.hookimpl
def deferral_is_native(value: Any) -> bool:
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(value, (tf.Tensor, tf.Variable))


@deferral.hookimpl
def deferral_to_native(value: Any, dtype: str | None, device: str) -> Any:
    """Return TF tensors and variables unchanged; put a NumPy array on ``device``.

    A floating NumPy array is rounded to ``dtype`` on the host first, with the same rounding
    as the NumPy backend (``bfloat16`` through the core's round-to-nearest-even). Anything
    else gives ``None``.
    """
    from ._convert import to_native

    return to_native(value, dtype, device)


@deferral.hookimpl
def deferral_to_numpy(value: Any) -> Any:
    """Host NumPy copy of a TF tensor or variable; ``bfloat16`` is widened to ``float32``."""
    from ._convert import to_numpy

    return to_numpy(value)


@deferral.hookimpl
def deferral_parameter_from_numpy(array: Any, dtype: str, device: str, trainable: bool) -> Any:
    """A ``tf.Variable`` on ``device`` holding ``array`` (``uint16`` bits for ``bfloat16``)."""
    from ._convert import variable_from_numpy

    return variable_from_numpy(array, dtype, device, trainable)


@deferral.hookimpl
def deferral_materialize(request: MaterializeRequest) -> Any:
    """A ``tf.Variable`` with the recipe's values, filled in blocks for large parameters."""
    from ._convert import materialize

    return materialize(request)
