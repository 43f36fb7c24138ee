"""The fully connected layer."""

from __future__ import annotations

from typing import Any

from .. import init as _init
from .. import ops
from ..errors import ShapeMismatchError
from ..parameter import Parameter
from ._activations import activation_fn
from ._args import positive_int
from ._block import Block

__all__ = ["Dense"]


class Dense(Block):
    """``y = activation(x @ weight.T + bias)`` over the last axis of ``x``.

    ``weight`` has shape ``(units, in_units)`` on every backend; ``in_units`` is inferred from
    the first input when not given (it is shown as ``-1`` until then).

    Args:
        units: output size.
        activation: ``"relu"``, ``"sigmoid"``, ``"tanh"``, ``"gelu"``, ``"softmax"`` or
            ``None``/``"linear"``.
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
        activation: str | None = None,
        use_bias: bool = True,
        in_units: int | None = None,
        weight_initializer: _init.InitializerLike = None,
        bias_initializer: _init.InitializerLike = "zeros",
    ) -> None:
        super().__init__()
        self.units = positive_int("Dense", "units", units)
        if in_units is not None:
            in_units = positive_int("Dense", "in_units", in_units)
        self._act_name = activation
        activation_fn(activation, "Dense")  # validates the name
        self._act = None if activation in (None, "linear") else activation
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
        if not features:
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
        F = ops._ops(x)
        if len(F.shape(x)) < 2:  # the backends' linear would take a vector
            self.build(F.shape(x))
        bias = self.bias
        y = F.linear(x, self.weight.data(), None if bias is None else bias.data())
        if self._act is None:
            return y
        return F.softmax(y, -1) if self._act == "softmax" else getattr(F, self._act)(y)

    def _extra_repr(self) -> str:
        n = self.weight.shape[1]
        return f"{n} -> {self.units}, {self._act_name or 'linear'}"
