"""PyTorch implementations of the sequence ops of :mod:`deferral.ops` (``SEQ_OPS``).

Semantics follow the NumPy backend; every op is differentiable through autograd (the slices
of :func:`split` and :func:`unstack` are views).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from deferral import ops

__all__ = list(ops.SEQ_OPS)  # every op of the family, nothing else

# torch's functions are called through names bound here (see ``_ops_norm``).
_split, _stack, _unbind, _as_tensor, _where, _zeros = (torch.split, torch.stack, torch.unbind, torch.as_tensor,
                                                      torch.where, torch.zeros)
_bool = torch.bool


def split(x: Tensor, sections: int, axis: int = -1) -> list[Tensor]:
    """``sections`` equal parts of ``x`` along ``axis`` (views; the core checks divisibility)."""
    return list(_split(x, x.shape[axis] // sections, dim=axis))


def stack(arrays: Sequence[Tensor], axis: int = 0) -> Tensor:
    """Join tensors of one shape along a new axis."""
    return _stack(tuple(arrays), dim=axis)


def unstack(x: Tensor, axis: int = 0) -> list[Tensor]:
    """The slices of ``x`` along ``axis`` (views), the axis removed."""
    return list(_unbind(x, dim=axis))


def where(condition: Any, a: Any, b: Any) -> Tensor:
    """``a`` where ``condition`` is true (non-zero), else ``b``, with broadcasting.

    Either branch may be a Python scalar (it takes the other branch's dtype); a condition that
    is not a boolean tensor (a NumPy array, an integer tensor) is converted.
    """
    device = a.device if isinstance(a, Tensor) else b.device if isinstance(b, Tensor) else None
    if not isinstance(condition, Tensor):
        condition = _as_tensor(condition, device=device)
    if condition.dtype != _bool:
        condition = condition != 0
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        a = _as_tensor(a, device=device)
    return _where(condition, a, b)


def zeros(shape: Sequence[int], like: Tensor) -> Tensor:
    """Zeros of ``shape`` with the dtype and device of ``like`` (never requiring grad)."""
    return _zeros(tuple(shape), dtype=like.dtype, device=like.device)
