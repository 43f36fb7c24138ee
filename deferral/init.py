"""Initializers: what distribution a parameter's first values come from.

An initializer is a small, picklable description. It computes nothing until a parameter's
shape is known; then :meth:`Initializer.recipe` turns the shape into a :class:`Recipe` (a
distribution name and float64 scalars), and the core's reference path
(:func:`Recipe.values`) turns the parameter's random stream into values. Because the recipe
and the stream are backend-neutral, the same seed gives the same bits on every backend.

The default weight initializer of :class:`deferral.nn.Dense` is :class:`XavierUniform`
(Keras' ``glorot_uniform``); biases start at zero.

Example:
    >>> from deferral import init
    >>> init.create("he_normal")
    KaimingNormal(gain=1.4142135623730951, mode='fan_in')
    >>> init.KaimingNormal().recipe((256, 20))
    Recipe(kind='normal', a=0.0, b=0.31622776601683794)
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Union

from . import random as _random
from .errors import InitializerError

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "Constant",
    "Initializer",
    "InitializerLike",
    "KaimingNormal",
    "KaimingUniform",
    "Normal",
    "Ones",
    "Orthogonal",
    "Recipe",
    "TruncatedNormal",
    "Uniform",
    "XavierNormal",
    "XavierUniform",
    "Zeros",
    "create",
    "fans",
    "known_names",
]

Shape = tuple[int, ...]


def fans(shape: Shape) -> tuple[int, int]:
    """Return ``(fan_in, fan_out)`` for a weight of ``shape``.

    For ``(out, in, *kernel)``: ``fan_in = in * prod(kernel)``, ``fan_out = out * prod(kernel)``.
    A vector (a bias) has ``fan_in = fan_out = len``; a scalar has 1 and 1.

    Example:
        >>> fans((64, 3, 3, 3))
        (27, 576)
    """
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


@dataclass(frozen=True)
class Recipe:
    """A concrete distribution for one shape: what the value spec turns words into.

    ``kind`` is one of ``"constant"`` (value ``a``), ``"uniform"`` (on ``[a, b)``),
    ``"normal"`` (mean ``a``, std ``b``), ``"truncated_normal"`` (mean ``a``, std ``b``, cut at
    two std) or ``"orthogonal"`` (gain ``a``; computed whole on the reference path).
    """

    kind: str
    a: float
    b: float = 0.0

    def values(self, key: tuple[int, int], shape: Shape, start: int, stop: int) -> np.ndarray:
        """Float64 values of flat elements ``start .. stop-1`` of a parameter of ``shape``."""
        import numpy as np

        from ._fill import fill

        out = np.empty(max(0, stop - start), dtype=np.float64)
        fill(self, key, shape, start, out, "float64")
        return out


@functools.lru_cache(maxsize=1)
def _orthogonal(key: tuple[int, int], shape: Shape, gain: float) -> np.ndarray:
    """A (semi-)orthogonal matrix from the QR factorisation of a normal draw.

    The factorisation needs the whole matrix, so a backend filling a parameter in chunks
    would redo it per chunk: the last result is cached (read-only).
    """
    import numpy as np

    rows = shape[0] if shape else 1
    cols = math.prod(shape[1:]) if len(shape) > 1 else 1
    flat = _random.normal(_random.raw_words(key, 0, rows * cols), 0.0, 1.0)
    mat = flat.reshape(rows, cols)
    if rows < cols:
        mat = mat.T
    q, r = np.linalg.qr(mat)
    q = q * np.where(np.diagonal(r) < 0, -1.0, 1.0)
    if rows < cols:
        q = q.T
    out = gain * q
    out.flags.writeable = False
    return out


class Initializer:
    """Base class. A subclass implements :meth:`recipe` (and a readable ``__repr__``).

    Instances are immutable descriptions: they hold arguments, never values. Arguments are
    validated when the initializer is created (:class:`~deferral.InitializerError`).
    """

    #: Names (lower case) that :func:`create` resolves to this class.
    aliases: ClassVar[tuple[str, ...]] = ()

    def recipe(self, shape: Shape) -> Recipe:
        """Return the concrete distribution for a parameter of ``shape``."""
        raise NotImplementedError

    def _fields(self) -> dict[str, object]:
        return dict(vars(self))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._fields().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Initializer) and type(self) is type(other) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash((type(self), tuple(self._fields().items())))


def _positive(cls: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise InitializerError(
            f"{cls}: expected a positive number for {name}. Received: {name}={value!r}"
        )
    if not math.isfinite(value):
        raise InitializerError(f"{cls}: expected a finite {name}. Received: {name}={value!r}")
    return float(value)


def _finite(cls: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InitializerError(f"{cls}: expected a finite number for {name}. Received: {name}={value!r}")
    return float(value)


class Constant(Initializer):
    """Every element equals ``value``."""

    aliases: ClassVar[tuple[str, ...]] = ("constant",)

    def __init__(self, value: float = 0.0) -> None:
        self.value = _finite("Constant", "value", value)

    def recipe(self, shape: Shape) -> Recipe:
        return Recipe("constant", self.value)


class Zeros(Constant):
    """Every element is 0."""

    aliases = ("zeros", "zero")

    def __init__(self) -> None:
        super().__init__(0.0)

    def _fields(self) -> dict[str, object]:
        return {}


class Ones(Constant):
    """Every element is 1."""

    aliases = ("ones", "one")

    def __init__(self) -> None:
        super().__init__(1.0)

    def _fields(self) -> dict[str, object]:
        return {}


class Uniform(Initializer):
    """Uniform on ``[-scale, scale)`` (MXNet's default is ``Uniform(0.07)``)."""

    aliases = ("uniform", "random_uniform")

    def __init__(self, scale: float = 0.07) -> None:
        self.scale = _positive("Uniform", "scale", scale)

    def recipe(self, shape: Shape) -> Recipe:
        return Recipe("uniform", -self.scale, self.scale)


class Normal(Initializer):
    """Normal with mean 0 and standard deviation ``sigma``."""

    aliases = ("normal", "random_normal", "gaussian")

    def __init__(self, sigma: float = 0.01) -> None:
        self.sigma = _positive("Normal", "sigma", sigma)

    def recipe(self, shape: Shape) -> Recipe:
        return Recipe("normal", 0.0, self.sigma)


class TruncatedNormal(Initializer):
    """Normal with mean 0 and std ``sigma``, cut at two ``sigma`` (values lie in ``[-2 sigma, 2 sigma]``)."""

    aliases = ("truncated_normal", "trunc_normal")

    def __init__(self, sigma: float = 0.01) -> None:
        self.sigma = _positive("TruncatedNormal", "sigma", sigma)

    def recipe(self, shape: Shape) -> Recipe:
        return Recipe("truncated_normal", 0.0, self.sigma)


_MODES = ("fan_in", "fan_out", "fan_avg")


class _FanScaled(Initializer):
    """Shared argument handling of the Xavier and Kaiming families."""

    default_gain: ClassVar[float] = 1.0
    default_mode: ClassVar[str] = "fan_avg"

    def __init__(self, gain: float | None = None, mode: str | None = None) -> None:
        cls = type(self).__name__
        self.gain = _positive(cls, "gain", self.default_gain if gain is None else gain)
        mode = self.default_mode if mode is None else mode
        if mode not in _MODES:
            raise InitializerError(
                f"{cls}: expected mode to be one of {', '.join(_MODES)}. Received: mode={mode!r}"
            )
        self.mode = mode

    def _fan(self, shape: Shape) -> float:
        fan_in, fan_out = fans(shape)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]
        if fan <= 0:
            raise InitializerError(
                f"{type(self).__name__}: cannot scale a parameter of shape {shape}: its "
                f"{self.mode} is 0. Give every dimension a positive size."
            )
        return float(fan)


