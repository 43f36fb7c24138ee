"""The fully connected layer."""

from __future__ import annotations

from typing import Any

from .. import init as _init
from .._dispatch import _ops as _namespace
from ..errors import ShapeMismatchError
from ..parameter import Parameter
from ._activations import ActivationLike, attach_activation, describe_activation
from ._args import positive_int
from ._block import Block
from ._inputs import require_float, require_nonempty

__all__ = ["Dense"]


class Dense(Block):
    """``y = activation(x @ weight.T + bias)`` over the last axis of ``x``.

    ``weight`` has shape ``(units, in_units)`` on every backend; ``in_units`` is inferred from
    the first input when not given (it is shown as ``-1`` until then).

    Args:
        units: output size.
        activation: a name (``"relu"``, ``"silu"``, ``"leaky_relu"``, ... see
            :data:`deferral.nn.ACTIVATIONS`), a name with arguments (``("leaky_relu", 0.1)``),
            an activation layer (``nn.LeakyReLU(0.1)``), any function of one array written
            with :mod:`deferral.ops`, or ``None``/``"linear"`` (none). A block that is not a
            built-in activation becomes the child ``activation``.
        use_bias: whether to add a bias.
        in_units: input size, if known; with it, ``initialize()`` materializes the layer.
        weight_initializer: the weight's own initializer (default: the one given to
            ``initialize()``, else Xavier uniform).
        bias_initializer: the bias's initializer (default ``"zeros"``).

    Example:
        >>> from deferral import nn
        >>> layer = nn.Dense(256, activation="relu")
        >>> layer.weight.shape
        (256, -1)
    """

    def __init__(
        self,
        units: int,
        activation: ActivationLike = None,
        use_bias: bool = True,
        in_units: int | None = None,
        weight_initializer: _init.InitializerLike = None,
        bias_initializer: _init.InitializerLike = "zeros",
    ) -> None:
        super().__init__()
        self.units = positive_int("Dense", "units", units)
        if in_units is not None:
            in_units = positive_int("Dense", "in_units", in_units)
        self._act_repr = describe_activation(activation)
        self._act = attach_activation(self, activation, "Dense")
        self.weight = Parameter("weight", (units, in_units or -1), init=weight_initializer)
        self.bias = Parameter("bias", (units,), init=bias_initializer) if use_bias else None

    @property
    def in_units(self) -> int | None:
        """The input size, or ``None`` while it is not known."""
        n = self.weight.shape[1]
        return None if n == -1 else n

    def build(self, x_shape: Any) -> None:
        """Check the input's rank and features; complete ``in_units`` from them."""
        where = self.describe()
        if not isinstance(x_shape, tuple) or len(x_shape) < 2:
            raise ValueError(
                f"{where}: expected input of rank >= 2 (batch, ..., features). Received shape "
                f"{x_shape}. Add a batch axis, e.g. x.reshape(1, -1)."
            )
        features = x_shape[-1]
        require_nonempty(self, x_shape, (-1,), ("feature axis",), "A Dense layer needs at least one input feature.")
        if features is None:
            raise ValueError(
                f"{where}: the input's feature dimension is {features} (shape {x_shape}); cannot "
                "infer in_units."
            )
        known = self.weight.shape[1]
        if known != -1 and known != features:
            raise ShapeMismatchError(
                f"{where}: expected {known} input features (weight shape {self.weight.shape}). "
                f"Received input of shape {x_shape} with {features}. Fix the input, or the "
                "previous layer's units, or the in_units of this layer."
            )
        self.weight.complete((self.units, features), where)

    def forward(self, x: Any) -> Any:
        F = _namespace(x)
        if len(F.shape(x)) < 2:  # the backends' linear would take a vector
            self.build(F.shape(x))
        require_float(self, x)
        bias = self.bias
        y = F.linear(x, self.weight.data(), None if bias is None else bias.data())
        act = self._act
        return y if act is None else act(y)

    def _extra_repr(self) -> str:
        n = self.weight.shape[1]
        return f"{n} -> {self.units}, {self._act_repr}"
