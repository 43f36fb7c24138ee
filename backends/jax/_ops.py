"""JAX implementations of ``deferral.ops.OP_NAMES``.

Each op takes ``jax.Array`` values (tracers too: every op works under ``jax.jit``, ``grad`` and
``vmap``) or the backend's :class:`~deferral_jax.Variable` parameters, whose arrays it reads,
and returns plain arrays, with the semantics documented in :mod:`deferral.ops` and implemented
by the NumPy reference backend. Results are computed at full precision on every platform
(``precision=HIGHEST`` for products).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from deferral import ops

from ._variable import reads_variables

Axis = int | Sequence[int] | None

_SQRT_HALF = 1.0 / math.sqrt(2.0)
HIGHEST = jax.lax.Precision.HIGHEST


def shape(x: Any) -> tuple[int, ...]:
    """The (static) shape as Python ints."""
    return tuple(int(d) for d in x.shape)


def linear(x: jax.Array, weight: jax.Array, bias: jax.Array | None = None) -> jax.Array:
    """``x @ weight.T + bias`` over the last axis of ``x``; ``weight`` is ``(units, in_units)``.

    One ``dot_general`` contracting the last axis of ``x`` with axis 1 of the weight: written as
    ``x @ weight.T``, XLA's CPU backend transposes the weight on every call (15x slower at batch 1).
    """
    x = jnp.asarray(x)
    y = jax.lax.dot_general(x, weight, (((x.ndim - 1,), (1,)), ((), ())), precision=HIGHEST)
    return y if bias is None else y + bias


def matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    """Matrix product with NumPy's rules."""
    return jnp.matmul(a, b, precision=HIGHEST)


add = jnp.add
subtract = jnp.subtract
multiply = jnp.multiply
divide = jnp.true_divide
maximum = jnp.maximum
exp = jnp.exp
log = jnp.log
tanh = jnp.tanh
sigmoid = jax.nn.sigmoid


def relu(x: jax.Array) -> jax.Array:
    return jnp.maximum(x, 0)


def gelu(x: jax.Array) -> jax.Array:
    """Exact GELU, ``0.5 * x * (1 + erf(x / sqrt(2)))``, as the NumPy backend and ``torch.nn.GELU()``."""
    return 0.5 * x * (1.0 + jax.scipy.special.erf(x * _SQRT_HALF))


def softmax(x: jax.Array, axis: int = -1) -> jax.Array:
    return jax.nn.softmax(x, axis=axis)


def log_softmax(x: jax.Array, axis: int = -1) -> jax.Array:
    return jax.nn.log_softmax(x, axis=axis)


def reshape(x: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    return jnp.reshape(x, shape)


def flatten(x: jax.Array) -> jax.Array:
    """``(N, a, b, ...) -> (N, a*b*...)`` (an empty batch too)."""
    return jnp.reshape(x, (x.shape[0], math.prod(x.shape[1:])))


def transpose(x: jax.Array, axes: tuple[int, ...] | None = None) -> jax.Array:
    return jnp.transpose(x, axes)


def concat(arrays: Sequence[jax.Array], axis: int = 0) -> jax.Array:
    return jnp.concatenate(list(arrays), axis=axis)


def sum(x: jax.Array, axis: Axis = None, keepdims: bool = False) -> jax.Array:
    return jnp.sum(x, axis=axis, keepdims=keepdims)


def mean(x: jax.Array, axis: Axis = None, keepdims: bool = False) -> jax.Array:
    return jnp.mean(x, axis=axis, keepdims=keepdims)


from ._ops_conv import *  # noqa: E402,F403
from ._ops_norm import *  # noqa: E402,F403
from ._ops_seq import *  # noqa: E402,F403


def _wrap_all() -> None:
    """Let every op but ``assign`` (which writes into the variable) read variables' arrays."""
    space = globals()
    for name in ops.OP_NAMES:
        if name != "assign":
            space[name] = reads_variables(space[name])


_wrap_all()
