"""The value recipe's transforms, computed in place: words become float64 values in their buffer.

These are the operations of ``docs/identity.md`` (and of :mod:`deferral.random`'s public
functions, which call them), each one NumPy ufunc writing into a buffer that exists already:
the words' own buffer (reinterpreted as float64 once the words are no longer needed) and the
float64 scratch of a :class:`Workspace`, allocated once per thread and reused for every block.
Generating a large parameter therefore allocates nothing per block beyond what NumPy's own API
allocates: the words themselves (``Philox.random_raw`` has no ``out=``) and the index array
``numpy.flatnonzero`` makes for the tail of the normal quantile (about 15% of a block).

Three rewrites change how an element is computed but never its bits (each is exact, see
``tests/test_random.py`` and ``tests/test_fill_kernels.py``):

- the open unit value ``(2k + 1) * 2**-53`` (``k = w >> 12``) is ``(1 + k * 2**-52) - (1 - 2**-53)``,
  the first term read straight from the bits ``0x3FF << 52 | k``: the exact difference is
  representable, so the subtraction is exact;
- in the tail of the quantile, ``p if q < 0 else 1 - p`` is ``min(p, 1 - p)``, and the clip of the
  truncated normal touches only the tail (central values lie within +-1.5).

``mean + std * z`` skips adding a zero mean: ``z`` is never zero, and for ``std >= 2**-960``
neither is ``std * z``, so adding ``0.0`` would change nothing.
"""

from __future__ import annotations

import numpy as np

from . import random as _r

__all__ = ["Workspace", "log_into", "normal", "open_unit", "quantile", "truncated_normal", "uniform"]

_ONE_BITS = np.uint64(0x3FF << 52)
_UNIT_OFFSET = 1.0 - 2.0**-53
#: Below this std a product ``std * z`` could underflow to zero; a zero mean is then added.
_TINY_STD = 2.0**-960


