"""NumPy implementations of ``deferral.ops.OP_NAMES``."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

_SQRT_HALF = 1.0 / math.sqrt(2.0)


def shape(x: np.ndarray) -> tuple[int, ...]:
    return x.shape


def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    y = x @ weight.T
    if bias is not None:
        y += bias
    return y


matmul = np.matmul
add = np.add
subtract = np.subtract
multiply = np.multiply
divide = np.divide
maximum = np.maximum
minimum = np.minimum
exp = np.exp
expm1 = np.expm1
log = np.log
log1p = np.log1p
tanh = np.tanh


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0)


def sigmoid(x: np.ndarray) -> np.ndarray:
    # Split by sign so exp never overflows.
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


_erf = np.vectorize(math.erf, otypes=[np.float64])


def gelu(x: np.ndarray) -> np.ndarray:
    # NumPy has no erf; math.erf element by element keeps the exact form (as torch's GELU).
    return (0.5 * x * (1.0 + _erf(x * _SQRT_HALF))).astype(x.dtype, copy=False)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = x - x.max(axis=axis, keepdims=True)
    ex = np.exp(shifted)
    return ex / ex.sum(axis=axis, keepdims=True)


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def reshape(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return x.reshape(shape)


def flatten(x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[0], -1)


def transpose(x: np.ndarray, axes: tuple[int, ...] | None = None) -> np.ndarray:
    return np.transpose(x, axes)


def concat(arrays: list[np.ndarray], axis: int = 0) -> np.ndarray:
    return np.concatenate(arrays, axis=axis)


def sum(x: np.ndarray, axis: Any = None, keepdims: bool = False) -> np.ndarray:
    return np.asarray(np.sum(x, axis=axis, keepdims=keepdims))


def mean(x: np.ndarray, axis: Any = None, keepdims: bool = False) -> np.ndarray:
    return np.asarray(np.mean(x, axis=axis, keepdims=keepdims))


def max(x: np.ndarray, axis: Any = None, keepdims: bool = False) -> np.ndarray:
    return np.asarray(np.max(x, axis=axis, keepdims=keepdims))


def min(x: np.ndarray, axis: Any = None, keepdims: bool = False) -> np.ndarray:
    return np.asarray(np.min(x, axis=axis, keepdims=keepdims))

from ._ops_conv import *  # noqa: E402,F403
from ._ops_norm import *  # noqa: E402,F403
from ._ops_seq import *  # noqa: E402,F403
