"""TensorFlow implementations of ``deferral.ops.OP_NAMES``.

Each op takes and returns TF tensors (variables are read where they appear), works eagerly and
inside ``tf.function``, and follows the semantics documented in :mod:`deferral.ops` and
implemented by the NumPy reference backend. Shapes may be partly unknown while tracing:
:func:`shape` reports such dimensions as ``None`` and :func:`flatten` copes with an unknown
batch size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import tensorflow as tf

Axis = int | Sequence[int] | None

_SQRT_HALF = 1.0 / math.sqrt(2.0)


def shape(x: tf.Tensor) -> tuple[int | None, ...]:
    """The static shape as a tuple; a dimension unknown while tracing is ``None``.

    Raises:
        ValueError: if even the rank is unknown (trace with an ``input_signature`` of known rank).
    """
    dims = x.shape
    if dims.rank is None:
        raise ValueError(
            "deferral needs the rank of every input; received a tensor of unknown rank while "
            "tracing. Give tf.function an input_signature with a known rank, e.g. "
            "tf.TensorSpec([None, 784], tf.float32)."
        )
    return tuple(dims.as_list())


def linear(x: tf.Tensor, weight: tf.Tensor, bias: tf.Tensor | None = None) -> tf.Tensor:
    """``x @ weight.T + bias`` over the last axis of ``x``; ``weight`` is ``(units, in_units)``.

    Small products and one to three rows go through ``MatMul(transpose_b=True)``; the rest
    through ``BatchMatMulV2`` with the weight's transpose folded in (``adj_y``; it also
    broadcasts over leading axes). On the CPU ``MatMul(transpose_b=True)`` is slow on large
    weights (measured at 4096x4096: 68 ms against 41 ms at 256 rows, 2.2 ms against 0.5 ms
    at 16 rows of 1024x1024) but has the lower fixed cost and the faster few-row kernel.
    """
    rank, (units, features) = x.shape.rank, weight.shape
    small = units is not None and features is not None and units * features < 2**16
    if rank == 1:  # a vector (BatchMatMulV2 needs a matrix)
        y = tf.tensordot(x, weight, axes=[[0], [1]])
    elif rank == 2 and (small or (x.shape[0] is not None and x.shape[0] < 4)):
        y = tf.linalg.matmul(x, weight, transpose_b=True)
    else:
        y = tf.raw_ops.BatchMatMulV2(x=x, y=weight, adj_y=True)
    return y if bias is None else tf.math.add(y, bias)


def matmul(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Matrix product with NumPy's rules: batch axes broadcast, a 1-D operand is a vector."""
    a, b = tf.convert_to_tensor(a), tf.convert_to_tensor(b)
    vec_a, vec_b = a.shape.rank == 1, b.shape.rank == 1
    if vec_a:
        a = a[tf.newaxis, :]
    if vec_b:
        b = b[:, tf.newaxis]
    out = tf.linalg.matmul(a, b)
    if vec_b:
        out = tf.squeeze(out, axis=-1)
    if vec_a:
        out = tf.squeeze(out, axis=-1 if vec_b else -2)
    return out


def add(a: Any, b: Any) -> tf.Tensor:
    return tf.math.add(a, b)


def subtract(a: Any, b: Any) -> tf.Tensor:
    return tf.math.subtract(a, b)


def multiply(a: Any, b: Any) -> tf.Tensor:
    return tf.math.multiply(a, b)


def divide(a: Any, b: Any) -> tf.Tensor:
    """True division (integers give floats, as in NumPy)."""
    return tf.math.truediv(a, b)


def maximum(a: Any, b: Any) -> tf.Tensor:
    return tf.math.maximum(a, b)


def minimum(a: Any, b: Any) -> tf.Tensor:
    return tf.math.minimum(a, b)


def relu(x: tf.Tensor) -> tf.Tensor:
    return tf.nn.relu(x)


def sigmoid(x: tf.Tensor) -> tf.Tensor:
    return tf.math.sigmoid(x)


def tanh(x: tf.Tensor) -> tf.Tensor:
    return tf.math.tanh(x)


def gelu(x: tf.Tensor) -> tf.Tensor:
    """Exact GELU, ``0.5 * x * (1 + erf(x / sqrt(2)))``, as the NumPy backend and ``torch.nn.GELU()``.

    Not ``tf.nn.gelu(approximate=False)``: TensorFlow 2.21 builds its ``1/sqrt(2)`` as a float32
    constant and casts it, which makes float64 results wrong from the 8th digit on.
    """
    x = tf.convert_to_tensor(x)
    return 0.5 * x * (1.0 + tf.math.erf(x * tf.constant(_SQRT_HALF, dtype=x.dtype)))


def softmax(x: tf.Tensor, axis: int = -1) -> tf.Tensor:
    return tf.nn.softmax(x, axis=axis)


def log_softmax(x: tf.Tensor, axis: int = -1) -> tf.Tensor:
    return tf.nn.log_softmax(x, axis=axis)


def exp(x: tf.Tensor) -> tf.Tensor:
    return tf.math.exp(x)


def log(x: tf.Tensor) -> tf.Tensor:
    return tf.math.log(x)


def expm1(x: tf.Tensor) -> tf.Tensor:
    return tf.math.expm1(x)


def log1p(x: tf.Tensor) -> tf.Tensor:
    return tf.math.log1p(x)


def reshape(x: tf.Tensor, shape: tuple[int, ...]) -> tf.Tensor:
    return tf.reshape(x, shape)


def flatten(x: tf.Tensor) -> tf.Tensor:
    """``(N, a, b, ...) -> (N, a*b*...)``; ``N`` may be unknown while tracing (even 0 at run time)."""
    dims = tf.convert_to_tensor(x).shape
    if dims.rank is None:
        return tf.reshape(x, tf.stack([tf.shape(x)[0], -1]))
    batch = dims[0] if dims[0] is not None else tf.shape(x)[0]
    rest = dims[1:]
    features = math.prod(rest.as_list()) if rest.is_fully_defined() else -1
    return tf.reshape(x, [batch, features])


def transpose(x: tf.Tensor, axes: tuple[int, ...] | None = None) -> tf.Tensor:
    """Permute axes; reverse them when ``axes`` is None."""
    return tf.transpose(x, perm=None if axes is None else list(axes))


def concat(arrays: Sequence[tf.Tensor], axis: int = 0) -> tf.Tensor:
    return tf.concat(list(arrays), axis=axis)


def _axis(axis: Axis) -> int | list[int] | None:
    return axis if axis is None or isinstance(axis, int) else list(axis)


def sum(x: tf.Tensor, axis: Axis = None, keepdims: bool = False) -> tf.Tensor:
    return tf.math.reduce_sum(x, axis=_axis(axis), keepdims=keepdims)


def mean(x: tf.Tensor, axis: Axis = None, keepdims: bool = False) -> tf.Tensor:
    """Mean over ``axis``; integer inputs give float64, as in NumPy (TF would truncate)."""
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        x = tf.cast(x, tf.float64)
    return tf.math.reduce_mean(x, axis=_axis(axis), keepdims=keepdims)


def max(x: tf.Tensor, axis: Axis = None, keepdims: bool = False) -> tf.Tensor:
    return tf.math.reduce_max(x, axis=_axis(axis), keepdims=keepdims)


def min(x: tf.Tensor, axis: Axis = None, keepdims: bool = False) -> tf.Tensor:
    return tf.math.reduce_min(x, axis=_axis(axis), keepdims=keepdims)

from ._ops_conv import *  # noqa: E402,F403
from ._ops_norm import *  # noqa: E402,F403
from ._ops_seq import *  # noqa: E402,F403
