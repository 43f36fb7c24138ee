"""Activation functions and layers, how a layer's ``activation`` argument is resolved, and
``nn.Flatten``.

Every formula is PyTorch's (``torch.nn.functional``), composed from :mod:`deferral.ops`, so
each works on every backend, in shape-only inference and under a framework's tracing.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any, ClassVar

from .. import ops
from .._dispatch import _ops as _namespace  # the one-op activations call their backend's op directly
from ._args import number
from ._block import Block
from ._inputs import require_float

__all__ = [
    "ACTIVATIONS", "ELU", "GELU", "SELU", "Activation", "ActivationLike", "Flatten", "HardSigmoid", "HardSwish", "LeakyReLU",
    "LogSoftmax", "Mish", "ReLU", "ReLU6", "Sigmoid", "SiLU", "Softmax", "Softplus", "Tanh", "activation_fn",
    "attach_activation", "describe_activation",
]

#: What a layer's ``activation`` argument may be: a name (``"silu"``), a name with arguments
#: (``("leaky_relu", 0.1)``), an activation layer (``nn.LeakyReLU(0.1)``), any other block or
#: callable of one array, or ``None``/``"linear"`` for none.
ActivationLike = str | tuple[Any, ...] | Block | Callable[[Any], Any] | None

# SELU's constants (Klambauer et al. 2017), as torch.nn.SELU.
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946
_GELU_TANH_C = math.sqrt(2.0 / math.pi)


# -- the functions ---------------------------------------------------------------------------
def leaky_relu(x: Any, negative_slope: float = 0.01) -> Any:
    """``x`` where ``x >= 0``, else ``negative_slope * x``."""
    scaled = ops.multiply(x, negative_slope)
    return ops.maximum(x, scaled) if negative_slope <= 1 else ops.minimum(x, scaled)


def relu6(x: Any) -> Any:
    """``min(max(x, 0), 6)``."""
    return ops.minimum(ops.relu(x), 6.0)


def elu(x: Any, alpha: float = 1.0) -> Any:
    """``x`` where ``x > 0``, else ``alpha * (exp(x) - 1)`` (with ``expm1``)."""
    return ops.add(ops.relu(x), ops.multiply(ops.expm1(ops.minimum(x, 0.0)), alpha))


def selu(x: Any) -> Any:
    """``scale * elu(x, alpha)`` with SELU's fixed ``alpha`` and ``scale``."""
    return ops.multiply(elu(x, _SELU_ALPHA), _SELU_SCALE)


def silu(x: Any) -> Any:
    """``x * sigmoid(x)`` (also called swish)."""
    return ops.multiply(x, ops.sigmoid(x))


def gelu_tanh(x: Any) -> Any:
    """``0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3)))``."""
    cube = ops.multiply(ops.multiply(ops.multiply(x, x), x), 0.044715)
    inner = ops.tanh(ops.multiply(ops.add(x, cube), _GELU_TANH_C))
    return ops.multiply(ops.multiply(x, 0.5), ops.add(inner, 1.0))


def softplus(x: Any, beta: float = 1.0) -> Any:
    """``log(1 + exp(beta * x)) / beta``, as ``max(bx, 0) + log1p(exp(-|bx|))``: never overflows."""
    bx = x if beta == 1.0 else ops.multiply(x, beta)
    magnitude = ops.maximum(bx, ops.multiply(bx, -1.0))
    y = ops.add(ops.relu(bx), ops.log1p(ops.exp(ops.multiply(magnitude, -1.0))))
    return y if beta == 1.0 else ops.divide(y, beta)


def hard_sigmoid(x: Any) -> Any:
    """``relu6(x + 3) / 6``: 0 below -3, 1 above 3, linear in between (PyTorch's)."""
    return ops.divide(relu6(ops.add(x, 3.0)), 6.0)


def hard_swish(x: Any) -> Any:
    """``x * relu6(x + 3) / 6``."""
    return ops.divide(ops.multiply(x, relu6(ops.add(x, 3.0))), 6.0)


def mish(x: Any) -> Any:
    """``x * tanh(softplus(x))``."""
    return ops.multiply(x, ops.tanh(softplus(x)))


