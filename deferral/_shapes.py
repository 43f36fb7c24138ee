"""Shape-only execution: every op of :mod:`deferral.ops` as a rule on shapes.

A model called on :class:`TensorSpec` inputs (``net.infer_shape((None, 20))``) runs its
``forward`` with this namespace instead of a backend's: each op returns the
:class:`TensorSpec` of its result, so every parameter's unknown dimensions are fixed
(``declared`` → ``shaped``) without allocating a parameter or computing anything. Custom
blocks work unchanged as long as they compute with :mod:`deferral.ops`.

``None`` stands for a dimension unknown at inference time (typically the batch size).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ShapeMismatchError

__all__ = ["SHAPE_OPS", "TensorSpec", "spec_of"]

Dim = int | None


@dataclass(frozen=True)
class TensorSpec:
    """The shape and dtype of an array that does not exist.

    Args:
        shape: dimensions; ``None`` for one not known (a batch size).
        dtype: dtype name (``"float32"``; ``"int64"`` for embedding indices).

    Example:
        >>> from deferral import TensorSpec, nn
        >>> net = nn.Sequential([nn.Dense(8), nn.Dense(2)])
        >>> net(TensorSpec((None, 5))).shape
        (None, 2)
        >>> net[0].weight.shape, net[0].weight.state
        ((8, 5), 'shaped')
    """

    shape: tuple[Dim, ...]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        shape = tuple(self.shape)
        for d in shape:
            if d is not None and (isinstance(d, bool) or not isinstance(d, int) or d < 0):
                raise ValueError(
                    f"TensorSpec: every dimension must be a non-negative int or None. Received: {shape!r}"
                )
        object.__setattr__(self, "shape", shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    # Arithmetic operators follow the ops' shape rules, so ``x + y`` in a forward works.
    def __add__(self, other: Any) -> TensorSpec:
        return SHAPE_OPS.add(self, other)

    def __sub__(self, other: Any) -> TensorSpec:
        return SHAPE_OPS.subtract(self, other)

    def __mul__(self, other: Any) -> TensorSpec:
        return SHAPE_OPS.multiply(self, other)

    def __truediv__(self, other: Any) -> TensorSpec:
        return SHAPE_OPS.divide(self, other)

    def __matmul__(self, other: Any) -> TensorSpec:
        return SHAPE_OPS.matmul(self, other)

    def __rmatmul__(self, other: Any) -> TensorSpec:
        return SHAPE_OPS.matmul(other, self)

    __radd__ = __add__
    __rmul__ = __mul__

    def __rsub__(self, other: Any) -> TensorSpec:
        return SHAPE_OPS.subtract(other, self)

    def __rtruediv__(self, other: Any) -> TensorSpec:
        return SHAPE_OPS.divide(other, self)

    def __neg__(self) -> TensorSpec:
        return self

    # A framework function applied to a spec gets an error that says what to do instead.
    def _not_an_op(self, what: str) -> TypeError:
        return TypeError(
            f"shape-only inference reached {what} on a TensorSpec{self.shape}: forward() called a "
            "framework function directly. Shape inference (infer_shape, summary, TensorSpec "
            "inputs) runs forward() with deferral.ops only; replace the call with its "
            "deferral.ops equivalent (e.g. deferral.ops.tanh instead of numpy.tanh or torch.tanh)."
        )

    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        raise self._not_an_op("a conversion to a NumPy array")

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        raise self._not_an_op(f"numpy.{getattr(ufunc, '__name__', ufunc)}")

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        raise self._not_an_op(f"numpy.{getattr(func, '__name__', func)}")

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        spec = next(a for a in args if isinstance(a, TensorSpec)) if args else cls(())
        raise spec._not_an_op(f"torch function {getattr(func, '__name__', func)}")


def spec_of(x: Any) -> TensorSpec:
    """The spec of a TensorSpec, or of a real array (anything with ``shape`` and ``dtype``)."""
    if isinstance(x, TensorSpec):
        return x
    if isinstance(x, (int, float)):
        return TensorSpec((), "float32")
    shape = getattr(x, "shape", None)
    if shape is None:
        raise TypeError(f"shape inference: expected an array or a TensorSpec; received {type(x).__name__}")
    dtype = getattr(getattr(x, "dtype", None), "name", None) or str(getattr(x, "dtype", "float32"))
    return TensorSpec(tuple(None if d is None else int(d) for d in shape), dtype.replace("torch.", ""))


def _fail(op: str, message: str) -> ShapeMismatchError:
    return ShapeMismatchError(f"ops.{op} (shape inference): {message}")


def _broadcast(op: str, *shapes: tuple[Dim, ...]) -> tuple[Dim, ...]:
    rank = max((len(s) for s in shapes), default=0)
    out: list[Dim] = []
    for i in range(rank):
        dims = [s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0]
        known = {d for d in dims if d is not None and d != 1}
        if len(known) > 1:
            raise _fail(op, f"shapes {', '.join(map(str, shapes))} do not broadcast")
        if known:
            out.append(known.pop())
        elif None in dims:
            out.append(None)
        else:
            out.append(1)
    return tuple(out)


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _prod(dims: Sequence[Dim]) -> Dim:
    return None if any(d is None for d in dims) else math.prod(dims)  # type: ignore[arg-type]


def _window_out(size: Dim, before: int, after: int, k: int, stride: int, dilation: int = 1) -> Dim:
    if size is None:
        return None
    return (size + before + after - dilation * (k - 1) - 1) // stride + 1


class _ShapeOps:
    """The op namespace of shape-only execution (see :mod:`deferral.ops` for semantics)."""

    # -- core ----------------------------------------------------------------------------
    @staticmethod
    def shape(x: Any) -> tuple[Dim, ...]:
        return spec_of(x).shape

    @staticmethod
    def linear(x: Any, weight: Any, bias: Any = None) -> TensorSpec:
        xs, ws = spec_of(x), spec_of(weight)
        if xs.shape[-1] is not None and xs.shape[-1] != ws.shape[1]:
            raise _fail("linear", f"input has {xs.shape[-1]} features, weight {ws.shape} expects {ws.shape[1]}")
        return TensorSpec((*xs.shape[:-1], ws.shape[0]), xs.dtype)

    @staticmethod
    def matmul(a: Any, b: Any) -> TensorSpec:
        sa, sb = spec_of(a).shape, spec_of(b).shape
        left, right = (1, *sa) if len(sa) == 1 else sa, (*sb, 1) if len(sb) == 1 else sb
        if None not in (left[-1], right[-2]) and left[-1] != right[-2]:
            raise _fail("matmul", f"inner dimensions of {sa} and {sb} differ")
        batch = _broadcast("matmul", left[:-2], right[:-2])
        out = (*batch, left[-2], right[-1])
        if len(sa) == 1:
            out = out[:-2] + out[-1:]
        if len(sb) == 1:
            out = out[:-1]
        return TensorSpec(out, spec_of(a).dtype)

    @staticmethod
    def _binary(op: str, a: Any, b: Any) -> TensorSpec:
        sa, sb = spec_of(a), spec_of(b)
        dtype = sa.dtype if not isinstance(a, (int, float)) else sb.dtype
        return TensorSpec(_broadcast(op, sa.shape, sb.shape), dtype)

    def add(self, a: Any, b: Any) -> TensorSpec:
        return self._binary("add", a, b)

    def subtract(self, a: Any, b: Any) -> TensorSpec:
        return self._binary("subtract", a, b)

    def multiply(self, a: Any, b: Any) -> TensorSpec:
        return self._binary("multiply", a, b)

    def divide(self, a: Any, b: Any) -> TensorSpec:
        return self._binary("divide", a, b)

    def maximum(self, a: Any, b: Any) -> TensorSpec:
        return self._binary("maximum", a, b)

    @staticmethod
    def _same(x: Any, *args: Any) -> TensorSpec:
        return spec_of(x)

    relu = sigmoid = tanh = gelu = exp = log = sqrt = rsqrt = _same

    @staticmethod
    def softmax(x: Any, axis: int = -1) -> TensorSpec:
        return spec_of(x)

    log_softmax = softmax

    @staticmethod
    def reshape(x: Any, shape: tuple[int, ...]) -> TensorSpec:
        xs = spec_of(x)
        total = _prod(xs.shape)
        out: list[Dim] = list(shape)
        if -1 in out:
            known = math.prod(d for d in out if d != -1)  # type: ignore[misc]
            out[out.index(-1)] = None if total is None else total // max(known, 1)
        elif total is not None and math.prod(out) != total:  # type: ignore[arg-type]
            raise _fail("reshape", f"cannot reshape {xs.shape} into {tuple(shape)}")
        return TensorSpec(tuple(out), xs.dtype)

    @staticmethod
    def flatten(x: Any) -> TensorSpec:
        xs = spec_of(x)
        return TensorSpec((xs.shape[0], _prod(xs.shape[1:])), xs.dtype)

    @staticmethod
    def transpose(x: Any, axes: tuple[int, ...] | None = None) -> TensorSpec:
        xs = spec_of(x)
        axes = tuple(reversed(range(xs.ndim))) if axes is None else axes
        return TensorSpec(tuple(xs.shape[a] for a in axes), xs.dtype)

    @staticmethod
    def concat(arrays: list[Any], axis: int = 0) -> TensorSpec:
        specs = [spec_of(a) for a in arrays]
        ax = _axis(axis, specs[0].ndim)
        out = list(specs[0].shape)
        sizes = [s.shape[ax] for s in specs]
        out[ax] = None if None in sizes else sum(sizes)  # type: ignore[arg-type]
        return TensorSpec(tuple(out), specs[0].dtype)

    @staticmethod
    def _reduce(x: Any, axis: Any = None, keepdims: bool = False) -> TensorSpec:
        xs = spec_of(x)
        axes = range(xs.ndim) if axis is None else [axis] if isinstance(axis, int) else axis
        axes = {_axis(a, xs.ndim) for a in axes}
        out = [1 if i in axes else d for i, d in enumerate(xs.shape)] if keepdims else [
            d for i, d in enumerate(xs.shape) if i not in axes]
        return TensorSpec(tuple(out), xs.dtype)

    sum = mean = _reduce

    # -- convolution and pooling ---------------------------------------------------------
    @staticmethod
    def conv(x: Any, weight: Any, bias: Any, strides: tuple[int, ...], padding: tuple[tuple[int, int], ...],
             dilation: tuple[int, ...], groups: int = 1) -> TensorSpec:
        xs, ws = spec_of(x), spec_of(weight)
        spatial = tuple(
            _window_out(n, p[0], p[1], k, s, d)
            for n, p, k, s, d in zip(xs.shape[2:], padding, ws.shape[2:], strides, dilation)
        )
        return TensorSpec((xs.shape[0], ws.shape[0], *spatial), xs.dtype)

    @staticmethod
    def conv_transpose(x: Any, weight: Any, bias: Any, strides: tuple[int, ...],
                       padding: tuple[tuple[int, int], ...], output_padding: tuple[int, ...],
                       dilation: tuple[int, ...], groups: int = 1) -> TensorSpec:
        xs, ws = spec_of(x), spec_of(weight)
        spatial = tuple(
            None if n is None else (n - 1) * s - p[0] - p[1] + d * (k - 1) + op + 1
            for n, p, k, s, d, op in zip(xs.shape[2:], padding, ws.shape[2:], strides, dilation, output_padding)
        )
        return TensorSpec((xs.shape[0], ws.shape[1] * groups, *spatial), xs.dtype)

    @staticmethod
    def max_pool(x: Any, window: tuple[int, ...], strides: tuple[int, ...],
                 padding: tuple[tuple[int, int], ...], *rest: Any) -> TensorSpec:
        xs = spec_of(x)
        spatial = tuple(_window_out(n, p[0], p[1], k, s) for n, p, k, s in zip(xs.shape[2:], padding, window, strides))
        return TensorSpec((*xs.shape[:2], *spatial), xs.dtype)

    avg_pool = max_pool

    # -- normalization, embedding, state -------------------------------------------------
    @staticmethod
    def batch_norm(x: Any, *args: Any) -> TensorSpec:
        return spec_of(x)

    def moments(self, x: Any, axes: tuple[int, ...], keepdims: bool = False) -> tuple[TensorSpec, TensorSpec]:
        reduced = self._reduce(x, axes, keepdims)
        return reduced, reduced

    @staticmethod
    def take(weight: Any, indices: Any) -> TensorSpec:
        ws = spec_of(weight)
        return TensorSpec((*spec_of(indices).shape, *ws.shape[1:]), ws.dtype)

    @staticmethod
    def dropout(x: Any, rate: float) -> TensorSpec:
        return spec_of(x)

    @staticmethod
    def assign(target: Any, value: Any) -> None:
        return None

    # -- sequences -----------------------------------------------------------------------
    @staticmethod
    def split(x: Any, sections: int, axis: int = -1) -> list[TensorSpec]:
        xs = spec_of(x)
        ax = _axis(axis, xs.ndim)
        size = xs.shape[ax]
        if size is not None and size % sections:
            raise _fail("split", f"axis {axis} of {xs.shape} does not split into {sections} equal parts")
        part = list(xs.shape)
        part[ax] = None if size is None else size // sections
        return [TensorSpec(tuple(part), xs.dtype)] * sections

    @staticmethod
    def stack(arrays: list[Any], axis: int = 0) -> TensorSpec:
        first = spec_of(arrays[0])
        ax = _axis(axis, first.ndim + 1)
        return TensorSpec((*first.shape[:ax], len(arrays), *first.shape[ax:]), first.dtype)

    @staticmethod
    def unstack(x: Any, axis: int = 0) -> list[TensorSpec]:
        xs = spec_of(x)
        ax = _axis(axis, xs.ndim)
        count = xs.shape[ax]
        if count is None:
            raise _fail("unstack", f"axis {axis} of {xs.shape} has no known length; give it in the input shape")
        return [TensorSpec(xs.shape[:ax] + xs.shape[ax + 1:], xs.dtype)] * count

    @staticmethod
    def where(condition: Any, a: Any, b: Any) -> TensorSpec:
        shapes = [spec_of(v).shape for v in (condition, a, b)]
        dtype = spec_of(a).dtype if not isinstance(a, (int, float)) else spec_of(b).dtype
        return TensorSpec(_broadcast("where", *shapes), dtype)

    @staticmethod
    def zeros(shape: tuple[int, ...], like: Any) -> TensorSpec:
        return TensorSpec(tuple(shape), spec_of(like).dtype)


#: The namespace used while a model runs on :class:`TensorSpec` inputs.
SHAPE_OPS = _ShapeOps()
