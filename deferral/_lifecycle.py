"""The parameter life cycle: its lock, its transactions and its state transitions.

Every change of a parameter's state goes through this module:

- :data:`LOCK` serializes first calls, ``initialize()``, loading and rollback across threads;
- :func:`transaction` journals each parameter before its first change and, if the block
  raises, restores every snapshot while still holding the lock, with ``SIGINT`` deferred so
  a second Ctrl-C cannot stop the rollback half-way;
- :func:`signals_deferred` guards framework calls that must not be torn by an interrupt
  (creating a variable, writing storage): a ``SIGINT`` arriving inside is re-raised once the
  call has returned;
- the transitions (:func:`record`, :func:`complete`, :func:`materialize`, :func:`swap`)
  change a parameter and drop the cached call state of every block that depends on it, so a
  model's fast path is invalidated only by changes to its own parameters.

Layers never call these functions: they complete shapes with :meth:`Parameter.complete` in
their ``build`` step; the core does the rest.
"""

from __future__ import annotations

import contextlib
import contextvars
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .hookspec import MaterializeRequest
    from .parameter import Intent, Parameter

__all__ = ["LOCK", "SHAPE_ONLY", "complete", "materialize", "record", "signals_deferred", "swap",
           "transaction"]

Shape = tuple[int, ...]

#: Serializes first calls, initialization, loading and rollback across threads.
LOCK = threading.RLock()

#: True while a model runs on :class:`~deferral.TensorSpec` inputs: shapes are inferred and
#: nothing is materialized. Read on slow paths only.
SHAPE_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("deferral_shape_only", default=False)

_Snapshot = tuple[Any, ...]
_journal: contextvars.ContextVar[dict[int, tuple[Parameter, _Snapshot]] | None] = (
    contextvars.ContextVar("deferral_journal", default=None)
)
_deferring = threading.local()


# -- interrupts ------------------------------------------------------------------------------
@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold ``SIGINT`` back while the block runs; deliver it (``KeyboardInterrupt``) afterwards.

    Only the main thread receives signals, so elsewhere (and when nested) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread() or getattr(_deferring, "on", False):
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    _deferring.on = True
    try:
        yield
    finally:
        _deferring.on = False
        signal.signal(signal.SIGINT, previous)
        if received:
            _deliver(previous)


def _deliver(handler: Any) -> None:
    """Act on a held-back SIGINT as ``handler`` (the handler it was held back from) would."""
    if handler is signal.SIG_IGN:
        return
    if callable(handler):
        handler(signal.SIGINT, None)
        return
    raise KeyboardInterrupt  # SIG_DFL or a handler installed from C


# -- transactions ----------------------------------------------------------------------------
@contextlib.contextmanager
def transaction() -> Iterator[None]:
    """Undo every parameter state change made inside the block if it raises.

    Any exception counts, ``KeyboardInterrupt`` included. Nested transactions join the
    outermost one. The rollback runs under :data:`LOCK` with ``SIGINT`` deferred; an interrupt
    arriving during it is raised after the model is whole again.

    Example:
        >>> import numpy as np
        >>> from deferral import nn
        >>> from deferral.parameter import transaction
        >>> net = nn.Dense(4)
        >>> _ = net.initialize(seed=0)
        >>> try:
        ...     with transaction():
        ...         _ = net(np.ones((1, 3), dtype="float32"))
        ...         raise RuntimeError("changed my mind")
        ... except RuntimeError:
        ...     pass
        >>> net.weight.state
        'declared'
    """
    if _journal.get() is not None:
        yield
        return
    journal: dict[int, tuple[Parameter, _Snapshot]] = {}
    token = _journal.set(journal)
    try:
        with LOCK:
            try:
                yield
            except BaseException:
                _rollback(journal)
                raise
    finally:
        _journal.reset(token)


def _rollback(journal: dict[int, tuple[Parameter, _Snapshot]]) -> None:
    """Restore every snapshot; restoring is idempotent, so an interrupt that lands before the
    signal guard is in place only makes it start again."""
    interrupted: KeyboardInterrupt | None = None
    done = False
    while not done:
        try:
            with signals_deferred():
                for param, snapshot in reversed(list(journal.values())):
                    _restore(param, snapshot)
                done = True
        except KeyboardInterrupt as exc:  # held back during the restore, or landed before it
            interrupted = exc
    if interrupted is not None:
        raise interrupted


def _snapshot(param: Parameter) -> _Snapshot:
    return (param._shape, param._intent, param._data, param._path)


def _restore(param: Parameter, snapshot: _Snapshot) -> None:
    param._shape, param._intent, param._data, param._path = snapshot
    _invalidate(param)


def journal(param: Parameter) -> None:
    """Snapshot ``param`` into the running transaction (once), before its first change."""
    entries = _journal.get()
    if entries is not None and id(param) not in entries:
        entries[id(param)] = (param, _snapshot(param))


def _invalidate(param: Parameter) -> None:
    """Drop the cached call state of every block whose fast path relies on ``param``."""
    for block in list(param._owners):
        block._drop_call_state()


# -- transitions -----------------------------------------------------------------------------
def record(param: Parameter, intent: Intent) -> None:
    """Record ``intent`` (initializer, seed, dtype, device, backend); values are made later."""
    journal(param)
    param._intent = intent
    param._path = intent.path
    param._data = None
    _invalidate(param)


def complete(param: Parameter, shape: Shape) -> None:
    """Fix the unknown dimensions of ``param`` (already checked against the known ones)."""
    if shape == param._shape:
        return
    journal(param)
    param._shape = shape
    _invalidate(param)


def request_for(param: Parameter, intent: Intent) -> MaterializeRequest:
    """What a backend needs to make ``param``'s values under ``intent`` (its shape must be known)."""
    from . import init as _init
    from . import random as _random
    from .hookspec import MaterializeRequest

    return MaterializeRequest(
        name=intent.path,
        shape=param._shape,
        dtype=intent.dtype,
        device=intent.device,
        trainable=param.trainable,
        key=_random.derive_key(intent.seed, intent.path),
        recipe=(intent.init or _init.XavierUniform()).recipe(param._shape),
    )


def new_values(param: Parameter, intent: Intent) -> Any:
    """The native array ``intent`` gives ``param`` (its shape must be known); changes nothing."""
    from . import registry

    request = request_for(param, intent)
    with signals_deferred():
        return registry.load_backend(intent.backend).materialize(request)


def materialize(params: Iterable[Parameter]) -> None:
    """Materialize each parameter that has an intent and a known shape but no values yet."""
    for param in params:
        if param._data is None and param._intent is not None and -1 not in param._shape:
            data = new_values(param, param._intent)
            journal(param)
            param._data = data
            _invalidate(param)


def swap(changes: list[tuple[Parameter, Intent, Shape, Any]]) -> None:
    """Give every parameter its new intent, shape and values at once.

    The cached call states are dropped first, so a forward pass that started before the swap
    and ends after it is run again on the new values: concurrent callers see all old or all
    new parameters, never a mix and never a parameter without values.
    """
    for param, _, _, _ in changes:
        journal(param)
        _invalidate(param)
    with signals_deferred():
        for param, intent, shape, data in changes:
            param._intent, param._shape, param._data, param._path = intent, shape, data, intent.path
            _invalidate(param)


def guarded(fn: Callable[..., Any], *args: Any) -> Any:
    """Call the framework function ``fn`` with ``SIGINT`` deferred until it returns."""
    with signals_deferred():
        return fn(*args)