# -- the layers ------------------------------------------------------------------------------
class _Pointwise(Block):
    """An activation layer: refuses non-floating input, then applies :meth:`apply`."""

    #: The name that selects this layer in an ``activation`` argument.
    name: ClassVar[str] = ""

    def forward(self, x: Any) -> Any:
        require_float(self, x)
        return self.apply(x)

    def apply(self, x: Any) -> Any:
        """The activation itself (what a layer's ``activation`` argument calls)."""
        raise NotImplementedError

    def on(self, F: Any) -> Callable[[Any], Any]:
        """:meth:`apply` for the arrays of the backend whose ops are ``F``: the backend's own
        function where the activation is one op (``F.relu``), else :meth:`apply` itself."""
        return self.apply

    def _args(self) -> dict[str, Any]:
        return {}

    def _extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self._args().items())


class ReLU(_Pointwise):
    """``max(x, 0)``."""

    name = "relu"

    def apply(self, x: Any) -> Any:
        return _namespace(x).relu(x)

    def on(self, F: Any) -> Callable[[Any], Any]:
        return F.relu


class ReLU6(_Pointwise):
    """``min(max(x, 0), 6)``."""

    name = "relu6"

    def apply(self, x: Any) -> Any:
        return relu6(x)


class LeakyReLU(_Pointwise):
    """``x`` where ``x >= 0``, else ``negative_slope * x`` (as ``torch.nn.LeakyReLU``).

    Args:
        negative_slope: the slope for negative inputs (default 0.01, PyTorch's; Keras 3
            defaults to 0.3). Any finite number.

    Example:
        >>> import numpy as np
        >>> from deferral import nn
        >>> nn.LeakyReLU(0.1)(np.array([-2.0, 3.0]))
        array([-0.2,  3. ])
    """

    name = "leaky_relu"

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = number("LeakyReLU", "negative_slope", negative_slope, -math.inf, math.inf,
                                     low_open=True, high_open=True)

    def apply(self, x: Any) -> Any:
        return leaky_relu(x, self.negative_slope)

    def _args(self) -> dict[str, Any]:
        return {"negative_slope": self.negative_slope}


class ELU(_Pointwise):
    """``x`` where ``x > 0``, else ``alpha * (exp(x) - 1)`` (as ``torch.nn.ELU``).

    Args:
        alpha: the negative saturation value's magnitude (default 1.0), a finite number.
    """

    name = "elu"

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = number("ELU", "alpha", alpha, -math.inf, math.inf, low_open=True, high_open=True)

    def apply(self, x: Any) -> Any:
        return elu(x, self.alpha)

    def _args(self) -> dict[str, Any]:
        return {"alpha": self.alpha}


class SELU(_Pointwise):
    """``scale * elu(x, alpha)`` with ``alpha = 1.6732632...`` and ``scale = 1.0507009...``."""

    name = "selu"

    def apply(self, x: Any) -> Any:
        return selu(x)


class SiLU(_Pointwise):
    """``x * sigmoid(x)``, also called swish (``"silu"`` or ``"swish"`` by name)."""

    name = "silu"

    def apply(self, x: Any) -> Any:
        return silu(x)


class GELU(_Pointwise):
    """Gaussian error linear unit, as ``torch.nn.GELU``.

    Args:
        approximate: ``"none"`` (default): the exact ``x * Phi(x)`` with the error function;
            ``"tanh"``: ``0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))`` (by name:
            ``"gelu_tanh"`` or ``("gelu", "tanh")``).
    """

    name = "gelu"

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: expected 'none' or 'tanh' for approximate. Received: approximate={approximate!r}")
        self.approximate = approximate

    def apply(self, x: Any) -> Any:
        return ops.gelu(x) if self.approximate == "none" else gelu_tanh(x)

    def _args(self) -> dict[str, Any]:
        return {} if self.approximate == "none" else {"approximate": self.approximate}


class Softplus(_Pointwise):
    """``log(1 + exp(beta * x)) / beta`` (as ``torch.nn.Softplus``), computed without overflow.

    PyTorch returns ``x`` itself where ``beta * x > 20``; the stable form used here differs
    from that by less than ``exp(-20) / beta``.

    Args:
        beta: a positive, finite number (default 1).
    """

    name = "softplus"

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        self.beta = number("Softplus", "beta", beta, 0.0, math.inf, low_open=True, high_open=True)

    def apply(self, x: Any) -> Any:
        return softplus(x, self.beta)

    def _args(self) -> dict[str, Any]:
        return {} if self.beta == 1.0 else {"beta": self.beta}