class Workspace:
    """Float64 scratch for transforming up to ``size`` words, allocated once and reused."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.a = np.empty(size)
        self.b = np.empty(size)
        self.q = np.empty(size)
        self.r = np.empty(size)
        self.tail = np.empty((4, size))  # the compacted tail and the logarithm's temporaries
        self.mask = np.empty(size, dtype=bool)
        self.small = np.empty(size, dtype=bool)
        self.negative = np.empty(size, dtype=bool)
        self.exponent = np.empty(size, dtype=np.intc)
        self.single = np.empty(size, dtype=np.float32)  # float32 step of the float16 rounding


def _horner(coeffs: tuple[float, ...], x: np.ndarray, acc: np.ndarray) -> np.ndarray:
    """``acc = P(coeffs, x)``: ``c[-1] * x``, then ``(acc + c) * x`` down to ``c[1]``, then ``+ c[0]``."""
    np.multiply(x, coeffs[-1], out=acc)
    for c in coeffs[-2:0:-1]:
        np.add(acc, c, out=acc)
        np.multiply(acc, x, out=acc)
    return np.add(acc, coeffs[0], out=acc)


def open_unit(w: np.ndarray) -> np.ndarray:
    """``(2k + 1) * 2**-53`` for ``k = w >> 12``, written over the ``uint64`` words ``w``."""
    np.right_shift(w, 12, out=w)
    np.bitwise_or(w, _ONE_BITS, out=w)
    p = w.view(np.float64)
    return np.subtract(p, _UNIT_OFFSET, out=p)


def uniform(w: np.ndarray, low: float, high: float, ws: Workspace) -> np.ndarray:
    """``k * ((high - low) * 2**-53) + low``, ``k = w >> 11``, into ``ws`` (``w`` is overwritten).

    The int64 -> float64 conversion writes to another buffer: NumPy copies an input that the
    output of a converting ufunc overlaps.
    """
    np.right_shift(w, 11, out=w)
    v = np.multiply(w.view(np.int64), (high - low) * _r._TWO_M53, out=ws.q[:w.shape[0]])  # k < 2**53: exact
    return np.add(v, low, out=v)


def log_into(x: np.ndarray, ws: Workspace) -> np.ndarray:
    """Overwrite positive float64 ``x`` with :func:`deferral.random._log` of it."""
    n = x.shape[0]
    m, t, acc = ws.tail[1, :n], ws.tail[2, :n], ws.tail[3, :n]
    small = ws.small[:n]
    np.frexp(x, out=(m, ws.exponent[:n]))  # x = m * 2**e, m in [0.5, 1): exact
    np.less(m, _r._SQRT_HALF, out=small)
    np.multiply(m, 2.0, out=m, where=small)  # exact
    np.subtract(ws.exponent[:n], small, out=x)  # e - small as float64 (small integers: exact)
    np.subtract(m, 1.0, out=m)  # f, exact (Sterbenz)
    np.add(m, 2.0, out=t)
    np.divide(m, t, out=m)  # s = f / (f + 2)
    np.multiply(m, m, out=t)  # s2
    _horner(_r._ATANH_COEFFS, t, acc)
    np.multiply(x, _r._LN2, out=x)  # e * LN2
    np.add(m, m, out=m)
    np.multiply(m, acc, out=m)  # (s + s) * series
    return np.add(x, m, out=x)


def _ratio(num: tuple[float, ...], den: tuple[float, ...], x: np.ndarray, out: np.ndarray,
           ws: Workspace) -> np.ndarray:
    """``P(num, x) / P(den, x)`` into ``out`` (which may be ``x``)."""
    n = x.shape[0]
    top = _horner(num, x, ws.a[:n])
    return np.divide(top, _horner(den, x, ws.b[:n]), out=out)


def _tail_z(r: np.ndarray, ws: Workspace) -> np.ndarray:
    """``|Q|`` in the tails from ``r = min(p, 1 - p)``, overwriting ``r``."""
    log_into(r, ws)
    np.negative(r, out=r)
    np.sqrt(r, out=r)
    if r.max() <= 5.0:  # always for truncated normals; p < 1.4e-11 is needed for r > 5
        return _ratio(_r._C, _r._D, np.subtract(r, 1.6, out=r), r, ws)
    near = r <= 5.0
    z = np.empty_like(r)
    for where, shift, num, den in ((near, 1.6, _r._C, _r._D), (~near, 5.0, _r._E, _r._F)):
        x = r[where] - shift
        z[where] = _horner(num, x, np.empty_like(x)) / _horner(den, x, np.empty_like(x))
    r[...] = z
    return r


def quantile(p: np.ndarray, out: np.ndarray, ws: Workspace, clip: bool = False) -> np.ndarray:
    """The normal quantile of ``p`` (AS 241) into ``out`` (which may be ``p``); ``clip``: to [-2, 2].

    The central formula runs on every element and is replaced where ``|p - 0.5| > 0.425`` by
    the tail formulas, computed on the gathered tail elements only.
    """
    n = p.shape[0]
    q = np.subtract(p, 0.5, out=ws.q[:n])  # exact
    tail = np.flatnonzero(np.greater(np.absolute(q, out=ws.r[:n]), 0.425, out=ws.mask[:n]))
    count = tail.shape[0]
    if count:  # gathered before ``out`` (which may be ``p``) is written
        pt = np.take(p, tail, out=ws.tail[0, :count], mode="clip")  # "raise" would buffer
        negative = np.less(pt, 0.5, out=ws.negative[:count])  # q < 0
        rt = np.minimum(pt, np.subtract(1.0, pt, out=ws.tail[1, :count]), out=pt)  # p if q < 0 else 1 - p
    r = np.multiply(q, q, out=ws.r[:n])
    np.subtract(0.180625, r, out=r)
    top = np.multiply(q, _horner(_r._A, r, ws.a[:n]), out=ws.a[:n])
    np.divide(top, _horner(_r._B, r, ws.b[:n]), out=out)  # q * P(A, r) / P(B, r)
    if count:
        z = _tail_z(rt, ws)
        if clip:  # |central values| < 1.5: only the tail can leave [-2, 2]
            np.minimum(z, 2.0, out=z)
        np.negative(z, out=z, where=negative)
        out[tail] = z
    return out


def _scale(z: np.ndarray, mean: float, std: float) -> np.ndarray:
    """``mean + std * z`` in place."""
    np.multiply(z, std, out=z)
    if mean != 0.0 or std < _TINY_STD:
        np.add(z, mean, out=z)
    return z


def normal(w: np.ndarray, mean: float, std: float, ws: Workspace) -> np.ndarray:
    """Normal values from the words ``w``, written over them (see :func:`deferral.random.normal`)."""
    p = open_unit(w)
    return _scale(quantile(p, p, ws), mean, std)


def truncated_normal(w: np.ndarray, mean: float, std: float, ws: Workspace) -> np.ndarray:
    """Truncated normal values from ``w``, written over them (:func:`deferral.random.truncated_normal`)."""
    p = open_unit(w)
    np.multiply(p, _r._PHI_MASS2, out=p)
    np.add(p, _r._PHI_M2, out=p)
    return _scale(quantile(p, p, ws, clip=True), mean, std)
