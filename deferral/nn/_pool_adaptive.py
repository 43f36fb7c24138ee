"""Adaptive pooling: ``AdaptiveAvgPool1D/2D`` and ``AdaptiveMaxPool1D/2D``.

The output size is fixed and the windows adapt to the input, with PyTorch's windows: along an
axis of size ``L`` pooled to ``out``, output ``i`` covers ``[floor(i * L / out),
ceil((i + 1) * L / out))``. Where ``out`` divides ``L`` those are the windows of an ordinary
pooling (``pool_size = strides = L // out``), which is what runs. Otherwise each axis is pooled
on its own (a rectangle's mean is the mean of its rows' means; its maximum likewise), one
output element at a time from the input's slices: ``out`` small reductions per axis, written
with the ops every backend has (no backend needs an adaptive-pooling kernel of its own).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from .. import ops
from ._args import as_int
from ._conv import _AXES, _Windowed
from ._inputs import require_float, require_nonempty

__all__ = ["AdaptiveAvgPool1D", "AdaptiveAvgPool2D", "AdaptiveMaxPool1D", "AdaptiveMaxPool2D", "adaptive_windows"]

OutputSize = int | None | Sequence[int | None]


def adaptive_windows(size: int, out: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive-pooling windows: ``[floor(i * size / out), ceil((i + 1) * size / out))``.

    Example:
        >>> adaptive_windows(5, 3)
        [(0, 2), (1, 4), (3, 5)]
    """
    return [(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]


def _output_size(cls: str, value: object, n: int) -> tuple[int | None, ...]:
    items = value if isinstance(value, (tuple, list)) else (value,) * n
    sizes = [None if v is None else as_int(v) for v in items]
    if len(sizes) != n or any(v is not None and v <= 0 for v in sizes) or any(
            v is None and item is not None for v, item in zip(sizes, items)):
        raise ValueError(
            f"{cls}: expected output_size as a positive integer, None (keep the input's size) or a "
            f"tuple of {n} of them. Received: output_size={value!r}"
        )
    return tuple(sizes)


class _AdaptivePool(_Windowed):
    """Shared by the adaptive poolings (see :class:`AdaptiveAvgPool2D`)."""

    _average: bool = True

    def __init__(self, output_size: OutputSize) -> None:
        super().__init__()
        self.output_size = _output_size(type(self).__name__, output_size, self._ndim)

    def forward(self, x: Any) -> Any:
        shape = ops.shape(x)
        if len(shape) != self._ndim + 2:
            self._check_rank(shape)
        require_float(self, x)
        spatial = shape[2:]
        if None in spatial:
            raise ValueError(
                f"{self.describe()}: needs the spatial sizes, which are unknown in input shape {tuple(shape)}. "
                "Give tf.function an input_signature with known spatial sizes."
            )
        require_nonempty(self, shape, range(2, len(shape)), lambda a: f"{_AXES[self._ndim][a - 2]} axis",
                         "Adaptive pooling needs at least one element along each spatial axis.")
        outs = [size if out is None else out for size, out in zip(spatial, self.output_size)]
        regular = [size // out if size % out == 0 else 1 for size, out in zip(spatial, outs)]
        if any(k > 1 for k in regular):
            x = self._pool(x, tuple(regular))
        for axis, (size, out) in enumerate(zip(spatial, outs)):
            if size % out:
                x = self._irregular(x, 2 + axis, size, out)
        return x

    def _pool(self, x: Any, window: tuple[int, ...]) -> Any:
        pads = ((0, 0),) * self._ndim
        if self._average:
            return ops.avg_pool(x, window, window, pads)
        return ops.max_pool(x, window, window, pads)

    def _irregular(self, x: Any, axis: int, size: int, out: int) -> Any:
        """Pool ``axis`` with windows that are not those of an ordinary pooling."""
        parts = ops.unstack(x, axis)
        combine = ops.add if self._average else ops.maximum
        pooled = []
        for start, end in adaptive_windows(size, out):
            window = functools.reduce(combine, parts[start:end])
            pooled.append(ops.divide(window, float(end - start)) if self._average else window)
        return ops.stack(pooled, axis)

    def _extra_repr(self) -> str:
        return f"output_size={self.output_size if self._ndim > 1 else self.output_size[0]}"


class AdaptiveAvgPool1D(_AdaptivePool):
    """Mean over adaptive windows of ``(N, C, W)`` input: ``(N, C, output_size)``; see
    :class:`AdaptiveAvgPool2D`.

    Example:
        >>> import numpy as np
        >>> from deferral import nn
        >>> nn.AdaptiveAvgPool1D(3)(np.arange(5.0).reshape(1, 1, 5))
        array([[[0.5, 2. , 3.5]]])
    """

    _ndim = 1


class AdaptiveAvgPool2D(_AdaptivePool):
    """Mean over adaptive windows of ``(N, C, H, W)`` input: ``(N, C, *output_size)`` for any
    input size, as ``torch.nn.AdaptiveAvgPool2d``.

    Along an axis of size ``L`` pooled to ``out``, output ``i`` averages the input elements
    ``floor(i * L / out)`` to ``ceil((i + 1) * L / out) - 1`` (windows overlap when ``out`` does
    not divide ``L``, and repeat elements when ``out > L``).

    Args:
        output_size: an int (both axes), or one per axis; ``None`` keeps that axis' size.

    Raises:
        ValueError: at creation, for a bad ``output_size``; in the forward pass, for an input of
            the wrong rank or with unknown spatial sizes. ``EmptyInputError`` for an empty
            spatial axis; ``InputDtypeError`` for a non-floating input.

    Example:
        >>> import numpy as np
        >>> from deferral import nn
        >>> pool = nn.AdaptiveAvgPool2D((7, 7))
        >>> pool(np.ones((2, 512, 2, 2), dtype="float32")).shape
        (2, 512, 7, 7)
        >>> pool(np.ones((2, 512, 14, 14), dtype="float32")).shape
        (2, 512, 7, 7)
    """

    _ndim = 2


class AdaptiveMaxPool1D(_AdaptivePool):
    """Maximum over adaptive windows of ``(N, C, W)`` input; see :class:`AdaptiveMaxPool2D`."""

    _ndim = 1
    _average = False


class AdaptiveMaxPool2D(_AdaptivePool):
    """Maximum over adaptive windows of ``(N, C, H, W)`` input, as ``torch.nn.AdaptiveMaxPool2d``
    (without its ``return_indices``); the windows are :class:`AdaptiveAvgPool2D`'s.

    Example:
        >>> import numpy as np
        >>> from deferral import nn
        >>> nn.AdaptiveMaxPool2D((1, 2))(np.arange(6.0).reshape(1, 1, 2, 3))
        array([[[[4., 5.]]]])
    """

    _ndim = 2
    _average = False
