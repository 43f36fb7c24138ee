"""Normalization layers: BatchNorm, LayerNorm and GroupNorm (MXNet Gluon's arguments)."""

from __future__ import annotations

import math
from typing import Any

from .. import init as _init
from .. import ops
from ..errors import ShapeMismatchError
from ..parameter import Parameter
from ._args import epsilon as _epsilon
from ._args import integer as _integer
from ._args import number as _number
from ._args import positive_int as _positive_int
from ._block import Block
from ._inputs import require_float, require_nonempty

__all__ = ["BatchNorm", "GroupNorm", "LayerNorm"]


def _resolve_axis(where: str, axis: int, shape: tuple[int | None, ...], what: str = "axis") -> int:
    rank = len(shape)
    if not -rank <= axis < rank:
        raise ValueError(
            f"{where}: {what}={axis} is out of range for an input of rank {rank} (shape {shape}). "
            f"Use an axis in [{-rank}, {rank - 1}], or feed an input with that axis."
        )
    return axis % rank


def _broadcast(v: Any, axis: int, rank: int) -> Any:
    """A vector ``(C,)`` reshaped to broadcast along ``axis`` of a rank-``rank`` array."""
    if axis == rank - 1:
        return v
    return ops.reshape(v, (-1,) + (1,) * (rank - 1 - axis))


def _scale_shift(y: Any, gamma: Parameter | None, beta: Parameter | None, axis: int, rank: int) -> Any:
    if gamma is not None:
        y = ops.multiply(y, _broadcast(gamma.data(), axis, rank))
    if beta is not None:
        y = ops.add(y, _broadcast(beta.data(), axis, rank))
    return y


class _ChannelNorm(Block):
    """The parameters and checks the three layers share: gamma and beta of shape (channels,)."""

    _name = "Norm"
    _channels: int
    center: bool
    scale: bool
    gamma: Parameter | None
    beta: Parameter | None

    def _declare(self, center: bool, scale: bool, in_channels: int | None,
                 beta_initializer: _init.InitializerLike, gamma_initializer: _init.InitializerLike) -> int:
        cls = self._name
        if in_channels is not None:
            in_channels = _positive_int(cls, "in_channels", in_channels)
        channels = in_channels or -1
        self._channels = channels
        self.center, self.scale = bool(center), bool(scale)
        self.gamma = Parameter("gamma", (channels,), init=gamma_initializer) if scale else None
        self.beta = Parameter("beta", (channels,), init=beta_initializer) if center else None
        return channels

    @property
    def in_channels(self) -> int | None:
        """The number of channels, or ``None`` while it is not known."""
        n = self._known_channels()
        return None if n == -1 else n

    def _known_channels(self) -> int:
        """The channel count the parameters have (``-1`` while unknown).

        A layer without parameters (``center=False, scale=False``) knows only its
        ``in_channels`` argument.
        """
        for p in self._params.values():
            return p.shape[0]
        return self._channels

    def _infer_channels(self, shape: tuple[int | None, ...], axis: int, what: str) -> int:
        """Check the channel axis of the input against what is known; fix the parameters' shapes."""
        where = self.describe()
        channels = shape[axis]
        if channels is None:
            raise ValueError(
                f"{where}: the size of the {what} (axis {axis}) of the input is unknown (shape "
                f"{shape}); it must be known to build the layer. Trace with a known size, or give "
                "in_channels=... when creating the layer."
            )
        require_nonempty(self, shape, (axis,), (what,), "A normalization layer needs at least one channel.")
        known = self._known_channels()
        if known != -1 and known != channels:
            raise ShapeMismatchError(
                f"{where}: expected {known} channels on axis {axis}. Received input of shape "
                f"{shape} with {channels}. Fix the input, the previous layer's output size, or "
                "the in_channels of this layer."
            )
        self._check_channels(channels, shape)
        for p in self._params.values():
            p.complete((channels,), where)
        return channels

    def _check_channels(self, channels: int, shape: tuple[int | None, ...]) -> None:
        """Extra rules on the channel count (GroupNorm's divisibility)."""

    def _flags_repr(self) -> str:
        flags = "" if self.center else ", center=False"
        return flags + ("" if self.scale else ", scale=False")


