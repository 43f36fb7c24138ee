"""The native array type of the boxed backend."""

from __future__ import annotations

import numpy as np

__all__ = ["Box"]


class Box:
    """A NumPy array on a named device, tagged with a deferral dtype name.

    It deliberately has no ``__array__``, ``shape`` or arithmetic: only the backend's own
    hooks and ops look inside. A ``bfloat16`` box holds float32 values that are exact
    bfloat16 numbers.
    """

    __slots__ = ("device", "dtype", "value")

    def __init__(self, value: np.ndarray, device: str, dtype: str | None = None) -> None:
        self.value = value
        self.device = device
        self.dtype = dtype or value.dtype.name

    def __repr__(self) -> str:
        return f"Box({self.value!r}, device={self.device!r}, dtype={self.dtype!r})"
