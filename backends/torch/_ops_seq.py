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



def split(x: Tensor, sections: int, axis: int = -1) -> list[Tensor]:
    """``sections`` equal parts of ``x`` along ``axis`` (views; the core checks divisibility)."""
    return list(torch.split(x, x.shape[axis] // sections, dim=axis))


def stack(arrays: Sequence[Tensor], axis: int = 0) -> Tensor:
    """Join tensors of one shape along a new axis."""
    return torch.stack(tuple(arrays), dim=axis)


def unstack(x: Tensor, axis: int = 0) -> list[Tensor]:
    """The slices of ``x`` along ``axis`` (views), the axis removed."""
    return list(torch.unbind(x, dim=axis))


def where(condition: Any, a: Any, b: Any) -> Tensor:
    """``a`` where ``condition`` is true (non-zero), else ``b``, with broadcasting.

    Either branch may be a Python scalar (it takes the other branch's dtype); a condition that
    is not a boolean tensor (a NumPy array, an integer tensor) is converted.
    """
    device = a.device if isinstance(a, Tensor) else b.device if isinstance(b, Tensor) else None
    if not isinstance(condition, Tensor):
        condition = torch.as_tensor(condition, device=device)
    if condition.dtype != torch.bool:
        condition = condition != 0
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        a = torch.as_tensor(a, device=device)
    return torch.where(condition, a, b)


def zeros(shape: Sequence[int], like: Tensor) -> Tensor:
    """Zeros of ``shape`` with the dtype and device of ``like`` (never requiring grad)."""
    return torch.zeros(tuple(shape), dtype=like.dtype, device=like.device)
