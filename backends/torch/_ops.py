"""PyTorch implementations of ``deferral.ops.OP_NAMES``.

Imported only when the torch backend is selected (through ``deferral_ops``), so importing
torch here at module level is fine. Each op takes and returns ``torch.Tensor`` and follows the
NumPy semantics documented in :mod:`deferral.ops`; where torch's own function already does,
it is used as is, so a forward pass pays no wrapper.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from deferral import ops

__all__ = list(ops.CORE_OPS)  # every core op, nothing else

Axis = int | Sequence[int] | None


def shape(x: Tensor) -> tuple[int, ...]:
    """The shape as a plain tuple of Python ints (not a ``torch.Size``)."""
    return tuple(x.shape)


#: ``x @ weight.T + bias``; ``weight`` is ``(units, in_units)``, as torch's own layout.
linear = F.linear
matmul = torch.matmul

# The Python operators broadcast, accept a scalar on either side and promote like NumPy 2.
add = operator.add
subtract = operator.sub
multiply = operator.mul
divide = operator.truediv

relu = torch.relu
sigmoid = torch.sigmoid
tanh = torch.tanh
exp = torch.exp
expm1 = torch.expm1
log = torch.log
log1p = torch.log1p


def _tensors(a: Any, b: Any) -> tuple[Tensor, Tensor]:
    """Both operands as tensors: a Python scalar joins the other side's device (and dtype)."""
    if not isinstance(b, Tensor):
        b = torch.as_tensor(b, device=a.device)
    elif not isinstance(a, Tensor):
        a = torch.as_tensor(a, device=b.device)
    return a, b


def maximum(a: Any, b: Any) -> Tensor:
    """Element-wise maximum with broadcasting; either side may be a Python scalar."""
    return torch.maximum(*_tensors(a, b))


def minimum(a: Any, b: Any) -> Tensor:
    """Element-wise minimum with broadcasting; either side may be a Python scalar."""
    return torch.minimum(*_tensors(a, b))


def gelu(x: Tensor) -> Tensor:
    """Exact GELU, ``x * Phi(x)`` with the error function (``approximate="none"``)."""
    return F.gelu(x)


def softmax(x: Tensor, axis: int = -1) -> Tensor:
    """Softmax along ``axis``."""
    return torch.softmax(x, dim=axis)


def log_softmax(x: Tensor, axis: int = -1) -> Tensor:
    """Log-softmax along ``axis``, computed stably."""
    return torch.log_softmax(x, dim=axis)


def reshape(x: Tensor, shape: tuple[int, ...]) -> Tensor:
    """``x`` with a new shape (one entry may be -1)."""
    return torch.reshape(x, shape)


def flatten(x: Tensor) -> Tensor:
    """``(N, a, b, ...) -> (N, a*b*...)``; a vector ``(N,)`` becomes ``(N, 1)``, as in NumPy."""
    return x.reshape(x.shape[0], -1)


def transpose(x: Tensor, axes: tuple[int, ...] | None = None) -> Tensor:
    """Permute the axes; reverse them when ``axes`` is None (as ``numpy.transpose``)."""
    if axes is None:
        axes = tuple(range(x.dim() - 1, -1, -1))
    return x.permute(axes)


def concat(arrays: Sequence[Tensor], axis: int = 0) -> Tensor:
    """Join tensors along an existing axis."""
    return torch.cat(tuple(arrays), dim=axis)


def _dims(axis: Axis) -> int | tuple[int, ...] | None:
    if axis is None or isinstance(axis, int):
        return axis
    return tuple(int(a) for a in axis)


def sum(x: Tensor, axis: Axis = None, keepdims: bool = False) -> Tensor:
    """Sum over ``axis`` (an int, a tuple, or None for every axis).

    ``axis=()`` reduces nothing, as in NumPy (torch would read an empty tuple as "all").
    """
    dims = _dims(axis)
    if dims == ():
        return x.clone()
    if dims is None:
        return torch.sum(x, dim=tuple(range(x.dim())), keepdim=True) if keepdims else torch.sum(x)
    return torch.sum(x, dim=dims, keepdim=keepdims)


def mean(x: Tensor, axis: Axis = None, keepdims: bool = False) -> Tensor:
    """Mean over ``axis`` (an int, a tuple, or None for every axis).

    Integer and boolean inputs give float64, as in NumPy; ``axis=()`` reduces nothing.
    """
    if not (x.is_floating_point() or x.is_complex()):
        x = x.to(torch.float64)
    dims = _dims(axis)
    if dims == ():
        return x.clone()
    if dims is None:
        return torch.mean(x, dim=tuple(range(x.dim())), keepdim=True) if keepdims else torch.mean(x)
    return torch.mean(x, dim=dims, keepdim=keepdims)


def max(x: Tensor, axis: Axis = None, keepdims: bool = False) -> Tensor:
    """Maximum over ``axis``; ``axis=()`` reduces nothing (torch's ``amax`` would reduce all)."""
    dims = _dims(axis)
    if dims == ():
        return x.clone()
    return torch.amax(x, dim=tuple(range(x.dim())) if dims is None else dims, keepdim=keepdims)


def min(x: Tensor, axis: Axis = None, keepdims: bool = False) -> Tensor:
    """Minimum over ``axis``; ``axis=()`` reduces nothing."""
    dims = _dims(axis)
    if dims == ():
        return x.clone()
    return torch.amin(x, dim=tuple(range(x.dim())) if dims is None else dims, keepdim=keepdims)

from ._ops_conv import *  # noqa: E402,F403
from ._ops_norm import *  # noqa: E402,F403
from ._ops_seq import *  # noqa: E402,F403
