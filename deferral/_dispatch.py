"""How an op call finds the op namespace it runs on: the one helper every op of
:mod:`deferral.ops` calls first.

An op dispatches on its first argument's type: a dict lookup, filled as arrays of loaded
backends are met (a :class:`~deferral.TensorSpec` goes to the shape-only namespace; anything
else to the default backend). No context variable or lock is read, so compilers such as
``torch.compile`` trace straight through it.
"""

from __future__ import annotations

from typing import Any

__all__: list[str] = []

# ``id(array type)`` -> op namespace, for the lookup each op call makes; ``_kept`` holds the
# types met, so their ids stay theirs. Keying by the type itself would make ``torch.compile``
# add a guard evaluated in Python on every call: the type would be reached through the dict's
# keys as well as through ``type(x)``. Cleared when a backend is registered or unregistered.
_by_id: dict[int, Any] = {}
_kept: set[type] = set()


def _ops(x: Any) -> Any:
    ns = _by_id.get(id(type(x)))
    if ns is not None:
        return ns
    return _resolve(x)


def clear() -> None:
    """Forget every array type met (a backend was registered or unregistered)."""
    _by_id.clear()
    _kept.clear()


def _resolve(x: Any) -> Any:
    """The namespace for an array type met for the first time (or a non-array argument)."""
    from . import registry
    from ._shapes import TensorSpec

    if isinstance(x, TensorSpec):
        from .ops import SHAPE_OPS

        return SHAPE_OPS
    for backend in list(registry._backends.values()):
        if backend.is_native(x):
            _kept.add(type(x))
            _by_id[id(type(x))] = backend.ops
            return backend.ops
    return registry.load_backend(registry.get_backend()).ops
