"""Shape-only execution: :class:`TensorSpec`, and the helpers the ops' shape rules share.

A model called on :class:`TensorSpec` inputs (``net.infer_shape((None, 20))``) runs its
``forward`` with :data:`SHAPE_OPS` instead of a backend's namespace: each op returns the
:class:`TensorSpec` of its result, so every parameter's unknown dimensions are fixed
(``declared`` → ``shaped``) without allocating a parameter or computing anything. Custom
blocks work unchanged as long as they compute with :mod:`deferral.ops`. The rules themselves
are declared with their ops, in :mod:`deferral.ops`; :data:`SHAPE_OPS` is derived from them.

A rule rejects what the real op rejects, with an error of the same built-in class
(:class:`~deferral.ShapeMismatchError` is a ``ValueError``); the conformance suite checks
every rule against the real op on every case of its table.

``None`` stands for a dimension unknown at inference time (typically the batch size).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ShapeMismatchError

__all__ = ["TensorSpec", "spec_of"]

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
        return _shape_ops().add(self, other)

    def __sub__(self, other: Any) -> TensorSpec:
        return _shape_ops().subtract(self, other)

    def __mul__(self, other: Any) -> TensorSpec:
        return _shape_ops().multiply(self, other)

    def __truediv__(self, other: Any) -> TensorSpec:
        return _shape_ops().divide(self, other)

    def __matmul__(self, other: Any) -> TensorSpec:
        return _shape_ops().matmul(self, other)

    def __rmatmul__(self, other: Any) -> TensorSpec:
        return _shape_ops().matmul(other, self)

    __radd__ = __add__
    __rmul__ = __mul__

    def __rsub__(self, other: Any) -> TensorSpec:
        return _shape_ops().subtract(other, self)

    def __rtruediv__(self, other: Any) -> TensorSpec:
        return _shape_ops().divide(other, self)

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


def _shape_ops() -> Any:
    from .ops import SHAPE_OPS

    return SHAPE_OPS


# -- helpers of the shape rules ------------------------------------------------------------
def fail(op: str, message: str) -> ShapeMismatchError:
    """The error a shape rule raises: the op, then what does not fit."""
    return ShapeMismatchError(f"ops.{op} (shape inference): {message}")


def broadcast(op: str, *shapes: tuple[Dim, ...]) -> tuple[Dim, ...]:
    """The broadcast of ``shapes`` (NumPy's rules); ``None`` broadcasts with anything."""
    rank = max((len(s) for s in shapes), default=0)
    out: list[Dim] = []
    for i in range(rank):
        dims = [s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0]
        known = {d for d in dims if d is not None and d != 1}
        if len(known) > 1:
            raise fail(op, f"shapes {', '.join(map(str, shapes))} do not broadcast")
        if known:
            out.append(known.pop())
        elif None in dims:
            out.append(None)
        else:
            out.append(1)
    return tuple(out)


def elementwise(op: str, *args: Any) -> TensorSpec:
    """The spec of an element-wise op: broadcast shape, the first array argument's dtype."""
    specs = [spec_of(a) for a in args]
    arrays = [s for a, s in zip(args, specs) if not isinstance(a, (int, float))]
    return TensorSpec(broadcast(op, *(s.shape for s in specs)), (arrays or specs)[0].dtype)


def axis(op: str, value: int, rank: int) -> int:
    """``value`` as an index in ``range(rank)`` (negative counts from the end).

    Raises:
        ShapeMismatchError: if it is out of range (NumPy's ``AxisError`` is a ValueError too).
    """
    if not -rank <= value < rank:
        raise fail(op, f"axis {value} is out of range for rank {rank}")
    return value + rank if value < 0 else value


def axes(op: str, values: Any, rank: int) -> set[int]:
    """The set of axes ``values`` names (all when None), validated and without repeats."""
    listed = list(range(rank)) if values is None else [values] if isinstance(values, int) else list(values)
    found = {axis(op, a, rank) for a in listed}
    if len(found) != len(listed):
        raise fail(op, f"axes {tuple(listed)} repeat an axis")
    return found


def prod(dims: Sequence[Dim]) -> Dim:
    """The product of ``dims``; ``None`` if one of them is unknown."""
    return None if any(d is None for d in dims) else math.prod(dims)  # type: ignore[arg-type]


def window_out(op: str, size: Dim, pad: tuple[int, int], span: int, stride: int) -> Dim:
    """Output length of a sliding window of ``span`` elements over a padded axis.

    Raises:
        ShapeMismatchError: if the window is larger than the padded axis.
    """
    if size is None:
        return None
    padded = size + pad[0] + pad[1]
    if padded < span:
        raise fail(op, f"a window of {span} does not fit in an axis of {size} padded by {pad}")
    return (padded - span) // stride + 1
