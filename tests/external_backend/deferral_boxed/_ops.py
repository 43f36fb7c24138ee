"""The boxed backend's ops: unbox, compute with NumPy, box the result on the first input's device.

A bfloat16 box computes in float32 and gives float32 results. Anything that is not a box
(where an array is expected) is rejected, so a caller that skipped ``to_native`` fails.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._box import Box

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _un(x: Any, op: str) -> np.ndarray:
    if not isinstance(x, Box):
        raise TypeError(f"boxed.{op}: expected a Box, received {type(x).__name__}")
    return x.value


def _box(result: Any, like: Box) -> Box:
    return Box(np.asarray(result), like.device)


def _unary(fn: Any, op: str) -> Any:
    def run(x: Box) -> Box:
        return _box(fn(_un(x, op)), x)

    run.__name__ = op
    return run


def _binary(fn: Any, op: str) -> Any:
    def run(a: Box, b: Box | float) -> Box:
        # The second operand may be a Python scalar, as in the layers (ops.add(var, eps)).
        return _box(fn(_un(a, op), b if isinstance(b, int | float) else _un(b, op)), a)

    run.__name__ = op
    return run


def shape(x: Box) -> tuple[int, ...]:
    return tuple(int(d) for d in _un(x, "shape").shape)


def linear(x: Box, weight: Box, bias: Box | None = None) -> Box:
    y = _un(x, "linear") @ _un(weight, "linear").T
    if bias is not None:
        y = y + _un(bias, "linear")
    return _box(y, x)


add = _binary(np.add, "add")
subtract = _binary(np.subtract, "subtract")
multiply = _binary(np.multiply, "multiply")
divide = _binary(np.divide, "divide")
maximum = _binary(np.maximum, "maximum")
minimum = _binary(np.minimum, "minimum")
matmul = _binary(np.matmul, "matmul")
exp = _unary(np.exp, "exp")
log = _unary(np.log, "log")
expm1 = _unary(np.expm1, "expm1")
log1p = _unary(np.log1p, "log1p")
tanh = _unary(np.tanh, "tanh")
relu = _unary(lambda v: np.maximum(v, v.dtype.type(0)), "relu")


def sigmoid(x: Box) -> Box:
    v = _un(x, "sigmoid")
    e = np.exp(-np.abs(v))
    return _box(np.where(v >= 0, 1 / (1 + e), e / (1 + e)).astype(v.dtype), x)


def gelu(x: Box) -> Box:
    v = _un(x, "gelu")
    return _box((0.5 * v * (1.0 + _erf(v / math.sqrt(2.0)))).astype(v.dtype), x)


def softmax(x: Box, axis: int = -1) -> Box:
    v = _un(x, "softmax")
    e = np.exp(v - v.max(axis=axis, keepdims=True))
    return _box(e / e.sum(axis=axis, keepdims=True), x)


def log_softmax(x: Box, axis: int = -1) -> Box:
    v = _un(x, "log_softmax")
    shifted = v - v.max(axis=axis, keepdims=True)
    return _box(shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True)), x)


def reshape(x: Box, shape: tuple[int, ...]) -> Box:
    return _box(_un(x, "reshape").reshape(shape), x)


def flatten(x: Box) -> Box:
    v = _un(x, "flatten")
    return _box(v.reshape(v.shape[0], -1), x)


def transpose(x: Box, axes: tuple[int, ...] | None = None) -> Box:
    return _box(np.transpose(_un(x, "transpose"), axes), x)


def concat(arrays: list[Box], axis: int = 0) -> Box:
    return _box(np.concatenate([_un(a, "concat") for a in arrays], axis=axis), arrays[0])


def sum(x: Box, axis: Any = None, keepdims: bool = False) -> Box:
    return _box(np.sum(_un(x, "sum"), axis=axis, keepdims=keepdims), x)


def mean(x: Box, axis: Any = None, keepdims: bool = False) -> Box:
    return _box(np.mean(_un(x, "mean"), axis=axis, keepdims=keepdims), x)


def max(x: Box, axis: Any = None, keepdims: bool = False) -> Box:
    return _box(np.max(_un(x, "max"), axis=axis, keepdims=keepdims), x)


def min(x: Box, axis: Any = None, keepdims: bool = False) -> Box:
    return _box(np.min(_un(x, "min"), axis=axis, keepdims=keepdims), x)
