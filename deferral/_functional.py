"""``deferral.functional``: a model as a pure function of its parameter values.

``apply, params = deferral.functional(net)`` gives the current values as a dict keyed by the
parameters' paths and a function ``apply(params, *inputs, training=False)`` that runs the model
with *those* values, the way JAX users train (``jax.jit``, ``jax.grad``, ``jax.vmap`` see only
arrays going in and out). Nothing framework-specific happens here: during a call a
:class:`_Scope` held in a context variable substitutes the values, so

* ``Parameter.data()`` returns the scope's value for a parameter it holds;
* ``Block.training`` is the call's ``training`` argument (``deferral.nn._block.training_mode``,
  the per-call mode native objects use too);
* ``ops.assign`` on one of those values (BatchNorm's running statistics) records the new value
  in the scope instead of writing storage: a training call returns it as a second output.

No Parameter or Block is changed, so concurrent calls in other threads (or the stateful
``net(x)``) never see another call's values, and a tracer never outlives its trace. The
module-level :data:`active` count (of scopes open in any thread) keeps the cost for code that
never uses this mechanism to one integer test, with no context-variable read.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from .errors import DeferredInitializationError, FunctionalUseError, ShapeMismatchError

if TYPE_CHECKING:
    from .nn import Block
    from .parameter import Parameter

__all__ = ["functional"]

#: How many functional calls are running, over all threads (read without the lock: a stale
#: nonzero only costs a context-variable read).
active = 0
_count_lock = threading.Lock()
#: What :func:`value_of` returns for a parameter the running call does not substitute.
MISSING = object()


class _Scope:
    """The values one functional call substitutes, and the updates it records."""

    __slots__ = ("paths", "updates", "values")

    def __init__(self, values: dict[Parameter, Any], paths: dict[Parameter, str]) -> None:
        self.values = values
        self.paths = paths
        self.updates: dict[str, Any] = {}

    def record(self, target: Any, value: Any) -> bool:
        """Take ``ops.assign(target, value)`` as an update if ``target`` is one of the values."""
        owners = [p for p, v in self.values.items() if v is target]
        if not owners:
            return False
        if len(owners) > 1:
            names = ", ".join(self.paths[p] for p in owners)
            raise FunctionalUseError(
                f"deferral.functional: the parameters {names} were given the same array object, and "
                "the model updates one of them in place (training mode). Give each its own array."
            )
        from . import ops

        shape = tuple(ops.shape(target))
        if tuple(ops.shape(value)) != shape:
            value = ops.add(ops.zeros(shape, target), value)  # broadcast, as assign would
        self.values[owners[0]] = value
        self.updates[self.paths[owners[0]]] = value
        return True


_scope: ContextVar[_Scope | None] = ContextVar("deferral_functional", default=None)


def value_of(param: Parameter) -> Any:
    """The value the running functional call gives ``param``, or :data:`MISSING`."""
    scope = _scope.get()
    if scope is None:
        return MISSING
    return scope.values.get(param, MISSING)


def record_assign(target: Any, value: Any) -> bool:
    """Whether the running functional call took ``ops.assign(target, value)`` as an update."""
    scope = _scope.get()
    return scope is not None and scope.record(target, value)


@contextlib.contextmanager
def _entered(scope: _Scope) -> Iterator[None]:
    global active
    with _count_lock:
        active += 1
    token = _scope.set(scope)
    try:
        yield
    finally:
        _scope.reset(token)
        with _count_lock:
            active -= 1


@contextlib.contextmanager
def substituted(values: Mapping[Parameter, Any]) -> Iterator[None]:
    """Run the block calls inside with ``values`` in place of those parameters' own, changing
    nothing (as ``apply`` does): for a native container whose framework swapped arrays in for
    one call (``torch.func.functional_call``). Inside a running functional call, its values stay.
    """
    if not values or _scope.get() is not None:
        yield
        return
    with _entered(_Scope(dict(values), {p: p.path for p in values})):
        yield


def functional(block: Block) -> tuple[Callable[..., Any], dict[str, Any]]:
    """The model as a pure function and its current parameter values.

    Returns ``(apply, params)``: ``params`` maps each parameter's path (``"0.weight"``, as in
    ``collect_params()``) to its value as the backend's plain array (a ``jax.Array`` on JAX;
    the parameter object itself where the framework's arrays are mutable). ``apply(params,
    *inputs, training=False, **kwargs)`` runs the model with the values in ``params`` instead
    of its own and changes nothing: it returns the output, or ``(output, state)`` when
    ``training`` is true, ``state`` mapping the path of every parameter the call updated in
    place (BatchNorm's running statistics) to its new value. Merge it back with
    ``params = {**params, **state}``.

    ``apply`` may be transformed (``jax.jit``, ``jax.grad``, ``jax.vmap``): it reads no
    parameter storage and writes none, and its values live only as long as the call.

    Raises:
        DeferredInitializationError: if a parameter is not materialized yet (run one forward
            pass, or give every input size, first).
        ValueError: if the parameters are bound to several backends.

    Example:
        >>> import numpy as np
        >>> import deferral
        >>> from deferral import nn
        >>> net = nn.Dense(2, in_units=3, use_bias=False)
        >>> _ = net.initialize(seed=0, backend="numpy")
        >>> apply, params = deferral.functional(net)
        >>> list(params)
        ['weight']
        >>> apply({"weight": np.ones((2, 3), "float32")}, np.ones((1, 3), "float32")).tolist()
        [[3.0, 3.0]]
    """
    from ._native import _bound_backend

    found = block.collect_params()
    pending = [path for path, p in found.items() if not p.initialized]
    if pending:
        raise DeferredInitializationError(
            f"deferral.functional: {block.describe()} has parameters without values "
            f"({', '.join(pending[:4])}{', ...' if len(pending) > 4 else ''}). Run one forward pass "
            "(net(x)) or give every input size (in_units=..., or net.infer_shape(...) then "
            "initialize()) first."
        )
    backend = _bound_backend(block)
    params = {path: backend.to_native(p.data(), None, p.device or backend.info.default_device)
              for path, p in found.items()}
    by_path = dict(found)
    where = block.describe()

    def apply(params: Mapping[str, Any], *inputs: Any, training: bool = False, **kwargs: Any) -> Any:
        values = _match(where, by_path, params)
        scope = _Scope(values, {p: path for path, p in by_path.items()})
        from .nn._block import training_mode

        with _entered(scope), training_mode(training):
            out = block(*inputs, **kwargs)
        return (out, scope.updates) if training else out

    apply.__doc__ = f"Run {where} with the parameter values given (see deferral.functional)."
    return apply, params


def _match(where: str, by_path: Mapping[str, Parameter], params: Mapping[str, Any]) -> dict[Parameter, Any]:
    """``params`` as values per Parameter, checked to name exactly the model's parameters with
    their shapes.

    Raises:
        FunctionalUseError: naming the missing, unknown or misshapen entries and the fix.
    """
    if not isinstance(params, Mapping):
        raise FunctionalUseError(
            f"apply of {where}: expected the parameter dict deferral.functional returned as first "
            f"argument. Received: {type(params).__name__}"
        )
    missing = [k for k in by_path if k not in params]
    unknown = [k for k in params if k not in by_path]
    if missing or unknown:
        raise FunctionalUseError(
            f"apply of {where}: the parameter dict must have exactly the model's paths. Missing: "
            f"{', '.join(missing) or '(none)'}; unknown: {', '.join(map(str, unknown)) or '(none)'}. "
            "Start from the dict deferral.functional returned."
        )
    out = {}
    for path, param in by_path.items():
        value = params[path]
        shape = tuple(getattr(value, "shape", ()))
        if shape != param.shape:
            raise ShapeMismatchError(
                f"apply of {where}: parameter {path!r} has shape {param.shape}; the value given has "
                f"shape {shape}. Pass values of the parameters' shapes."
            )
        out[param] = value
    return out
