"""Activation layers and ``nn.Flatten``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import ops
from ._block import Block

__all__ = ["GELU", "Activation", "Flatten", "ReLU", "Sigmoid", "Softmax", "Tanh", "activation_fn"]

_ACTIVATIONS: dict[str, Callable[[Any], Any]] = {
    "relu": ops.relu,
    "sigmoid": ops.sigmoid,
    "tanh": ops.tanh,
    "gelu": ops.gelu,
    "softmax": ops.softmax,
}


def activation_fn(name: str | None, where: str = "activation") -> Callable[[Any], Any] | None:
    """Resolve an activation name (``None`` or ``"linear"`` means none).

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    if name is None or name == "linear":
        return None
    fn = _ACTIVATIONS.get(name) if isinstance(name, str) else None
    if fn is None:
        raise ValueError(
            f"{where}: unknown activation {name!r}. Choose one of: "
            f"{', '.join(sorted(_ACTIVATIONS))}, linear (or None)."
        )
    return fn


class Activation(Block):
    """Applies a named activation: ``nn.Activation("relu")``."""

    def __init__(self, activation: str) -> None:
        super().__init__()
        self._fn = activation_fn(activation, "Activation")
        self.activation = activation

    def forward(self, x: Any) -> Any:
        return x if self._fn is None else self._fn(x)

    def _extra_repr(self) -> str:
        return repr(self.activation)


class ReLU(Activation):
    """``max(x, 0)``."""

    def __init__(self) -> None:
        super().__init__("relu")

    def _extra_repr(self) -> str:
        return ""


class Sigmoid(Activation):
    """The logistic function."""

    def __init__(self) -> None:
        super().__init__("sigmoid")

    def _extra_repr(self) -> str:
        return ""


class Tanh(Activation):
    """Hyperbolic tangent."""

    def __init__(self) -> None:
        super().__init__("tanh")

    def _extra_repr(self) -> str:
        return ""


class GELU(Activation):
    """Gaussian error linear unit (exact, erf form)."""

    def __init__(self) -> None:
        super().__init__("gelu")

    def _extra_repr(self) -> str:
        return ""


class Softmax(Block):
    """Softmax along ``axis`` (default: the last)."""

    def __init__(self, axis: int = -1) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, x: Any) -> Any:
        return ops.softmax(x, self.axis)

    def _extra_repr(self) -> str:
        return f"axis={self.axis}"


class Flatten(Block):
    """Collapses every axis but the first: ``(N, C, H, W) -> (N, C*H*W)``."""

    def forward(self, x: Any) -> Any:
        if len(ops.shape(x)) < 1:
            raise ValueError(f"{self.describe()}: expected an input with a batch axis; received a scalar")
        return ops.flatten(x)
