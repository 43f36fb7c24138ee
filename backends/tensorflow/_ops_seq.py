"""TensorFlow implementations of the sequence ops of :mod:`deferral.ops` (``SEQ_OPS``).

They work eagerly and inside ``tf.function``. :func:`unstack` needs the size of its axis to be
known while tracing (TensorFlow builds one output per slice): a recurrent layer traced with an
``input_signature`` must fix the sequence length.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from deferral import ops

__all__ = list(ops.SEQ_OPS)  # every op of the family, nothing else


def split(x: Any, sections: int, axis: int = -1) -> list[tf.Tensor]:
    """``sections`` equal parts of ``x`` along ``axis`` (the core checks divisibility)."""
    return tf.split(x, sections, axis=axis)


def stack(arrays: Sequence[Any], axis: int = 0) -> tf.Tensor:
    """Join tensors of one shape along a new axis."""
    return tf.stack(list(arrays), axis=axis)


def unstack(x: Any, axis: int = 0) -> list[tf.Tensor]:
    """The slices of ``x`` along ``axis``, the axis removed.

    Raises:
        ValueError: while tracing, if the size of ``axis`` is not known.
    """
    size = x.shape[axis]
    if size is None:
        raise ValueError(
            f"unstack: the size of axis {axis} of a tensor of shape {tuple(x.shape.as_list())} is "
            "unknown while tracing; TensorFlow needs it to build one output per slice. Trace "
            "with that size fixed (a recurrent layer needs a static sequence length under "
            "tf.function: give the time axis a size in the input_signature, or use none)."
        )
    return tf.unstack(x, num=size, axis=axis)


def where(condition: Any, a: Any, b: Any) -> tf.Tensor:
    """``a`` where ``condition`` is true (non-zero), else ``b``, with broadcasting.

    Either branch may be a Python scalar: it takes the other branch's dtype (TensorFlow would
    make it float32 whatever the other one is).
    """
    condition = tf.convert_to_tensor(condition)
    if condition.dtype != tf.bool:
        condition = tf.not_equal(condition, tf.zeros((), dtype=condition.dtype))
    if isinstance(a, (int, float)) and not isinstance(b, (int, float)):
        b = tf.convert_to_tensor(b)
        a = tf.constant(a, dtype=b.dtype)
    elif isinstance(b, (int, float)) and not isinstance(a, (int, float)):
        a = tf.convert_to_tensor(a)
        b = tf.constant(b, dtype=a.dtype)
    return tf.where(condition, a, b)


def zeros(shape: Sequence[Any], like: Any) -> tf.Tensor:
    """Zeros of ``shape`` with the dtype and device of ``like``.

    An entry of ``shape`` may be a scalar tensor (e.g. ``tf.shape(x)[0]`` while tracing).
    """
    device = getattr(like, "device", "") or ""
    if device:
        with tf.device(device):
            return tf.zeros(list(shape), dtype=like.dtype)
    return tf.zeros(list(shape), dtype=like.dtype)
