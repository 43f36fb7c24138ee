"""JAX implementations of the normalization, embedding, dropout and state ops.

Semantics as documented in :mod:`deferral.ops` (``NORM_OPS``).

Dropout masks come from ``jax.random`` (keys as :mod:`deferral_jax._random` says) and differ
from the other backends' masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from deferral import opkit, ops

from ._random import next_key
from ._variable import TracedStateError, Variable, is_tracer

__all__ = list(ops.NORM_OPS)  # every op of the family, nothing else

def batch_norm(x: Any, mean: Any, var: Any, gamma: Any | None, beta: Any | None, eps: float) -> jax.Array:
    """``(x - mean) / sqrt(var + eps) * gamma + beta`` with per-channel vectors on axis 1."""
    return opkit.batch_norm(jnp.asarray(x), mean, var, gamma, beta, eps, lax.rsqrt, jnp.reshape)


def moments(x: Any, axes: Sequence[int], keepdims: bool = False) -> tuple[jax.Array, jax.Array]:
    """Mean and biased variance over ``axes``."""
    axes = tuple(axes)
    mean = jnp.mean(x, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=axes, keepdims=keepdims)
    return (mean if keepdims else jnp.squeeze(mean, axis=axes)), var


def sqrt(x: Any) -> jax.Array:
    """Element-wise square root."""
    return jnp.sqrt(x)


def rsqrt(x: Any) -> jax.Array:
    """Element-wise ``1 / sqrt(x)``."""
    return lax.rsqrt(jnp.asarray(x))


def take(weight: Any, indices: Any) -> jax.Array:
    """``weight[indices]`` along the first axis.

    Out-of-range indices raise ``IndexError`` when the indices are concrete; under a
    transformation (where they cannot be checked) their rows are NaN (JAX's ``mode="fill"``).

    Raises:
        TypeError: for indices that are not integers.
    """
    indices = jnp.asarray(indices)
    if not jnp.issubdtype(indices.dtype, jnp.integer):
        raise TypeError(f"take: indices must be integers; received an array of dtype {indices.dtype}")
    if not is_tracer(indices) and indices.size:
        rows = weight.shape[0]
        low, high = int(indices.min()), int(indices.max())
        if low < -rows or high >= rows:
            raise IndexError(f"take: index {high if high >= rows else low} is out of range for {rows} rows")
    return jnp.take(weight, indices, axis=0, mode="fill")


def dropout(x: Any, rate: float) -> jax.Array:
    """Inverted dropout: zero with probability ``rate``, scale the rest by ``1 / (1 - rate)``.

    Raises:
        TracedStateError: inside a JAX transformation without ``deferral_jax.dropout_key``.
    """
    x = jnp.asarray(x)
    if rate == 0.0:
        return x
    keep = jax.random.bernoulli(next_key(x), 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros((), x.dtype))


def assign(target: Any, value: Any) -> None:
    """Write ``value`` (broadcast, cast to the target's dtype) into a :class:`Variable`.

    Raises:
        TypeError: if ``target`` is not a variable (JAX arrays are immutable: inside
            ``deferral.functional`` the core records the update instead).
        TracedStateError: if ``value`` is a tracer (a stateful update inside ``jax.jit`` would
            leak it).
        ValueError: if ``value`` does not broadcast to the target's shape.
    """
    if not isinstance(target, Variable):
        raise TypeError(
            "backend 'jax': assign needs a parameter's Variable to write into (JAX arrays are "
            f"immutable). Received: {type(target).__name__}. Under jax.jit/grad/vmap use "
            "deferral.functional(net): its apply returns the updated state."
        )
    if is_tracer(value):
        raise TracedStateError(
            "backend 'jax': a stateful parameter update (BatchNorm's running statistics in training "
            "mode) inside jax.jit/grad/vmap would store a tracer. Use "
            "apply, params = deferral.functional(net); apply(params, x, training=True) returns "
            "(output, new_state)."
        )
    current = target.value
    new = jnp.broadcast_to(jnp.asarray(value, dtype=current.dtype), current.shape)
    target.value = jax.device_put(new, current.sharding)  # where the parameter lives (its shards)
