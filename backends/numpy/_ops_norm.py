"""NumPy implementations of the normalization, embedding, dropout and state ops.

The semantics are those documented in :mod:`deferral.ops` (``NORM_OPS``); these are the
reference every other backend is compared with.

Dropout draws its masks from a module-level :class:`numpy.random.Generator` seeded from the
operating system's entropy at import; :func:`seed_dropout` reseeds it for reproducible masks.
Masks are the NumPy backend's own: the same seed gives other masks on PyTorch or TensorFlow.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from deferral import opkit, ops

__all__ = list(ops.NORM_OPS)  # every op of the family, nothing else

_rng: np.random.Generator = np.random.default_rng()


def seed_dropout(seed: int | None = None) -> None:
    """Reseed the generator the NumPy backend's :func:`dropout` draws masks from.

    ``None`` reseeds from the operating system's entropy (as at import).

    Example:
        >>> import numpy as np
        >>> from deferral_numpy._ops_norm import dropout, seed_dropout
        >>> seed_dropout(0); a = dropout(np.ones(6), 0.5)
        >>> seed_dropout(0); b = dropout(np.ones(6), 0.5)
        >>> bool((a == b).all())
        True
    """
    global _rng
    _rng = np.random.default_rng(seed)


def batch_norm(x: np.ndarray, mean: np.ndarray, var: np.ndarray, gamma: np.ndarray | None,
               beta: np.ndarray | None, eps: float) -> np.ndarray:
    """``(x - mean) / sqrt(var + eps) * gamma + beta``, vectors on axis 1 (``gamma``/``beta`` optional)."""
    return opkit.batch_norm(x, mean, var, gamma, beta, eps, rsqrt, np.reshape)


def moments(x: np.ndarray, axes: tuple[int, ...], keepdims: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Mean and biased variance over ``axes``."""
    mean = np.mean(x, axis=axes, keepdims=True)
    var = np.mean(np.square(x - mean), axis=axes, keepdims=keepdims)
    if not keepdims:
        mean = np.squeeze(mean, axis=axes)
    return np.asarray(mean), np.asarray(var)


def sqrt(x: np.ndarray) -> np.ndarray:
    """Element-wise square root."""
    return np.sqrt(x)


def rsqrt(x: np.ndarray) -> np.ndarray:
    """Element-wise ``1 / sqrt(x)``."""
    return 1.0 / np.sqrt(x)


def take(weight: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """``weight[indices]`` along the first axis; out-of-range indices raise ``IndexError``."""
    return np.take(weight, indices, axis=0)


def dropout(x: np.ndarray, rate: float) -> np.ndarray:
    """Inverted dropout: zero with probability ``rate``, scale the rest by ``1 / (1 - rate)``."""
    if rate == 0.0:
        return x
    keep = _rng.random(np.shape(x)) >= rate
    scale = np.asarray(1.0 / (1.0 - rate), dtype=x.dtype)
    return np.where(keep, x * scale, np.zeros((), dtype=x.dtype))


def assign(target: np.ndarray, value: Any) -> None:
    """Overwrite ``target``'s values in place (same shape; cast to its dtype)."""
    target[...] = value
