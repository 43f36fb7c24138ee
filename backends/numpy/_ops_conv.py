"""NumPy implementations of the convolution and pooling ops (``deferral.ops.CONV_OPS``).

Data is channels-first, ``(N, C, *spatial)`` with one to three spatial axes; padding arrives
as explicit ``(before, after)`` pairs (layers resolve ``"same"``). Convolutions gather the
windows with :func:`numpy.lib.stride_tricks.sliding_window_view` (a view, no copy) and
contract them with the weight through :func:`numpy.tensordot` (one BLAS call per group);
the transposed convolution scatters one kernel tap at a time into the output.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from deferral import opkit, ops

__all__ = list(ops.CONV_OPS)  # every op of the family, nothing else

Pads = Sequence[tuple[int, int]]


def _pad(x: np.ndarray, padding: Pads, value: float = 0.0) -> np.ndarray:
    """``x`` with its spatial axes padded by ``value`` (``x`` itself when there is nothing to pad)."""
    if not any(before or after for before, after in padding):
        return x
    return np.pad(x, ((0, 0), (0, 0), *padding), constant_values=value)


def _windows(x: np.ndarray, kernel: Sequence[int], strides: Sequence[int],
             dilation: Sequence[int]) -> np.ndarray:
    """A view ``(N, C, *out, *kernel)`` of the (already padded) ``x``: the dilated kernel's taps
    at every strided output position."""
    n = len(kernel)
    span = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
    view = sliding_window_view(x, span, axis=tuple(range(2, 2 + n)))
    index = (slice(None), slice(None), *(slice(None, None, s) for s in strides),
             *(slice(None, None, d) for d in dilation))
    return view[index]


def conv(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, strides: Sequence[int],
         padding: Pads, dilation: Sequence[int], groups: int = 1) -> np.ndarray:
    """N-d cross-correlation; ``weight`` is ``(C_out, C_in / groups, *kernel)``."""
    n = len(strides)
    kernel = weight.shape[2:]
    windows = _windows(_pad(x, padding), kernel, strides, dilation)  # (N, C, *out, *kernel)
    c_in, c_out = x.shape[1] // groups, weight.shape[0] // groups
    axes = ([1, *range(2 + n, 2 + 2 * n)], [1, *range(2, 2 + n)])
    parts = [
        np.tensordot(windows[:, g * c_in:(g + 1) * c_in], weight[g * c_out:(g + 1) * c_out], axes=axes)
        for g in range(groups)
    ]  # each (N, *out, C_out / groups)
    y = parts[0] if groups == 1 else np.concatenate(parts, axis=-1)
    y = np.moveaxis(y, -1, 1)
    if bias is not None:
        y = y + bias.reshape(opkit.channel_shape(n + 2))
    return np.ascontiguousarray(y)


def conv_transpose(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, strides: Sequence[int],
                   padding: Pads, output_padding: Sequence[int], dilation: Sequence[int],
                   groups: int = 1) -> np.ndarray:
    """The adjoint of :func:`conv`; ``weight`` is ``(C_in, C_out / groups, *kernel)``.

    Every input element adds ``x * weight[..., tap]`` at ``position * stride + tap * dilation``
    of the full output, which is then cropped (and extended) as :func:`deferral.opkit.transposed_crop`
    says.
    """
    sizes, kernel = x.shape[2:], weight.shape[2:]
    c_in, c_out = x.shape[1] // groups, weight.shape[1]
    full = opkit.transposed_full(sizes, kernel, strides, dilation)
    crop = opkit.transposed_crop(padding, output_padding)
    room = [size + max(end, 0) for size, (_, end) in zip(full, crop)]
    out = np.zeros((x.shape[0], c_out * groups, *room), dtype=np.result_type(x, weight))
    for g in range(groups):
        # (N, *sizes, C_out / groups, *kernel): every input element times every tap.
        taps = np.tensordot(x[:, g * c_in:(g + 1) * c_in], weight[g * c_in:(g + 1) * c_in], axes=([1], [0]))
        taps = np.moveaxis(taps, 1 + len(sizes), 1)  # (N, C_out / groups, *sizes, *kernel)
        target = out[:, g * c_out:(g + 1) * c_out]
        for tap in np.ndindex(*kernel):
            where = tuple(slice(t * d, t * d + (size - 1) * s + 1, s)
                          for t, d, size, s in zip(tap, dilation, sizes, strides))
            window, at = (slice(None), slice(None), *where), (Ellipsis, *tap)
            target[window] += taps[at]
    kept = (slice(None), slice(None), *(slice(start, size + end) for size, (start, end) in zip(full, crop)))
    y = out[kept]
    if bias is not None:
        y = y + bias.reshape(opkit.channel_shape(y.ndim))
    return np.ascontiguousarray(y)


def max_pool(x: np.ndarray, window: Sequence[int], strides: Sequence[int], padding: Pads) -> np.ndarray:
    """Maximum over windows; padding is ``-inf``, so it never wins."""
    n = len(window)
    windows = _windows(_pad(x, padding, -np.inf), window, strides, (1,) * n)
    return np.ascontiguousarray(windows.max(axis=tuple(range(-n, 0))))


def avg_pool(x: np.ndarray, window: Sequence[int], strides: Sequence[int], padding: Pads) -> np.ndarray:
    """Mean over windows of the zero-padded input (the padding counts in the divisor)."""
    n = len(window)
    sums = _windows(_pad(x, padding), window, strides, (1,) * n).sum(axis=tuple(range(-n, 0)))
    return np.ascontiguousarray(sums / math.prod(window))
