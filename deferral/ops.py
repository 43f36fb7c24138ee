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

from collections.abc import Sequence
from typing import Any

__all__ = [
    "OP_NAMES",
    "add",
    "assign",
    "avg_pool",
    "batch_norm",
    "conv",
    "conv_transpose",
    "dropout",
    "max_pool",
    "moments",
    "rsqrt",
    "split",
    "sqrt",
    "stack",
    "take",
    "unstack",
    "where",
    "zeros",
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

#: Element-wise, linear-algebra, shape and reduction ops.
CORE_OPS: tuple[str, ...] = (
    "shape", "linear", "matmul", "add", "subtract", "multiply", "divide", "maximum",
    "relu", "sigmoid", "tanh", "gelu", "softmax", "log_softmax", "exp", "log",
    "reshape", "flatten", "transpose", "concat", "sum", "mean",
)
#: Convolution and pooling (channels-first: N, C, *spatial).
CONV_OPS: tuple[str, ...] = ("conv", "conv_transpose", "max_pool", "avg_pool")
#: Normalization, embedding lookup, dropout and in-place state updates.
NORM_OPS: tuple[str, ...] = ("batch_norm", "moments", "sqrt", "rsqrt", "take", "dropout", "assign")
#: Sequence and attention helpers.
SEQ_OPS: tuple[str, ...] = ("split", "stack", "unstack", "where", "zeros")
#: Every op of the namespace. A backend must implement :data:`CORE_OPS`; the layer families
#: (:data:`CONV_OPS`, :data:`NORM_OPS`, :data:`SEQ_OPS`) are optional for third-party
#: backends: calling one a backend lacks raises ``NotImplementedError`` naming it.
OP_NAMES: tuple[str, ...] = CORE_OPS + CONV_OPS + NORM_OPS + SEQ_OPS

def check_namespace(backend: str, namespace: Any) -> Any:
    """Validate a backend's op namespace and return the one the core calls.

    Raises:
        TypeError: if ``namespace`` lacks one of :data:`CORE_OPS`.
    """
    missing = [n for n in CORE_OPS if not callable(getattr(namespace, n, None))]
    if missing:
        raise TypeError(
            f"backend {backend!r}: its op namespace {namespace!r} lacks {', '.join(missing)}; "
            "every name in deferral.ops.CORE_OPS must be a callable."
        )
    absent = [n for n in OP_NAMES if not callable(getattr(namespace, n, None))]
    if not absent:
        return namespace
    return _Completed(backend, namespace, absent)


class _Completed:
    """A namespace whose missing optional ops raise a clear ``NotImplementedError``."""

    def __init__(self, backend: str, namespace: Any, absent: list[str]) -> None:
        self.wrapped = namespace
        self.absent = frozenset(absent)
        for name in OP_NAMES:
            setattr(self, name, getattr(namespace, name) if name not in absent else _absent(backend, name))

    def __repr__(self) -> str:
        return f"<ops of {self.wrapped!r}, lacking {', '.join(sorted(self.absent))}>"


def _absent(backend: str, name: str) -> Any:
    def op(*args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            f"backend {backend!r} does not implement the op {name!r}, which this layer needs. "
            "Use a backend that does (numpy, torch and tensorflow implement every op)."
        )

    op.__name__ = name
    return op


def implements(namespace: Any, name: str) -> bool:
    """Whether a resolved op namespace really provides ``name``."""
    return not (isinstance(namespace, _Completed) and name in namespace.absent)


# Array type -> op namespace, filled as arrays of loaded backends are met. Dispatch is a dict
# lookup on the argument's type: no context variable or lock, so compilers (torch.compile)
# trace through it.
_by_type: dict[type, Any] = {}


def _ops(x: Any) -> Any:
    ns = _by_type.get(type(x))
    if ns is not None:
        return ns
    return _resolve(x)


def _resolve(x: Any) -> Any:
    """The namespace for an array type met for the first time (or a non-array argument)."""
    from . import registry
    from ._shapes import SHAPE_OPS, TensorSpec

    if isinstance(x, TensorSpec):
        return SHAPE_OPS
    for backend in list(registry._backends.values()):
        if backend.is_native(x):
            _by_type[type(x)] = backend.ops
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


# -- convolution and pooling -------------------------------------------------------------
# Data is channels-first: (N, C, *spatial) with 1 to 3 spatial axes. ``strides`` and
# ``dilation`` have one entry per spatial axis; ``padding`` has one ``(before, after)`` pair
# per spatial axis (layers resolve "same"/"valid"/ints into explicit pairs).

Pads = Sequence[tuple[int, int]]


def conv(x: Array, weight: Array, bias: Array | None, strides: Sequence[int], padding: Pads,
         dilation: Sequence[int], groups: int = 1) -> Array:
    """N-d cross-correlation. ``weight`` is ``(C_out, C_in / groups, *kernel)``.

    Output spatial size per axis: ``(size + before + after - dilation * (k - 1) - 1) // stride + 1``.
    """
    return _ops(x).conv(x, weight, bias, tuple(strides), tuple(map(tuple, padding)), tuple(dilation), groups)


def conv_transpose(x: Array, weight: Array, bias: Array | None, strides: Sequence[int], padding: Pads,
                   output_padding: Sequence[int], dilation: Sequence[int], groups: int = 1) -> Array:
    """The gradient of :func:`conv` with respect to its input ("deconvolution").

    ``weight`` is ``(C_in, C_out / groups, *kernel)``. Output spatial size per axis:
    ``(size - 1) * stride - before - after + dilation * (k - 1) + output_padding + 1``.
    """
    return _ops(x).conv_transpose(x, weight, bias, tuple(strides), tuple(map(tuple, padding)),
                                  tuple(output_padding), tuple(dilation), groups)


def max_pool(x: Array, window: Sequence[int], strides: Sequence[int], padding: Pads) -> Array:
    """Maximum over windows of the spatial axes (padding never wins: it counts as -inf)."""
    return _ops(x).max_pool(x, tuple(window), tuple(strides), tuple(map(tuple, padding)))


def avg_pool(x: Array, window: Sequence[int], strides: Sequence[int], padding: Pads,
             count_include_pad: bool = True) -> Array:
    """Mean over windows of the spatial axes; padded zeros count in the divisor if asked."""
    return _ops(x).avg_pool(x, tuple(window), tuple(strides), tuple(map(tuple, padding)), count_include_pad)


# -- normalization, embedding, dropout, state ----------------------------------------------
def batch_norm(x: Array, mean: Array, var: Array, gamma: Array | None, beta: Array | None,
               eps: float) -> Array:
    """``(x - mean) / sqrt(var + eps) * gamma + beta`` with per-channel vectors on axis 1."""
    return _ops(x).batch_norm(x, mean, var, gamma, beta, float(eps))


def moments(x: Array, axes: Sequence[int], keepdims: bool = False) -> tuple[Array, Array]:
    """Mean and (biased) variance over ``axes``."""
    return _ops(x).moments(x, tuple(axes), keepdims)


def sqrt(x: Array) -> Array:
    """Element-wise square root."""
    return _ops(x).sqrt(x)


def rsqrt(x: Array) -> Array:
    """Element-wise ``1 / sqrt(x)``."""
    return _ops(x).rsqrt(x)


def take(weight: Array, indices: Array) -> Array:
    """Rows of ``weight`` selected by integer ``indices``: ``weight[indices]`` (embedding lookup)."""
    return _ops(weight).take(weight, indices)


def dropout(x: Array, rate: float) -> Array:
    """Zero each element with probability ``rate`` and scale the rest by ``1 / (1 - rate)``.

    Masks come from the backend's own generator: they are *not* identical across backends.
    Layers call it only in training mode.
    """
    return _ops(x).dropout(x, float(rate))


def assign(target: Array, value: Array) -> None:
    """Overwrite a parameter's native storage with ``value`` in place, outside autograd."""
    return _ops(target).assign(target, value)


# -- sequences and attention --------------------------------------------------------------
def split(x: Array, sections: int, axis: int = -1) -> list[Array]:
    """Split ``x`` into ``sections`` equal parts along ``axis``."""
    return list(_ops(x).split(x, int(sections), axis))


def stack(arrays: Sequence[Array], axis: int = 0) -> Array:
    """Join arrays along a new axis."""
    arrays = list(arrays)
    return _ops(arrays[0]).stack(arrays, axis)


def unstack(x: Array, axis: int = 0) -> list[Array]:
    """The slices of ``x`` along ``axis``, as a list (the axis removed)."""
    return list(_ops(x).unstack(x, axis))


def where(condition: Array, a: Array, b: Array) -> Array:
    """``a`` where ``condition`` is true, else ``b`` (with broadcasting)."""
    return _ops(a).where(condition, a, b)


def zeros(shape: Sequence[int], like: Array) -> Array:
    """Zeros of ``shape`` with the dtype and device of ``like``."""
    return _ops(like).zeros(tuple(shape), like)


def __dir__() -> list[str]:
    """Only the public API (not the names this module imports)."""
    return sorted(__all__)
