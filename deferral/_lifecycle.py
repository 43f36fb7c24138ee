"""The parameter life cycle: its lock, its transactions and its state transitions.

Every change of a parameter's state goes through this module:

- :data:`LOCK` serializes first calls, ``initialize()``, loading and rollback across threads;
- :func:`transaction` journals each parameter before its first change and, if the block
  raises, restores every snapshot while still holding the lock, with ``SIGINT`` deferred so
  a second Ctrl-C cannot stop the rollback half-way;
- :func:`signals_deferred` guards framework calls that must not be torn by an interrupt
  (creating a variable, writing storage): a ``SIGINT`` arriving inside is re-raised once the
  call has returned;
- the transitions (:func:`complete`, :func:`materialize`, :func:`swap`, :func:`rebind`)
  change a parameter and drop the cached call state of every block that depends on it, so a
  model's fast path is invalidated only by changes to its own parameters; :func:`rebind`
  replaces the storage object alone. Each also tells the native containers showing the
  parameter (``deferral.native``; see :meth:`~deferral.Parameter.watch`);
- on a backend whose ``BackendInfo.keeps_storage`` is set, a swap that leaves a materialized
  parameter's shape, dtype and device as they were writes the new values into the existing
  storage when the transaction commits (the ``assign`` op), so framework objects holding it (a
  native model, an optimizer, a traced function) keep seeing the parameter.

Layers never call these functions: they complete shapes with :meth:`Parameter.complete` in
their ``build`` step; the core does the rest.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # the C functions under signal.signal
import contextlib
import contextvars
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from signal import SIGINT
from typing import TYPE_CHECKING, Any

from . import registry
from .hookspec import MaterializeRequest
from .random import derive_key

if TYPE_CHECKING:
    from .parameter import Intent, Parameter

__all__ = ["LOCK", "SHAPE_ONLY", "complete", "deferred_in_windows", "materialize", "rebind",
           "signals_deferred", "swap", "transaction"]

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
# Per transaction: the storage to keep of each swapped parameter (with the intent and shape it
# had), written with the new values when the transaction commits.
_Kept = tuple["Parameter", Any, "Intent", Shape]
_writes: contextvars.ContextVar[dict[int, _Kept] | None] = (
    contextvars.ContextVar("deferral_writes", default=None)
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
    # _signal: the C functions signal.signal wraps (without its enum conversions, ~2 us a call).
    previous = _signal.signal(SIGINT, lambda signum, frame: received.append(signum))
    _deferring.on = True
    try:
        yield
    finally:
        _deferring.on = False
        _signal.signal(SIGINT, previous)
        if received:
            _deliver(previous)


class deferred_in_windows:
    """``SIGINT`` held back in windows of about ``limit`` bytes of work (see :func:`signals_deferred`).

    A loop making many small parameters calls :meth:`step` after each: the signal guard is
    paid once per window instead of once per parameter, and an interrupt still lands within
    one window's work.
    """

    def __init__(self, limit: int = 16 << 20) -> None:
        self.limit, self.done = limit, 0
        self._window: contextlib.AbstractContextManager[None] | None = None

    def __enter__(self) -> deferred_in_windows:
        self._open()
        return self

    def _open(self) -> None:
        self._window = signals_deferred()
        self._window.__enter__()

    def _close(self, *exc: Any) -> None:
        window, self._window = self._window, None
        if window is not None:
            window.__exit__(*exc)

    def step(self, nbytes: int) -> None:
        """Count ``nbytes`` of work; past the limit, deliver what was held back and start anew."""
        self.done += nbytes
        if self.done >= self.limit:
            self.done = 0
            self._close(None, None, None)
            self._open()

    def __exit__(self, *exc: Any) -> None:
        self._close(*exc)


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
    writes: dict[int, _Kept] = {}
    token, writes_token = _journal.set(journal), _writes.set(writes)
    try:
        with LOCK:
            try:
                yield
            except BaseException:
                _rollback(journal)
                raise
            _commit(writes)
    finally:
        _journal.reset(token)
        _writes.reset(writes_token)


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
    """Drop the cached call state of every block whose fast path relies on ``param``, and tell
    the native containers showing it (:meth:`~deferral.Parameter.watch`)."""
    _drop_states(param)
    _notify(param)


def _drop_states(param: Parameter) -> None:
    if param._owners:
        for block in list(param._owners):
            block._drop_call_state()


def _notify(param: Parameter) -> None:
    if param._views:
        for view in list(param._views):
            view.parameter_changed(param)


# -- transitions -----------------------------------------------------------------------------
def complete(param: Parameter, shape: Shape) -> None:
    """Fix the unknown dimensions of ``param`` (already checked against the known ones)."""
    if shape == param._shape:
        return
    journal(param)
    param._shape = shape
    _invalidate(param)


def request_for(param: Parameter, intent: Intent) -> MaterializeRequest:
    """What a backend needs to make ``param``'s values under ``intent`` (its shape must be known)."""
    return MaterializeRequest(
        name=intent.path,
        shape=param._shape,
        dtype=intent.dtype,
        device=intent.device,
        trainable=param.trainable,
        key=derive_key(intent.seed, intent.path),
        recipe=intent.init.recipe(param._shape),
    )


