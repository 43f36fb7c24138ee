"""NumPy implementations of the sequence ops of :mod:`deferral.ops` (``SEQ_OPS``).

These define the semantics the other backends match: :func:`split` and :func:`unstack` return
lists of views, :func:`where` accepts a non-boolean condition (non-zero counts as true) and
Python scalars for either branch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from deferral import ops

__all__ = list(ops.SEQ_OPS)  # every op of the family, nothing else


def split(x: np.ndarray, sections: int, axis: int = -1) -> list[np.ndarray]:
    """``sections`` equal parts of ``x`` along ``axis`` (views; the core checks divisibility)."""
    return np.split(x, sections, axis=axis)


def stack(arrays: Sequence[np.ndarray], axis: int = 0) -> np.ndarray:
    """Join arrays of one shape along a new axis."""
    return np.stack(list(arrays), axis=axis)


def unstack(x: np.ndarray, axis: int = 0) -> list[np.ndarray]:
    """The slices of ``x`` along ``axis`` (views), the axis removed."""
    return list(np.moveaxis(x, axis, 0))


def where(condition: Any, a: Any, b: Any) -> np.ndarray:
    """``a`` where ``condition`` is true (non-zero), else ``b``, with broadcasting."""
    return np.where(condition, a, b)


def zeros(shape: Sequence[int], like: np.ndarray) -> np.ndarray:
    """Zeros of ``shape`` with the dtype of ``like``."""
    return np.zeros(tuple(shape), dtype=like.dtype)