class HardSigmoid(_Pointwise):
    """``relu6(x + 3) / 6``, PyTorch's ``hardsigmoid``.

    Keras 3's ``hard_sigmoid`` is the same; Keras 2 and ``tf.keras`` before it used
    ``clip(0.2 * x + 0.5, 0, 1)``, a different function.
    """

    name = "hard_sigmoid"

    def apply(self, x: Any) -> Any:
        return hard_sigmoid(x)


class HardSwish(_Pointwise):
    """``x * relu6(x + 3) / 6``, PyTorch's ``hardswish`` (MobileNetV3)."""

    name = "hard_swish"

    def apply(self, x: Any) -> Any:
        return hard_swish(x)


class Mish(_Pointwise):
    """``x * tanh(softplus(x))`` (Misra 2019)."""

    name = "mish"

    def apply(self, x: Any) -> Any:
        return mish(x)


class Sigmoid(_Pointwise):
    """The logistic function ``1 / (1 + exp(-x))``."""

    name = "sigmoid"

    def apply(self, x: Any) -> Any:
        return _namespace(x).sigmoid(x)

    def on(self, F: Any) -> Callable[[Any], Any]:
        return F.sigmoid


class Tanh(_Pointwise):
    """Hyperbolic tangent."""

    name = "tanh"

    def apply(self, x: Any) -> Any:
        return _namespace(x).tanh(x)

    def on(self, F: Any) -> Callable[[Any], Any]:
        return F.tanh


class Softmax(_Pointwise):
    """Softmax along ``axis`` (default: the last)."""

    name = "softmax"

    def __init__(self, axis: int = -1) -> None:
        super().__init__()
        self.axis = axis

    def apply(self, x: Any) -> Any:
        return ops.softmax(x, self.axis)

    def _extra_repr(self) -> str:
        return f"axis={self.axis}"


class LogSoftmax(Softmax):
    """``log(softmax(x))`` along ``axis`` (default: the last), computed stably."""

    name = "log_softmax"

    def apply(self, x: Any) -> Any:
        return ops.log_softmax(x, self.axis)


_LAYERS: tuple[type[_Pointwise], ...] = (
    ReLU, ReLU6, LeakyReLU, ELU, SELU, SiLU, GELU, Softplus, HardSigmoid, HardSwish, Mish, Sigmoid, Tanh,
    Softmax, LogSoftmax,
)
# Activation names and what each builds (aliases: ``swish``, ``gelu_tanh``).
_NAMES: dict[str, Callable[..., _Pointwise]] = {
    **{cls.name: cls for cls in _LAYERS}, "swish": SiLU, "gelu_tanh": lambda: GELU("tanh"),
}
#: Every activation name a layer's ``activation`` argument accepts (besides ``"linear"``).
ACTIVATIONS: tuple[str, ...] = tuple(sorted(_NAMES))


def _named(spec: str | tuple[Any, ...], where: str) -> _Pointwise:
    name, args = (spec, ()) if isinstance(spec, str) else (spec[0] if spec else None, spec[1:])
    make = _NAMES.get(name) if isinstance(name, str) else None
    if make is None:
        raise ValueError(
            f"{where}: unknown activation {spec!r}. Choose one of: {', '.join(ACTIVATIONS)}, linear "
            "(or None), a name with arguments such as ('leaky_relu', 0.1), an activation layer such "
            "as nn.LeakyReLU(0.1), or a function of one array written with deferral.ops."
        )
    try:
        return make(*args)
    except TypeError:
        raise ValueError(
            f"{where}: activation {name!r} takes the arguments {str(inspect.signature(make)).split(' ->')[0]}. Received: {spec!r}"
        ) from None