def new_values(param: Parameter, intent: Intent, *, guard: bool = True) -> Any:
    """The native array ``intent`` gives ``param`` (its shape must be known); changes nothing.

    The backend call runs with ``SIGINT`` deferred unless ``guard`` is False (the caller then
    holds a window of :class:`deferred_in_windows`).
    """
    backend = registry.load_backend(intent.backend)
    request = request_for(param, intent)
    if not guard:
        return backend.materialize(request)
    with signals_deferred():
        return backend.materialize(request)


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
    new parameters, never a mix and never a parameter without values. Storage the backend
    keeps (``BackendInfo.keeps_storage``) gets the new values when the transaction commits.
    """
    for param, _, _, _ in changes:
        journal(param)
        _drop_states(param)
    # No call state can be made again meanwhile: first calls need LOCK, which the caller holds.
    writes = _writes.get()
    with signals_deferred():
        for param, intent, shape, data in changes:
            if writes is not None and param._data is not None and data is not None:
                _keep(param, writes)
            param._intent, param._shape, param._data, param._path = intent, shape, data, intent.path
            _notify(param)


def _keep(param: Parameter, writes: dict[int, _Kept]) -> None:
    """Remember ``param``'s storage (its first in the transaction) if its backend keeps storage."""
    from . import registry

    intent = param._intent
    if id(param) not in writes and intent is not None and registry.load_backend(intent.backend).info.keeps_storage:
        writes[id(param)] = (param, param._data, intent, param._shape)


def _commit(writes: dict[int, _Kept]) -> None:
    """Write each swapped parameter's new values into the storage it had, where they still fit.

    Runs after the transaction's body succeeded, still under the lock, so a rollback never
    needs to undo a write. A parameter whose shape, dtype, device or backend changed keeps its
    new storage.
    """
    from . import registry

    with signals_deferred():
        for param, storage, old, shape in writes.values():
            new, intent = param._data, param._intent
            if new is None or new is storage or intent is None or param._shape != shape or (
                (intent.backend, intent.dtype, intent.device) != (old.backend, old.dtype, old.device)
            ):
                continue
            registry.load_backend(intent.backend).ops.assign(storage, new)
            param._data = storage
            _invalidate(param)


def rebind(param: Parameter, data: Any) -> None:
    """Give ``param`` another storage object of the same shape, dtype and device.

    Not a state change: cached call states stay valid (they hold no values); the native
    containers showing ``param`` are told.
    """
    journal(param)
    param._data = data
    for view in list(param._views):
        view.parameter_changed(param)


def guarded(fn: Callable[..., Any], *args: Any) -> Any:
    """Call the framework function ``fn`` with ``SIGINT`` deferred until it returns."""
    with signals_deferred():
        return fn(*args)
