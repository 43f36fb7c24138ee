"""Convolution layers: ``Conv1D/2D/3D`` and their transposes ``Conv1D/2D/3DTranspose``.

Data is channels-first, ``(N, C, *spatial)``, on every backend. A convolution's weight is
``(channels, in_channels / groups, *kernel_size)`` and a transposed convolution's
``(in_channels, channels / groups, *kernel_size)``, as in PyTorch and MXNet Gluon; the input
channels are inferred from the first input when not given (``-1`` until then).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from .. import init as _init
from .. import ops
from ..errors import ShapeMismatchError
from ..parameter import Parameter
from ._activations import ActivationLike, attach_activation, describe_activation
from ._args import as_int, positive_int
from ._block import Block
from ._inputs import channels_last_hint, require_float, require_nonempty

__all__ = [
    "Conv1D",
    "Conv1DTranspose",
    "Conv2D",
    "Conv2DTranspose",
    "Conv3D",
    "Conv3DTranspose",
    "PaddingLike",
    "same_padding",
]

Pads = tuple[tuple[int, int], ...]
#: What a ``padding`` argument may be: an int (every side), one int per spatial axis, one
#: ``(before, after)`` pair per spatial axis (a bare pair with one spatial axis), ``"valid"``
#: (none) or ``"same"``.
PaddingLike = int | Sequence[int] | Sequence[tuple[int, int]] | str

_AXES = {1: ("W",), 2: ("H", "W"), 3: ("D", "H", "W")}


def _int_tuple(name: str, value: object, n: int, cls: str, minimum: int = 1) -> tuple[int, ...]:
    """``value`` (an int, or ``n`` ints) as ``n`` ints, each at least ``minimum``.

    Raises:
        ValueError: naming the argument, Keras style.
    """
    items = (value,) * n if as_int(value) is not None else tuple(value) if isinstance(value, (tuple, list)) else ()
    ints = [as_int(v) for v in items]
    if len(ints) != n or any(v is None or v < minimum for v in ints):
        kind = "positive" if minimum == 1 else "non-negative"
        raise ValueError(
            f"{cls}: expected a {kind} integer or a tuple of {n} {kind} integers for {name}. "
            f"Received: {name}={value!r}"
        )
    return tuple(v for v in ints if v is not None)


def _padding_arg(value: object, n: int, cls: str) -> Pads | str:
    """A ``padding`` argument as ``"same"`` or one ``(before, after)`` pair per spatial axis."""
    if isinstance(value, str) and value.lower() in ("same", "valid"):
        return "same" if value.lower() == "same" else ((0, 0),) * n
    if n == 1 and isinstance(value, (tuple, list)) and len(value) == 2 and all(as_int(v) is not None for v in value):
        value = (tuple(value),)  # one spatial axis: (before, after)
    if isinstance(value, (tuple, list)) and value and all(isinstance(v, (tuple, list)) for v in value):
        pairs = tuple(tuple(v) for v in value)
        if len(pairs) == n and all(len(p) == 2 for p in pairs):
            flat = _int_tuple("padding", [v for p in pairs for v in p], 2 * n, cls, minimum=0)
            return tuple(zip(flat[::2], flat[1::2]))
    elif not isinstance(value, str):
        try:
            return tuple((p, p) for p in _int_tuple("padding", value, n, cls, minimum=0))
        except ValueError:
            pass
    raise ValueError(
        f"{cls}: expected padding as a non-negative integer, a tuple of {n} of them, a tuple of "
        f"{n} (before, after) pairs, 'valid' or 'same'. Received: padding={value!r}"
    )


def same_padding(sizes: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
                 dilation: Sequence[int]) -> Pads:
    """The ``(before, after)`` padding of ``"same"``: output size ``ceil(size / stride)``.

    Total padding per axis ``max((ceil(size / s) - 1) * s + d * (k - 1) + 1 - size, 0)``; an odd
    total puts the extra element after, as TensorFlow does.

    Example:
        >>> same_padding((32, 7), kernel=(4, 3), strides=(1, 2), dilation=(1, 1))
        ((1, 2), (1, 1))
    """
    out = []
    for size, k, s, d in zip(sizes, kernel, strides, dilation):
        total = max((-(-size // s) - 1) * s + d * (k - 1) + 1 - size, 0)
        out.append((total // 2, total - total // 2))
    return tuple(out)


def _show_padding(padding: Pads | str) -> str:
    if isinstance(padding, str):
        return repr(padding)
    if all(b == a for b, a in padding):
        return str(tuple(b for b, _ in padding))
    return str(padding)


class _Windowed(Block):
    """What convolutions and pooling share: the input rank check and the padding of an input
    size, resolved and checked once per spatial size (then cached)."""

    _ndim: ClassVar[int] = 2
    # The last spatial size met and its resolved padding.
    _resolved: tuple[tuple[Any, ...], Pads] | None

    def __init__(self) -> None:
        super().__init__()
        self._resolved = None

    @property
    def _layout(self) -> str:
        return ", ".join(("N", "C", *_AXES[self._ndim]))

    def _check_rank(self, shape: tuple[Any, ...]) -> None:
        rank = self._ndim + 2
        if len(shape) != rank:
            hint = " For one example without a batch axis, add one: x[None]." if len(shape) == rank - 1 else ""
            raise ValueError(
                f"{self.describe()}: expected input of rank {rank} ({self._layout}); received "
                f"shape {tuple(shape)}.{hint}"
            )

    def _pads(self, shape: tuple[Any, ...]) -> Pads:
        """The padding for an input of ``shape``; raises when the input is too small for it."""
        spatial = shape[2:]
        cached = self._resolved
        if cached is not None and cached[0] == spatial:
            return cached[1]
        require_nonempty(self, shape, range(2, len(shape)), lambda a: f"{_AXES[self._ndim][a - 2]} axis",
                         "Every spatial axis needs at least one element.")
        pads = self._resolve(shape)
        self._resolved = (spatial, pads)
        return pads

    def _resolve(self, shape: tuple[Any, ...]) -> Pads:
        raise NotImplementedError

    def _same(self, shape: tuple[Any, ...], kernel: Sequence[int], strides: Sequence[int],
              dilation: Sequence[int]) -> Pads:
        spatial = shape[2:]
        if any(size is None for size in spatial):
            raise ValueError(
                f"{self.describe()}: padding='same' depends on the spatial sizes, which are unknown "
                f"in input shape {tuple(shape)}. Give tf.function an input_signature with known "
                "spatial sizes, or use explicit padding."
            )
        return same_padding(spatial, kernel, strides, dilation)

    def _check_spans(self, shape: tuple[Any, ...], pads: Pads, spans: Sequence[int], what: str,
                     fix: str) -> None:
        """Raise unless each padded spatial size holds at least one window of ``spans``."""
        for axis, size, (before, after), span in zip(_AXES[self._ndim], shape[2:], pads, spans):
            if size is not None and size + before + after < span:
                raise ShapeMismatchError(
                    f"{self.describe()}: the {what} spans {span} along {axis}, more than the padded "
                    f"input's {size + before + after} (size {size} + padding {before} + {after}); "
                    f"received input shape {tuple(shape)}. {fix}"
                )


class _Conv(_Windowed):
    """Shared by the convolution layers and their transposes (see :class:`Conv2D`)."""

    _transposed: ClassVar[bool] = False
    #: Extra output size per spatial axis (transposed convolutions only).
    output_padding: tuple[int, ...] = ()

    def __init__(
        self,
        channels: int | None = None,
        kernel_size: int | Sequence[int] | None = None,
        strides: int | Sequence[int] = 1,
        padding: PaddingLike = 0,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        activation: ActivationLike = None,
        use_bias: bool = True,
        in_channels: int | None = None,
        weight_initializer: _init.InitializerLike = None,
        bias_initializer: _init.InitializerLike = "zeros",
    ) -> None:
        super().__init__()
        cls, n = type(self).__name__, self._ndim
        self.channels = positive_int(cls, "channels", channels)
        if kernel_size is None:
            raise TypeError(
                f"{cls}: missing the required argument kernel_size (an int, or one per spatial axis). "
                f"Received: {cls}({channels}). Give it, e.g. nn.{cls}({channels}, kernel_size=3)."
            )
        self.kernel_size = _int_tuple("kernel_size", kernel_size, n, cls)
        self.strides = _int_tuple("strides", strides, n, cls)
        self.padding = _padding_arg(padding, n, cls)
        self.dilation = _int_tuple("dilation", dilation, n, cls)
        self.groups = positive_int(cls, "groups", groups)
        if in_channels is not None:
            in_channels = positive_int(cls, "in_channels", in_channels)
            if in_channels % self.groups:
                raise ValueError(
                    f"{cls}: in_channels must be divisible by groups. Received: "
                    f"in_channels={in_channels}, groups={groups}"
                )
        if self.channels % self.groups:
            raise ValueError(
                f"{cls}: channels must be divisible by groups. Received: channels={channels}, groups={groups}"
            )
        self._act_repr = describe_activation(activation)
        self._act = attach_activation(self, activation, cls)
        self.weight = Parameter("weight", self._weight_shape(in_channels or -1), init=weight_initializer)
        self.bias = Parameter("bias", (channels,), init=bias_initializer) if use_bias else None

    def _weight_shape(self, in_channels: int) -> tuple[int, ...]:
        known = in_channels if in_channels == -1 else in_channels // self.groups
        return (self.channels, known, *self.kernel_size)

    def _known_channels(self) -> int:
        """The input channels the weight fixes, or -1."""
        per_group = self.weight.shape[1]
        return -1 if per_group == -1 else per_group * self.groups

    @property
    def in_channels(self) -> int | None:
        """The number of input channels, or ``None`` while it is not known."""
        known = self._known_channels()
        return None if known == -1 else known

    def forward(self, x: Any) -> Any:
        require_float(self, x)
        bias = self.bias
        y = self._apply(x, self.weight.data(), None if bias is None else bias.data(), self._pads(ops.shape(x)))
        return y if self._act is None else self._act(y)

    def _apply(self, x: Any, weight: Any, bias: Any, pads: Pads) -> Any:
        return ops.conv(x, weight, bias, self.strides, pads, self.dilation, self.groups)

    def _resolve(self, shape: tuple[Any, ...]) -> Pads:
        if isinstance(self.padding, str):  # "same"
            pads = self._same(shape, self.kernel_size, self.strides, self.dilation)
        else:
            pads = self.padding
        spans = [d * (k - 1) + 1 for k, d in zip(self.kernel_size, self.dilation)]
        self._check_spans(shape, pads, spans, f"kernel (kernel_size={self.kernel_size}, dilation={self.dilation})",
                          "Use a larger input, more padding (or padding='same'), or a smaller kernel.")
        return pads

    def build(self, shape: Any) -> None:
        """Check the input's rank, channels and spatial sizes; complete ``in_channels``."""
        where = self.describe()
        self._check_rank(shape)
        channels = shape[1]
        require_nonempty(self, shape, (1,), ("channel axis",), f"Data is channels-first: ({self._layout}).")
        if channels is None:
            raise ValueError(
                f"{where}: the input's channel axis (axis 1) is unknown in shape {tuple(shape)}; "
                "cannot infer in_channels. Give it a size (in the input_signature under tf.function)."
            )
        known = self._known_channels()
        if known == -1:
            channels_last_hint(where, tuple(shape), self._layout)
        if known != -1 and channels != known:
            raise ShapeMismatchError(
                f"{where}: expected {known} input channels (weight shape {self.weight.shape}). "
                f"Received input of shape {tuple(shape)} with {channels}. Fix the input, or the "
                "previous layer's channels, or the in_channels of this layer. Data is "
                f"channels-first: ({self._layout})."
            )
        if channels % self.groups:
            raise ShapeMismatchError(
                f"{where}: the input's {channels} channels are not divisible by groups={self.groups} "
                f"(received input shape {tuple(shape)}). Give this layer an input whose channels "
                "are a multiple of groups, or change groups."
            )
        self._pads(shape)
        self.weight.complete(self._weight_shape(channels), where)

    def _extra_repr(self) -> str:
        known = self._known_channels()
        parts = [f"{known} -> {self.channels}", f"kernel_size={self.kernel_size}", f"strides={self.strides}"]
        if isinstance(self.padding, str) or any(b or a for b, a in self.padding):
            parts.append(f"padding={_show_padding(self.padding)}")
        if self._transposed and any(self.output_padding):
            parts.append(f"output_padding={self.output_padding}")
        if any(d != 1 for d in self.dilation):
            parts.append(f"dilation={self.dilation}")
        if self.groups != 1:
            parts.append(f"groups={self.groups}")
        if self.bias is None:
            parts.append("use_bias=False")
        if self._act is not None:
            parts.append(self._act_repr)
        return ", ".join(parts)


