"""An independent float64 reference for every op, in plain NumPy, for the op conformance checks.

It shares no code with any backend (the NumPy backend included), and where the backends use
one algorithm it uses another: convolutions and pooling accumulate one kernel tap at a time, pooling
one output element at a time (windows counted as PyTorch's kernels count them),
the transposed convolution is a convolution of the zero-upsampled input with the flipped
kernel, ``gelu`` uses :func:`math.erf`. Inputs are upcast to float64 first; results are
float64 (their expected dtype comes from the op's shape rule, itself checked against the
backends). :func:`reference` returns what the op returns; for ``assign``, the target's new
contents.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ._opcases import Param

__all__ = ["reference"]

Pads = Sequence[tuple[int, int]]


def _up(arg: Any) -> Any:
    if isinstance(arg, Param):
        return _up(arg.value)
    if isinstance(arg, np.ndarray):
        return arg.astype(np.float64) if arg.dtype.kind == "f" else arg
    if isinstance(arg, list):
        return [_up(a) for a in arg]
    return arg


def _channels(v: np.ndarray, rank: int) -> np.ndarray:
    return v.reshape((1, -1) + (1,) * (rank - 2))


def _taps(x: np.ndarray, kernel: Sequence[int], strides: Sequence[int], dilation: Sequence[int],
          out: Sequence[int]) -> Any:
    """For each kernel tap, the strided slice of the (padded) ``x`` it meets at every output."""
    for tap in np.ndindex(*kernel):
        where = tuple(slice(t * d, t * d + (o - 1) * s + 1, s) for t, d, o, s in zip(tap, dilation, out, strides))
        window = (slice(None), slice(None), *where)
        yield tap, x[window]


def _conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, strides: Sequence[int], padding: Pads,
          dilation: Sequence[int], groups: int) -> np.ndarray:
    xp = np.pad(x, ((0, 0), (0, 0), *padding))
    kernel = w.shape[2:]
    out = [(n - d * (k - 1) - 1) // s + 1 for n, k, s, d in zip(xp.shape[2:], kernel, strides, dilation)]
    c_in, c_out = x.shape[1] // groups, w.shape[0] // groups
    y = np.zeros((x.shape[0], w.shape[0], *out))
    for g in range(groups):
        part = xp[:, g * c_in:(g + 1) * c_in]
        for tap, seen in _taps(part, kernel, strides, dilation, out):
            index = (slice(g * c_out, (g + 1) * c_out), slice(None), *tap)
            taps = w[index]  # (C_out / groups, C_in / groups)
            y[:, g * c_out:(g + 1) * c_out] += np.einsum("nc...,oc->no...", seen, taps)
    return y if b is None else y + _channels(b, y.ndim)


def _conv_transpose(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, strides: Sequence[int], padding: Pads,
                    output_padding: Sequence[int], dilation: Sequence[int], groups: int) -> np.ndarray:
    # Zero-upsample by the stride, pad by dilation * (k - 1) less the padding (negative: crop),
    # then a stride-1 convolution with the flipped kernel, input and output channels swapped.
    n, kernel = x.ndim - 2, w.shape[2:]
    up = np.zeros((*x.shape[:2], *((size - 1) * s + 1 for size, s in zip(x.shape[2:], strides))))
    strided = (slice(None), slice(None), *(slice(None, None, s) for s in strides))
    up[strided] = x
    pads = [(d * (k - 1) - before, d * (k - 1) - after + extra)
            for k, d, (before, after), extra in zip(kernel, dilation, padding, output_padding)]
    crop = tuple(slice(max(-a, 0), up.shape[2 + i] - max(-c, 0)) for i, (a, c) in enumerate(pads))
    cropped = (slice(None), slice(None), *crop)
    up = np.pad(up[cropped], ((0, 0), (0, 0), *((max(a, 0), max(c, 0)) for a, c in pads)))
    c_in = w.shape[0] // groups
    flipped = np.flip(w, axis=tuple(range(2, 2 + n)))
    conv_w = np.concatenate([np.swapaxes(flipped[g * c_in:(g + 1) * c_in], 0, 1) for g in range(groups)])
    return _conv(up, conv_w, b, (1,) * n, ((0, 0),) * n, dilation, groups)


def _windows(size: int, k: int, s: int, before: int, after: int, ceil_mode: bool) -> list[tuple[int, int]]:
    """Each window's ``[start, end)`` in input coordinates, counted as PyTorch's kernels do."""
    span = size + before + after - k
    count = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (count - 1) * s >= size + before:
        count -= 1
    return [(i * s - before, i * s - before + k) for i in range(count)]


def _pool(x: np.ndarray, window: Sequence[int], strides: Sequence[int], padding: Pads, ceil_mode: bool,
          average: bool, count_include_pad: bool = True) -> np.ndarray:
    """Pooling one output element at a time, each window clipped to the input."""
    sizes = x.shape[2:]
    axes = [_windows(n, k, s, b, a, ceil_mode) for n, k, s, (b, a) in zip(sizes, window, strides, padding)]
    out = np.empty((*x.shape[:2], *(len(w) for w in axes)))
    spatial = tuple(range(2, x.ndim))
    for index in np.ndindex(*(len(w) for w in axes)):
        bounds = [axes[d][i] for d, i in enumerate(index)]
        box = (slice(None), slice(None), *(slice(max(lo, 0), min(hi, n)) for (lo, hi), n in zip(bounds, sizes)))
        at = (slice(None), slice(None), *index)
        seen = x[box]
        if not average:
            out[at] = seen.max(axis=spatial)
            continue
        if count_include_pad:  # the window clipped to the padded input
            divisor = math.prod(min(hi, n + a) - lo for (lo, hi), n, (_, a) in zip(bounds, sizes, padding))
        else:
            divisor = math.prod(seen.shape[2:])
        out[at] = seen.sum(axis=spatial) / divisor
    return out


def _batch_norm(x: np.ndarray, mean: np.ndarray, var: np.ndarray, gamma: np.ndarray | None,
                beta: np.ndarray | None, eps: float) -> np.ndarray:
    y = (x - _channels(mean, x.ndim)) / np.sqrt(_channels(var, x.ndim) + eps)
    if gamma is not None:
        y = y * _channels(gamma, x.ndim)
    return y if beta is None else y + _channels(beta, x.ndim)


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def _moments(x: np.ndarray, axes: Sequence[int], keepdims: bool) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=tuple(axes), keepdims=True)
    var = ((x - mean) ** 2).mean(axis=tuple(axes), keepdims=keepdims)
    return (mean if keepdims else mean.squeeze(axis=tuple(axes))), var


def _extreme(x: np.ndarray, axis: int | Sequence[int] | None, keepdims: bool, end: int) -> np.ndarray:
    """The first (``end=0``) or last (``-1``) element of the sorted reduced axes: min or max."""
    axes = tuple(range(x.ndim)) if axis is None else (axis,) if isinstance(axis, int) else tuple(axis)
    axes = tuple(a % x.ndim for a in axes)
    kept = [a for a in range(x.ndim) if a not in axes]
    if not axes:
        return x
    size = math.prod(x.shape[a] for a in axes)
    moved = np.transpose(x, (*kept, *axes)).reshape(*(x.shape[a] for a in kept), size)
    out = np.sort(moved, axis=-1)[..., end]
    return out.reshape([1 if a in axes else x.shape[a] for a in range(x.ndim)]) if keepdims else out


def _split(x: np.ndarray, sections: int, axis: int) -> list[np.ndarray]:
    size = x.shape[axis] // sections
    return [np.take(x, range(i * size, (i + 1) * size), axis=axis) for i in range(sections)]


_erf = np.vectorize(math.erf, otypes=[np.float64])

_REFERENCE: dict[str, Callable[..., Any]] = {
    "shape": lambda x: tuple(x.shape),
    "linear": lambda x, w, b: x @ w.T + (0.0 if b is None else b),
    "matmul": np.matmul,
    "add": lambda a, b: a + b,
    "subtract": lambda a, b: a - b,
    "multiply": lambda a, b: a * b,
    "divide": lambda a, b: a / b,
    "maximum": np.maximum,
    "minimum": lambda a, b: np.where(a < b, a, b),
    "relu": lambda x: np.where(x > 0, x, 0.0),
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "tanh": np.tanh,
    "gelu": lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))),
    "softmax": _softmax,
    "log_softmax": _log_softmax,
    "exp": np.exp,
    "log": np.log,
    "expm1": lambda x: np.vectorize(math.expm1, otypes=[np.float64])(x),
    "log1p": lambda x: np.vectorize(math.log1p, otypes=[np.float64])(x),
    "reshape": lambda x, shape: x.reshape(shape),
    "flatten": lambda x: x.reshape(len(x), -1),
    "transpose": lambda x, axes: x.transpose(axes),
    "concat": lambda arrays, axis: np.concatenate(arrays, axis),
    "sum": lambda x, axis, keepdims: np.sum(x, axis=axis, keepdims=keepdims),
    "mean": lambda x, axis, keepdims: np.mean(x, axis=axis, keepdims=keepdims),
    "max": lambda x, axis, keepdims: _extreme(x, axis, keepdims, -1),
    "min": lambda x, axis, keepdims: _extreme(x, axis, keepdims, 0),
    "conv": _conv,
    "conv_transpose": _conv_transpose,
    "max_pool": lambda x, window, strides, padding, ceil_mode=False: _pool(x, window, strides, padding, ceil_mode,
                                                                           False),
    "avg_pool": lambda x, window, strides, padding, count_include_pad=True, ceil_mode=False: _pool(
        x, window, strides, padding, ceil_mode, True, count_include_pad),
    "batch_norm": _batch_norm,
    "moments": _moments,
    "sqrt": np.sqrt,
    "rsqrt": lambda x: 1.0 / np.sqrt(x),
    "take": lambda w, i: w[i],
    "dropout": lambda x, rate: x,
    "assign": lambda target, value: np.broadcast_to(value, target.shape),
    "split": _split,
    "stack": lambda arrays, axis: np.stack(arrays, axis),
    "unstack": lambda x, axis: [np.take(x, i, axis=axis) for i in range(x.shape[axis])],
    "where": lambda c, a, b: np.where(c != 0, a, b),
    "zeros": lambda shape, like: np.zeros(shape),
}


def reference(name: str, args: Sequence[Any]) -> Any:
    """What ``deferral.ops.<name>(*args)`` computes, in float64 (``args``: NumPy values)."""
    return _REFERENCE[name](*(_up(a) for a in args))


def names() -> tuple[str, ...]:
    """The ops the reference covers."""
    return tuple(_REFERENCE)
