"""Sharded materialization: each device's shard generated alone, at its global offsets.

Inside ``with sharded(rule):`` every parameter materialized (by ``initialize()`` or the first
forward pass) is created with ``jax.make_array_from_callback`` under the sharding ``rule``
gives it. JAX asks for each device's shard as a tuple of slices of the global array; the
shard's elements are generated from the value stream at their global flat offsets, so the
gathered array equals the unsharded one bit for bit for every mesh and layout. A shard that
cuts an inner dimension is a strided set of runs; the core's region logic
(:mod:`deferral._regions`, shared with the torch backend's DTensor shards) generates them.

Importing this module imports no JAX.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
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

    The block is a :class:`deferral._regions.Region`; the core fills it from its runs of global
    offsets (:meth:`~deferral.hookspec.MaterializeRequest.fill_local`), as for a torch shard.
    """
    import numpy as np

    from deferral._regions import Region

    bounds = [s.indices(d)[:2] for s, d in zip(index, request.shape)]
    bounds += [(0, d) for d in request.shape[len(bounds):]]
    region = Region(request.shape, tuple(((lo, hi - lo),) if hi > lo else () for lo, hi in bounds))
    out = np.empty(region.local_shape, dtype=host_dtype(request.dtype))
    dataclasses.replace(request, region=region).fill_local(out)
    return out