class Conv1D(_Conv):
    """1-d convolution over ``(N, C, W)`` input; see :class:`Conv2D` for the arguments.

    Example:
        >>> import numpy as np
        >>> from deferral import nn
        >>> layer = nn.Conv1D(8, kernel_size=5, strides=2)
        >>> _ = layer.initialize(seed=0)
        >>> layer(np.ones((4, 3, 100), dtype="float32")).shape
        (4, 8, 48)
    """

    _ndim = 1


class Conv2D(_Conv):
    """2-d convolution (cross-correlation) over ``(N, C, H, W)`` input, plus bias and activation.

    ``weight`` is ``(channels, in_channels / groups, kH, kW)`` on every backend; ``in_channels``
    is inferred from the first input when not given (shown as ``-1`` until then). Output size
    per spatial axis: ``(size + before + after - dilation * (k - 1) - 1) // stride + 1``.

    Args:
        channels: output channels.
        kernel_size: an int, or one int per spatial axis.
        strides: an int, or one per spatial axis.
        padding: an int (each side), one int per axis, one ``(before, after)`` pair per axis,
            ``"valid"`` (no padding) or ``"same"`` (output size ``ceil(size / stride)``; the
            padding is worked out for each input size, an odd total with the extra element
            after, as TensorFlow).
        dilation: spacing between kernel taps: an int, or one per spatial axis.
        groups: split the input and output channels into this many groups, each convolved
            with its own slice of the weight (``groups == in_channels``: depthwise).
        activation: as for :class:`~deferral.nn.Dense`: a name (``"relu"``, ``"silu"``, ...),
            ``(name, *args)``, an activation layer, a function written with :mod:`deferral.ops`,
            or ``None``.
        use_bias: whether to add a bias of shape ``(channels,)``.
        in_channels: input channels, if known; with it, ``initialize()`` materializes the layer.
        weight_initializer: the weight's own initializer (default: the one given to
            ``initialize()``, else Xavier uniform; fans are ``in/groups * prod(kernel)`` and
            ``channels * prod(kernel)``).
        bias_initializer: the bias's initializer (default ``"zeros"``).

    Raises:
        ValueError: at creation, for an impossible argument; in the forward pass, for an input
            of the wrong rank. ``ShapeMismatchError`` (a ValueError) for an input whose channels
            differ from the known ``in_channels`` or are not divisible by ``groups``, or that is
            smaller than the (dilated) kernel after padding.

    Example:
        >>> import numpy as np
        >>> from deferral import nn
        >>> layer = nn.Conv2D(16, kernel_size=3, padding="same", activation="relu")
        >>> layer.weight.shape
        (16, -1, 3, 3)
        >>> _ = layer.initialize(seed=0)
        >>> layer(np.ones((2, 3, 32, 32), dtype="float32")).shape
        (2, 16, 32, 32)
        >>> layer.weight.shape
        (16, 3, 3, 3)
    """

    _ndim = 2


