"""``deferral.native``: a model as its framework's own object (a ``torch.nn.Module``, a
``keras.Model``), supplied by the backend it is bound to through the ``deferral_native`` hook."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import _lifecycle
from ._lifecycle import LOCK, transaction
from .errors import DeferredInitializationError

if TYPE_CHECKING:
    from .nn import Block
    from .registry import Backend

__all__ = ["attach", "build", "native"]


def native(block: Block) -> Any:
    """The framework's own model object for ``block``, sharing its storage (no copy).

    On the torch backend a ``torch.nn.Module`` tree mirroring the block tree, on TensorFlow a
    ``keras.Model``, on JAX a ``flax.nnx.Module`` (with Flax installed; every parameter must be
    materialized), on NumPy the block itself. Deferred parameters stay deferred: the first
    call (or loading a state) completes them, exactly as ``block(x)`` would. Calling it again
    returns the same object while the model stays bound to the same backend; after
    ``initialize(backend=other, force_reinit=True)`` it makes the other backend's object.
    Children and parameters added to the model later appear in the object (torch), or make
    the next call of the old object raise and ``deferral.native`` make a new one (Keras).

    Raises:
        DeferredInitializationError: if ``block`` was never initialized (no backend is bound).
        ValueError: if its parameters are bound to several backends.
        NotImplementedError: if the bound backend has no native container.

    Example:
        >>> import deferral
        >>> from deferral import nn
        >>> net = nn.Sequential([nn.Dense(4), nn.Dense(2)])
        >>> _ = net.initialize(seed=0, backend="numpy")
        >>> deferral.native(net) is net
        True
    """
    backend = _bound_backend(block)
    found = block._native
    if found is not None and block._native_backend == backend.name:
        return found
    if not backend.has_native:
        raise NotImplementedError(
            f"deferral.native: backend {backend.name!r} (which {block.describe()} is bound to) has no "
            "native container. Use the block itself, or initialize it on a backend that has one "
            "(torch, tensorflow, jax, numpy)."
        )
    with LOCK:  # made once, by whichever thread comes first
        if block._native is found or block._native_backend != backend.name:
            attach(block, backend.native(block), backend.name)
    return block._native


def attach(block: Block, container: Any, backend: str) -> None:
    """Record ``container`` as ``block``'s native object for ``backend`` (what :func:`native`
    returns while the block stays bound to it). A backend whose container mirrors the block
    tree attaches each descendant's part too, so ``deferral.native(net[0])`` is that part."""
    object.__setattr__(block, "_native", container)
    object.__setattr__(block, "_native_backend", backend)


def _bound_backend(block: Block) -> Backend:
    from . import registry

    params = block.collect_params()
    backends = sorted({p.backend for p in params.values() if p.backend is not None})
    if len(backends) > 1:
        raise ValueError(
            f"deferral.native: the parameters of {block.describe()} are bound to several backends "
            f"({', '.join(backends)}); initialize the whole model on one with "
            "initialize(backend=..., force_reinit=True)."
        )
    name = backends[0] if backends else block._backend_choice
    if name is None or (params and not backends):
        raise DeferredInitializationError(
            f"deferral.native: {block.describe()} is bound to no backend yet. Call "
            "net.initialize(backend=...) first (seed, dtype and device too); the native object then "
            "shares its parameters."
        )
    return registry.load_backend(name)


def build(block: Block, *input_shapes: Any) -> None:
    """Complete and materialize ``block``'s parameters from input shapes, computing nothing.

    A framework's build step (Keras' ``build(input_shape)``) calls it: shapes are inferred as
    :meth:`Block.infer_shape` infers them (``None`` for an unknown batch size), then every
    parameter is materialized with its recorded intent, so the values are those the first
    ``block(x)`` would give. One transaction: if it raises, the model is as before.
    """
    dtype = block._binding()[1]
    with transaction():
        block.infer_shape(*input_shapes, dtype=dtype)
        _lifecycle.materialize(block.collect_params().values())