class BatchNorm(_ChannelNorm):
    """Batch normalization: normalize each channel with the batch's statistics (training) or
    the running statistics (inference), then scale by ``gamma`` and shift by ``beta``.

    ``y = (x - mean) / sqrt(var + epsilon) * gamma + beta``, per channel of ``axis``.

    * Training (after ``net.train()``; ``net.eval()`` switches back): ``mean`` and ``var`` are
      the mean and the biased variance of the batch over every axis but ``axis``; the running
      statistics are updated in place (outside autograd) as
      ``running = momentum * running + (1 - momentum) * batch``, with the *unbiased* batch
      variance (``var * n / (n - 1)``, ``n`` values per channel) for ``running_var``, as
      Gluon and PyTorch do. Training needs more than one value per channel.
    * Inference (the default mode): ``mean`` and ``var`` are ``running_mean``, ``running_var``.

    Parameters, all of shape ``(in_channels,)``: ``gamma`` (trainable, absent when
    ``scale=False``), ``beta`` (trainable, absent when ``center=False``), ``running_mean`` and
    ``running_var`` (``trainable=False``: saved with the model and listed by
    ``collect_params()``/``get_weights()``, but not by ``parameters()``).

    Args:
        axis: the channel axis (default 1: channels-first ``(N, C, ...)``; ``-1`` for
            channels-last data). Inputs have rank >= 2.
        momentum: weight of the running statistics in their update, in ``[0, 1]`` (Gluon's
            convention: PyTorch's ``momentum=0.1`` is ``momentum=0.9`` here).
        epsilon: added to the variance, > 0.
        center: whether to add ``beta``.
        scale: whether to multiply by ``gamma``.
        in_channels: the channel count, if known; with it, ``initialize()`` materializes the
            layer. Otherwise it is inferred from the first input (``-1`` until then).
        beta_initializer: the initializer of ``beta`` (default zeros).
        gamma_initializer: the initializer of ``gamma`` (default ones).
        running_mean_initializer: the initializer of ``running_mean`` (default zeros).
        running_variance_initializer: the initializer of ``running_var`` (default ones).

    Example:
        >>> import numpy as np
        >>> from deferral import nn
        >>> bn = nn.BatchNorm()
        >>> bn.running_var.shape
        (-1,)
        >>> _ = bn.initialize(seed=0)
        >>> bn(np.ones((2, 3, 4), dtype="float32")).shape
        (2, 3, 4)
        >>> bn.running_var.shape
        (3,)
    """

    _name = "BatchNorm"

    def __init__(
        self,
        axis: int = 1,
        momentum: float = 0.9,
        epsilon: float = 1e-5,
        center: bool = True,
        scale: bool = True,
        in_channels: int | None = None,
        beta_initializer: _init.InitializerLike = "zeros",
        gamma_initializer: _init.InitializerLike = "ones",
        running_mean_initializer: _init.InitializerLike = "zeros",
        running_variance_initializer: _init.InitializerLike = "ones",
    ) -> None:
        super().__init__()
        self.axis = _integer("BatchNorm", "axis", axis)
        self.momentum = _number("BatchNorm", "momentum", momentum, 0.0, 1.0)
        self.epsilon = _epsilon("BatchNorm", epsilon)
        channels = self._declare(center, scale, in_channels, beta_initializer, gamma_initializer)
        self.running_mean = Parameter("running_mean", (channels,), init=running_mean_initializer,
                                      trainable=False)
        self.running_var = Parameter("running_var", (channels,), init=running_variance_initializer,
                                     trainable=False)

    def build(self, x_shape: Any) -> None:
        """Check the input's rank and channel axis; complete the channel count from it."""
        where = self.describe()
        if not isinstance(x_shape, tuple) or len(x_shape) < 2:
            raise ValueError(
                f"{where}: expected input of rank >= 2 (batch, channels, ...). Received shape "
                f"{x_shape}. Add a batch axis, e.g. x.reshape(1, -1)."
            )
        self._infer_channels(x_shape, _resolve_axis(where, self.axis, x_shape), "channel axis")

    def forward(self, x: Any) -> Any:
        require_float(self, x)
        shape = ops.shape(x)
        rank = len(shape)
        if rank < 2:  # a vector would broadcast against the statistics
            self.build(shape)
        axis = self.axis % rank
        if not self.training:
            mean, var = self.running_mean.data(), self.running_var.data()
            return self._normalize(x, mean, var, axis, rank)
        axes = tuple(i for i in range(rank) if i != axis)
        sizes = [shape[i] for i in axes]
        count = math.prod(sizes) if None not in sizes else None
        require_nonempty(self, shape, axes, lambda a: "batch axis" if a == 0 else f"axis {a}",
                         "Training needs values to compute batch statistics from; use inference mode (net.eval()).")
        if count is not None and count < 2:
            raise ValueError(
                f"{self.describe()}: training needs more than 1 value per channel to compute batch "
                f"statistics; received input of shape {shape}. Use a larger batch, or inference "
                "mode (net.eval())."
            )
        mean, var = ops.moments(x, axes)
        y = self._normalize(x, mean, var, axis, rank)
        self._update_running(x, mean, var, axes, count)
        return y

    def _normalize(self, x: Any, mean: Any, var: Any, axis: int, rank: int) -> Any:
        gamma = None if self.gamma is None else self.gamma.data()
        beta = None if self.beta is None else self.beta.data()
        if axis == 1:
            return ops.batch_norm(x, mean, var, gamma, beta, self.epsilon)
        y = ops.multiply(ops.subtract(x, _broadcast(mean, axis, rank)),
                         _broadcast(ops.rsqrt(ops.add(var, self.epsilon)), axis, rank))
        return _scale_shift(y, self.gamma, self.beta, axis, rank)

    def _update_running(self, x: Any, mean: Any, var: Any, axes: tuple[int, ...], count: int | None) -> None:
        m = self.momentum
        if count is not None:
            unbiased = ops.multiply(var, count / (count - 1))
        else:  # a size unknown while tracing: count the values per channel with the ops
            n = ops.sum(ops.add(ops.multiply(x, 0.0), 1.0), axes)
            unbiased = ops.multiply(var, ops.divide(n, ops.subtract(n, 1.0)))
        running_mean, running_var = self.running_mean.data(), self.running_var.data()
        ops.assign(running_mean, ops.add(ops.multiply(running_mean, m), ops.multiply(mean, 1.0 - m)))
        ops.assign(running_var, ops.add(ops.multiply(running_var, m), ops.multiply(unbiased, 1.0 - m)))

    def _extra_repr(self) -> str:
        return (f"{self._known_channels()}, axis={self.axis}, momentum={self.momentum:g}, "
                f"epsilon={self.epsilon:g}{self._flags_repr()}")


