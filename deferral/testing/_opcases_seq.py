"""Conformance cases for the sequence ops (``deferral.ops.SEQ_OPS``).

:func:`deferral.ops.split` and :func:`deferral.ops.unstack` return *lists* of arrays, which
the generic check (one native array per call) cannot compare; their lists here are empty and
:class:`deferral.testing.SeqLayerChecks` checks both directly
(``test_split_and_unstack_match_reference``). :func:`deferral.ops.where` is also called with a
Python scalar as ``b``, as the attention layer calls it
(``a`` must be an array: the op dispatches on it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["LIST_CASES", "SEQ_CASES"]


def _n(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def _stack(r: np.random.Generator) -> list[tuple[Any, ...]]:
    return [
        ([_n(r, 2, 3), _n(r, 2, 3), _n(r, 2, 3)], 0),
        ([_n(r, 2, 3), _n(r, 2, 3)], -1),
        ([_n(r, 4, 2, 5), _n(r, 4, 2, 5)], 1),
        ([_n(r, 3)], 0),
    ]


def _where(r: np.random.Generator) -> list[tuple[Any, ...]]:
    return [
        (r.uniform(size=(3, 4)) > 0.5, _n(r, 3, 4), _n(r, 3, 4)),
        (r.uniform(size=(4,)) > 0.5, _n(r, 3, 4), _n(r, 1, 4)),
        (r.uniform(size=(2, 1, 3, 5)) > 0.3, _n(r, 2, 4, 3, 5), -1e9),
    ]


def _zeros(r: np.random.Generator) -> list[tuple[Any, ...]]:
    return [
        ((2, 3), _n(r, 4)),
        ((1, 5, 2), _n(r, 2, 2)),
        ((3,), r.standard_normal(2)),  # float64 like: float64 zeros
    ]


#: name -> function of a generator giving a list of argument tuples (NumPy values).
SEQ_CASES: dict[str, Callable[[np.random.Generator], list[tuple[Any, ...]]]] = {
    "split": lambda r: [],  # returns a list: see LIST_CASES
    "stack": _stack,
    "unstack": lambda r: [],  # returns a list: see LIST_CASES
    "where": _where,
    "zeros": _zeros,
}

#: The ops returning lists of arrays, with their cases (checked by ``SeqLayerChecks``).
LIST_CASES: dict[str, Callable[[np.random.Generator], list[tuple[Any, ...]]]] = {
    "split": lambda r: [(_n(r, 2, 6), 3, -1), (_n(r, 6, 2, 3), 2, 0), (_n(r, 2, 4, 3), 1, 1),
                        (_n(r, 12), 4, 0)],
    "unstack": lambda r: [(_n(r, 3, 4, 5), 0), (_n(r, 3, 4, 5), 1), (_n(r, 3, 4, 5), -1), (_n(r, 1, 2), 0)],
}
