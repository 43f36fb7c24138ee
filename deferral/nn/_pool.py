"""Pooling layers: ``MaxPool1D/2D/3D``, ``AvgPool1D/2D/3D`` and the global poolings.

Data is channels-first, ``(N, C, *spatial)``; pooling has no parameters and keeps the channels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import ops
from ._conv import _AXES, PaddingLike, Pads, _int_tuple, _padding_arg, _show_padding, _Windowed
from ._inputs import require_float, require_nonempty

__all__ = [
    "AvgPool1D",
    "AvgPool2D",
    "AvgPool3D",
    "GlobalAvgPool1D",
    "GlobalAvgPool2D",
    "GlobalAvgPool3D",
    "GlobalMaxPool1D",
    "GlobalMaxPool2D",
    "GlobalMaxPool3D",
    "MaxPool1D",
    "MaxPool2D",
    "MaxPool3D",
]


class _Pool(_Windowed):
    """Shared by the windowed poolings (see :class:`MaxPool2D`)."""

    def __init__(
        self,
        pool_size: int | Sequence[int] = 2,
        strides: int | Sequence[int] | None = None,
        padding: PaddingLike = 0,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__()
        cls, n = type(self).__name__, self._ndim
        if not isinstance(ceil_mode, bool):
            raise ValueError(f"{cls}: expected True or False for ceil_mode. Received: ceil_mode={ceil_mode!r}")
        self.ceil_mode = ceil_mode
        self.pool_size = _int_tuple("pool_size", pool_size, n, cls)
        self.strides = self.pool_size if strides is None else _int_tuple("strides", strides, n, cls)
        self.padding = _padding_arg(padding, n, cls)
        if not isinstance(self.padding, str) and any(
            before >= k or after >= k for (before, after), k in zip(self.padding, self.pool_size)
        ):
            raise ValueError(
                f"{cls}: padding must be smaller than pool_size on each side (a window of padding "
                f"alone has nothing to pool). Received: padding={padding!r}, pool_size={self.pool_size}"
            )

    def forward(self, x: Any) -> Any:
        shape = ops.shape(x)
        if len(shape) != self._ndim + 2:
            self._check_rank(shape)
        require_float(self, x)
        return self._apply(x, self._pads(shape))

    def _apply(self, x: Any, pads: Pads) -> Any:
        raise NotImplementedError

    def _resolve(self, shape: tuple[Any, ...]) -> Pads:
        if isinstance(self.padding, str):  # "same"
            pads = self._same(shape, self.pool_size, self.strides, (1,) * self._ndim)
        else:
            pads = self.padding
        self._check_spans(shape, pads, self.pool_size, f"window (pool_size={self.pool_size})",
                          "Use a larger input, padding (or padding='same'), or a smaller pool_size.")
        return pads

    def _extra_repr(self) -> str:
        parts = [f"pool_size={self.pool_size}", f"strides={self.strides}"]
        if isinstance(self.padding, str) or any(b or a for b, a in self.padding):
            parts.append(f"padding={_show_padding(self.padding)}")
        if self.ceil_mode:
            parts.append("ceil_mode=True")
        return ", ".join(parts)


def _nonempty(layer: _Windowed, shape: tuple[Any, ...]) -> None:
    require_nonempty(layer, shape, range(2, len(shape)), lambda a: f"{_AXES[layer._ndim][a - 2]} axis",
                     "Pooling needs at least one element along each spatial axis.")


class _MaxPool(_Pool):
    def _apply(self, x: Any, pads: Pads) -> Any:
        return ops.max_pool(x, self.pool_size, self.strides, pads, self.ceil_mode)


class _AvgPool(_Pool):
    def __init__(
        self,
        pool_size: int | Sequence[int] = 2,
        strides: int | Sequence[int] | None = None,
        padding: PaddingLike = 0,
        count_include_pad: bool = True,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__(pool_size, strides, padding, ceil_mode)
        self.count_include_pad = bool(count_include_pad)

    def _apply(self, x: Any, pads: Pads) -> Any:
        return ops.avg_pool(x, self.pool_size, self.strides, pads, self.count_include_pad, self.ceil_mode)

    def _extra_repr(self) -> str:
        extra = "" if self.count_include_pad else ", count_include_pad=False"
        return super()._extra_repr() + extra


class MaxPool1D(_MaxPool):
    """Maximum over windows of ``(N, C, W)`` input; see :class:`MaxPool2D`.

    Example:
        >>> import numpy as np
        >>> from deferral import nn
        >>> nn.MaxPool1D(3)(np.arange(6.0).reshape(1, 1, 6))
        array([[[2., 5.]]])
    """

    _ndim = 1


class MaxPool2D(_MaxPool):
    """Maximum over windows of ``(N, C, H, W)`` input, per channel.

    Output size per spatial axis: ``(size + before + after - pool_size) // stride + 1``.

    Args:
        pool_size: the window: an int, or one per spatial axis (default 2).
        strides: the step between windows (default: ``pool_size``).
        padding: an int (each side), one int per axis, one ``(before, after)`` pair per axis,
            ``"valid"`` or ``"same"`` (output size ``ceil(size / stride)``). Padding is
            ``-inf``: it never wins. Each side must be smaller than the window.
        ceil_mode: round the output size up, as PyTorch's ``ceil_mode``: per axis
            ``ceil((size + before + after - pool_size) / stride) + 1``, less one when the
            last window would start beyond the input and the ``before`` padding. The last
            window may then overhang the padded input (the overhang never wins).

    Raises:
        ValueError: at creation, for an impossible argument; in the forward pass, for an input
            of the wrong rank. ``ShapeMismatchError`` (a ValueError) for an input smaller than
            the window after padding.

    Example:
        >>> import numpy as np
        >>> from deferral import nn
        >>> pool = nn.MaxPool2D(pool_size=2)
        >>> pool(np.ones((8, 3, 32, 32), dtype="float32")).shape
        (8, 3, 16, 16)
    """

    _ndim = 2


class MaxPool3D(_MaxPool):
    """Maximum over windows of ``(N, C, D, H, W)`` input; see :class:`MaxPool2D`.

    Example:
        >>> import numpy as np
        >>> from deferral import nn
        >>> nn.MaxPool3D((1, 2, 2))(np.ones((1, 2, 4, 6, 6), dtype="float32")).shape
        (1, 2, 4, 3, 3)
    """

    _ndim = 3


class AvgPool1D(_AvgPool):
    """Mean over windows of ``(N, C, W)`` input; see :class:`AvgPool2D`.

    Example:
        >>> import numpy as np
        >>> from deferral import nn
        >>> x = np.array([[[1.0, 2.0, 3.0, 4.0]]])
        >>> nn.AvgPool1D(2)(x)
        array([[[1.5, 3.5]]])
        >>> nn.AvgPool1D(2, padding=1, count_include_pad=False)(x)
        array([[[1. , 2.5, 4. ]]])
    """

    _ndim = 1


class AvgPool2D(_AvgPool):
    """Mean over windows of ``(N, C, H, W)`` input, per channel.

    Args:
        pool_size: the window: an int, or one per spatial axis (default 2).
        strides: the step between windows (default: ``pool_size``).
        padding: as for :class:`MaxPool2D`, but zeros.
        count_include_pad: whether padded zeros count in the divisor (default, as PyTorch and
            Gluon); ``False`` divides by the number of input elements in each window (what
            TensorFlow/Keras do with ``padding="same"``).
        ceil_mode: round the output size up, as for :class:`MaxPool2D`. A window overhanging
            the padded input is divided, as in PyTorch, by its part within the padded input
            (or, without ``count_include_pad``, within the input).

    Example:
        >>> import numpy as np
        >>> from deferral import nn
        >>> pool = nn.AvgPool2D(pool_size=3, strides=1, padding=1)
        >>> pool(np.ones((1, 1, 4, 4), dtype="float32"))[0, 0, 0]
        array([0.44444445, 0.6666667 , 0.6666667 , 0.44444445], dtype=float32)
    """

    _ndim = 2


class AvgPool3D(_AvgPool):
    """Mean over windows of ``(N, C, D, H, W)`` input; see :class:`AvgPool2D`.

    Example:
        >>> import numpy as np
        >>> from deferral import nn
        >>> nn.AvgPool3D(2)(np.ones((1, 2, 4, 4, 4), dtype="float32")).shape
        (1, 2, 2, 2, 2)
    """

    _ndim = 3


class _GlobalPool(_Windowed):
    """Shared by the global poolings: one value per channel, spatial axes kept with size 1."""

    def forward(self, x: Any) -> Any:
        shape = ops.shape(x)
        if len(shape) != self._ndim + 2:
            self._check_rank(shape)
        require_float(self, x)
        _nonempty(self, shape)
        return self._apply(x, shape)

    def _apply(self, x: Any, shape: tuple[Any, ...]) -> Any:
        raise NotImplementedError


class _GlobalAvgPool(_GlobalPool):
    def _apply(self, x: Any, shape: tuple[Any, ...]) -> Any:
        return ops.mean(x, tuple(range(2, self._ndim + 2)), keepdims=True)


class _GlobalMaxPool(_GlobalPool):
    def _apply(self, x: Any, shape: tuple[Any, ...]) -> Any:
        spatial = shape[2:]
        if None in spatial:
            raise ValueError(
                f"{self.describe()}: needs the spatial sizes, which are unknown in input shape "
                f"{tuple(shape)}. Give tf.function an input_signature with known spatial sizes."
            )
        return ops.max_pool(x, spatial, spatial, ((0, 0),) * self._ndim)


class GlobalAvgPool1D(_GlobalAvgPool):
    """Mean over the whole ``W`` axis: ``(N, C, W) -> (N, C, 1)``."""

    _ndim = 1


class GlobalAvgPool2D(_GlobalAvgPool):
    """Mean over each channel's whole plane: ``(N, C, H, W) -> (N, C, 1, 1)``.

    As Gluon's ``GlobalAvgPool2D`` and PyTorch's ``AdaptiveAvgPool2d(1)``; follow it with
    :class:`~deferral.nn.Flatten` for ``(N, C)``.

    Example:
        >>> import numpy as np
        >>> from deferral import nn
        >>> nn.GlobalAvgPool2D()(np.arange(8.0).reshape(1, 2, 2, 2))
        array([[[[1.5]],
        <BLANKLINE>
                [[5.5]]]])
    """

    _ndim = 2


class GlobalAvgPool3D(_GlobalAvgPool):
    """Mean over each channel's whole volume: ``(N, C, D, H, W) -> (N, C, 1, 1, 1)``."""

    _ndim = 3


class GlobalMaxPool1D(_GlobalMaxPool):
    """Maximum over the whole ``W`` axis: ``(N, C, W) -> (N, C, 1)``."""

    _ndim = 1


class GlobalMaxPool2D(_GlobalMaxPool):
    """Maximum over each channel's whole plane: ``(N, C, H, W) -> (N, C, 1, 1)``.

    Example:
        >>> import numpy as np
        >>> from deferral import nn
        >>> nn.GlobalMaxPool2D()(np.arange(8.0).reshape(1, 2, 2, 2)).ravel()
        array([3., 7.])
    """

    _ndim = 2


class GlobalMaxPool3D(_GlobalMaxPool):
    """Maximum over each channel's whole volume: ``(N, C, D, H, W) -> (N, C, 1, 1, 1)``."""

    _ndim = 3
