"""The JAX backend of deferral: parameters are :class:`Variable` references to ``jax.Array`` values.

Registered through the ``deferral.backends`` entry point ``jax``. Importing this module imports
no JAX (``deferral.available_backends()`` loads it to read its
:class:`~deferral.hookspec.BackendInfo`); JAX is imported inside the hooks, when the backend is
first selected for a model.

Values come from the core's reference path (``MaterializeRequest.host_values``) and are placed
on the device with ``jax.device_put``, so they equal the NumPy, torch and TensorFlow backends'
bit for bit; ``bfloat16`` arrives as ``uint16`` bit patterns and is reinterpreted as
``jnp.bfloat16``. Inside :func:`sharded`, each parameter is created with
``jax.make_array_from_callback`` under the sharding a rule gives it, every shard generated
alone from the value stream at its global offsets.

float64 needs JAX's 64-bit mode (``jax.config.update("jax_enable_x64", True)``); without it
asking for float64 raises :class:`Float64DisabledError` (a ``TypeError``) saying so. Devices are spelled ``"cpu:N"`` (the
default ``"cpu:0"``), ``"gpu:N"`` (``"cuda:N"`` too) or ``"tpu:N"``, as ``jax.devices()``
lists them.

JAX users train functionally: ``apply, params = deferral.functional(net)``. With Flax
installed, ``deferral.native(net)`` is a ``flax.nnx.Module`` sharing the parameters.
"""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING, Any

import deferral
from deferral._dtypes import parameter_host, round_to
from deferral.hookspec import BackendInfo, MaterializeRequest

from ._random import dropout_key as dropout_key
from ._random import seed_dropout as seed_dropout
from ._sharding import sharded as sharded
from ._variable import Float64DisabledError as Float64DisabledError
from ._variable import TracedStateError as TracedStateError
from ._variable import Variable as Variable
from ._variable import as_host, check_dtype

if TYPE_CHECKING:
    import jax

__all__ = [
    "Float64DisabledError",
    "TracedStateError",
    "Variable",
    "deferral_backend_info",
    "deferral_canonical_device",
    "deferral_is_native",
    "deferral_materialize",
    "deferral_native",
    "deferral_ops",
    "deferral_parameter_from_numpy",
    "deferral_to_native",
    "deferral_to_numpy",
    "dropout_key",
    "seed_dropout",
    "sharded",
]

_INFO = BackendInfo(
    name="jax",
    requires=("jax",),
    install='pip install "deferral[jax]"',
    dtypes=("float16", "bfloat16", "float32", "float64"),
    default_device="cpu:0",
)

_DEVICE = re.compile(r"^(cpu|gpu|cuda|tpu)(?::(\d+))?$", re.IGNORECASE)


@deferral.hookimpl
def deferral_backend_info() -> BackendInfo:
    """Describe the backend (imports nothing)."""
    return _INFO


@deferral.hookimpl
def deferral_ops() -> Any:
    """Return the JAX op namespace (imports JAX)."""
    from . import _ops

    return _ops


@deferral.hookimpl
def deferral_canonical_device(device: str | None) -> str:
    """Return ``"cpu:N"``, ``"gpu:N"`` or ``"tpu:N"`` for ``device`` (``None`` gives ``"cpu:0"``).

    Raises:
        ValueError: for another spelling, or a device ``jax.devices()`` does not list.
    """
    if device is None:
        return _INFO.default_device
    match = _DEVICE.match(str(device).strip())
    if match is None:
        raise ValueError(
            f"backend 'jax' does not know the device {device!r}. Accepted forms: 'cpu', 'cpu:N', "
            "'gpu:N' (also 'cuda:N'), 'tpu:N', e.g. initialize(device='cpu:0')."
        )
    platform = "gpu" if match[1].lower() == "cuda" else match[1].lower()
    name = f"{platform}:{int(match[2] or 0)}"
    _device(name, asked=str(device))
    return name


def _device(name: str, asked: str | None = None) -> jax.Device:
    """The ``jax.Device`` of a canonical device name.

    Raises:
        ValueError: if JAX does not list it.
    """
    import jax

    platform, index = name.split(":")
    try:
        found = jax.devices(platform)
    except RuntimeError:
        found = []
    if int(index) >= len(found):
        listed = ", ".join(f"{d.platform}:{d.id}" for d in jax.devices()) or "none"
        raise ValueError(
            f"backend 'jax': device {asked or name!r} was requested, but JAX lists {listed}. Use one "
            "of those (several CPU devices: XLA_FLAGS=--xla_force_host_platform_device_count=N "
            "before importing jax)."
        )
    return found[int(index)]


