"""The one table of op cases every backend's conformance checks run (float32 and float64).

Each entry of :data:`OP_CASES` gives, for one op, a function of a generator returning its
cases: the arguments of one call of the public :mod:`deferral.ops` function, as float64 NumPy
values (cast to the dtype under test; integer and boolean arrays stay as they are), lists of
them, :class:`Param` (the array becomes the backend's parameter storage) or plain values.
An **error case** names the exception class the reference backend and the op's shape rule
both raise for it (``ValueError`` covers :class:`deferral.ShapeMismatchError`).

Inputs are small and scaled so float32 results stay within the op tolerances of a float64
reference (:mod:`deferral.testing._opref`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["OP_CASES", "OpCase", "Param"]

Rng = np.random.Generator


@dataclass(frozen=True)
class Param:
    """An argument the backend receives as its parameter storage (``parameter_from_numpy``)."""

    value: np.ndarray


@dataclass(frozen=True)
class OpCase:
    """One call: its positional arguments and, for an error case, the class it raises."""

    args: tuple[Any, ...]
    error: type[Exception] | None = None


def _c(*args: Any) -> OpCase:
    return OpCase(args)


def _e(error: type[Exception], *args: Any) -> OpCase:
    return OpCase(args, error)


def _n(r: Rng, *shape: int, scale: float = 1.0) -> np.ndarray:
    return r.standard_normal(shape) * scale


def _pos(r: Rng, *shape: int) -> np.ndarray:
    return r.uniform(0.1, 5.0, shape)


def _nonzero(r: Rng, *shape: int) -> np.ndarray:
    return r.choice([-1.0, 1.0], shape) * r.uniform(0.5, 3.0, shape)


# -- core -----------------------------------------------------------------------------------
def _binary(r: Rng) -> list[OpCase]:
    return [_c(_n(r, 3, 4), _n(r, 3, 4)), _c(_n(r, 2, 3, 4), _n(r, 4)), _c(_n(r, 3, 1), _n(r, 1, 5)),
            _c(_n(r, 3, 4), 2.5), _c(_n(r, 3, 4), 0), _e(ValueError, _n(r, 3, 4), _n(r, 3, 5))]


def _reductions(r: Rng) -> list[OpCase]:
    x = _n(r, 3, 4, 5)
    return [_c(x, None, False), _c(x, 1, False), _c(x, -1, True), _c(x, (0, 2), True), _c(x, (0, 2), False),
            _c(x, None, True), _c(x, (), False), _e(ValueError, x, 3, False), _e(ValueError, x, (0, 0), False)]


def _extremes(r: Rng) -> list[OpCase]:
    return [*_reductions(r), _c(np.arange(12).reshape(3, 4), 1, False), _c(np.zeros((0, 3)), 1, False),
            _e(ValueError, np.zeros((0, 3)), 0, False), _e(ValueError, np.zeros((2, 0)), None, True)]


def _softmaxes(r: Rng) -> list[OpCase]:
    return [_c(_n(r, 3, 5, scale=4.0), -1), _c(_n(r, 3, 5), 0), _c(_n(r, 2, 3, 4, scale=20.0), 1),
            _e(ValueError, _n(r, 3, 5), 2)]


def _unary(scale: float = 1.0) -> Callable[[Rng], list[OpCase]]:
    return lambda r: [_c(_n(r, 4, 5, scale=scale)), _c(_n(r, 2, 3, 4, scale=scale))]


_CORE: dict[str, Callable[[Rng], list[OpCase]]] = {
    "shape": lambda r: [_c(_n(r, 2, 3, 4)), _c(_n(r, 7, 1)), _c(_n(r, 5))],
    "linear": lambda r: [_c(_n(r, 5, 3), _n(r, 4, 3), _n(r, 4)), _c(_n(r, 2, 5, 3), _n(r, 4, 3), None),
                         _c(_n(r, 3), _n(r, 4, 3), _n(r, 4)),  # a vector
                         # a large weight, many rows; small integers: every float32 sum is exact
                         _c(*(r.integers(-3, 4, s).astype(np.float64) for s in ((6, 256), (256, 256), (256,)))),
                         _e(ValueError, _n(r, 5, 3), _n(r, 4, 2), None)],
    "matmul": lambda r: [_c(_n(r, 3, 4), _n(r, 4, 5)), _c(_n(r, 2, 3, 4), _n(r, 4, 5)),
                         _c(_n(r, 2, 3, 4), _n(r, 2, 4, 2)), _c(_n(r, 2, 1, 3, 4), _n(r, 5, 4, 2)),
                         _c(_n(r, 4), _n(r, 4, 5)), _c(_n(r, 3, 4), _n(r, 4)), _c(_n(r, 4), _n(r, 4)),
                         _e(ValueError, _n(r, 3, 4), _n(r, 3, 4)), _e(ValueError, _n(r, 2, 3, 4), _n(r, 3, 4, 2))],
    "add": _binary,
    "subtract": _binary,
    "multiply": _binary,
    "divide": lambda r: [_c(_n(r, 3, 4), _nonzero(r, 3, 4)), _c(_n(r, 2, 3), _nonzero(r, 3)), _c(_n(r, 3, 4), 4.0),
                         _e(ValueError, _n(r, 2, 3), _nonzero(r, 2))],
    "maximum": _binary,
    "minimum": _binary,
    "relu": _unary(3.0),
    "sigmoid": lambda r: [_c(_n(r, 4, 5)), _c(np.array([[-60.0, -30.0, -5.0, 0.0, 5.0, 30.0, 60.0]]))],
    "tanh": _unary(3.0),
    "gelu": lambda r: [_c(_n(r, 4, 5, scale=3.0)), _c(np.linspace(-6.0, 6.0, 25).reshape(5, 5))],
    "softmax": _softmaxes,
    "log_softmax": _softmaxes,
    "exp": _unary(2.0),
    "log": lambda r: [_c(_pos(r, 4, 5)), _c(_pos(r, 3))],
    "expm1": lambda r: [_c(_n(r, 4, 5, scale=2.0)), _c(np.array([-1e-6, -1e-9, 0.0, 3e-8, 1e-5]))],
    "log1p": lambda r: [_c(_pos(r, 4, 5)), _c(np.array([-0.5, -1e-7, 0.0, 2e-9, 1e-5]))],
    "reshape": lambda r: [_c(_n(r, 2, 3, 4), (6, 4)), _c(_n(r, 2, 3, 4), (2, -1)), _c(_n(r, 6), (1, 2, 3)),
                          _c(_n(r, 2, 3, 4), (24,)), _e(ValueError, _n(r, 2, 3, 4), (5, -1)),
                          _e(ValueError, _n(r, 2, 3, 4), (5, 5)), _e(ValueError, _n(r, 2, 3, 4), (-1, -1))],
    "flatten": lambda r: [_c(_n(r, 2, 3, 4, 5)), _c(_n(r, 3, 4)), _c(_n(r, 5))],
    "transpose": lambda r: [_c(_n(r, 2, 3), None), _c(_n(r, 2, 3, 4), (1, 0, 2)), _c(_n(r, 2, 3, 4), None),
                            _c(_n(r, 2, 3, 4), (-1, 0, 1)), _e(ValueError, _n(r, 2, 3, 4), (0, 1)),
                            _e(ValueError, _n(r, 2, 3, 4), (0, 1, 1)), _e(ValueError, _n(r, 2, 3, 4), (0, 1, 3))],
    "concat": lambda r: [_c([_n(r, 2, 3), _n(r, 4, 3)], 0), _c([_n(r, 2, 3), _n(r, 2, 5)], -1),
                         _c([_n(r, 2, 1, 3), _n(r, 2, 2, 3), _n(r, 2, 3, 3)], 1),
                         _e(ValueError, [_n(r, 2, 3), _n(r, 4, 5)], 0), _e(ValueError, [_n(r, 2, 3), _n(r, 2, 3, 1)], 0),
                         _e(ValueError, [_n(r, 2, 3), _n(r, 2, 3)], 2)],
    "sum": _reductions,
    "mean": lambda r: [*_reductions(r), _c(np.arange(12).reshape(3, 4), 0, False)],
    "max": _extremes,
    "min": _extremes,
}


# -- conv -----------------------------------------------------------------------------------
def _conv(r: Rng) -> list[OpCase]:
    w = 0.3
    return [
        # x, weight (C_out, C_in / groups, *kernel), bias, strides, padding, dilation, groups
        _c(_n(r, 2, 3, 11), _n(r, 4, 3, 3, scale=w), _n(r, 4), (1,), ((0, 0),), (1,), 1),
        _c(_n(r, 2, 4, 12), _n(r, 6, 2, 4, scale=w), None, (2,), ((1, 2),), (2,), 2),
        _c(_n(r, 2, 3, 9, 8), _n(r, 5, 3, 3, 3, scale=w), _n(r, 5), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
        _c(_n(r, 1, 4, 10, 9), _n(r, 4, 2, 4, 2, scale=w), _n(r, 4), (2, 1), ((1, 2), (0, 1)), (1, 2), 2),
        _c(_n(r, 2, 4, 7, 7), _n(r, 4, 1, 3, 3, scale=w), None, (2, 2), ((1, 1), (1, 1)), (2, 1), 4),
        _c(_n(r, 1, 2, 5, 6, 7), _n(r, 3, 2, 2, 3, 2, scale=w), _n(r, 3), (1, 2, 1), ((0, 1), (1, 1), (0, 0)),
           (1, 1, 2), 1),
        _c(_n(r, 1, 4, 5, 5, 5), _n(r, 4, 2, 2, 2, 2, scale=w), _n(r, 4), (2, 1, 1), ((1, 0), (0, 0), (1, 1)),
           (1, 2, 1), 2),
        _e(ValueError, _n(r, 2, 3, 11), _n(r, 4, 2, 3, scale=w), None, (1,), ((0, 0),), (1,), 1),  # channels
        _e(ValueError, _n(r, 2, 3, 4), _n(r, 4, 3, 6, scale=w), None, (1,), ((0, 0),), (1,), 1),  # kernel > input
    ]


def _conv_transpose(r: Rng) -> list[OpCase]:
    w = 0.3
    return [
        # x, weight (C_in, C_out / groups, *kernel), bias, strides, padding, output_padding, dilation, groups
        _c(_n(r, 2, 3, 6), _n(r, 3, 4, 3, scale=w), _n(r, 4), (2,), ((1, 1),), (1,), (1,), 1),
        _c(_n(r, 2, 4, 5), _n(r, 4, 2, 4, scale=w), None, (3,), ((2, 1),), (0,), (2,), 2),
        _c(_n(r, 2, 3, 5, 4), _n(r, 3, 5, 3, 3, scale=w), _n(r, 5), (1, 1), ((0, 0), (0, 0)), (0, 0), (1, 1), 1),
        _c(_n(r, 1, 4, 4, 5), _n(r, 4, 3, 4, 3, scale=w), _n(r, 6), (2, 2), ((1, 2), (1, 0)), (1, 1), (1, 2), 2),
        _c(_n(r, 2, 2, 3, 3), _n(r, 2, 2, 2, 2, scale=w), None, (2, 2), ((0, 0), (0, 0)), (1, 0), (1, 1), 1),
        _c(_n(r, 1, 2, 3, 4, 3), _n(r, 2, 3, 2, 3, 2, scale=w), _n(r, 3), (2, 1, 2), ((0, 1), (1, 1), (0, 0)),
           (1, 0, 1), (1, 1, 2), 1),
        _e(ValueError, _n(r, 2, 3, 6), _n(r, 2, 4, 3, scale=w), None, (2,), ((1, 1),), (1,), (1,), 1),  # channels
    ]


def _max_pool(r: Rng) -> list[OpCase]:
    return [
        # x, window, strides, padding[, ceil_mode]
        _c(_n(r, 2, 3, 10), (3,), (2,), ((1, 1),)),
        _c(_n(r, 2, 3, 8, 8), (2, 2), (2, 2), ((0, 0), (0, 0))),
        _c(_n(r, 2, 3, 7, 9), (3, 2), (2, 1), ((1, 2), (0, 1))),
        _c(_n(r, 1, 2, 5, 6, 7), (2, 3, 2), (1, 2, 2), ((0, 1), (1, 1), (0, 0))),
        # ceil_mode: one more window at the end; the last window may not start in the padding
        _c(_n(r, 2, 3, 7), (2,), (2,), ((0, 0),), True),
        _c(_n(r, 1, 2, 7, 6), (2, 3), (2, 3), ((0, 0), (1, 0)), True),
        _c(_n(r, 2, 3, 5), (3,), (3,), ((1, 1),), True),
        _c(_n(r, 2, 3, 8), (2,), (2,), ((0, 0),), True),
        _e(ValueError, _n(r, 2, 3, 2), (3,), (1,), ((0, 0),)),  # window larger than the input
    ]


def _avg_pool(r: Rng) -> list[OpCase]:
    return [
        # x, window, strides, padding, count_include_pad[, ceil_mode]
        _c(_n(r, 2, 3, 10), (3,), (2,), ((1, 1),), True),
        _c(_n(r, 2, 3, 10), (4,), (3,), ((2, 1),), False),
        _c(_n(r, 2, 3, 8, 8), (2, 2), (2, 2), ((0, 0), (0, 0)), True),
        _c(_n(r, 2, 3, 7, 9), (3, 2), (2, 1), ((1, 2), (0, 1)), True),
        _c(_n(r, 2, 3, 7, 9), (3, 3), (1, 2), ((1, 1), (2, 1)), False),
        _c(_n(r, 1, 2, 5, 6, 7), (2, 3, 2), (1, 2, 2), ((0, 1), (1, 1), (0, 0)), False),
        # ceil_mode: an overhanging window divides by its part in the padded input (or the input)
        _c(_n(r, 2, 3, 7), (2,), (2,), ((0, 0),), True, True),
        _c(_n(r, 2, 3, 7, 6), (3, 3), (2, 2), ((1, 1), (1, 0)), True, True),
        _c(_n(r, 2, 3, 7, 6), (3, 3), (2, 2), ((1, 1), (1, 0)), False, True),
        _c(_n(r, 2, 3, 5), (3,), (3,), ((1, 1),), True, True),
        _c(_n(r, 1, 2, 5, 6, 7), (2, 3, 2), (2, 2, 3), ((0, 1), (1, 1), (0, 0)), True, True),
        _e(ValueError, _n(r, 2, 3, 2), (3,), (1,), ((0, 0),), True),
    ]


# -- norm -----------------------------------------------------------------------------------
def _batch_norm(r: Rng) -> list[OpCase]:
    return [
        _c(_n(r, 4, 3), _n(r, 3), _pos(r, 3), _n(r, 3), _n(r, 3), 1e-5),
        _c(_n(r, 2, 3, 4, 5), _n(r, 3), _pos(r, 3), None, None, 1e-3),
        _c(_n(r, 2, 3, 5), _n(r, 3), _pos(r, 3), _n(r, 3), None, 1e-5),
        _c(_n(r, 2, 4, 3), _n(r, 4), _pos(r, 4), None, _n(r, 4), 0.5),
        _e(ValueError, _n(r, 2, 4, 3), _n(r, 3), _pos(r, 3), None, None, 1e-5),
    ]


def _moments(r: Rng) -> list[OpCase]:
    return [_c(_n(r, 4, 3, scale=2.0), (0,), False), _c(_n(r, 2, 3, 4, 5), (0, 2, 3), True),
            _c(_n(r, 3, 5), (1,), True), _c(_n(r, 2, 3, 4), (0, 1, 2), False), _e(ValueError, _n(r, 3, 5), (2,), False)]


def _take(r: Rng) -> list[OpCase]:
    weight = _n(r, 10, 4)
    return [_c(weight, r.integers(0, 10, (3,))), _c(weight, r.integers(0, 10, (2, 3))),
            _c(weight, r.integers(0, 10, (5,)).astype(np.int32)), _c(weight, np.array(7)),
            _e(TypeError, weight, np.array([1.0, 2.0]))]


def _assign(r: Rng) -> list[OpCase]:
    return [_c(Param(_n(r, 6)), _n(r, 6)), _c(Param(_n(r, 2, 3)), _n(r, 2, 3)),
            _e(ValueError, Param(_n(r, 2, 3)), _n(r, 4))]


_NORM: dict[str, Callable[[Rng], list[OpCase]]] = {
    "batch_norm": _batch_norm,
    "moments": _moments,
    "sqrt": lambda r: [_c(_pos(r, 4, 5)), _c(np.array([0.0, 1.0, 4.0, 2.0]))],
    "rsqrt": lambda r: [_c(_pos(r, 4, 5)), _c(np.array([1.0, 4.0, 0.25]))],
    "take": _take,
    # Masks are the backend's own: rate 0 is the identity (the layer checks test real masks).
    "dropout": lambda r: [_c(_n(r, 3, 4), 0.0)],
    "assign": _assign,
}


# -- seq ------------------------------------------------------------------------------------
def _split(r: Rng) -> list[OpCase]:
    return [_c(_n(r, 2, 6), 3, -1), _c(_n(r, 6, 2, 3), 2, 0), _c(_n(r, 2, 4, 3), 1, 1), _c(_n(r, 12), 4, 0),
            _e(ValueError, _n(r, 2, 5), 3, -1), _e(ValueError, _n(r, 2, 6), 0, -1)]


def _stack(r: Rng) -> list[OpCase]:
    return [_c([_n(r, 2, 3), _n(r, 2, 3), _n(r, 2, 3)], 0), _c([_n(r, 2, 3), _n(r, 2, 3)], -1),
            _c([_n(r, 4, 2, 5), _n(r, 4, 2, 5)], 1), _c([_n(r, 3)], 0),
            _e(ValueError, [_n(r, 2, 3), _n(r, 3, 2)], 0), _e(ValueError, [_n(r, 2, 3), _n(r, 2, 3)], 3)]


def _where(r: Rng) -> list[OpCase]:
    # ``a`` must be an array (the op dispatches on it); ``b`` may be a Python scalar, as the
    # attention layer gives it.
    return [_c(r.uniform(size=(3, 4)) > 0.5, _n(r, 3, 4), _n(r, 3, 4)),
            _c(r.uniform(size=(4,)) > 0.5, _n(r, 3, 4), _n(r, 1, 4)),
            _c(r.uniform(size=(2, 1, 3, 5)) > 0.3, _n(r, 2, 4, 3, 5), -1e9),
            _e(ValueError, r.uniform(size=(3, 4)) > 0.5, _n(r, 3, 4), _n(r, 2, 4))]


_SEQ: dict[str, Callable[[Rng], list[OpCase]]] = {
    "split": _split,
    "stack": _stack,
    "unstack": lambda r: [_c(_n(r, 3, 4, 5), 0), _c(_n(r, 3, 4, 5), 1), _c(_n(r, 3, 4, 5), -1), _c(_n(r, 1, 2), 0),
                          _e(ValueError, _n(r, 3, 4), 2)],
    "where": _where,
    "zeros": lambda r: [_c((2, 3), _n(r, 4)), _c((1, 5, 2), _n(r, 2, 2)), _c((0, 3), _n(r, 2)),
                        _e(ValueError, (2, -3), _n(r, 2))],
}

#: op name -> function of a generator giving the op's cases.
OP_CASES: dict[str, Callable[[Rng], list[OpCase]]] = {
    **_CORE, "conv": _conv, "conv_transpose": _conv_transpose, "max_pool": _max_pool, "avg_pool": _avg_pool,
    **_NORM, **_SEQ,
}
