"""The NumPy backend of deferral: the default, and the reference every other backend matches.

Registered through the ``deferral.backends`` entry point ``numpy``. It implements only
primitives; the values come from the core's recipe.
"""

from __future__ import annotations

import sys
from typing import Any

import deferral
from deferral.hookspec import BackendInfo, MaterializeRequest

__all__ = [
    "deferral_backend_info",
    "deferral_is_native",
    "deferral_materialize",
    "deferral_ops",
    "deferral_parameter_from_numpy",
    "deferral_to_native",
    "deferral_to_numpy",
]

_INFO = BackendInfo(
    name="numpy",
    requires=("numpy",),
    install='pip install "deferral"',
    dtypes=("float16", "float32", "float64"),
    default_device="cpu",
)


@deferral.hookimpl
def deferral_backend_info() -> BackendInfo:
    return _INFO


@deferral.hookimpl
def deferral_ops() -> Any:
    from . import _ops

    return _ops


@deferral.hookimpl
def deferral_native(block: Any) -> Any:
    # NumPy has no model object of its own: the block is the native model.
    return block


@deferral.hookimpl
def deferral_is_native(value: Any) -> bool:
    np = sys.modules.get("numpy")
    return np is not None and isinstance(value, np.ndarray)


@deferral.hookimpl
def deferral_to_native(value: Any, dtype: str | None, device: str) -> Any:
    import numpy as np

    if not isinstance(value, np.ndarray):
        return None
    if dtype is not None and value.dtype.kind == "f" and value.dtype != dtype:
        return value.astype(dtype)
    return value


@deferral.hookimpl
def deferral_to_numpy(value: Any) -> Any:
    import numpy as np

    return np.array(value, copy=True)


@deferral.hookimpl
def deferral_materialize(request: MaterializeRequest) -> Any:
    """Allocate the array once and fill it in place from the reference path (no second copy)."""
    import numpy as np

    out = np.empty(request.shape, dtype=request.dtype)
    request.fill_host(out)
    return out


@deferral.hookimpl
def deferral_parameter_from_numpy(array: Any, dtype: str, device: str, trainable: bool, owned: bool) -> Any:
    """The array itself when the core gives it away (``owned``) and it is of ``dtype``, else a copy."""
    import numpy as np

    return np.asarray(array, dtype=dtype, order="C") if owned else np.array(array, dtype=dtype, order="C")
