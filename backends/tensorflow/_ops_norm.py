"""TensorFlow implementations of the normalization, embedding, dropout and state ops.

Semantics as documented in :mod:`deferral.ops` (``NORM_OPS``); every op works eagerly and
inside ``tf.function``. Dropout masks come from TensorFlow's own random ops
(``tf.random.set_seed`` makes them reproducible) and differ from the other backends' masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from deferral import opkit, ops

__all__ = list(ops.NORM_OPS)  # every op of the family, nothing else


def batch_norm(x: Any, mean: Any, var: Any, gamma: Any | None, beta: Any | None, eps: float) -> tf.Tensor:
    """``(x - mean) / sqrt(var + eps) * gamma + beta`` with per-channel vectors on axis 1."""
    return opkit.batch_norm(tf.convert_to_tensor(x), mean, var, gamma, beta, eps, tf.math.rsqrt, tf.reshape)


def moments(x: Any, axes: Sequence[int], keepdims: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
    """Mean and biased variance over ``axes`` (``tf.nn.moments``)."""
    mean, var = tf.nn.moments(tf.convert_to_tensor(x), axes=list(axes), keepdims=keepdims)
    return mean, var


def sqrt(x: Any) -> tf.Tensor:
    """Element-wise square root."""
    return tf.math.sqrt(x)


def rsqrt(x: Any) -> tf.Tensor:
    """Element-wise ``1 / sqrt(x)``."""
    return tf.math.rsqrt(x)


def take(weight: Any, indices: Any) -> tf.Tensor:
    """``weight[indices]`` along the first axis (``tf.gather``); integer indices other than
    int32/int64 (``tf.gather`` refuses uint8, int16, ...) are widened to int64.

    Out-of-range indices raise ``InvalidArgumentError`` on the CPU; on a GPU TensorFlow
    returns zeros for them.

    Raises:
        TypeError: for indices that are not integers (as NumPy).
    """
    indices = tf.convert_to_tensor(indices)
    if indices.dtype not in (tf.int32, tf.int64):
        if not indices.dtype.is_integer:
            raise TypeError(f"take: indices must be integers; received a tensor of dtype {indices.dtype.name}")
        indices = tf.cast(indices, tf.int64)
    return tf.gather(weight, indices)


def dropout(x: Any, rate: float) -> tf.Tensor:
    """Inverted dropout (``tf.nn.dropout``); masks from TensorFlow's random ops."""
    x = tf.convert_to_tensor(x)
    if rate == 0.0:
        return x
    return tf.nn.dropout(x, rate=rate)


def assign(target: Any, value: Any) -> None:
    """``target.assign(value)`` on a ``tf.Variable``; inside ``tf.function`` too.

    Raises:
        TypeError: if ``target`` is not a variable (tensors cannot be written in place).
    """
    if not isinstance(target, tf.Variable):
        raise TypeError(
            f"assign needs a tf.Variable (a parameter's storage) to write into. Received: "
            f"{type(target).__name__}"
        )
    target.assign(tf.cast(value, target.dtype))