def _place(host: Any, device: str) -> jax.Array:
    """``host`` as a ``jax.Array`` on ``device``: uncommitted on JAX's default device (JAX then
    moves it to wherever it is used with committed arrays, sharded ones included, as any array
    made without a device), committed to any other device."""
    import jax

    target = _device(device)
    return jax.device_put(host) if target == jax.devices()[0] else jax.device_put(host, target)


@deferral.hookimpl
def deferral_is_native(value: Any) -> bool:
    """True for a ``jax.Array`` (tracers included) or a :class:`Variable`; never imports JAX."""
    jax = sys.modules.get("jax")
    return jax is not None and isinstance(value, (jax.Array, Variable))


@deferral.hookimpl
def deferral_to_native(value: Any, dtype: str | None, device: str) -> Any:
    """Return JAX arrays unchanged (a :class:`Variable` as its array); put a NumPy array on ``device``.

    A floating NumPy array is cast to ``dtype`` on the host first, the way the core rounds
    (``bfloat16`` to nearest-even through float32). Integer arrays keep their dtype. Anything
    else gives ``None``.

    Raises:
        Float64DisabledError: for a float64 array or ``dtype`` while JAX's 64-bit mode is off.
    """
    import jax
    import numpy as np

    if isinstance(value, Variable):
        return value.value
    if isinstance(value, jax.Array):
        return value
    if not isinstance(value, np.ndarray):
        return None
    if dtype is not None and value.dtype.kind == "f" and value.dtype.name != dtype:
        value = as_host(round_to(value.astype(np.float64), dtype), dtype)
    check_dtype(value.dtype.name, "an input array")
    return _place(value, device)


@deferral.hookimpl
def deferral_to_numpy(value: Any) -> Any:
    """A host NumPy copy of a JAX array or :class:`Variable`; ``bfloat16`` widened to float32 exactly."""
    import numpy as np

    if isinstance(value, Variable):
        value = value.value
    array = np.array(value, copy=True)
    return array.astype(np.float32) if array.dtype.name == "bfloat16" else array


@deferral.hookimpl
def deferral_parameter_from_numpy(array: Any, dtype: str, device: str, trainable: bool, owned: bool) -> Variable:
    """A :class:`Variable` on ``device`` holding ``array``.

    ``array`` should already be of ``dtype`` (``uint16`` bit patterns for ``bfloat16``); other
    floating arrays are rounded the core's way first. On the CPU, JAX uses an aligned NumPy
    array's memory as it is (``jax.device_put`` does not copy it): an array the core gives
    away (``owned``) is used so, anything else is copied first, so that changing the caller's
    array later cannot change the parameter.

    Raises:
        TypeError: for an array that is not floating.
        Float64DisabledError: for float64 while JAX's 64-bit mode is off.
    """
    import numpy as np

    check_dtype(dtype, "a parameter")
    host = parameter_host(array, dtype, "jax")
    if not owned and np.may_share_memory(host, array):
        host = host.copy()
    return Variable(_place(as_host(host, dtype), device), trainable)


@deferral.hookimpl
def deferral_materialize(request: MaterializeRequest) -> Variable:
    """A :class:`Variable` with the recipe's values: sharded inside :func:`sharded`, else on the device.

    Raises:
        Float64DisabledError: for float64 while JAX's 64-bit mode is off.
    """
    from ._sharding import make_sharded

    check_dtype(request.dtype, f"parameter {request.name!r}")
    array = make_sharded(request)
    if array is None:
        host = as_host(request.host_values().reshape(request.shape), request.dtype)
        array = _place(host, request.device)
    return Variable(array, request.trainable)


@deferral.hookimpl
def deferral_native(block: Any) -> Any:
    """A ``flax.nnx.Module`` sharing ``block``'s parameters (needs Flax).

    Raises:
        ModuleNotFoundError: naming the extra to install when Flax is missing.
    """
    try:
        from ._nnx import nnx_module
    except ModuleNotFoundError as exc:
        if exc.name is None or not exc.name.startswith("flax"):
            raise
        raise ModuleNotFoundError(
            "deferral.native(net) on the jax backend returns a Flax NNX module, and Flax is not "
            'installed. Install it with: pip install "deferral[jax]" (or pip install flax). Without '
            "Flax, use apply, params = deferral.functional(net)."
        ) from exc
    return nnx_module(block)
