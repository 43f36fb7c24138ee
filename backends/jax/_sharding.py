"""Sharded materialization: each device's shard generated alone, at its global offsets.

Inside ``with sharded(rule):`` every parameter materialized (by ``initialize()`` or the first
forward pass) is created with ``jax.make_array_from_callback`` under the sharding ``rule``
gives it. JAX asks for each device's shard as a tuple of slices of the global array; the
shard's elements are generated from the value stream at their global flat offsets, so the
gathered array equals the unsharded one bit for bit for every mesh and layout. A shard that
cuts an inner dimension is a strided set of runs: it is generated run by run (a run is a
contiguous stretch of the flat array), straight into the shard's host buffer.

Importing this module imports no JAX.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from deferral._fill import host_dtype

from ._variable import as_host

if TYPE_CHECKING:
    import jax
    import numpy as np

    from deferral.hookspec import MaterializeRequest

__all__ = ["make_sharded", "shard_values", "sharded"]

Rule = Callable[[str, tuple[int, ...]], Any]

_rule: contextvars.ContextVar[Rule | None] = contextvars.ContextVar("deferral_jax_sharding", default=None)


@contextlib.contextmanager
def sharded(rule: Rule | Any) -> Iterator[None]:
    """Materialize parameters sharded while the block runs.

    Args:
        rule: a ``jax.sharding.Sharding`` for every parameter, or a function
            ``rule(path, shape)`` returning one (``None``: that parameter is not sharded and
            goes on its ``initialize(device=...)``), e.g. a ``NamedSharding(mesh, P("model"))``
            for the weights whose first dimension should be split.

    The sharding decides where each parameter lives (the ``device`` given to ``initialize``
    is then not used). Only materialization is affected: ``set_data`` and loading place values
    on the parameter's device.

    Example::

        mesh = jax.make_mesh((4,), ("model",))
        with deferral_jax.sharded(lambda path, shape: NamedSharding(mesh, P("model")) if len(shape) == 2 else None):
            net.initialize(seed=0, backend="jax")   # shapes known (in_units=..., or infer_shape)
    """
    token = _rule.set(rule if callable(rule) else (lambda path, shape: rule))
    try:
        yield
    finally:
        _rule.reset(token)


def make_sharded(request: MaterializeRequest) -> jax.Array | None:
    """The parameter as a sharded ``jax.Array``, or ``None`` outside :func:`sharded` (or when
    the rule gives it no sharding).

    Raises:
        TypeError: if the rule returns something that is not a ``jax.sharding.Sharding``.
    """
    rule = _rule.get()
    if rule is None:
        return None
    import jax

    sharding = rule(request.name, request.shape)
    if sharding is None:
        return None
    if not isinstance(sharding, jax.sharding.Sharding):
        raise TypeError(
            f"deferral_jax.sharded: the rule gave parameter {request.name!r} (shape {request.shape}) "
            f"a {type(sharding).__name__}; expected a jax.sharding.Sharding (e.g. "
            "NamedSharding(mesh, PartitionSpec(...))) or None."
        )

    def shard(index: tuple[slice, ...]) -> np.ndarray:
        return as_host(shard_values(request, index), request.dtype)

    return jax.make_array_from_callback(request.shape, sharding, shard)


def shard_values(request: MaterializeRequest, index: tuple[slice, ...]) -> np.ndarray:
    """The block ``index`` (one step-1 slice per dimension) of the parameter, generated alone.

    The trailing dimensions the block covers whole, with the one before them, form contiguous
    runs of the flat array; each run is generated at its global offset into the block's buffer.
    """
    import numpy as np

    shape = request.shape
    bounds = [s.indices(d)[:2] for s, d in zip(index, shape)]
    bounds += [(0, d) for d in shape[len(bounds):]]
    out = np.empty(tuple(stop - start for start, stop in bounds), dtype=host_dtype(request.dtype))
    flat = out.reshape(-1)
    if flat.size == 0:
        return out
    whole = len(shape)
    while whole > 0 and bounds[whole - 1] == (0, shape[whole - 1]):
        whole -= 1
    inner = math.prod(shape[whole:])  # elements of one step of dimension whole - 1
    strides = [math.prod(shape[i + 1:]) for i in range(len(shape))]
    if whole == 0:
        request.fill_host(flat, 0)
        return out
    first, last = bounds[whole - 1]
    run = (last - first) * inner
    outer = itertools.product(*(range(start, stop) for start, stop in bounds[:whole - 1]))
    for i, position in enumerate(outer):
        offset = sum(p * s for p, s in zip(position, strides)) + first * strides[whole - 1]
        request.fill_host(flat[i * run:(i + 1) * run], offset)
    return out
