"""PyTorch implementations of the convolution and pooling ops (``deferral.ops.CONV_OPS``).

torch is channels-first like the library, so weights and data pass as they are. torch's own
functions take one symmetric padding per axis (and, for pooling, at most half the window); an
asymmetric padding (``"same"`` with an even kernel) is applied with :func:`F.pad` first and the
op then runs unpadded. The transposed convolution crops (or extends) its full output instead.

On CUDA, float32 convolutions follow ``torch.backends.cudnn.allow_tf32`` as any torch model
does (TF32 is on by default there: about 1e-3 relative error).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from deferral import opkit, ops

__all__ = list(ops.CONV_OPS)  # every op of the family, nothing else

Pads = Sequence[tuple[int, int]]

_CONV: dict[int, Callable[..., Tensor]] = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T: dict[int, Callable[..., Tensor]] = {
    1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d,
}
_MAX: dict[int, Callable[..., Tensor]] = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG: dict[int, Callable[..., Tensor]] = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def _symmetric(padding: Pads) -> tuple[int, ...] | None:
    """One padding per axis when every axis is padded symmetrically, else ``None``."""
    if all(before == after for before, after in padding):
        return tuple(before for before, _ in padding)
    return None


def _flat(padding: Sequence[tuple[int, int]]) -> tuple[int, ...]:
    """:func:`F.pad`'s order: the last axis first, ``(before, after)`` each."""
    return tuple(v for pair in reversed(padding) for v in pair)


def _pooling_native(window: Sequence[int], padding: Pads) -> tuple[int, ...] | None:
    """The symmetric padding torch's pooling accepts (at most half the window), else ``None``."""
    pads = _symmetric(padding)
    if pads is None or any(p > k // 2 for p, k in zip(pads, window)):
        return None
    return pads


def conv(x: Tensor, weight: Tensor, bias: Tensor | None, strides: Sequence[int], padding: Pads,
         dilation: Sequence[int], groups: int = 1) -> Tensor:
    """N-d cross-correlation; ``weight`` is ``(C_out, C_in / groups, *kernel)`` (torch's layout)."""
    fn = _CONV[len(strides)]
    pads = _symmetric(padding)
    if pads is None:
        x, pads = F.pad(x, _flat(padding)), (0,) * len(strides)
    return fn(x, weight, bias, tuple(strides), pads, tuple(dilation), groups)


def conv_transpose(x: Tensor, weight: Tensor, bias: Tensor | None, strides: Sequence[int], padding: Pads,
                   output_padding: Sequence[int], dilation: Sequence[int], groups: int = 1) -> Tensor:
    """The adjoint of :func:`conv`; ``weight`` is ``(C_in, C_out / groups, *kernel)`` (torch's layout)."""
    n = len(strides)
    fn = _CONV_T[n]
    pads = _symmetric(padding)
    if pads is not None and all(op < max(s, d) for op, s, d in zip(output_padding, strides, dilation)):
        return fn(x, weight, bias, tuple(strides), pads, tuple(output_padding), groups, tuple(dilation))
    # The full output, cropped and extended as opkit.transposed_crop says (F.pad crops where
    # the amount is negative); the bias covers the extension too.
    y = fn(x, weight, None, tuple(strides), 0, 0, groups, tuple(dilation))
    y = F.pad(y, _flat([(-start, end) for start, end in opkit.transposed_crop(padding, output_padding)]))
    return y if bias is None else y + bias.reshape(opkit.channel_shape(n + 2))


def max_pool(x: Tensor, window: Sequence[int], strides: Sequence[int], padding: Pads) -> Tensor:
    """Maximum over windows; padding counts as ``-inf``."""
    fn = _MAX[len(window)]
    pads = _pooling_native(window, padding)
    if pads is None:
        x, pads = F.pad(x, _flat(padding), value=float("-inf")), (0,) * len(window)
    return fn(x, tuple(window), tuple(strides), pads)


def avg_pool(x: Tensor, window: Sequence[int], strides: Sequence[int], padding: Pads) -> Tensor:
    """Mean over windows of the zero-padded input (the padding counts in the divisor)."""
    fn: Any = _AVG[len(window)]
    pads = _pooling_native(window, padding)
    if pads is not None:
        return fn(x, tuple(window), tuple(strides), pads, False, True)
    return fn(F.pad(x, _flat(padding)), tuple(window), tuple(strides), 0)
