"""Where the JAX backend's dropout masks draw their keys from (imports no JAX until used).

Outside any JAX transformation the backend keeps its own key, seeded from the operating
system's entropy when first used; :func:`seed_dropout` reseeds it. Under ``jax.jit``/``grad``/
``vmap`` a kept key would be frozen into the trace (the same mask at every step), so there the
key must come from the traced function itself: :func:`dropout_key`.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator
from typing import Any

from ._variable import TracedStateError, is_tracer

__all__ = ["dropout_key", "next_key", "seed_dropout"]

_key: list[Any] = []  # the backend's own key, made on first use
_scoped: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar("deferral_jax_key", default=None)


def seed_dropout(seed: int | None = None) -> None:
    """Reseed the key the JAX backend's dropout draws masks from outside transformations.

    ``None`` reseeds from the operating system's entropy.
    """
    import jax

    seed = int.from_bytes(os.urandom(4), "little") if seed is None else int(seed)
    _key[:] = [jax.random.key(seed)]


@contextlib.contextmanager
def dropout_key(key: Any) -> Iterator[None]:
    """Draw dropout masks from ``key`` (split once per dropout call) while the block runs.

    Needed under ``jax.jit``, ``grad`` and ``vmap``, with the key passed into the traced
    function; outside them it makes masks reproducible.

    Example::

        @jax.jit
        def forward(params, x, key):
            with deferral_jax.dropout_key(key):
                return apply(params, x, training=True)
    """
    token = _scoped.set([key])
    try:
        yield
    finally:
        _scoped.reset(token)


def next_key(x: Any) -> Any:
    """A fresh key for one dropout call on ``x``.

    Raises:
        TracedStateError: if ``x`` is traced and no :func:`dropout_key` is active.
    """
    import jax

    holder = _scoped.get()
    if holder is None:
        if is_tracer(x):
            raise TracedStateError(
                "backend 'jax': dropout in training mode inside jax.jit/grad/vmap needs a key from "
                "the traced function (the backend's own key would be frozen into the trace: the "
                "same mask at every step). Pass a key in and wrap the call: "
                "with deferral_jax.dropout_key(key): apply(params, x, training=True)."
            )
        if not _key:
            seed_dropout()
        holder = _key
    holder[0], sub = jax.random.split(holder[0])
    return sub