class Conv3D(_Conv):
    """3-d convolution over ``(N, C, D, H, W)`` input; see :class:`Conv2D` for the arguments.

    Example:
        >>> import numpy as np
        >>> from deferral import nn
        >>> layer = nn.Conv3D(4, kernel_size=(1, 3, 3), padding=(0, 1, 1), in_channels=2)
        >>> _ = layer.initialize(seed=0)
        >>> layer.weight.state
        'materialized'
        >>> layer(np.ones((1, 2, 5, 8, 8), dtype="float32")).shape
        (1, 4, 5, 8, 8)
    """

    _ndim = 3


class _ConvTranspose(_Conv):
    """Shared by the transposed convolutions (see :class:`Conv2DTranspose`)."""

    _transposed = True

    def __init__(
        self,
        channels: int | None = None,
        kernel_size: int | Sequence[int] | None = None,
        strides: int | Sequence[int] = 1,
        padding: PaddingLike = 0,
        output_padding: int | Sequence[int] = 0,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        activation: ActivationLike = None,
        use_bias: bool = True,
        in_channels: int | None = None,
        weight_initializer: _init.InitializerLike = None,
        bias_initializer: _init.InitializerLike = "zeros",
    ) -> None:
        super().__init__(channels, kernel_size, strides, padding, dilation, groups, activation, use_bias,
                         in_channels, weight_initializer, bias_initializer)
        cls = type(self).__name__
        self.output_padding = _int_tuple("output_padding", output_padding, self._ndim, cls, minimum=0)
        if any(op >= max(s, d) for op, s, d in zip(self.output_padding, self.strides, self.dilation)):
            raise ValueError(
                f"{cls}: output_padding must be smaller than strides or dilation on each axis. "
                f"Received: output_padding={self.output_padding}, strides={self.strides}, "
                f"dilation={self.dilation}"
            )
        # "same" does not depend on the input here: output size = size * stride + output_padding.
        extra: tuple[int, ...] = (0,) * self._ndim
        if isinstance(self.padding, str):  # "same"
            totals = [d * (k - 1) + 1 - s for k, s, d in zip(self.kernel_size, self.strides, self.dilation)]
            pads: Pads = tuple((max(t, 0) // 2, max(t, 0) - max(t, 0) // 2) for t in totals)
            extra = tuple(max(-t, 0) for t in totals)
        else:
            pads = self.padding
        self._fixed = (pads, tuple(op + e for op, e in zip(self.output_padding, extra)))

    def _weight_shape(self, in_channels: int) -> tuple[int, ...]:
        return (in_channels, self.channels // self.groups, *self.kernel_size)

    def _known_channels(self) -> int:
        return self.weight.shape[0]

    def _apply(self, x: Any, weight: Any, bias: Any, pads: Pads) -> Any:
        return ops.conv_transpose(x, weight, bias, self.strides, pads, self._fixed[1], self.dilation,
                                  self.groups)

    def _resolve(self, shape: tuple[Any, ...]) -> Pads:
        pads, extra = self._fixed
        for axis, size, (before, after), k, s, d, op in zip(
            _AXES[self._ndim], shape[2:], pads, self.kernel_size, self.strides, self.dilation, extra
        ):
            if size is None:
                continue
            out = (size - 1) * s - before - after + d * (k - 1) + op + 1
            if size < 1 or out < 1:
                raise ShapeMismatchError(
                    f"{self.describe()}: the output would have size {out} along {axis} "
                    f"((size - 1) * stride - padding + dilation * (kernel_size - 1) + output_padding "
                    f"+ 1 with size {size}, padding {before} + {after}); received input shape "
                    f"{tuple(shape)}. Use a larger input or less padding."
                )
        return pads


class Conv1DTranspose(_ConvTranspose):
    """1-d transposed convolution over ``(N, C, W)``; see :class:`Conv2DTranspose`.

    Example:
        >>> import numpy as np
        >>> from deferral import nn
        >>> layer = nn.Conv1DTranspose(4, kernel_size=4, strides=2, padding=1)
        >>> _ = layer.initialize(seed=0)
        >>> layer(np.ones((2, 3, 10), dtype="float32")).shape
        (2, 4, 20)
    """

    _ndim = 1


class Conv2DTranspose(_ConvTranspose):
    """2-d transposed convolution ("deconvolution"): the adjoint of :class:`Conv2D`.

    ``weight`` is ``(in_channels, channels / groups, kH, kW)``, as in PyTorch and MXNet Gluon;
    ``in_channels`` is inferred from the first input when not given. Output size per spatial
    axis: ``(size - 1) * stride - before - after + dilation * (k - 1) + output_padding + 1``.

    The default initializers see the weight as ``(out, in, *kernel)``, so its fans are
    ``fan_in = channels / groups * prod(kernel)`` and ``fan_out = in_channels * prod(kernel)``
    (what PyTorch computes for its ``ConvTranspose`` weights too).

    Args:
        channels: output channels.
        kernel_size: an int, or one int per spatial axis.
        strides: an int, or one per spatial axis.
        padding: an int, one per axis, one ``(before, after)`` pair per axis, ``"valid"`` or
            ``"same"``: removed from the full output (``"same"`` gives output size
            ``size * stride + output_padding``, as Keras).
        output_padding: extra size added at the end of each spatial axis, to pick one of the
            input sizes a strided convolution maps to the same output size; smaller than
            ``strides`` or ``dilation`` on each axis.
        dilation: spacing between kernel taps: an int, or one per spatial axis.
        groups: split the input and output channels into this many groups.
        activation: as for :class:`Conv2D`.
        use_bias: whether to add a bias of shape ``(channels,)``.
        in_channels: input channels, if known; with it, ``initialize()`` materializes the layer.
        weight_initializer: the weight's own initializer (default: the one given to
            ``initialize()``, else Xavier uniform).
        bias_initializer: the bias's initializer (default ``"zeros"``).

    Example:
        >>> import numpy as np
        >>> from deferral import nn
        >>> up = nn.Conv2DTranspose(8, kernel_size=3, strides=2, padding=1, output_padding=1)
        >>> _ = up.initialize(seed=0)
        >>> up(np.ones((1, 16, 7, 7), dtype="float32")).shape
        (1, 8, 14, 14)
        >>> up.weight.shape
        (16, 8, 3, 3)
    """

    _ndim = 2


class Conv3DTranspose(_ConvTranspose):
    """3-d transposed convolution over ``(N, C, D, H, W)``; see :class:`Conv2DTranspose`.

    Example:
        >>> import numpy as np
        >>> from deferral import nn
        >>> layer = nn.Conv3DTranspose(2, kernel_size=2, strides=2, padding="same")
        >>> _ = layer.initialize(seed=0)
        >>> layer(np.ones((1, 3, 2, 3, 4), dtype="float32")).shape
        (1, 2, 4, 6, 8)
    """

    _ndim = 3
