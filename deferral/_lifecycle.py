"""The parameter life cycle: its lock, its transactions and its state transitions.

Every change of a parameter's state goes through this module:

- :data:`LOCK` serializes first calls, ``initialize()``, loading and rollback across threads;
- :func:`transaction` journals each parameter before its first change and, if the block
  raises, restores every snapshot while still holding the lock. In the main thread it holds
  ``SIGINT`` back from its first instruction to its last, acting on it only at checkpoints
  (:func:`checkpoint`: between parameters, entries, blocks) and at its end, so an interrupt
  never lands between the transaction's own steps (a Python-level ``with`` statement can
  otherwise be interrupted on entering ``__exit__``, leaving the transaction open);
- :func:`signals_deferred` guards framework calls that must not be torn by an interrupt
  (creating a variable, writing storage): a ``SIGINT`` arriving inside is acted on once the
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
import contextvars
import signal
import threading
from _thread import get_ident
from collections.abc import Callable, Iterable
from signal import SIGINT
from typing import TYPE_CHECKING, Any

from . import registry
from .hookspec import MaterializeRequest
from .random import derive_key

if TYPE_CHECKING:
    from .parameter import Intent, Parameter

__all__ = ["LOCK", "SHAPE_ONLY", "checkpoint", "complete", "deferred_in_windows", "materialize", "rebind",
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
_MAIN = threading.main_thread().ident


class _Held:
    """The main thread's hold on ``SIGINT``: how deep, what arrived, the handler it replaced."""

    __slots__ = ("critical", "depth", "previous", "received")

    def __init__(self) -> None:
        self.depth = 0  # holds open: transactions, guarded calls, windows
        self.critical = 0  # of which guarded calls (no checkpoint may deliver inside one)
        self.previous: Any = None
        self.received: list[int] = []


_held = _Held()


def _record(signum: int, frame: Any) -> None:
    """The handler while SIGINT is held: record it inside a guarded framework call or this
    module's own steps (a transaction's entry, exit, rollback, commit, and what they call);
    anywhere else (a layer's or the user's code inside a transaction) act on it at once, as
    Python would: the transaction then rolls back."""
    if _held.critical or _in_this_module(frame):
        _held.received.append(signum)
        return
    _deliver(_held.previous)


def _in_this_module(frame: Any) -> bool:
    while frame is not None:
        if frame.f_code.co_filename == __file__:
            return True
        frame = frame.f_back
    return False


def _hold() -> int:
    """Start holding ``SIGINT`` back; returns the hold's depth before (``-1``, nothing held,
    outside the main thread), which :func:`_release` restores.

    Installing the recording handler is the first thing done: a signal arriving after it is
    recorded, one arriving before it is raised before anything changed.
    """
    if get_ident() != _MAIN:
        return -1
    level = _held.depth
    if level == 0:
        _held.received = []  # what an earlier hold recorded as it ended was raised already
        # _signal: the C functions signal.signal wraps (without its enum conversions).
        _held.previous = _signal.signal(SIGINT, _record)
    _held.depth = level + 1
    return level


def _release(level: int) -> None:
    """End a hold: back to depth ``level`` (inner holds an exception skipped end with it);
    the outermost restores the handler, then acts on a held-back signal."""
    _held.depth = level
    if level:
        return
    _held.critical = 0
    previous = _held.previous
    # Restoring the handler is the last change: a signal arriving after it is raised with
    # everything already in order (what was recorded until then is then dropped: the user
    # sees one KeyboardInterrupt). A handler installed meanwhile (by code inside) stays.
    if _signal.getsignal(SIGINT) is _record:
        _signal.signal(SIGINT, signal.default_int_handler if previous is None else previous)
    received, _held.received = _held.received, []
    if received:
        _deliver(previous)


def checkpoint() -> None:
    """Act on a ``SIGINT`` held back by a transaction, now, as its handler would.

    Long work inside a transaction (materializing, loading, a first forward pass) calls this
    between steps, so Ctrl-C lands within one step and rolls the transaction back. Does
    nothing outside the main thread or inside a guarded framework call.
    """
    if _held.received and not _held.critical and get_ident() == _MAIN:
        _held.received = []
        _deliver(_held.previous)