class XavierUniform(_FanScaled):
    """Glorot uniform: ``U[-a, a)``, ``a = gain * sqrt(3 / fan)``, fan the average of in and out.

    With the defaults this is ``gain * sqrt(6 / (fan_in + fan_out))``: Keras'
    ``glorot_uniform`` and PyTorch's ``xavier_uniform_``.
    """

    aliases = ("xavier_uniform", "xavier", "glorot_uniform", "glorot")

    def recipe(self, shape: Shape) -> Recipe:
        bound = self.gain * math.sqrt(3.0 / self._fan(shape))
        return Recipe("uniform", -bound, bound)


class XavierNormal(_FanScaled):
    """Glorot normal: std ``gain * sqrt(1 / fan)``, fan the average of in and out (untruncated)."""

    aliases = ("xavier_normal", "glorot_normal")

    def recipe(self, shape: Shape) -> Recipe:
        return Recipe("normal", 0.0, self.gain * math.sqrt(1.0 / self._fan(shape)))


class KaimingUniform(_FanScaled):
    """He uniform: ``U[-a, a)``, ``a = gain * sqrt(3 / fan_in)``; the default gain is ``sqrt(2)``."""

    aliases = ("kaiming_uniform", "he_uniform", "msra_uniform")
    default_gain = math.sqrt(2.0)
    default_mode = "fan_in"

    def recipe(self, shape: Shape) -> Recipe:
        bound = self.gain * math.sqrt(3.0 / self._fan(shape))
        return Recipe("uniform", -bound, bound)


