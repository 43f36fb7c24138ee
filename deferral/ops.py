"""The op namespace that layers and custom blocks compute with.

Layers are written once against these functions; each dispatches on its first argument's
array type to that backend's op namespace (a model converts its inputs to the backend it is
bound to), so a custom ``forward`` works unchanged on every backend; a non-array first
argument goes to the default backend.

Every backend's namespace provides each name in :data:`OP_NAMES` with the semantics
documented here (:class:`OpNamespace` is its typed protocol). Data layouts are the
library's: a Dense weight is ``(units, in_units)``.

Each op is declared here once: its public function (name, signature, docstring, argument
normalization and dispatch), its family, and next to it its shape rule (what shape-only
inference computes instead; see :mod:`deferral._opdef`).

Example:
    >>> import numpy as np
    >>> from deferral import ops
    >>> ops.relu(np.array([-1.0, 2.0]))
    array([0., 2.])
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Sequence
from typing import Any

from . import _functional, _opdef
from . import _shapes as _s
from ._dispatch import _ops as _ops
from ._opdef import check_namespace as check_namespace
from ._opdef import implements as implements
from ._opdef import op as _op
from ._protocol import OpNamespace as OpNamespace
from ._shapes import TensorSpec, broadcast, elementwise, fail, prod, spec_of, window_out

Array = Any
Pads = Sequence[tuple[int, int]]
_Spec = TensorSpec
_Pairs = tuple[tuple[int, int], ...]


def _pairs(padding: Pads) -> _Pairs:
    return tuple((int(b), int(a)) for b, a in padding)


def _axes(axis: int | Sequence[int] | None) -> int | tuple[int, ...] | None:
    return axis if axis is None or isinstance(axis, int) else tuple(axis)


def _float(dtype: str) -> str:
    """The dtype NumPy gives a mean or a true division of ``dtype``."""
    return dtype if "float" in dtype else "float64"


def _same(x: Array) -> Array:
    return spec_of(x)


# == core ==================================================================================
def _shape_shape(x: Array) -> tuple[int | None, ...]:
    return spec_of(x).shape


@_op("core", _shape_shape)
def shape(x: Array) -> tuple[int, ...]:
    """The shape of ``x`` as a tuple of Python ints."""
    return _ops(x).shape(x)


def _linear_shape(x: Array, weight: Array, bias: Array | None) -> Array:
    xs, ws = spec_of(x), spec_of(weight)
    if ws.ndim != 2 or xs.ndim < 1:
        raise fail("linear", f"expected an input of rank >= 1 and a weight of rank 2; received {xs.shape}, {ws.shape}")
    if xs.shape[-1] is not None and xs.shape[-1] != ws.shape[1]:
        raise fail("linear", f"input has {xs.shape[-1]} features, weight {ws.shape} expects {ws.shape[1]}")
    if bias is not None and spec_of(bias).shape != (ws.shape[0],):
        raise fail("linear", f"bias {spec_of(bias).shape} does not match weight {ws.shape}")
    return TensorSpec((*xs.shape[:-1], ws.shape[0]), xs.dtype)


@_op("core", _linear_shape)
def linear(x: Array, weight: Array, bias: Array | None = None) -> Array:
    """``x @ weight.T + bias`` over the last axis of ``x``; ``weight`` is ``(units, in_units)``."""
    return _ops(x).linear(x, weight, bias)


def _matmul_shape(a: Array, b: Array) -> Array:
    sa, sb = spec_of(a).shape, spec_of(b).shape
    if not (sa and sb):
        raise fail("matmul", f"operands must have rank >= 1; received {sa} and {sb}")
    left, right = (1, *sa) if len(sa) == 1 else sa, (*sb, 1) if len(sb) == 1 else sb
    if None not in (left[-1], right[-2]) and left[-1] != right[-2]:
        raise fail("matmul", f"inner dimensions of {sa} and {sb} differ")
    out = (*broadcast("matmul", left[:-2], right[:-2]), left[-2], right[-1])
    if len(sa) == 1:
        out = out[:-2] + out[-1:]
    if len(sb) == 1:
        out = out[:-1]
    return TensorSpec(out, spec_of(a).dtype)


@_op("core", _matmul_shape)
def matmul(a: Array, b: Array) -> Array:
    """Matrix product with NumPy broadcasting rules."""
    return _ops(a).matmul(a, b)


def _add_shape(a: Array, b: Array) -> Array:
    return elementwise("add", a, b)


@_op("core", _add_shape)
def add(a: Array, b: Array) -> Array:
    """Element-wise ``a + b`` with broadcasting."""
    return _ops(a).add(a, b)


def _subtract_shape(a: Array, b: Array) -> Array:
    return elementwise("subtract", a, b)


@_op("core", _subtract_shape)
def subtract(a: Array, b: Array) -> Array:
    """Element-wise ``a - b`` with broadcasting."""
    return _ops(a).subtract(a, b)


def _multiply_shape(a: Array, b: Array) -> Array:
    return elementwise("multiply", a, b)


@_op("core", _multiply_shape)
def multiply(a: Array, b: Array) -> Array:
    """Element-wise ``a * b`` with broadcasting."""
    return _ops(a).multiply(a, b)


def _divide_shape(a: Array, b: Array) -> Array:
    out = elementwise("divide", a, b)
    return TensorSpec(out.shape, _float(out.dtype))


@_op("core", _divide_shape)
def divide(a: Array, b: Array) -> Array:
    """Element-wise ``a / b`` with broadcasting."""
    return _ops(a).divide(a, b)


def _maximum_shape(a: Array, b: Array) -> Array:
    return elementwise("maximum", a, b)


@_op("core", _maximum_shape)
def maximum(a: Array, b: Array) -> Array:
    """Element-wise maximum with broadcasting."""
    return _ops(a).maximum(a, b)


def _minimum_shape(a: Array, b: Array) -> Array:
    return elementwise("minimum", a, b)


@_op("core", _minimum_shape)
def minimum(a: Array, b: Array) -> Array:
    """Element-wise minimum with broadcasting."""
    return _ops(a).minimum(a, b)


@_op("core", _same)
def relu(x: Array) -> Array:
    """``max(x, 0)``."""
    return _ops(x).relu(x)


@_op("core", _same)
def sigmoid(x: Array) -> Array:
    """``1 / (1 + exp(-x))``."""
    return _ops(x).sigmoid(x)


@_op("core", _same)
def tanh(x: Array) -> Array:
    """Hyperbolic tangent."""
    return _ops(x).tanh(x)


@_op("core", _same)
def gelu(x: Array) -> Array:
    """Gaussian error linear unit, exact form ``x * Phi(x)`` (as ``torch.nn.GELU()``)."""
    return _ops(x).gelu(x)


def _softmax_shape(x: Array, axis: int) -> Array:
    xs = spec_of(x)
    _s.axis("softmax", axis, xs.ndim)
    return xs


@_op("core", _softmax_shape)
def softmax(x: Array, axis: int = -1) -> Array:
    """Softmax along ``axis``."""
    return _ops(x).softmax(x, axis)


@_op("core", _softmax_shape)
def log_softmax(x: Array, axis: int = -1) -> Array:
    """Log of the softmax along ``axis``, computed stably."""
    return _ops(x).log_softmax(x, axis)


@_op("core", _same)
def exp(x: Array) -> Array:
    """Element-wise exponential."""
    return _ops(x).exp(x)


@_op("core", _same)
def log(x: Array) -> Array:
    """Element-wise natural logarithm."""
    return _ops(x).log(x)


@_op("core", _same)
def expm1(x: Array) -> Array:
    """Element-wise ``exp(x) - 1``, accurate for ``x`` near 0."""
    return _ops(x).expm1(x)


@_op("core", _same)
def log1p(x: Array) -> Array:
    """Element-wise ``log(1 + x)``, accurate for ``x`` near 0."""
    return _ops(x).log1p(x)


def _reshape_shape(x: Array, shape: tuple[int, ...]) -> Array:
    xs = spec_of(x)
    total, out = prod(xs.shape), list[int | None](shape)
    if shape.count(-1) > 1 or any(d < -1 for d in shape):
        raise fail("reshape", f"{shape} may hold one -1 and otherwise sizes >= 0")
    known = math.prod(d for d in shape if d != -1)
    if -1 in shape:
        if total is not None and (known == 0 or total % known):
            raise fail("reshape", f"cannot reshape {xs.shape} into {shape}: the -1 has no integer size")
        out[shape.index(-1)] = None if total is None else total // known
    elif total is not None and known != total:
        raise fail("reshape", f"cannot reshape {xs.shape} ({total} elements) into {shape}")
    return TensorSpec(tuple(out), xs.dtype)


@_op("core", _reshape_shape)
def reshape(x: Array, shape: Sequence[int]) -> Array:
    """``x`` with a new shape (one entry may be -1)."""
    return _ops(x).reshape(x, tuple(shape))


def _flatten_shape(x: Array) -> Array:
    xs = spec_of(x)
    if xs.ndim < 1:
        raise fail("flatten", "a 0-d input has no first axis to keep")
    return TensorSpec((xs.shape[0], prod(xs.shape[1:])), xs.dtype)


@_op("core", _flatten_shape)
def flatten(x: Array) -> Array:
    """Collapse every axis but the first: ``(N, a, b, ...) -> (N, a*b*...)``."""
    return _ops(x).flatten(x)


def _transpose_shape(x: Array, axes: tuple[int, ...] | None) -> Array:
    xs = spec_of(x)
    order = tuple(reversed(range(xs.ndim))) if axes is None else axes
    if len(order) != xs.ndim:
        raise fail("transpose", f"axes {order} must name each of the {xs.ndim} axes of {xs.shape} once")
    _s.axes("transpose", order, xs.ndim)  # in range, no repeats
    return TensorSpec(tuple(xs.shape[a] for a in order), xs.dtype)


@_op("core", _transpose_shape)
def transpose(x: Array, axes: Sequence[int] | None = None) -> Array:
    """Permute axes (reverse them when ``axes`` is None)."""
    return _ops(x).transpose(x, None if axes is None else tuple(axes))


def _joined(op: str, arrays: list[Array], skip: int | None) -> list[_Spec]:
    """The specs of ``arrays``, checked to agree on every axis but ``skip``."""
    specs = [spec_of(a) for a in arrays]
    if not specs:
        raise fail(op, "needs at least one array")
    first = specs[0]
    for s in specs[1:]:
        same = s.ndim == first.ndim and all(
            i == skip or None in (a, b) or a == b for i, (a, b) in enumerate(zip(s.shape, first.shape)))
        if not same:
            where = "every axis" if skip is None else f"every axis but {skip}"
            raise fail(op, f"shapes {first.shape} and {s.shape} must agree on {where}")
    return specs


def _concat_shape(arrays: list[Array], axis: int) -> Array:
    first = spec_of(arrays[0]) if arrays else None
    ax = _s.axis("concat", axis, first.ndim) if first is not None else 0
    specs = _joined("concat", arrays, ax)
    sizes = [s.shape[ax] for s in specs]
    out = list(specs[0].shape)
    out[ax] = None if None in sizes else builtins.sum(sizes)  # type: ignore[arg-type]
    return TensorSpec(tuple(out), specs[0].dtype)


@_op("core", _concat_shape)
def concat(arrays: Sequence[Array], axis: int = 0) -> Array:
    """Join arrays along an existing axis."""
    arrays = list(arrays)
    return _ops(arrays[0]).concat(arrays, axis)


def _reduce_shape(x: Array, axis: int | tuple[int, ...] | None, keepdims: bool) -> Array:
    xs = spec_of(x)
    reduced = _s.axes("reduction", axis, xs.ndim)
    kept = [1 if i in reduced else d for i, d in enumerate(xs.shape)] if keepdims else [
        d for i, d in enumerate(xs.shape) if i not in reduced]
    return TensorSpec(tuple(kept), xs.dtype)


@_op("core", _reduce_shape)
def sum(x: Array, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> Array:
    """Sum over ``axis`` (all axes when None)."""
    return _ops(x).sum(x, _axes(axis), keepdims)


def _mean_shape(x: Array, axis: int | tuple[int, ...] | None, keepdims: bool) -> Array:
    out = _reduce_shape(x, axis, keepdims)
    return TensorSpec(out.shape, _float(out.dtype))


@_op("core", _mean_shape)
def mean(x: Array, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> Array:
    """Mean over ``axis`` (all axes when None)."""
    return _ops(x).mean(x, _axes(axis), keepdims)


def _nonempty(op: str, shape: tuple[int | None, ...], axis: int | Sequence[int] | None) -> None:
    """Raise unless every axis a ``max``/``min`` reduces is non-empty (frameworks differ here)."""
    if any(shape[i] == 0 for i in _s.axes(op, axis, len(shape))):
        raise fail(op, f"cannot reduce an empty axis of {shape}: the {op} of nothing is undefined")


def _extreme(op: str, x: Array, axis: int | tuple[int, ...] | None, keepdims: bool) -> Array:
    _nonempty(op, spec_of(x).shape, axis)
    return _reduce_shape(x, axis, keepdims)


def _max_shape(x: Array, axis: int | tuple[int, ...] | None, keepdims: bool) -> Array:
    return _extreme("max", x, axis, keepdims)


def _min_shape(x: Array, axis: int | tuple[int, ...] | None, keepdims: bool) -> Array:
    return _extreme("min", x, axis, keepdims)


@_op("core", _max_shape)
def max(x: Array, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> Array:
    """Maximum over ``axis`` (all axes when None).

    Raises:
        ShapeMismatchError: for an empty axis (a maximum of nothing is undefined).
    """
    F = _ops(x)
    _nonempty("max", F.shape(x), axis)
    return F.max(x, _axes(axis), keepdims)


@_op("core", _min_shape)
def min(x: Array, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> Array:
    """Minimum over ``axis`` (all axes when None).

    Raises:
        ShapeMismatchError: for an empty axis.
    """
    F = _ops(x)
    _nonempty("min", F.shape(x), axis)
    return F.min(x, _axes(axis), keepdims)


# == conv: convolution and pooling ==========================================================
# Data is channels-first: (N, C, *spatial) with 1 to 3 spatial axes. ``strides`` and
# ``dilation`` have one entry per spatial axis; ``padding`` has one ``(before, after)`` pair
# per spatial axis (layers resolve "same"/"valid"/ints into explicit pairs).
def _conv_specs(op: str, x: Array, weight: Array, n: int, groups: int) -> tuple[_Spec, _Spec]:
    xs, ws = spec_of(x), spec_of(weight)
    if xs.ndim != n + 2 or ws.ndim != n + 2:
        raise fail(op, f"{n} spatial axes need an input and a weight of rank {n + 2}; received {xs.shape}, {ws.shape}")
    if groups < 1 or ws.shape[0] % groups:  # type: ignore[operator]
        raise fail(op, f"weight {ws.shape}: axis 0 does not split into groups={groups}")
    return xs, ws


def _bias(op: str, bias: Array | None, channels: Any) -> None:
    if bias is not None and spec_of(bias).shape != (channels,):
        raise fail(op, f"bias {spec_of(bias).shape} must hold one value per output channel ({channels})")


def _conv_shape(x: Array, weight: Array, bias: Array | None, strides: tuple[int, ...],
                padding: tuple[tuple[int, int], ...], dilation: tuple[int, ...], groups: int) -> Array:
    xs, ws = _conv_specs("conv", x, weight, len(strides), groups)
    if xs.shape[1] is not None and xs.shape[1] != ws.shape[1] * groups:  # type: ignore[operator]
        raise fail("conv", f"input has {xs.shape[1]} channels; weight {ws.shape} with groups={groups} "
                           f"expects {ws.shape[1] * groups}")  # type: ignore[operator]
    _bias("conv", bias, ws.shape[0])
    spatial = tuple(window_out("conv", n, p, d * (k - 1) + 1, s)  # type: ignore[operator]
                    for n, p, k, s, d in zip(xs.shape[2:], padding, ws.shape[2:], strides, dilation))
    return TensorSpec((xs.shape[0], ws.shape[0], *spatial), xs.dtype)


@_op("conv", _conv_shape)
def conv(x: Array, weight: Array, bias: Array | None, strides: Sequence[int], padding: Pads,
         dilation: Sequence[int], groups: int = 1) -> Array:
    """N-d cross-correlation. ``weight`` is ``(C_out, C_in / groups, *kernel)``.

    Output spatial size per axis: ``(size + before + after - dilation * (k - 1) - 1) // stride + 1``.
    """
    return _ops(x).conv(x, weight, bias, tuple(strides), _pairs(padding), tuple(dilation), groups)


def _conv_transpose_shape(x: Array, weight: Array, bias: Array | None, strides: tuple[int, ...],
                          padding: tuple[tuple[int, int], ...], output_padding: tuple[int, ...],
                          dilation: tuple[int, ...], groups: int) -> Array:
    xs, ws = _conv_specs("conv_transpose", x, weight, len(strides), groups)
    if xs.shape[1] is not None and xs.shape[1] != ws.shape[0]:
        raise fail("conv_transpose", f"input has {xs.shape[1]} channels; weight {ws.shape} expects {ws.shape[0]}")
    c_out = ws.shape[1] * groups  # type: ignore[operator]
    _bias("conv_transpose", bias, c_out)
    spatial = tuple(
        None if n is None else (n - 1) * s - p[0] - p[1] + d * (k - 1) + op + 1
        for n, p, k, s, d, op in zip(xs.shape[2:], padding, ws.shape[2:], strides, dilation, output_padding)
    )
    return TensorSpec((xs.shape[0], c_out, *spatial), xs.dtype)


@_op("conv", _conv_transpose_shape)
def conv_transpose(x: Array, weight: Array, bias: Array | None, strides: Sequence[int], padding: Pads,
                   output_padding: Sequence[int], dilation: Sequence[int], groups: int = 1) -> Array:
    """The gradient of :func:`conv` with respect to its input ("deconvolution").

    ``weight`` is ``(C_in, C_out / groups, *kernel)``. Output spatial size per axis:
    ``(size - 1) * stride - before - after + dilation * (k - 1) + output_padding + 1``.
    """
    return _ops(x).conv_transpose(x, weight, bias, tuple(strides), _pairs(padding), tuple(output_padding),
                                  tuple(dilation), groups)


def _pool_shape(x: Array, window: tuple[int, ...], strides: tuple[int, ...],
                padding: tuple[tuple[int, int], ...]) -> Array:
    xs = spec_of(x)
    if xs.ndim != len(window) + 2:
        raise fail("pool", f"a {len(window)}-d window needs an input of rank {len(window) + 2}; received {xs.shape}")
    spatial = tuple(window_out("pool", n, p, k, s) for n, p, k, s in zip(xs.shape[2:], padding, window, strides))
    return TensorSpec((*xs.shape[:2], *spatial), xs.dtype)


def _ceil_padding(sizes: Sequence[int | None], window: Sequence[int], strides: Sequence[int],
                 padding: Pads) -> _Pairs:
    """``padding`` with the extra ``after`` elements that make the output size round up.

    As PyTorch's ``ceil_mode``: per axis ``ceil((size + before + after - window) / stride) + 1``
    windows, less one if the last would start past the input and the ``before`` padding (it
    would see padding only). The extra elements are padding a window may overhang.

    Example:
        >>> from deferral.ops import _ceil_padding
        >>> _ceil_padding((7, 6), window=(2, 3), strides=(2, 3), padding=((0, 0), (1, 0)))
        ((0, 1), (1, 2))
    """
    out = []
    for n, k, s, (before, after) in zip(sizes, window, strides, _pairs(padding)):
        total = None if n is None else n + before + after
        if total is None or total < k:  # unknown, or too small: the shape rule reports it
            out.append((before, after))
            continue
        count = -(-(total - k) // s) + 1
        if (count - 1) * s >= n + before:  # type: ignore[operator]
            count -= 1
        out.append((before, after + builtins.max((count - 1) * s + k - total, 0)))
    return tuple(out)


@_op("conv", _pool_shape)
def max_pool(x: Array, window: Sequence[int], strides: Sequence[int], padding: Pads,
             ceil_mode: bool = False) -> Array:
    """Maximum over windows of the spatial axes (padding never wins: it counts as -inf).

    ``ceil_mode`` rounds the output size up, as PyTorch's (see :func:`_ceil_padding`).
    """
    F = _ops(x)
    window, strides, pads = tuple(window), tuple(strides), _pairs(padding)
    if ceil_mode:
        pads = _ceil_padding(F.shape(x)[2:], window, strides, pads)
    return F.max_pool(x, window, strides, pads)


@_op("conv", _pool_shape)
def avg_pool(x: Array, window: Sequence[int], strides: Sequence[int], padding: Pads,
             count_include_pad: bool = True, ceil_mode: bool = False) -> Array:
    """Mean over windows of the spatial axes; padded zeros count in the divisor if asked.

    A backend's ``avg_pool`` always counts them; without ``count_include_pad`` the mean is
    divided by the fraction of each window that is input (the same pooling of ones; needs
    the backend's ``zeros``). ``ceil_mode`` rounds the output size up as PyTorch's does
    (:func:`_ceil_padding`); a window overhanging the padded input is then divided, as in
    PyTorch, by its part within the padded input (``count_include_pad``) or within the input.
    """
    F = _ops(x)
    window, strides, pads = tuple(window), tuple(strides), _pairs(padding)
    sizes = F.shape(x)[2:]
    extended = _ceil_padding(sizes, window, strides, pads) if ceil_mode else pads
    y = F.avg_pool(x, window, strides, extended)
    if count_include_pad:
        if extended == pads:
            return y
        # the padded input (ones) pooled with only the overhang as padding
        region = tuple(n + b + a for n, (b, a) in zip(sizes, pads))
        overhang = tuple((0, e - a) for (_, a), (_, e) in zip(pads, extended))
        return F.divide(y, F.avg_pool(F.add(F.zeros((1, 1, *region), x), 1), window, strides, overhang))
    if not any(b or a for b, a in extended):
        return y
    ones = F.add(F.zeros((1, 1, *sizes), x), 1)
    return F.divide(y, F.avg_pool(ones, window, strides, extended))


# == norm: normalization, embedding, dropout, state =========================================
def _batch_norm_shape(x: Array, mean: Array, var: Array, gamma: Array | None, beta: Array | None,
                      eps: float) -> Array:
    xs = spec_of(x)
    if xs.ndim < 2:
        raise fail("batch_norm", f"expected an input of rank >= 2 (channels on axis 1); received {xs.shape}")
    for name, v in (("mean", mean), ("var", var), ("gamma", gamma), ("beta", beta)):
        if v is not None and spec_of(v).shape not in ((xs.shape[1],), (None,)) and xs.shape[1] is not None:
            raise fail("batch_norm", f"{name} {spec_of(v).shape} must hold one value per channel ({xs.shape[1]})")
    return xs


@_op("norm", _batch_norm_shape)
def batch_norm(x: Array, mean: Array, var: Array, gamma: Array | None, beta: Array | None,
               eps: float) -> Array:
    """``(x - mean) / sqrt(var + eps) * gamma + beta`` with per-channel vectors on axis 1."""
    return _ops(x).batch_norm(x, mean, var, gamma, beta, float(eps))


def _moments_shape(x: Array, axes: tuple[int, ...], keepdims: bool) -> tuple[Array, Array]:
    out = _mean_shape(x, axes, keepdims)
    return out, out


@_op("norm", _moments_shape)
def moments(x: Array, axes: Sequence[int], keepdims: bool = False) -> tuple[Array, Array]:
    """Mean and (biased) variance over ``axes``."""
    return _ops(x).moments(x, tuple(axes), keepdims)


@_op("norm", _same)
def sqrt(x: Array) -> Array:
    """Element-wise square root."""
    return _ops(x).sqrt(x)


@_op("norm", _same)
def rsqrt(x: Array) -> Array:
    """Element-wise ``1 / sqrt(x)``."""
    return _ops(x).rsqrt(x)


def _take_shape(weight: Array, indices: Array) -> Array:
    ws, ix = spec_of(weight), spec_of(indices)
    if "float" in ix.dtype or "complex" in ix.dtype:
        raise TypeError(f"ops.take (shape inference): indices must be integers; received dtype {ix.dtype}")
    if ws.ndim < 1:
        raise fail("take", "a 0-d weight has no rows")
    return TensorSpec((*ix.shape, *ws.shape[1:]), ws.dtype)


@_op("norm", _take_shape)
def take(weight: Array, indices: Array) -> Array:
    """Rows of ``weight`` selected by integer ``indices``: ``weight[indices]`` (embedding lookup)."""
    return _ops(weight).take(weight, indices)


def _dropout_shape(x: Array, rate: float) -> Array:
    return spec_of(x)


@_op("norm", _dropout_shape)
def dropout(x: Array, rate: float) -> Array:
    """Zero each element with probability ``rate`` and scale the rest by ``1 / (1 - rate)``.

    Masks come from the backend's own generator: they are *not* identical across backends.
    Layers call it only in training mode.
    """
    return _ops(x).dropout(x, float(rate))


def _assign_shape(target: Array, value: Array) -> None:
    ts = spec_of(target)
    if broadcast("assign", ts.shape, spec_of(value).shape) != ts.shape:
        raise fail("assign", f"a value of shape {spec_of(value).shape} does not fit a target of shape {ts.shape}")


@_op("norm", _assign_shape)
def assign(target: Array, value: Array) -> None:
    """Overwrite a parameter's native storage with ``value`` in place, outside autograd.

    Inside ``deferral.functional``'s ``apply``, where ``target`` is a value the call was given,
    the call records ``value`` as that parameter's new state instead (returned in training mode).
    """
    if _functional.active and _functional.record_assign(target, value):
        return None
    return _ops(target).assign(target, value)


# == seq: sequences and attention ===========================================================
def _split_shape(x: Array, sections: int, axis: int) -> Sequence[Array]:
    xs = spec_of(x)
    ax = _s.axis("split", axis, xs.ndim)
    size = xs.shape[ax]
    part = list(xs.shape)
    part[ax] = None if size is None else _split_size(size, sections, axis, xs.shape)
    return [TensorSpec(tuple(part), xs.dtype)] * sections


def _split_size(size: int, sections: int, axis: int, shape: tuple[Any, ...]) -> int:
    """The size of each of ``sections`` equal parts of an axis of ``size``, or a clear error."""
    if sections <= 0 or size % sections:
        raise fail("split", f"axis {axis} of size {size} does not divide into {sections} equal parts (shape {shape})")
    return size // sections


@_op("seq", _split_shape)
def split(x: Array, sections: int, axis: int = -1) -> list[Array]:
    """Split ``x`` into ``sections`` equal parts along ``axis``.

    Raises:
        ShapeMismatchError: if the axis does not divide into ``sections`` equal parts.
    """
    F, sections = _ops(x), int(sections)
    dims = F.shape(x)
    if dims[axis] is not None:  # unknown while a framework traces: the framework checks
        _split_size(dims[axis], sections, axis, dims)
    return list(F.split(x, sections, axis))


def _stack_shape(arrays: list[Array], axis: int) -> Array:
    specs = _joined("stack", arrays, None)
    ax = _s.axis("stack", axis, specs[0].ndim + 1)
    shape = specs[0].shape
    return TensorSpec((*shape[:ax], len(specs), *shape[ax:]), specs[0].dtype)


@_op("seq", _stack_shape)
def stack(arrays: Sequence[Array], axis: int = 0) -> Array:
    """Join arrays along a new axis."""
    arrays = list(arrays)
    return _ops(arrays[0]).stack(arrays, axis)


def _unstack_shape(x: Array, axis: int) -> Sequence[Array]:
    xs = spec_of(x)
    ax = _s.axis("unstack", axis, xs.ndim)
    count = xs.shape[ax]
    if count is None:
        raise fail("unstack", f"axis {axis} of {xs.shape} has no known length; give it in the input shape")
    return [TensorSpec(xs.shape[:ax] + xs.shape[ax + 1:], xs.dtype)] * count


@_op("seq", _unstack_shape)
def unstack(x: Array, axis: int = 0) -> list[Array]:
    """The slices of ``x`` along ``axis``, as a list (the axis removed)."""
    return list(_ops(x).unstack(x, axis))


def _where_shape(condition: Array, a: Array, b: Array) -> Array:
    out = elementwise("where", a, b)
    return TensorSpec(broadcast("where", spec_of(condition).shape, out.shape), out.dtype)


@_op("seq", _where_shape)
def where(condition: Array, a: Array, b: Array) -> Array:
    """``a`` where ``condition`` is true, else ``b`` (with broadcasting)."""
    return _ops(a).where(condition, a, b)


def _zeros_shape(shape: tuple[int, ...], like: Array) -> Array:
    return TensorSpec(tuple(shape), spec_of(like).dtype)


@_op("seq", _zeros_shape)
def zeros(shape: Sequence[int], like: Array) -> Array:
    """Zeros of ``shape`` with the dtype and device of ``like``."""
    return _ops(like).zeros(tuple(shape), like)


# == derived from the declarations ==========================================================
#: Element-wise, linear-algebra, shape and reduction ops.
CORE_OPS: tuple[str, ...] = _opdef.names("core")
#: Convolution and pooling (channels-first: N, C, *spatial).
CONV_OPS: tuple[str, ...] = _opdef.names("conv")
#: Normalization, embedding lookup, dropout and in-place state updates.
NORM_OPS: tuple[str, ...] = _opdef.names("norm")
#: Sequence and attention helpers.
SEQ_OPS: tuple[str, ...] = _opdef.names("seq")
#: Every op of the namespace. A backend must implement :data:`CORE_OPS`; the layer families
#: (:data:`CONV_OPS`, :data:`NORM_OPS`, :data:`SEQ_OPS`) are optional for third-party
#: backends: calling one a backend lacks raises ``NotImplementedError`` naming it.
OP_NAMES: tuple[str, ...] = _opdef.names()
#: The namespace shape-only inference runs on: each op's shape rule.
SHAPE_OPS = _opdef.shape_namespace()

__all__ = [  # derived from the declarations
    "CONV_OPS", "CORE_OPS", "NORM_OPS", "OP_NAMES", "SEQ_OPS", "OpNamespace", "check_namespace", *OP_NAMES,
]


def __dir__() -> list[str]:
    """Only the public API (not the names this module imports)."""
    return sorted(__all__)
