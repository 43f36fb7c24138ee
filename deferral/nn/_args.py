"""Constructor-argument checks shared by every layer (Keras-style messages)."""

from __future__ import annotations

import math

__all__ = ["epsilon", "integer", "number", "positive_int"]


def positive_int(cls: str, name: str, value: object) -> int:
    """``value`` if it is an int > 0, else ``ValueError`` naming the layer and argument."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{cls}: expected a positive integer for {name}. Received: {name}={value!r}")
    return value


def integer(cls: str, name: str, value: object) -> int:
    """``value`` if it is an int, else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{cls}: expected an integer for {name}. Received: {name}={value!r}")
    return value


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
