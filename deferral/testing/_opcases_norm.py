"""Conformance cases for the norm ops (``deferral.ops.NORM_OPS``).

Two ops are not compared here because their results do not fit the generic check (one
native array): :func:`deferral.ops.moments` returns a pair and :func:`deferral.ops.assign`
writes into a parameter's storage (a ``tf.Variable`` cannot be made from a plain array).
Their lists are empty; :class:`deferral.testing.NormLayerChecks` checks both directly
(``test_moments_matches_reference``, ``test_assign_writes_parameter_in_place``). Dropout's
masks are the backend's own, so its generic case is ``rate=0`` (identity); the layer checks
test the statistics of real masks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["NORM_CASES"]


def _n(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def _positive(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.uniform(0.1, 5.0, shape).astype(np.float32)


def _batch_norm(r: np.random.Generator) -> list[tuple[Any, ...]]:
    return [
        (_n(r, 4, 3), _n(r, 3), _positive(r, 3), _n(r, 3), _n(r, 3), 1e-5),
        (_n(r, 2, 3, 4, 5), _n(r, 3), _positive(r, 3), None, None, 1e-3),
        (_n(r, 2, 3, 5), _n(r, 3), _positive(r, 3), _n(r, 3), None, 1e-5),
        (_n(r, 2, 4, 3), _n(r, 4), _positive(r, 4), None, _n(r, 4), 0.5),
    ]


def _take(r: np.random.Generator) -> list[tuple[Any, ...]]:
    weight = _n(r, 10, 4)
    return [
        (weight, r.integers(0, 10, (3,))),
        (weight, r.integers(0, 10, (2, 3))),
        (weight, r.integers(0, 10, (5,)).astype(np.int32)),
        (weight, np.array(7)),
    ]


#: name -> function of a generator giving a list of argument tuples (NumPy values).
NORM_CASES: dict[str, Callable[[np.random.Generator], list[tuple[Any, ...]]]] = {
    "batch_norm": _batch_norm,
    "moments": lambda r: [],  # a pair of arrays: NormLayerChecks.test_moments_matches_reference
    "sqrt": lambda r: [(_positive(r, 4, 5),), (np.array([0.0, 1.0, 4.0, 2.0], dtype=np.float32),)],
    "rsqrt": lambda r: [(_positive(r, 4, 5),), (np.array([1.0, 4.0, 0.25], dtype=np.float32),)],
    "take": _take,
    "dropout": lambda r: [(_n(r, 3, 4), 0.0)],
    "assign": lambda r: [],  # writes a parameter: NormLayerChecks.test_assign_writes_parameter_in_place
}
