"""Dtype names and the one rounding step from float64 reference values to a parameter dtype."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
#: The dtypes a parameter can have.
FLOATING = tuple(ITEMSIZE)
#: The other dtypes checkpoints and mappings carry (integer buffers, masks, token ids).
OTHER = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool", "complex64")


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


def tensor_dtype(dtype: object) -> str:
    """The canonical name of a dtype a checkpoint can hold: a floating one or one of :data:`OTHER`.

    Raises:
        TypeError: for any other dtype (strings, objects, 8-bit floats...).
    """
    name = str(getattr(dtype, "name", None) or dtype).lower().removeprefix("torch.")
    if name in OTHER:
        return name
    try:
        return canonical_dtype(dtype)
    except TypeError:
        raise TypeError(
            f"expected a dtype a checkpoint can hold ({', '.join(FLOATING + OTHER)}). Received: {dtype!r}"
        ) from None


def parameter_host(array: Any, dtype: str, backend: str) -> np.ndarray:
    """``array`` as a ``dtype`` parameter's host values (``uint16`` bits for bfloat16): as it
    is when already so (no copy), else a floating array rounded the core's way once.

    For backends' ``deferral_parameter_from_numpy``.

    Raises:
        TypeError: for an array that is not floating (or ``uint16`` bits for ``bfloat16``).
    """
    import numpy as np

    host = np.asarray(array)
    wanted = "uint16" if dtype == "bfloat16" else dtype
    if host.dtype.name == wanted:
        return host
    if host.dtype.kind != "f":
        raise TypeError(
            f"backend {backend!r}: a {dtype} parameter needs a floating array"
            f"{' or uint16 bit patterns' if dtype == 'bfloat16' else ''}. Received dtype "
            f"{host.dtype}. Convert it first, e.g. array.astype('float32')."
        )
    return round_to(host.astype(np.float64), dtype)


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
    """Round float32 values to bfloat16 and return the uint16 bits.

    Finite values round to nearest, ties to even, overflowing to infinity, bit for bit as
    PyTorch and TensorFlow do; infinities stay infinities; a NaN becomes the quiet NaN
    ``0x7FC0`` with its sign (``0xFFC0``), as TensorFlow (Eigen) does. (PyTorch gives
    ``0x7FC0`` or ``0xFFFF`` depending on its code path: NaN payloads differ between
    frameworks, NaN-ness does not.)
    """
    import numpy as np

    bits = np.ascontiguousarray(single, dtype=np.float32).view(np.uint32)
    rounded = ((bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)
    nan = (bits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    if nan.any():
        sign = (bits >> np.uint32(16)).astype(np.uint16) & np.uint16(0x8000)
        rounded[nan] = (sign | np.uint16(0x7FC0))[nan]
    return rounded


def bfloat16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """Widen bfloat16 bit patterns (uint16) to float32 exactly."""
    import numpy as np

    return (bits.astype(np.uint32) << 16).view(np.float32)
