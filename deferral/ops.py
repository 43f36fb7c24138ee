"""The op namespace that layers and custom blocks compute with.

Layers are written once against these functions; each dispatches to the op namespace of the
backend the running model is bound to (set by the outermost block call), so a custom
``forward`` works unchanged on every backend. Outside a forward pass an op dispatches on its
first argument's array type, falling back to the default backend.

Every backend's namespace provides each name in :data:`OP_NAMES` with the semantics
documented here. Data layouts are the library's: a Dense weight is ``(units, in_units)``.

Example:
    >>> import numpy as np
    >>> from deferral import ops
    >>> ops.relu(np.array([-1.0, 2.0]))
    array([0., 2.])
"""

from __future__ import annotations

import contextvars
from collections.abc import Sequence
from typing import Any

__all__ = [
    "OP_NAMES",
    "add",
    "check_namespace",
    "concat",
    "divide",
    "exp",
    "flatten",
    "gelu",
    "linear",
    "log",
    "log_softmax",
    "matmul",
    "maximum",
    "mean",
    "multiply",
    "relu",
    "reshape",
    "shape",
    "sigmoid",
    "softmax",
    "subtract",
    "sum",
    "tanh",
    "transpose",
]

Array = Any

#: The ops every backend namespace implements.
OP_NAMES: tuple[str, ...] = (
    "shape", "linear", "matmul", "add", "subtract", "multiply", "divide", "maximum",
    "relu", "sigmoid", "tanh", "gelu", "softmax", "log_softmax", "exp", "log",
    "reshape", "flatten", "transpose", "concat", "sum", "mean",
)

# The op namespace of the model being called (set by Block.__call__).
active: contextvars.ContextVar[Any] = contextvars.ContextVar("deferral_ops", default=None)


def check_namespace(backend: str, namespace: Any) -> None:
    """Raise ``TypeError`` if ``namespace`` lacks one of :data:`OP_NAMES`."""
    missing = [n for n in OP_NAMES if not callable(getattr(namespace, n, None))]
    if missing:
        raise TypeError(
            f"backend {backend!r}: its op namespace {namespace!r} lacks {', '.join(missing)}; "
            "every name in deferral.ops.OP_NAMES must be a callable."
        )


def _ops(x: Any) -> Any:
    ns = active.get()
    if ns is not None:
        return ns
    from . import registry

    for backend in list(registry._backends.values()):
        if backend.is_native(x):
            return backend.ops
    return registry.load_backend(registry.get_backend()).ops


def shape(x: Array) -> tuple[int, ...]:
    """The shape of ``x`` as a tuple of Python ints."""
    return _ops(x).shape(x)


def linear(x: Array, weight: Array, bias: Array | None = None) -> Array:
    """``x @ weight.T + bias`` over the last axis of ``x``; ``weight`` is ``(units, in_units)``."""
    return _ops(x).linear(x, weight, bias)


def matmul(a: Array, b: Array) -> Array:
    """Matrix product with NumPy broadcasting rules."""
    return _ops(a).matmul(a, b)


def add(a: Array, b: Array) -> Array:
    """Element-wise ``a + b`` with broadcasting."""
    return _ops(a).add(a, b)


def subtract(a: Array, b: Array) -> Array:
    """Element-wise ``a - b`` with broadcasting."""
    return _ops(a).subtract(a, b)


def multiply(a: Array, b: Array) -> Array:
    """Element-wise ``a * b`` with broadcasting."""
    return _ops(a).multiply(a, b)


def divide(a: Array, b: Array) -> Array:
    """Element-wise ``a / b`` with broadcasting."""
    return _ops(a).divide(a, b)


def maximum(a: Array, b: Array) -> Array:
    """Element-wise maximum with broadcasting."""
    return _ops(a).maximum(a, b)


def relu(x: Array) -> Array:
    """``max(x, 0)``."""
    return _ops(x).relu(x)


def sigmoid(x: Array) -> Array:
    """``1 / (1 + exp(-x))``."""
    return _ops(x).sigmoid(x)


def tanh(x: Array) -> Array:
    """Hyperbolic tangent."""
    return _ops(x).tanh(x)


def gelu(x: Array) -> Array:
    """Gaussian error linear unit, exact form ``x * Phi(x)`` (as ``torch.nn.GELU()``)."""
    return _ops(x).gelu(x)


def softmax(x: Array, axis: int = -1) -> Array:
    """Softmax along ``axis``."""
    return _ops(x).softmax(x, axis)


def log_softmax(x: Array, axis: int = -1) -> Array:
    """Log of the softmax along ``axis``, computed stably."""
    return _ops(x).log_softmax(x, axis)


def exp(x: Array) -> Array:
    """Element-wise exponential."""
    return _ops(x).exp(x)


def log(x: Array) -> Array:
    """Element-wise natural logarithm."""
    return _ops(x).log(x)


def reshape(x: Array, shape: Sequence[int]) -> Array:
    """``x`` with a new shape (one entry may be -1)."""
    return _ops(x).reshape(x, tuple(shape))


def flatten(x: Array) -> Array:
    """Collapse every axis but the first: ``(N, a, b, ...) -> (N, a*b*...)``."""
    return _ops(x).flatten(x)


def transpose(x: Array, axes: Sequence[int] | None = None) -> Array:
    """Permute axes (reverse them when ``axes`` is None)."""
    return _ops(x).transpose(x, None if axes is None else tuple(axes))


def concat(arrays: Sequence[Array], axis: int = 0) -> Array:
    """Join arrays along an existing axis."""
    arrays = list(arrays)
    return _ops(arrays[0]).concat(arrays, axis)


def sum(x: Array, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> Array:
    """Sum over ``axis`` (all axes when None)."""
    return _ops(x).sum(x, _axes(axis), keepdims)


def mean(x: Array, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> Array:
    """Mean over ``axis`` (all axes when None)."""
    return _ops(x).mean(x, _axes(axis), keepdims)


def _axes(axis: int | Sequence[int] | None) -> int | tuple[int, ...] | None:
    return axis if axis is None or isinstance(axis, int) else tuple(axis)