class LayerNorm(_ChannelNorm):
    """Layer normalization: normalize each sample over ``axis`` with its own mean and
    (biased) variance, then scale by ``gamma`` and shift by ``beta`` (shape ``(in_channels,)``,
    the size of ``axis``). The same computation in training and inference.

    ``y = (x - mean(x, axis)) / sqrt(var(x, axis) + epsilon) * gamma + beta``.

    Args:
        axis: the axis normalized (default ``-1``, the last; e.g. features of ``(N, T, C)``).
        epsilon: added to the variance, > 0.
        center: whether to add ``beta``.
        scale: whether to multiply by ``gamma``.
        in_channels: the size of ``axis``, if known (else inferred from the first input).
        beta_initializer: the initializer of ``beta`` (default zeros).
        gamma_initializer: the initializer of ``gamma`` (default ones).

    Example:
        >>> import numpy as np
        >>> from deferral import nn
        >>> ln = nn.LayerNorm()
        >>> _ = ln.initialize(seed=0)
        >>> y = ln(np.arange(6, dtype="float32").reshape(2, 3))
        >>> np.round(y.astype("float64"), 3).tolist()
        [[-1.225, 0.0, 1.225], [-1.225, 0.0, 1.225]]
    """

    _name = "LayerNorm"

    def __init__(
        self,
        axis: int = -1,
        epsilon: float = 1e-5,
        center: bool = True,
        scale: bool = True,
        in_channels: int | None = None,
        beta_initializer: _init.InitializerLike = "zeros",
        gamma_initializer: _init.InitializerLike = "ones",
    ) -> None:
        super().__init__()
        self.axis = _integer("LayerNorm", "axis", axis)
        self.epsilon = _epsilon("LayerNorm", epsilon)
        self._declare(center, scale, in_channels, beta_initializer, gamma_initializer)

    def build(self, x_shape: Any) -> None:
        """Check the normalized axis; complete the channel count from it."""
        where = self.describe()
        if not isinstance(x_shape, tuple) or len(x_shape) < 1:
            raise ValueError(f"{where}: expected input of rank >= 1. Received a scalar (shape {x_shape}).")
        self._infer_channels(x_shape, _resolve_axis(where, self.axis, x_shape), "normalized axis")

    def forward(self, x: Any) -> Any:
        require_float(self, x)
        shape = ops.shape(x)
        rank = len(shape)
        axis = self.axis % rank
        mean, var = ops.moments(x, (axis,), keepdims=True)
        y = ops.multiply(ops.subtract(x, mean), ops.rsqrt(ops.add(var, self.epsilon)))
        return _scale_shift(y, self.gamma, self.beta, axis, rank)

    def _extra_repr(self) -> str:
        return f"{self._known_channels()}, axis={self.axis}, epsilon={self.epsilon:g}{self._flags_repr()}"


