"""Conformance cases for the convolution and pooling ops (``deferral.ops.CONV_OPS``).

Each case is one call's arguments, as NumPy values (see :mod:`deferral.testing._opchecks`):
1, 2 and 3 spatial axes, strides, dilation, groups, asymmetric padding (what ``"same"`` gives
an even kernel), ``output_padding``, and both pooling divisors. Inputs are small and weights
scaled down so float32 sums stay well within the op tolerances.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["CONV_CASES"]


def _n(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _conv(r: np.random.Generator) -> list[tuple[Any, ...]]:
    return [
        # x, weight (C_out, C_in / groups, *kernel), bias, strides, padding, dilation, groups
        (_n(r, 2, 3, 11), _n(r, 4, 3, 3, scale=0.3), _n(r, 4), (1,), ((0, 0),), (1,), 1),
        (_n(r, 2, 4, 12), _n(r, 6, 2, 4, scale=0.3), None, (2,), ((1, 2),), (2,), 2),
        (_n(r, 2, 3, 9, 8), _n(r, 5, 3, 3, 3, scale=0.3), _n(r, 5), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
        (_n(r, 1, 4, 10, 9), _n(r, 4, 2, 4, 2, scale=0.3), _n(r, 4), (2, 1), ((1, 2), (0, 1)), (1, 2), 2),
        (_n(r, 2, 4, 7, 7), _n(r, 4, 1, 3, 3, scale=0.3), None, (2, 2), ((1, 1), (1, 1)), (2, 1), 4),
        (_n(r, 1, 2, 5, 6, 7), _n(r, 3, 2, 2, 3, 2, scale=0.3), _n(r, 3), (1, 2, 1), ((0, 1), (1, 1), (0, 0)),
         (1, 1, 2), 1),
        (_n(r, 1, 4, 5, 5, 5), _n(r, 4, 2, 2, 2, 2, scale=0.3), _n(r, 4), (2, 1, 1), ((1, 0), (0, 0), (1, 1)),
         (1, 2, 1), 2),
    ]


def _conv_transpose(r: np.random.Generator) -> list[tuple[Any, ...]]:
    return [
        # x, weight (C_in, C_out / groups, *kernel), bias, strides, padding, output_padding,
        # dilation, groups
        (_n(r, 2, 3, 6), _n(r, 3, 4, 3, scale=0.3), _n(r, 4), (2,), ((1, 1),), (1,), (1,), 1),
        (_n(r, 2, 4, 5), _n(r, 4, 2, 4, scale=0.3), None, (3,), ((2, 1),), (0,), (2,), 2),
        (_n(r, 2, 3, 5, 4), _n(r, 3, 5, 3, 3, scale=0.3), _n(r, 5), (1, 1), ((0, 0), (0, 0)), (0, 0), (1, 1), 1),
        (_n(r, 1, 4, 4, 5), _n(r, 4, 3, 4, 3, scale=0.3), _n(r, 6), (2, 2), ((1, 2), (1, 0)), (1, 1), (1, 2), 2),
        (_n(r, 2, 2, 3, 3), _n(r, 2, 2, 2, 2, scale=0.3), None, (2, 2), ((0, 0), (0, 0)), (1, 0), (1, 1), 1),
        (_n(r, 1, 2, 3, 4, 3), _n(r, 2, 3, 2, 3, 2, scale=0.3), _n(r, 3), (2, 1, 2), ((0, 1), (1, 1), (0, 0)),
         (1, 0, 1), (1, 1, 2), 1),
    ]


def _max_pool(r: np.random.Generator) -> list[tuple[Any, ...]]:
    return [
        # x, window, strides, padding
        (_n(r, 2, 3, 10), (3,), (2,), ((1, 1),)),
        (_n(r, 2, 3, 8, 8), (2, 2), (2, 2), ((0, 0), (0, 0))),
        (_n(r, 2, 3, 7, 9), (3, 2), (2, 1), ((1, 2), (0, 1))),
        (_n(r, 1, 2, 5, 6, 7), (2, 3, 2), (1, 2, 2), ((0, 1), (1, 1), (0, 0))),
    ]


def _avg_pool(r: np.random.Generator) -> list[tuple[Any, ...]]:
    return [
        # x, window, strides, padding, count_include_pad
        (_n(r, 2, 3, 10), (3,), (2,), ((1, 1),), True),
        (_n(r, 2, 3, 10), (4,), (3,), ((2, 1),), False),
        (_n(r, 2, 3, 8, 8), (2, 2), (2, 2), ((0, 0), (0, 0)), True),
        (_n(r, 2, 3, 7, 9), (3, 2), (2, 1), ((1, 2), (0, 1)), True),
        (_n(r, 2, 3, 7, 9), (3, 3), (1, 2), ((1, 1), (2, 1)), False),
        (_n(r, 1, 2, 5, 6, 7), (2, 3, 2), (1, 2, 2), ((0, 1), (1, 1), (0, 0)), False),
    ]


#: name -> function of a generator giving a list of argument tuples (NumPy values).
CONV_CASES: dict[str, Callable[[np.random.Generator], list[tuple[Any, ...]]]] = {
    "conv": _conv,
    "conv_transpose": _conv_transpose,
    "max_pool": _max_pool,
    "avg_pool": _avg_pool,
}
