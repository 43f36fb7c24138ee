"""PyTorch implementations of the normalization, embedding, dropout and state ops.

Semantics as documented in :mod:`deferral.ops` (``NORM_OPS``). Autograd flows through every
op but :func:`assign`, which writes a parameter's storage outside the graph. Dropout masks
come from torch's own generator (``torch.manual_seed`` makes them reproducible); they differ
from the NumPy and TensorFlow backends' masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, is_grad_enabled, no_grad, var_mean

from deferral import opkit, ops

__all__ = list(ops.NORM_OPS)  # every op of the family, nothing else


_INDEX_DTYPES = (torch.int64, torch.int32)

# The functions below call torch's through names bound here, never as ``torch.<name>`` at call
# time: ``torch.compile`` reaching the ``torch`` module through two modules' globals (this one's
# and ``_ops``'s) adds a guard evaluated in Python on every call.


def batch_norm(x: Tensor, mean: Tensor, var: Tensor, gamma: Tensor | None, beta: Tensor | None,
               eps: float) -> Tensor:
    """``(x - mean) / sqrt(var + eps) * gamma + beta`` with per-channel vectors on axis 1.

    Uses ``F.batch_norm`` (one fused kernel) when ``mean`` and ``var`` need no gradient
    (running statistics); batch statistics computed from ``x`` are applied with explicit
    arithmetic, so the gradient also flows through them, as batch normalization requires.
    """
    if not (is_grad_enabled() and (mean.requires_grad or var.requires_grad)):
        return F.batch_norm(x, mean, var, gamma, beta, training=False, momentum=0.0, eps=eps)
    return opkit.batch_norm(x, mean, var, gamma, beta, eps, rsqrt, _reshape)


def moments(x: Tensor, axes: Sequence[int], keepdims: bool = False) -> tuple[Tensor, Tensor]:
    """Mean and biased variance over ``axes``."""
    var, mean = var_mean(x, dim=tuple(axes), correction=0, keepdim=keepdims)
    return mean, var


sqrt = torch.sqrt
rsqrt = torch.rsqrt
_reshape = torch.reshape


def take(weight: Tensor, indices: Tensor) -> Tensor:
    """``weight[indices]`` (``F.embedding``); other integer index dtypes are widened to int64.

    Out-of-range indices raise ``IndexError`` on the CPU; on CUDA they trigger a device-side
    assertion.

    Raises:
        TypeError: for indices that are not integers (as NumPy).
    """
    if indices.dtype not in _INDEX_DTYPES:
        if indices.is_floating_point() or indices.is_complex():
            raise TypeError(f"take: indices must be integers; received a tensor of dtype {indices.dtype}")
        indices = indices.long()
    return F.embedding(indices, weight)


def dropout(x: Tensor, rate: float) -> Tensor:
    """Inverted dropout (``F.dropout(training=True)``); masks from torch's generator."""
    if rate == 0.0:
        return x
    return F.dropout(x, p=rate, training=True)


def assign(target: Tensor, value: Any) -> None:
    """Copy ``value`` into ``target``'s storage outside autograd (``target.copy_``).

    A sharded ``target`` (a DTensor under FSDP2 or tensor parallelism) given the whole
    parameter as a plain tensor keeps only its own elements: ``force_reinit``, ``set_data``
    and loading write each rank's shard in place, and the layout stays as it was.
    """
    from ._distributed import assign_shard

    with no_grad():
        if not assign_shard(target, value):
            target.copy_(value)