class KaimingNormal(_FanScaled):
    """He normal: std ``gain / sqrt(fan_in)`` = ``sqrt(2 / fan_in)`` by default (untruncated)."""

    aliases = ("kaiming_normal", "he_normal", "msra", "msra_normal")
    default_gain = math.sqrt(2.0)
    default_mode = "fan_in"

    def recipe(self, shape: Shape) -> Recipe:
        return Recipe("normal", 0.0, self.gain / math.sqrt(self._fan(shape)))


class Orthogonal(Initializer):
    """A (semi-)orthogonal matrix times ``gain`` (Saxe et al.), from a QR of a normal draw.

    The parameter is viewed as ``(shape[0], prod(shape[1:]))``. The factorisation runs on the
    reference (NumPy) path and is copied to the backend, so every backend gets the same bits.
    """

    aliases = ("orthogonal",)

    def __init__(self, gain: float = 1.0) -> None:
        self.gain = _positive("Orthogonal", "gain", gain)

    def recipe(self, shape: Shape) -> Recipe:
        if len(shape) < 2:
            raise InitializerError(
                f"Orthogonal: needs a parameter with at least 2 dimensions. Received shape {shape}; "
                "use another initializer for vectors (biases)."
            )
        return Recipe("orthogonal", self.gain)


_BUILTINS: tuple[type[Initializer], ...] = (
    Zeros, Ones, Constant, Uniform, Normal, TruncatedNormal,
    XavierUniform, XavierNormal, KaimingUniform, KaimingNormal, Orthogonal,
)
_BY_NAME: dict[str, type[Initializer]] = {
    alias: cls for cls in _BUILTINS for alias in (cls.__name__.lower(), *cls.aliases)
}

#: What :func:`create` accepts: an initializer, a known name, or ``None``.
InitializerLike = Union[Initializer, str, None]  # noqa: UP007 - a runtime alias on 3.10


def known_names() -> list[str]:
    """Every string :func:`create` resolves, sorted."""
    return sorted(_BY_NAME)


def create(spec: InitializerLike) -> Initializer | None:
    """Resolve an initializer, a name (``"zeros"``, ``"he_normal"``, ...) or ``None``.

    Raises:
        InitializerError: for an unknown name (the message lists the known ones) or a value
            that is not an initializer.
    """
    if spec is None or isinstance(spec, Initializer):
        return spec
    if isinstance(spec, str):
        cls = _BY_NAME.get(spec.strip().lower())
        if cls is None:
            raise InitializerError(
                f"unknown initializer {spec!r}. Choose one of: {', '.join(known_names())}"
            )
        return cls()
    raise InitializerError(
        f"expected an initializer (e.g. deferral.init.Normal(0.01)) or its name. "
        f"Received: {spec!r} of type {type(spec).__name__}"
    )


def __dir__() -> list[str]:
    """Only the public API (not the names this module imports)."""
    return sorted(__all__)
