"""How an op call finds the op namespace it runs on: the one helper every op of
:mod:`deferral.ops` calls first.

Inside a model call :data:`active` holds the namespace of the backend the model is bound to
(or the shape-only namespace during shape inference); outside one, an op dispatches on its
first array argument's type, falling back to the default backend.
"""

from __future__ import annotations

import contextvars
from typing import Any

__all__ = ["active"]

# The op namespace of the model being called (set by Block.__call__).
active: contextvars.ContextVar[Any] = contextvars.ContextVar("deferral_ops", default=None)


def _ops(x: Any) -> Any:
    ns = active.get()
    if ns is not None:
        return ns
    from . import registry

    for backend in list(registry._backends.values()):
        if backend.is_native(x):
            return backend.ops
    return registry.load_backend(registry.get_backend()).ops
