"""Constructor-argument checks shared by every layer (Keras-style messages)."""

from __future__ import annotations

import math
import operator

__all__ = ["as_int", "epsilon", "integer", "number", "positive_int"]


def as_int(value: object) -> int | None:
    """``value`` as a Python int if it is an integer (NumPy integers included, bools not)."""
    if isinstance(value, (bool, float)) or type(value).__name__ == "bool_":
        return None
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return None


def positive_int(cls: str, name: str, value: object) -> int:
    """``value`` as an int if it is an integer > 0, else ``ValueError`` naming the layer and argument."""
    n = as_int(value)
    if n is None or n <= 0:
        raise ValueError(f"{cls}: expected a positive integer for {name}. Received: {name}={value!r}")
    return n


def integer(cls: str, name: str, value: object) -> int:
    """``value`` as an int if it is an integer, else ``ValueError``."""
    n = as_int(value)
    if n is None:
        raise ValueError(f"{cls}: expected an integer for {name}. Received: {name}={value!r}")
    return n


def number(cls: str, name: str, value: object, low: float, high: float, *, high_open: bool = False,
           low_open: bool = False) -> float:
    """``value`` as a float within ``[low, high]`` (ends excluded as asked), else ValueError."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        v = float(value)  # type: ignore[arg-type]
        ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{cls}: expected a number in {interval} for {name}. Received: {name}={value!r}")
    return float(value)  # type: ignore[arg-type]


def epsilon(cls: str, value: object) -> float:
    """A positive, finite ``epsilon``."""
    return number(cls, "epsilon", value, 0.0, math.inf, low_open=True, high_open=True)
