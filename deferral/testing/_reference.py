"""The reference the conformance suite compares against, and exact (bit-level) comparisons.

The reference for a parameter's values is the core's host path: a
:class:`~deferral.hookspec.MaterializeRequest` rebuilt from what ``initialize()`` recorded
(seed, structural path, initializer, shape, dtype) and its :meth:`host_values`. It is computed
independently of any backend, so comparing a backend against it proves the backend adds no
arithmetic of its own; comparing against the NumPy backend as well proves the two agree.

Values are compared as integer bit patterns, never with a tolerance: the promise is
*bit-identical* values on every backend and device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import random as _random
from .._dtypes import float32_to_bfloat16_bits, round_to
from ..hookspec import MaterializeRequest
from ..nn import Block
from ..parameter import Parameter
from ..registry import Backend, load_backend

__all__ = [
    "ParamState",
    "assert_bits_equal",
    "assert_matches_reference",
    "assert_unchanged",
    "host_bits",
    "param_bits",
    "reference_bits",
    "reference_request",
    "snapshot",
]

_UINT = {"float16": np.uint16, "float32": np.uint32, "float64": np.uint64}


def host_bits(host: np.ndarray, dtype: str, where: str = "value") -> np.ndarray:
    """The bit patterns of a host array returned by ``to_numpy`` for a parameter of ``dtype``.

    ``to_numpy`` gives ``bfloat16`` as float32 (see the hookspec): such values must be exact
    bfloat16 numbers (low 16 bits zero) and their high 16 bits are returned as ``uint16``.
    Every other dtype must come back as that very NumPy dtype.
    """
    host = np.asarray(host)  # copies below keep 0-d arrays 0-d (ascontiguousarray would not)
    if dtype == "bfloat16":
        assert host.dtype == np.float32, (
            f"{where}: to_numpy of a bfloat16 parameter must return float32 (deferral.hookspec); "
            f"received {host.dtype}"
        )
        raw = host.copy(order="C").view(np.uint32)
        assert not (raw & 0xFFFF).any(), (
            f"{where}: to_numpy returned float32 values that are not exact bfloat16 numbers"
        )
        return (raw >> 16).astype(np.uint16)
    assert host.dtype == np.dtype(dtype), (
        f"{where}: to_numpy of a {dtype} parameter returned dtype {host.dtype}"
    )
    return host.copy(order="C").view(_UINT[dtype])


def reference_request(param: Parameter, device: str = "cpu") -> MaterializeRequest:
    """Rebuild the request the core makes for ``param`` from its recorded intent.

    Raises:
        AssertionError: if ``param`` was not initialized or its shape is not known.
    """
    assert param.seed is not None and param.init is not None, (
        f"parameter {param.path!r} has not been initialized"
    )
    assert param.shape_known, f"parameter {param.path!r} has unknown dimensions {param.shape}"
    return MaterializeRequest(
        name=param.path,
        shape=param.shape,
        dtype=param.dtype,
        device=device,
        trainable=param.trainable,
        key=_random.derive_key(param.seed, param.path),
        recipe=param.init.recipe(param.shape),
    )


def reference_bits(param: Parameter) -> np.ndarray:
    """The reference bit patterns of ``param``'s values, shaped like it.

    float16/32/64 are ``host_values()`` viewed as unsigned integers. bfloat16 is computed the
    long way, from the float32 reference through
    :func:`deferral._dtypes.float32_to_bfloat16_bits`, and checked against ``host_values()``.
    """
    request = reference_request(param)
    dtype = param.dtype
    if dtype == "bfloat16":
        single = round_to(request.recipe.values(request.key, request.shape, 0, request.size), "float32")
        bits = float32_to_bfloat16_bits(single)
        np.testing.assert_array_equal(bits, request.host_values())
        return bits.reshape(param.shape)
    return host_bits(request.host_values(), dtype, param.path).reshape(param.shape)


def param_bits(param: Parameter) -> np.ndarray:
    """The bit patterns of a materialized parameter, read through its backend's ``to_numpy``."""
    assert param.backend is not None, f"parameter {param.path!r} is not bound to a backend"
    host = load_backend(param.backend).to_numpy(param.data())
    bits = host_bits(host, param.dtype, param.path)
    assert bits.shape == param.shape, (
        f"{param.path}: to_numpy returned shape {bits.shape}; the parameter has {param.shape}"
    )
    return bits


def assert_bits_equal(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    """Assert two bit-pattern arrays are identical, reporting how many elements differ."""
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: bit width {actual.dtype} != {expected.dtype}"
    differ = int(np.count_nonzero(actual != expected))
    assert differ == 0, (
        f"{what}: {differ} of {actual.size} elements differ from the reference bits; first "
        f"indices {np.argwhere(actual != expected)[:5].tolist()}"
    )


def assert_matches_reference(param: Parameter, backend: Backend | None = None) -> None:
    """Assert ``param`` is materialized as a native array of its backend with the reference bits."""
    assert param.state == "materialized", f"{param.path}: state is {param.state!r}"
    if backend is not None:
        assert param.backend == backend.name, f"{param.path}: bound to {param.backend!r}"
        assert backend.is_native(param.data()), (
            f"{param.path}: the backend does not recognise its own parameter object "
            f"{type(param.data()).__name__} as native"
        )
    assert_bits_equal(param_bits(param), reference_bits(param), f"parameter {param.path!r}")


@dataclass(frozen=True)
class ParamState:
    """Everything observable about one parameter; ``native`` is compared by identity only."""

    state: str
    shape: tuple[int, ...]
    dtype: str
    device: str | None
    backend: str | None
    seed: int | None
    init: str
    bits: bytes | None
    native: Any = field(default=None, compare=False, repr=False)


def snapshot(model: Block) -> dict[str, ParamState]:
    """Record the state, intent, value bits and native object of every parameter of ``model``."""
    out: dict[str, ParamState] = {}
    for path, param in model.collect_params().items():
        native = param.data() if param.initialized else None
        out[path] = ParamState(
            state=param.state,
            shape=param.shape,
            dtype=param.dtype,
            device=param.device,
            backend=param.backend,
            seed=param.seed,
            init=repr(param.init),
            bits=None if native is None else param_bits(param).tobytes(),
            native=native,
        )
    return out


def assert_unchanged(before: dict[str, ParamState], model: Block, what: str) -> None:
    """Assert ``model`` is exactly as in ``before``: same states and bits, same native objects."""
    after = snapshot(model)
    assert list(after) == list(before), f"{what}: parameters changed: {list(before)} -> {list(after)}"
    for path, old in before.items():
        new = after[path]
        assert new == old, f"{what}: parameter {path!r} changed from {old} to {new}"
        assert new.native is old.native, f"{what}: parameter {path!r} got a new native object"
