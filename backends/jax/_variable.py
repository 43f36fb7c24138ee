"""A parameter's storage on the JAX backend, and the checks every hook shares.

JAX arrays are immutable, but a deferral parameter's storage must be writable in place (a
BatchNorm updates its running statistics with ``ops.assign``, ``set_data`` and loading replace
values). :class:`Variable` is that storage: a small mutable reference to a ``jax.Array``, in
the spirit of ``tf.Variable`` and ``flax.nnx.Variable``. The op namespace reads a variable's
array wherever one is passed (:func:`reads_variables`); ops always return plain arrays.

Importing this module imports no JAX.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, Protocol

from deferral.errors import DeferralError

__all__ = ["Float64DisabledError", "TracedStateError", "Variable", "as_host", "check_dtype", "is_tracer",
           "reads_variables", "value_of"]


class Float64DisabledError(DeferralError, TypeError):
    """float64 was asked for while JAX's 64-bit mode is off."""


class TracedStateError(DeferralError, RuntimeError):
    """Backend state (a parameter's storage, dropout's key) met a value inside a JAX transformation."""


class _Cell(Protocol):
    """Where a variable's array lives: its own box, or a ``flax.nnx.Variable`` it shares with
    the model's NNX mirror (``deferral.native``)."""

    def get_value(self) -> Any: ...
    def set_value(self, value: Any) -> Any: ...


class _Box:
    __slots__ = ("_value",)

    def __init__(self, value: Any) -> None:
        self._value = value

    def get_value(self) -> Any:
        return self._value

    def set_value(self, value: Any) -> None:
        self._value = value


class Variable:
    """The JAX backend's parameter storage: a mutable reference to an immutable ``jax.Array``.

    ``param.data()`` returns one on the JAX backend; :attr:`value` is the array. Functional
    code (``deferral.functional``) works on the arrays themselves and never sees variables.

    Example:
        >>> import jax.numpy as jnp
        >>> from deferral_jax import Variable
        >>> v = Variable(jnp.zeros(3))
        >>> v.value = v.value + 1
        >>> v.shape, v.value.tolist()
        ((3,), [1.0, 1.0, 1.0])
    """

    __slots__ = ("_cell", "trainable")

    def __init__(self, value: Any, trainable: bool = True) -> None:
        self._cell: _Cell = _Box(value)
        self.trainable = trainable

    @property
    def value(self) -> Any:
        """The current ``jax.Array``."""
        return self._cell.get_value()

    @value.setter
    def value(self, array: Any) -> None:
        self._cell.set_value(array)

    def _share(self, cell: _Cell) -> None:
        """Keep the array in ``cell`` from now on (an NNX variable holding the same array)."""
        self._cell = cell

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.value.shape)

    @property
    def dtype(self) -> Any:
        return self.value.dtype

    @property
    def ndim(self) -> int:
        return len(self.value.shape)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> Any:
        import numpy as np

        return np.asarray(self.value, dtype=dtype)

    def __repr__(self) -> str:
        return f"Variable(shape={self.shape}, dtype={self.dtype}, trainable={self.trainable})"


def value_of(x: Any) -> Any:
    """``x``'s array if it is a :class:`Variable` (also inside a list or tuple), else ``x``."""
    if type(x) is Variable:
        return x.value
    if type(x) in (list, tuple):
        return [value_of(a) for a in x]
    return x


def reads_variables(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with every :class:`Variable` argument replaced by its array."""

    @functools.wraps(fn)
    def op(*args: Any, **kwargs: Any) -> Any:
        return fn(*[value_of(a) for a in args], **{k: value_of(v) for k, v in kwargs.items()})

    return op


def is_tracer(x: Any) -> bool:
    """Whether ``x`` is a JAX tracer (a value inside ``jax.jit``, ``grad``, ``vmap``)."""
    jax = sys.modules.get("jax")
    return jax is not None and isinstance(x, jax.core.Tracer)


def check_dtype(dtype: str | None, what: str) -> None:
    """Refuse float64 while JAX's 64-bit mode is off (JAX would silently compute in float32).

    Raises:
        Float64DisabledError: naming ``what`` and the two ways to fix it.
    """
    if dtype != "float64":
        return
    import jax

    if not jax.config.jax_enable_x64:
        raise Float64DisabledError(
            f"backend 'jax': {what} asks for float64, but JAX's 64-bit mode is off (JAX's default: "
            "it would silently compute in float32). Enable it before creating any array: "
            "jax.config.update('jax_enable_x64', True) (or set JAX_ENABLE_X64=1), or use "
            "dtype='float32'."
        )


def as_host(values: Any, dtype: str) -> Any:
    """Host values of ``dtype`` as NumPy and JAX see them: ``uint16`` bit patterns (the core's
    bfloat16) are viewed as ``jnp.bfloat16``; other dtypes are returned as they are."""
    if dtype != "bfloat16":
        return values
    import jax.numpy as jnp

    from deferral._dtypes import float32_to_bfloat16_bits

    bits = values if values.dtype.name == "uint16" else float32_to_bfloat16_bits(values.astype("float32"))
    return bits.view(jnp.bfloat16)
