"""A minimal third-party deferral backend: NumPy arrays in a :class:`Box`, on two fake devices.

It implements every hook of ``deferral.hookspec``, including ``deferral_materialize``
(filling each parameter in chunks of :data:`CHUNK` elements from ``host_values``, so chunk
boundaries fall inside Philox blocks) and ``deferral_canonical_device``.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

import deferral
from deferral.hookspec import BackendInfo, MaterializeRequest

__all__ = [
    "CHUNK",
    "DEVICES",
    "deferral_backend_info",
    "deferral_canonical_device",
    "deferral_is_native",
    "deferral_materialize",
    "deferral_ops",
    "deferral_parameter_from_numpy",
    "deferral_to_native",
    "deferral_to_numpy",
]

#: The devices a box can live on; ``"box"`` is accepted as a spelling of the first.
DEVICES = ("box:0", "box:1")
#: Elements generated per ``host_values`` call when materializing (not a multiple of 4).
CHUNK = 7

_INFO = BackendInfo(
    name="boxed",
    requires=("numpy",),
    install="pip install deferral-boxed",
    dtypes=("float16", "bfloat16", "float32", "float64"),
    default_device="box:0",
)


def _box_type() -> type:
    from ._box import Box

    return Box


def _from_bits(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) to the float32 values they denote."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _round_bfloat16(values: np.ndarray) -> np.ndarray:
    """float values rounded to the nearest bfloat16 (ties to even), as float32."""
    bits = values.astype(np.float32).view(np.uint32).astype(np.uint64)
    return _from_bits(((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16))


def _storage(array: np.ndarray, dtype: str) -> np.ndarray:
    """The array a box of ``dtype`` holds for ``array`` (bfloat16 given as uint16 bits)."""
    if dtype == "bfloat16":
        return _from_bits(np.asarray(array, dtype=np.uint16))
    return np.array(array, dtype=dtype, order="C", copy=True)


@deferral.hookimpl
def deferral_backend_info() -> BackendInfo:
    return _INFO


@deferral.hookimpl
def deferral_ops() -> Any:
    from . import _ops

    return _ops


@deferral.hookimpl
def deferral_canonical_device(device: str | None) -> str:
    if device is None or device == "box":
        return DEVICES[0]
    if device in DEVICES:
        return device
    raise ValueError(f"backend 'boxed' has no device {device!r}. Choose one of: {', '.join(DEVICES)}")


@deferral.hookimpl
def deferral_is_native(value: Any) -> bool:
    module = sys.modules.get(f"{__name__}._box")
    return module is not None and isinstance(value, module.Box)


@deferral.hookimpl
def deferral_to_native(value: Any, dtype: str | None, device: str) -> Any:
    box = _box_type()
    if isinstance(value, box):
        return value
    if not isinstance(value, np.ndarray):
        return None
    if value.dtype.kind != "f" or dtype is None:
        return box(value.copy(), device)
    if dtype == "bfloat16":
        return box(_round_bfloat16(value), device, "bfloat16")
    return box(value.astype(dtype), device)


@deferral.hookimpl
def deferral_to_numpy(value: Any) -> np.ndarray:
    if not isinstance(value, _box_type()):
        raise TypeError(f"backend 'boxed': expected a Box, received {type(value).__name__}")
    return value.value.copy()


@deferral.hookimpl
def deferral_parameter_from_numpy(array: np.ndarray, dtype: str, device: str, trainable: bool) -> Any:
    return _box_type()(_storage(array, dtype), device, dtype)


@deferral.hookimpl
def deferral_materialize(request: MaterializeRequest) -> Any:
    dtype = np.uint16 if request.dtype == "bfloat16" else request.dtype
    flat = np.empty(request.size, dtype=dtype)
    for start in range(0, request.size, CHUNK):
        stop = min(start + CHUNK, request.size)
        flat[start:stop] = request.host_values(start, stop)
    return _box_type()(_storage(flat.reshape(request.shape), request.dtype), request.device, request.dtype)
