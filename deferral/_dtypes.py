"""Dtype names and the one rounding step from float64 reference values to a parameter dtype."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

_ALIASES = {
    "float16": "float16", "half": "float16", "f2": "float16",
    "bfloat16": "bfloat16",
    "float32": "float32", "float": "float32", "single": "float32", "f4": "float32",
    "float64": "float64", "double": "float64", "f8": "float64",
}

#: Bytes per element of each dtype.
ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}


def canonical_dtype(dtype: object) -> str:
    """Return the canonical name of a floating dtype given as a string or a NumPy dtype.

    Raises:
        TypeError: for anything that is not a known floating dtype.
    """
    if isinstance(dtype, str):
        name = dtype
    elif isinstance(dtype, type):
        name = dtype.__name__
    else:
        name = getattr(dtype, "name", None) or str(dtype)
    found = _ALIASES.get(str(name).lower().removeprefix("torch."))
    if found:
        return found
    raise TypeError(
        f"expected a floating dtype, one of float16, bfloat16, float32, float64. Received: {dtype!r}"
    )


def round_to(values: np.ndarray, dtype: str) -> np.ndarray:
    """Round float64 reference values to ``dtype`` the way every backend must.

    float64 is kept; float32 rounds once to nearest-even; float16 and bfloat16 round the
    float32 value once more. bfloat16 is returned as ``uint16`` bit patterns.
    """
    import numpy as np

    if dtype == "float64":
        return values
    single = values.astype(np.float32)
    if dtype == "float32":
        return single
    if dtype == "float16":
        return single.astype(np.float16)
    if dtype == "bfloat16":
        return float32_to_bfloat16_bits(single)
    raise TypeError(f"unknown dtype {dtype!r}")


def float32_to_bfloat16_bits(single: np.ndarray) -> np.ndarray:
    """Round float32 values to bfloat16 (nearest, ties to even) and return the uint16 bits."""
    import numpy as np

    bits = single.view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def bfloat16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """Widen bfloat16 bit patterns (uint16) to float32 exactly."""
    import numpy as np

    return (bits.astype(np.uint32) << 16).view(np.float32)
