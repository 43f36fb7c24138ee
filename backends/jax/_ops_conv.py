"""JAX implementations of the convolution and pooling ops (``deferral.ops.CONV_OPS``).

The library's layouts are channels-first, which :func:`jax.lax.conv_general_dilated` takes as
they are (``NCH``/``NCHW``/``NCDHW`` data, ``OIH``/``OIHW``/``OIDHW`` weights), with explicit
``(before, after)`` padding, dilation and groups. The transposed convolution is the
convolution of the input dilated by the strides with the spatially flipped kernel (its
in/out channels swapped per group); pooling is :func:`jax.lax.reduce_window`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from deferral import opkit, ops

__all__ = list(ops.CONV_OPS)  # every op of the family, nothing else

Pads = Sequence[tuple[int, int]]

_SPATIAL = {1: "H", 2: "HW", 3: "DHW"}


def _numbers(n: int) -> tuple[str, str, str]:
    s = _SPATIAL[n]
    return "NC" + s, "OI" + s, "NC" + s


def _bias(y: jax.Array, bias: Any | None) -> jax.Array:
    return y if bias is None else y + jnp.reshape(bias, opkit.channel_shape(y.ndim))


def _fits(op: str, x: Any, window: Sequence[int], padding: Pads, dilation: Sequence[int]) -> None:
    """Refuse a (dilated) window larger than its padded axis, as NumPy does (``lax`` would
    return an empty result).

    Raises:
        ValueError: naming the op, the window and the padded input's size.
    """
    sizes = tuple(x.shape[2:])
    spans = [d * (k - 1) + 1 for k, d in zip(window, dilation)]
    padded = [n + b + a for n, (b, a) in zip(sizes, padding)]
    if any(p < s for p, s in zip(padded, spans)):
        raise ValueError(f"{op}: a window spanning {tuple(spans)} does not fit in the padded input of "
                         f"spatial size {tuple(padded)}")


def conv(x: Any, weight: Any, bias: Any | None, strides: Sequence[int], padding: Pads,
         dilation: Sequence[int], groups: int = 1) -> jax.Array:
    """N-d cross-correlation; ``weight`` is ``(C_out, C_in / groups, *kernel)``."""
    _fits("conv", x, weight.shape[2:], padding, dilation)
    y = lax.conv_general_dilated(x, weight, tuple(strides), [tuple(p) for p in padding],
                                 rhs_dilation=tuple(dilation), dimension_numbers=_numbers(len(strides)),
                                 feature_group_count=groups, precision=lax.Precision.HIGHEST)
    return _bias(y, bias)


def conv_transpose(x: Any, weight: Any, bias: Any | None, strides: Sequence[int], padding: Pads,
                   output_padding: Sequence[int], dilation: Sequence[int], groups: int = 1) -> jax.Array:
    """The adjoint of :func:`conv`; ``weight`` is ``(C_in, C_out / groups, *kernel)``.

    The full output (``opkit.transposed_full``) is cropped and extended as
    :func:`deferral.opkit.transposed_crop` says; crops larger than the kernel's reach are
    sliced off afterwards (``lax`` pads only outward here).
    """
    n = len(strides)
    c_in, c_out_g, *kernel = weight.shape
    w = jnp.reshape(weight, (groups, c_in // groups, c_out_g, *kernel))
    w = jnp.swapaxes(w, 1, 2).reshape((groups * c_out_g, c_in // groups, *kernel))
    w = jnp.flip(w, axis=tuple(range(2, 2 + n)))
    reach = [d * (k - 1) for k, d in zip(kernel, dilation)]
    pads = [(r - start, r + end) for r, (start, end) in zip(reach, opkit.transposed_crop(padding, output_padding))]
    y = lax.conv_general_dilated(x, w, (1,) * n, [(max(lo, 0), max(hi, 0)) for lo, hi in pads],
                                 lhs_dilation=tuple(strides), rhs_dilation=tuple(dilation),
                                 dimension_numbers=_numbers(n), feature_group_count=groups,
                                 precision=lax.Precision.HIGHEST)
    crop = (slice(None), slice(None), *(slice(-min(lo, 0), size + min(hi, 0))
                                        for (lo, hi), size in zip(pads, y.shape[2:])))
    return _bias(y[crop], bias)


def _window(kind: str, x: Any, window: Sequence[int], strides: Sequence[int], padding: Pads) -> jax.Array:
    x = jnp.asarray(x)
    _fits(f"{kind}_pool", x, window, padding, (1,) * len(window))
    # A concrete NumPy init lets JAX see the monoid (max or add), which it can differentiate.
    init = np.array(-np.inf if kind == "max" else 0, dtype=x.dtype)
    fn = lax.max if kind == "max" else lax.add
    return lax.reduce_window(x, init, fn, (1, 1, *window), (1, 1, *strides),
                             [(0, 0), (0, 0), *(tuple(p) for p in padding)])


def max_pool(x: Any, window: Sequence[int], strides: Sequence[int], padding: Pads) -> jax.Array:
    """Maximum over windows; padding is ``-inf``, so it never wins."""
    return _window("max", x, window, strides, padding)


def avg_pool(x: Any, window: Sequence[int], strides: Sequence[int], padding: Pads) -> jax.Array:
    """Mean over windows of the zero-padded input (the padding counts in the divisor)."""
    return _window("avg", x, window, strides, padding) / math.prod(window)