class signals_deferred:
    """Hold ``SIGINT`` back while the block runs; deliver it (``KeyboardInterrupt``) afterwards.

    For framework calls that must not be torn. Only the main thread receives signals, so
    elsewhere this does nothing; nested (inside a transaction, say), the signal waits for the
    outermost hold's next checkpoint or its end.
    """

    __slots__ = ("_critical", "_level")

    def __enter__(self) -> None:
        self._level = _hold()
        if self._level >= 0:
            self._critical = _held.critical
            _held.critical += 1

    def __exit__(self, *exc: object) -> None:
        if self._level >= 0:
            _held.critical = self._critical
            _release(self._level)


class deferred_in_windows(signals_deferred):
    """A guarded section (:class:`signals_deferred`) opened for a window of about ``limit``
    bytes of work at a time.

    A loop making many small parameters through framework calls calls :meth:`step` after
    each: a held-back signal is acted on between windows, so the guard is paid once per
    window instead of once per parameter and an interrupt still lands within one window.
    """

    __slots__ = ("done", "limit")

    def __init__(self, limit: int = 16 << 20) -> None:
        self.limit, self.done = limit, 0
        self._level = -1

    def __enter__(self) -> deferred_in_windows:  # type: ignore[override]
        super().__enter__()
        return self

    def step(self, nbytes: int) -> None:
        """Count ``nbytes`` of work; past the limit, act on what was held back."""
        self.done += nbytes
        if self.done >= self.limit and self._level >= 0:
            self.done = 0
            _held.critical = self._critical
            try:
                checkpoint()
            finally:
                _held.critical = self._critical + 1


def _deliver(handler: Any) -> None:
    """Act on a held-back SIGINT as ``handler`` (the handler it was held back from) would."""
    if handler == signal.SIG_IGN:  # _signal.signal returns the plain int, not the enum member
        return
    if callable(handler):
        handler(signal.SIGINT, None)
        return
    raise KeyboardInterrupt  # SIG_DFL or a handler installed from C