def activation_fn(spec: ActivationLike, where: str = "activation") -> Callable[[Any], Any] | None:
    """The function a layer applies for its ``activation`` argument (``None``: no activation).

    A name or ``(name, *args)`` builds the activation layer of that name (``("leaky_relu",
    0.1)`` is ``nn.LeakyReLU(0.1)``) and applies its formula; a built-in activation layer is
    applied the same way; any other block or callable is called as it is.

    Raises:
        ValueError: for an unknown name or bad arguments, listing the known names.
        TypeError: for a value that is neither a name, a tuple, nor callable.

    Example:
        >>> import numpy as np
        >>> from deferral import nn
        >>> nn.activation_fn(("leaky_relu", 0.5))(np.array([-2.0, 2.0]))
        array([-1.,  2.])
    """
    if spec is None or spec == "linear":
        return None
    if isinstance(spec, (str, tuple)):
        return _named(spec, where).apply
    if isinstance(spec, _Pointwise):
        return spec.apply
    if callable(spec):
        return spec
    raise TypeError(
        f"{where}: expected an activation name, a (name, *args) tuple, a block or a callable. "
        f"Received: activation={spec!r}"
    )


def attach_activation(layer: Block, spec: ActivationLike, where: str) -> Callable[[Any], Any] | None:
    """Resolve ``layer``'s ``activation`` argument; a block that is not a built-in activation
    becomes the child ``activation`` (its parameters, if any, are the model's)."""
    fn = activation_fn(spec, where)
    if isinstance(spec, Block) and not isinstance(spec, _Pointwise):
        layer.activation = spec
    return fn


def activation_on(fn: Callable[[Any], Any] | None, like: Any) -> Callable[[Any], Any] | None:
    """``fn``, a layer's resolved activation (:func:`activation_fn`), for arrays like ``like``:
    the backend's own function where ``fn`` applies a built-in one-op activation (``torch.relu``
    for a torch tensor), else ``fn``. For a native container that calls it itself, so a compiler
    tracing the call sees the framework's function and nothing of the dispatch.

    Example:
        >>> import numpy as np
        >>> from deferral import nn
        >>> from deferral.nn._activations import activation_on
        >>> activation_on(nn.activation_fn("relu"), np.zeros(1)).__name__
        'relu'
    """
    owner = getattr(fn, "__self__", None)
    if not isinstance(owner, _Pointwise) or getattr(fn, "__func__", None) is not type(owner).apply:
        return fn
    cls = type(owner)
    # on() is the op only where the class that gives it also gives apply (a subclass that
    # changes apply keeps it)
    if next(c for c in cls.__mro__ if "on" in vars(c)) is not next(c for c in cls.__mro__ if "apply" in vars(c)):
        return fn
    return owner.on(_namespace(like))


def describe_activation(spec: ActivationLike) -> str:
    """A short text for a layer's ``repr``: the name, the layer, or the function's name."""
    if spec is None or isinstance(spec, str):
        return spec or "linear"
    if isinstance(spec, (tuple, Block)):
        return repr(spec)
    return getattr(spec, "__name__", type(spec).__name__)


class Activation(_Pointwise):
    """Applies an activation given as a layer's ``activation`` argument: ``nn.Activation("silu")``,
    ``nn.Activation(("leaky_relu", 0.2))``, or a function written with :mod:`deferral.ops`.

    Example:
        >>> import numpy as np
        >>> from deferral import nn, ops
        >>> nn.Activation("hard_sigmoid")(np.array([-4.0, 0.0, 1.5]))
        array([0.  , 0.5 , 0.75])
        >>> nn.Activation(lambda v: ops.multiply(v, 2.0))(np.array([1.0]))
        array([2.])
    """

    def __init__(self, activation: ActivationLike) -> None:
        super().__init__()
        self._fn = activation_fn(activation, "Activation")
        self.activation = activation

    def apply(self, x: Any) -> Any:
        return x if self._fn is None else self._fn(x)

    def _extra_repr(self) -> str:
        return describe_activation(self.activation) if callable(self.activation) else repr(self.activation)


class Flatten(Block):
    """Collapses every axis but the first: ``(N, C, H, W) -> (N, C*H*W)``."""

    def forward(self, x: Any) -> Any:
        if len(ops.shape(x)) < 1:
            raise ValueError(f"{self.describe()}: expected an input with a batch axis; received a scalar")
        return ops.flatten(x)
