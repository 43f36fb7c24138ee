"""TensorFlow implementations of the convolution and pooling ops (``deferral.ops.CONV_OPS``).

The library's layouts are channels-first (``(N, C, *spatial)`` data, ``(C_out, C_in / groups,
*kernel)`` weights); TensorFlow's CPU kernels are channels-last only. Each op therefore moves the
channels last, runs the channels-last op with ``"VALID"`` padding on an explicitly padded input
(:func:`tf.pad`), and moves them back. What the CPU kernels lack is built from what they have:

- grouped 3-d convolutions and grouped transposed convolutions run group by group;
- dilation where a kernel has none on CPU (3-d convolutions, every transposed convolution) uses
  the kernel with ``dilation - 1`` zeros inserted between its taps, which is the same sum;
- 3-d pooling (no float64 kernel on CPU) is 2-d pooling over ``(H, W)`` then over ``D``: a max
  of maxima, a mean of means over equal-sized windows.

Every op works eagerly and inside ``tf.function``, also with an unknown batch size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from deferral import opkit, ops

__all__ = list(ops.CONV_OPS)  # every op of the family, nothing else

Pads = Sequence[tuple[int, int]]


def _last(x: Any, n: int) -> tf.Tensor:
    """``(N, C, *spatial) -> (N, *spatial, C)``."""
    return tf.transpose(x, [0, *range(2, n + 2), 1])


def _first(x: tf.Tensor, n: int) -> tf.Tensor:
    """``(N, *spatial, C) -> (N, C, *spatial)``."""
    return tf.transpose(x, [0, n + 1, *range(1, n + 1)])


def _pad(x: tf.Tensor, padding: Pads, value: float = 0.0) -> tf.Tensor:
    """Pad the spatial axes of a channels-last ``x`` (unchanged when there is nothing to pad)."""
    if not any(before or after for before, after in padding):
        return x
    fill = tf.constant(value, dtype=x.dtype)
    return tf.pad(x, [[0, 0], *([b, a] for b, a in padding), [0, 0]], constant_values=fill)


def _dim(x: tf.Tensor, axis: int) -> Any:
    """The static size of ``axis`` when known, else the dynamic one."""
    size = x.shape[axis]
    return size if size is not None else tf.shape(x)[axis]


def _dilate_kernel(w: tf.Tensor, dilation: Sequence[int]) -> tf.Tensor:
    """A channels-last kernel ``(*kernel, ...)`` with ``d - 1`` zeros between taps along each axis."""
    for axis, d in enumerate(dilation):
        if d == 1:
            continue
        shape = w.shape.as_list()
        zeros = tf.zeros_like(w)
        w = tf.stack([w] + [zeros] * (d - 1), axis=axis + 1)  # (..., k, d, ...)
        w = tf.reshape(w, [*shape[:axis], shape[axis] * d, *shape[axis + 1:]])
        w = w[(slice(None),) * axis + (slice(0, (shape[axis] - 1) * d + 1),)]
    return w


def _by_group(fn: Any, x: tf.Tensor, w: tf.Tensor, groups: int) -> tf.Tensor:
    """Apply ``fn`` to each channel group of ``x`` (last axis) with the matching slice of ``w``
    (last axis), joining the results along the channels."""
    if groups == 1:
        return fn(x, w)
    xs, ws = tf.split(x, groups, axis=-1), tf.split(w, groups, axis=-1)
    return tf.concat([fn(a, b) for a, b in zip(xs, ws)], axis=-1)


def conv(x: Any, weight: Any, bias: Any | None, strides: Sequence[int], padding: Pads,
         dilation: Sequence[int], groups: int = 1) -> tf.Tensor:
    """N-d cross-correlation; ``weight`` is ``(C_out, C_in / groups, *kernel)``."""
    n = len(strides)
    y = _pad(_last(x, n), padding)
    w = tf.transpose(weight, [*range(2, n + 2), 1, 0])  # (*kernel, C_in / groups, C_out)
    strides, dilation = list(strides), list(dilation)
    if n == 1:
        out = tf.nn.conv1d(y, w, strides, "VALID", dilations=dilation)
    elif n == 2:
        out = tf.nn.conv2d(y, w, strides, "VALID", dilations=dilation)
    else:  # the CPU Conv3D has neither dilation nor groups
        w = _dilate_kernel(w, dilation)
        out = _by_group(lambda a, b: tf.nn.conv3d(a, b, [1, *strides, 1], "VALID"), y, w, groups)
    if bias is not None:
        out = tf.nn.bias_add(out, bias)
    return _first(out, n)


def conv_transpose(x: Any, weight: Any, bias: Any | None, strides: Sequence[int], padding: Pads,
                   output_padding: Sequence[int], dilation: Sequence[int], groups: int = 1) -> tf.Tensor:
    """The adjoint of :func:`conv`; ``weight`` is ``(C_in, C_out / groups, *kernel)``.

    Runs :func:`tf.nn.conv_transpose` with ``"VALID"`` padding and the full output shape
    (batch size from ``tf.shape``), then crops and extends it as
    :func:`deferral.opkit.transposed_crop` says.
    """
    n = len(strides)
    y = _last(x, n)
    w = tf.transpose(weight, [*range(2, n + 2), 1, 0])  # (*kernel, C_out / groups, C_in)
    w = _dilate_kernel(w, dilation)
    kernel = w.shape.as_list()[:n]
    c_out = w.shape[n]
    full = [(_dim(y, 1 + i) - 1) * s + k for i, (s, k) in enumerate(zip(strides, kernel))]
    shape = tf.stack([tf.shape(y)[0], *full, c_out])

    def transposed(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
        return tf.nn.conv_transpose(a, b, shape, list(strides), "VALID")

    out = _by_group(transposed, y, w, groups)
    crop = opkit.transposed_crop(padding, output_padding)
    out = _pad(out, [(0, max(end, 0)) for _, end in crop])
    kept = (slice(None), *(slice(start, size + end) for size, (start, end) in zip(full, crop)))
    out = out[kept]
    if bias is not None:
        out = tf.nn.bias_add(out, bias)
    return _first(out, n)


def _pool(kind: str, x: tf.Tensor, window: Sequence[int], strides: Sequence[int]) -> tf.Tensor:
    """Unpadded channels-last pooling; 3-d as 2-d over ``(H, W)`` then 2-d over ``(D, H*W)``.

    Raises:
        ValueError: if a window is larger than its (padded) axis: TensorFlow 2.21's CPU pooling
            kernels crash the process with a floating-point exception there.
    """
    sizes = x.shape[1:-1]
    if any(size is not None and size < k for size, k in zip(sizes, window)):
        raise ValueError(f"{kind}_pool: a window of {tuple(window)} does not fit in the padded input of "
                         f"spatial size {tuple(sizes)}")
    fn = tf.nn.max_pool2d if kind == "max" else tf.nn.avg_pool2d
    if len(window) == 1:
        op = tf.nn.max_pool1d if kind == "max" else tf.nn.avg_pool1d
        return op(x, list(window), list(strides), "VALID")
    if len(window) == 2:
        return fn(x, list(window), list(strides), "VALID")
    depth, height, width, channels = (_dim(x, i) for i in range(1, 5))
    planes = fn(tf.reshape(x, [-1, height, width, channels]), list(window[1:]), list(strides[1:]), "VALID")
    h_out, w_out = _dim(planes, 1), _dim(planes, 2)
    columns = tf.reshape(planes, [-1, depth, h_out * w_out, channels])
    pooled = fn(columns, [window[0], 1], [strides[0], 1], "VALID")
    return tf.reshape(pooled, [-1, _dim(pooled, 1), h_out, w_out, channels])


def max_pool(x: Any, window: Sequence[int], strides: Sequence[int], padding: Pads) -> tf.Tensor:
    """Maximum over windows; padding is ``-inf``, so it never wins."""
    n = len(window)
    return _first(_pool("max", _pad(_last(x, n), padding, -math.inf), window, strides), n)


def avg_pool(x: Any, window: Sequence[int], strides: Sequence[int], padding: Pads) -> tf.Tensor:
    """Mean over windows of the zero-padded input (the padding counts in the divisor)."""
    n = len(window)
    return _first(_pool("avg", _pad(_last(x, n), padding), window, strides), n)
