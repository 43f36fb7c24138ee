"""``deferral.native(net)`` on JAX: a Flax NNX module sharing the model's parameters.

The module holds one ``nnx.Param`` per trainable parameter and one ``nnx.BatchStat`` per
other one (BatchNorm's running statistics), nested as the block tree is (``module.params["0"]
["weight"]``), each holding the very ``jax.Array`` deferral made: nothing is copied. The
deferral parameters then keep their arrays *in* those NNX variables, so an update through
either side (an ``nnx.Optimizer`` step, ``set_data``, a stateful ``net(x)`` in training mode)
is seen by both.

Calling the module runs the model through ``deferral.functional`` on the NNX variables' values,
so it works inside ``nnx.jit``/``nnx.grad`` (which hand it traced copies). ``module.train()``
and ``module.eval()`` switch the mode (its ``deterministic`` attribute, as for NNX's own
``Dropout``); in training mode updated running statistics are written back to the module's
``BatchStat`` variables.
"""

from __future__ import annotations

from typing import Any

from flax import nnx

import deferral
from deferral.errors import DeferredInitializationError

from ._variable import Variable

__all__ = ["Module", "nnx_module"]


class Module(nnx.Module):
    """A ``flax.nnx.Module`` running a deferral model on its own NNX variables."""

    def __init__(self, block: Any) -> None:
        self._apply, _ = deferral.functional(block)
        self._paths = tuple(block.collect_params())
        self.deterministic = not block.training
        self.params = nnx.Dict()
        for path, param in block.collect_params().items():
            storage = param.data()
            if not isinstance(storage, Variable):
                raise TypeError(f"deferral.native: parameter {path!r} is not bound to the jax backend")
            kind = nnx.Param if param.trainable else nnx.BatchStat
            variable = kind(storage.value)
            self._insert(path, variable)
            storage._share(variable)

    def _insert(self, path: str, variable: nnx.Variable) -> None:
        *parents, leaf = path.split(".")
        node = self.params
        for name in parents:
            if name not in node:
                node[name] = nnx.Dict()
            node = node[name]
        node[leaf] = variable

    def variable(self, path: str) -> nnx.Variable:
        """The NNX variable of the parameter at ``path`` (``"0.weight"``)."""
        node: Any = self.params
        for name in path.split("."):
            node = node[name]
        return node

    def __call__(self, *inputs: Any, **kwargs: Any) -> Any:
        values = {path: self.variable(path).get_value() for path in self._paths}
        if self.deterministic:
            return self._apply(values, *inputs, **kwargs)
        out, state = self._apply(values, *inputs, training=True, **kwargs)
        for path, value in state.items():
            self.variable(path).set_value(value)
        return out


def nnx_module(block: Any) -> Module:
    """The NNX module of ``block`` (every parameter must be materialized).

    Raises:
        DeferredInitializationError: if some parameter is still deferred.
    """
    pending = [path for path, p in block.collect_params().items() if not p.initialized]
    if pending:
        raise DeferredInitializationError(
            f"deferral.native: {block.describe()} on the jax backend becomes a Flax NNX module, whose "
            f"variables need values; {', '.join(pending[:4])}{', ...' if len(pending) > 4 else ''} "
            "are still deferred. Run one forward pass (net(x)) or give every input size first."
        )
    return Module(block)
