"""Arithmetic every backend's ops share, so no backend repeats it.

A backend's op module calls these helpers with its own primitives; they compute layouts and
index bounds (plain Python) or combine arrays with the Python operators every array type has.

Example:
    >>> from deferral import opkit
    >>> opkit.channel_shape(4)
    (1, -1, 1, 1)
    >>> opkit.transposed_crop(((1, 2),), (1,))
    ((1, -1),)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["batch_norm", "channel_shape", "transposed_crop", "transposed_full"]


def channel_shape(rank: int) -> tuple[int, ...]:
    """The shape that makes a per-channel vector ``(C,)`` broadcast over axis 1 of an array of
    ``rank`` (``(1, -1, 1, ...)``): batch-norm statistics, convolution biases."""
    return (1, -1) + (1,) * (rank - 2)


def transposed_full(sizes: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
                    dilation: Sequence[int]) -> tuple[int, ...]:
    """The spatial sizes of a transposed convolution's full output (no padding cropped):
    ``(size - 1) * stride + dilation * (k - 1) + 1`` per axis."""
    return tuple((n - 1) * s + d * (k - 1) + 1 for n, k, s, d in zip(sizes, kernel, strides, dilation))


def transposed_crop(padding: Sequence[tuple[int, int]], output_padding: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """Per spatial axis, how a transposed convolution's full output becomes its output:
    ``(start, end)``, the elements cropped at the start and the change of length at the end.

    ``before`` is cropped at the start; at the end the output is ``output_padding`` longer,
    less ``after``. A positive ``end`` extends the output with zeros (before the bias is
    added), a negative one crops.
    """
    return tuple((before, extra - after) for (before, after), extra in zip(padding, output_padding))


def batch_norm(x: Any, mean: Any, var: Any, gamma: Any | None, beta: Any | None, eps: float,
               rsqrt: Callable[[Any], Any], reshape: Callable[[Any, tuple[int, ...]], Any]) -> Any:
    """``(x - mean) * rsqrt(var + eps) * gamma + beta`` with per-channel vectors on axis 1,
    from the backend's ``rsqrt`` and ``reshape`` and the arrays' own operators."""
    shape = channel_shape(len(x.shape))
    scale = rsqrt(var + eps)
    if gamma is not None:
        scale = scale * gamma
    y = (x - reshape(mean, shape)) * reshape(scale, shape)
    return y if beta is None else y + reshape(beta, shape)