class GroupNorm(_ChannelNorm):
    """Group normalization: the channels (axis 1) of each sample are split into ``num_groups``
    groups of consecutive channels; each group is normalized with its own mean and (biased)
    variance over its channels and every spatial position, then each channel is scaled by
    ``gamma`` and shifted by ``beta`` (shape ``(in_channels,)``). The same computation in
    training and inference. ``num_groups=1`` normalizes over all of ``(C, *spatial)``;
    ``num_groups=in_channels`` is instance normalization.

    Input: ``(N, C, *spatial)`` (rank >= 2); ``C`` must be divisible by ``num_groups``.

    Args:
        num_groups: the number of groups.
        epsilon: added to the variance, > 0.
        center: whether to add ``beta``.
        scale: whether to multiply by ``gamma``.
        in_channels: ``C``, if known (else inferred from the first input).
        beta_initializer: the initializer of ``beta`` (default zeros).
        gamma_initializer: the initializer of ``gamma`` (default ones).

    Example:
        >>> from deferral import nn
        >>> gn = nn.GroupNorm(num_groups=2)
        >>> gn
        GroupNorm(-1, num_groups=2, epsilon=1e-05)
    """

    _name = "GroupNorm"

    def __init__(
        self,
        num_groups: int = 1,
        epsilon: float = 1e-5,
        center: bool = True,
        scale: bool = True,
        in_channels: int | None = None,
        beta_initializer: _init.InitializerLike = "zeros",
        gamma_initializer: _init.InitializerLike = "ones",
    ) -> None:
        super().__init__()
        self.num_groups = _positive_int("GroupNorm", "num_groups", num_groups)
        self.epsilon = _epsilon("GroupNorm", epsilon)
        if in_channels is not None:
            in_channels = _positive_int("GroupNorm", "in_channels", in_channels)
            if in_channels % self.num_groups:
                raise ValueError(
                    f"GroupNorm: in_channels must be divisible by num_groups. Received: "
                    f"in_channels={in_channels}, num_groups={num_groups}."
                )
        self._declare(center, scale, in_channels, beta_initializer, gamma_initializer)

    def build(self, x_shape: Any) -> None:
        """Check the input's rank and channels (divisible by ``num_groups``); complete them."""
        if not isinstance(x_shape, tuple) or len(x_shape) < 2:
            raise ValueError(
                f"{self.describe()}: expected input of rank >= 2 (batch, channels, *spatial). "
                f"Received shape {x_shape}. Add a batch axis, e.g. x.reshape(1, -1)."
            )
        self._infer_channels(x_shape, 1, "channel axis")

    def forward(self, x: Any) -> Any:
        require_float(self, x)
        shape = ops.shape(x)
        rank = len(shape)
        require_nonempty(self, shape, range(2, rank), lambda a: f"axis {a}",
                         "GroupNorm needs at least one element per channel to normalize over.")
        channels, groups = shape[1], self.num_groups
        rest = [-1 if d is None else d for d in shape[2:]]
        batch = -1 if shape[0] is None else shape[0]
        if (batch == -1) + rest.count(-1) > 1:
            raise ValueError(
                f"{self.describe()}: at most one of the batch and spatial sizes may be unknown "
                f"(input shape {shape}). Trace with known spatial sizes."
            )
        grouped = ops.reshape(x, (batch, groups, channels // groups, *rest))
        mean, var = ops.moments(grouped, tuple(range(2, rank + 1)), keepdims=True)
        y = ops.multiply(ops.subtract(grouped, mean), ops.rsqrt(ops.add(var, self.epsilon)))
        y = ops.reshape(y, (batch, channels, *rest))
        return _scale_shift(y, self.gamma, self.beta, 1, rank)

    def _check_channels(self, channels: int, shape: tuple[int | None, ...]) -> None:
        if channels % self.num_groups:
            raise ShapeMismatchError(
                f"{self.describe()}: the number of channels must be divisible by num_groups="
                f"{self.num_groups}. Received input of shape {shape} with {channels} channels. "
                f"Use a num_groups that divides {channels}, or change the previous layer's output "
                "channels."
            )

    def _extra_repr(self) -> str:
        return (f"{self._known_channels()}, num_groups={self.num_groups}, "
                f"epsilon={self.epsilon:g}{self._flags_repr()}")
