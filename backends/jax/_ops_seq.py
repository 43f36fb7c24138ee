"""JAX implementations of the sequence ops of :mod:`deferral.ops` (``SEQ_OPS``).

Python scalars in :func:`where` take the other branch's dtype (JAX's weak types), as in NumPy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from deferral import ops

__all__ = list(ops.SEQ_OPS)  # every op of the family, nothing else


def split(x: Any, sections: int, axis: int = -1) -> list[jax.Array]:
    """``sections`` equal parts of ``x`` along ``axis`` (the core checks divisibility)."""
    return jnp.split(x, sections, axis=axis)


def stack(arrays: Sequence[Any], axis: int = 0) -> jax.Array:
    """Join arrays of one shape along a new axis."""
    return jnp.stack(list(arrays), axis=axis)


def unstack(x: Any, axis: int = 0) -> list[jax.Array]:
    """The slices of ``x`` along ``axis``, the axis removed."""
    return list(jnp.moveaxis(x, axis, 0))


def where(condition: Any, a: Any, b: Any) -> jax.Array:
    """``a`` where ``condition`` is true (non-zero), else ``b``, with broadcasting."""
    return jnp.where(condition, a, b)


def zeros(shape: Sequence[int], like: Any) -> jax.Array:
    """Zeros of ``shape`` with the dtype of ``like`` (uncommitted: JAX places them where used)."""
    return jnp.zeros(tuple(shape), dtype=like.dtype)
