"""``deferral.materialize``: give a model built on the ``meta`` device its storage and values.

A model initialized with ``device="meta"`` has every parameter's shape and dtype and no
storage. :func:`materialize` allocates each parameter on a real device and fills it with the
values its recorded intent (initializer, seed, dtype, path) gives, the bits
``initialize(seed=...)`` on that device would have given. For a framework model (a
``torch.nn.Module`` mirroring the deferral model, possibly wrapped by FSDP2 or tensor
parallelism) the backend allocates each rank's local shard only and generates exactly the
elements the rank owns, at their global flat offsets (:mod:`deferral._regions`): nothing is
broadcast or gathered, and the full tensors equal single-process initialization whatever the
world size and layout.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, cast

from . import _lifecycle
from ._native import _bound_backend as bound_backend
from .errors import DeferredInitializationError, MaterializeError

if TYPE_CHECKING:
    from .hookspec import MaterializeRequest
    from .nn import Block
    from .parameter import Intent, Parameter
    from .registry import Backend

__all__ = ["materialize"]


def materialize(target: Any, *, device: Any = None, net: Block | None = None) -> Any:
    """Allocate every parameter of ``target`` on ``device`` and fill it with its initial values.

    ``target`` is a deferral model initialized on the ``meta`` device
    (``net.initialize(seed=..., device="meta")``), or the framework model mirroring one
    (``deferral.native(net)``, possibly sharded with FSDP2 / tensor parallelism; every rank
    calls ``materialize`` on its own part). A deferral model that has a native object is
    materialized through it. ``net`` names the deferral model a framework model mirrors, when
    it is not ``deferral.native``'s own object: its parameter and buffer names must be the
    model's structural paths. Returns ``target``.

    Raises:
        DeferredInitializationError: listing the parameters whose shapes are still unknown
            (give the input sizes, or call ``net.infer_shape(...)`` first), or that were never
            initialized. Nothing changes then.
        MaterializeError: for a deferral model whose parameters already hold values (use
            ``initialize(force_reinit=True, device=...)``), or a framework model the backend
            cannot fill (names that are not the model's paths, an unsupported layout).

    Example:
        >>> import deferral
        >>> from deferral import nn
        >>> net = nn.Dense(4, in_units=3)
        >>> _ = net.initialize(seed=0, backend="numpy")
        >>> deferral.materialize(net)
        Traceback (most recent call last):
          ...
        deferral.errors.MaterializeError: materialize: parameter 'weight' already holds values (on 'cpu'); materialize fills a model initialized with device='meta'. To make new values, call net.initialize(force_reinit=True, device=...) (or reset_parameters() on its native module).
    """
    from .nn import Block

    if isinstance(target, Block):
        native = target._native
        if native is None or native is target:
            return _materialize_block(target, device)
        net, target = target, native
    if net is None:
        net = _mirrored(target)
    if net is None:
        raise MaterializeError(
            f"materialize: cannot tell which deferral model the {type(target).__name__} mirrors. "
            "Pass deferral.native(net), the deferral model itself, or net=the_model."
        )
    backend = bound_backend(net)
    if not backend.has_materialize_native:
        raise MaterializeError(
            f"materialize: backend {backend.name!r} cannot fill a {type(target).__name__}; "
            "materialize the deferral model itself (deferral.materialize(net))."
        )
    requests = _requests(net, backend, device)
    with _lifecycle.signals_deferred():
        backend.materialize_native(target, requests)
    return target


def _mirrored(native: Any) -> Block | None:
    """The block ``native`` is ``deferral.native``'s object for (its ``block``), if it is one."""
    from .nn import Block

    block = getattr(native, "block", None)
    return block if isinstance(block, Block) and block._native is native else None


def _unknown(params: dict[str, Parameter]) -> None:
    """Refuse parameters never initialized, of unknown shape, or already holding values."""
    never = [name for name, p in params.items() if p._intent is None]
    unknown = [f"{name} {p.shape}" for name, p in params.items() if not p.shape_known]
    if never:
        raise DeferredInitializationError(
            f"materialize: {len(never)} parameter(s) were never initialized: {', '.join(never[:8])}. "
            "Call net.initialize(seed=..., device='meta') first."
        )
    if unknown:
        raise DeferredInitializationError(
            f"materialize: the shapes of {len(unknown)} parameter(s) are not known yet (-1 marks an "
            f"unknown dimension): {', '.join(unknown[:8])}{', ...' if len(unknown) > 8 else ''}. Give "
            "the input sizes when creating the layers (e.g. in_units=...), or call "
            "net.infer_shape(...) with the input shapes first; no values are needed for that."
        )
    for name, p in params.items():
        if p._data is not None and p.device != "meta":
            raise MaterializeError(
                f"materialize: parameter {name!r} already holds values (on {p.device!r}); materialize "
                "fills a model initialized with device='meta'. To make new values, call "
                "net.initialize(force_reinit=True, device=...) (or reset_parameters() on its native module)."
            )


def _requests(net: Block, backend: Backend, device: Any) -> dict[str, MaterializeRequest]:
    """Every parameter's request on ``device`` (the backend's default when ``None``)."""
    params = dict(net.collect_params())
    _unknown(params)
    target = backend.canonical_device(device)
    return {name: _lifecycle.request_for(p, _moved(p, target)) for name, p in params.items()}


def _moved(param: Parameter, device: str) -> Intent:
    """``param``'s intent on ``device`` (:func:`_unknown` refused parameters without one)."""
    return dataclasses.replace(cast("Intent", param._intent), device=device)


def _materialize_block(net: Block, device: Any) -> Block:
    """Give a deferral model initialized on ``meta`` its values on ``device``, all or nothing."""
    backend = bound_backend(net)
    params = dict(net.collect_params())
    _unknown(params)
    target = backend.canonical_device(device)
    changes = []
    with _lifecycle.transaction():
        for p in params.values():
            intent = _moved(p, target)
            changes.append((p, intent, p.shape, _lifecycle.new_values(p, intent)))
        _lifecycle.swap(changes)
    return net