# -- transactions ----------------------------------------------------------------------------
class transaction:
    """Undo every parameter state change made inside the block if it raises.

    Any exception counts, ``KeyboardInterrupt`` included. Nested transactions join the
    outermost one. In the main thread ``SIGINT`` is held back from the first instruction of
    the transaction to its last and acted on at checkpoints (:func:`checkpoint`, between
    parameters and blocks) and at the end, so an interrupt can never land between the
    transaction's own steps: it either rolls the body back or arrives after the transaction
    is closed. The rollback runs under :data:`LOCK`; an interrupt arriving during it is
    raised after the model is whole again.

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

    __slots__ = ("_journal", "_level", "_tokens", "_writes")

    def __enter__(self) -> None:
        self._level = _hold()  # first: from here on a SIGINT in this module's steps waits
        self._tokens: tuple[Any, Any] | None = None
        if _journal.get() is not None:
            return
        # Waiting for another thread's transaction: a Ctrl-C meanwhile is acted on (nothing
        # has changed yet), the wait never restarted forever.
        try:
            while not LOCK.acquire(timeout=0.05):
                checkpoint()
        except BaseException:
            self._end()
            raise
        self._journal: dict[int, tuple[Parameter, _Snapshot]] = {}
        self._writes: dict[int, _Kept] = {}
        self._tokens = (_journal.set(self._journal), _writes.set(self._writes))

    def __exit__(self, typ: type[BaseException] | None, value: BaseException | None, tb: Any) -> None:
        try:
            if self._tokens is None:  # joined an outer transaction
                if typ is None:
                    checkpoint()
                return
            try:
                if typ is not None:
                    _rollback(self._journal)
                    return
                try:
                    checkpoint()  # a SIGINT held back since the last checkpoint rolls back too
                except BaseException:
                    _rollback(self._journal)
                    raise
                _commit(self._writes)  # never leaves old and new values mixed (see there)
            finally:
                journal_token, writes_token = self._tokens
                self._tokens = None
                _journal.reset(journal_token)
                _writes.reset(writes_token)
                LOCK.release()
        finally:
            self._end()

    def _end(self) -> None:
        if self._level >= 0:
            level, self._level = self._level, -1
            _release(level)


def _rollback(journal: dict[int, tuple[Parameter, _Snapshot]]) -> None:
    """Restore every snapshot (SIGINT held back: no checkpoint runs inside)."""
    with signals_deferred():
        for param, snapshot in reversed(list(journal.values())):
            _restore(param, snapshot)


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
            checkpoint()


def swap(changes: list[tuple[Parameter, Intent, Shape, Any]]) -> None:
    """Give every parameter its new intent, shape and values at once.

    The cached call states are dropped first, so a forward pass that started before the swap
    and ends after it is run again on the new values: concurrent callers see all old or all
    new parameters, never a mix and never a parameter without values. Storage the backend
    keeps (``BackendInfo.keeps_storage``) gets the new values when the transaction commits.
    """
    _refuse_relayout(changes)
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


def _refuse_relayout(changes: list[tuple[Parameter, Intent, Shape, Any]]) -> None:
    """Refuse whole new values of another shape, dtype or device for a parameter spread over
    processes: only its shards can be written, in place (the whole tensor would silently
    unshard it). New values spread the same way (``deferral.materialize``) are fine."""
    for param, intent, shape, data in changes:
        old = param._intent
        if param._data is None or data is None or old is None or (intent.dtype, intent.device, shape) == (
                old.dtype, old.device, param._shape):
            continue
        backend = registry.load_backend(old.backend)
        collective = backend.collective([param._data])
        if collective is not None and backend.collective([data]) is None:
            from .errors import MaterializeError

            raise MaterializeError(
                f"Parameter {param._path!r} is {collective.describe}: new values can only be "
                f"written into its shards, keeping shape {param._shape}, dtype {old.dtype!r} and "
                f"device {old.device!r}; received shape {shape}, dtype {intent.dtype!r}, device "
                f"{intent.device!r}. Change the dtype or device before sharding the model (or "
                "shard it again afterwards). Nothing was changed."
            )


def _keep(param: Parameter, writes: dict[int, _Kept]) -> None:
    """Remember ``param``'s storage (its first in the transaction) if its backend keeps storage."""
    intent = param._intent
    if id(param) not in writes and intent is not None and registry.load_backend(intent.backend).info.keeps_storage:
        writes[id(param)] = (param, param._data, intent, param._shape)


def _commit(writes: dict[int, _Kept]) -> None:
    """Write each swapped parameter's new values into the storage it had, where they still fit.

    Runs after the transaction's body succeeded, still under the lock, so a rollback never
    needs to undo a write. A parameter whose shape, dtype, device or backend changed keeps its
    new storage. A write that fails (the framework refuses it: out of memory, say) cannot be
    undone for the parameters written before it, so the commit goes forward instead: that
    parameter keeps its new storage, every parameter has its new values, and a
    :class:`RuntimeError` then says which storage objects were replaced.

    Raises:
        RuntimeError: naming the parameters whose storage could not be written (their values
            are the new ones all the same).
    """
    failed: list[tuple[str, Exception]] = []
    with signals_deferred():
        for param, storage, old, shape in writes.values():
            new, intent = param._data, param._intent
            if new is None or new is storage or intent is None or param._shape != shape or (
                (intent.backend, intent.dtype, intent.device) != (old.backend, old.dtype, old.device)
            ):
                continue
            try:
                registry.load_backend(intent.backend).ops.assign(storage, new)
            except Exception as exc:
                failed.append((param._path, exc))
                continue
            param._data = storage
            _invalidate(param)
    if failed:
        names = ", ".join(repr(path) for path, _ in failed)
        raise RuntimeError(
            f"the new values are in place, but {len(failed)} parameter(s) could not be written into "
            f"the storage framework objects hold ({names}: {failed[0][1]}); those parameters have new "
            "storage objects, so an optimizer, native model or compiled function made before holds "
            "their old tensors: make it again (deferral.native(net) gives the current ones)"
        ) from failed[0][1]


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
