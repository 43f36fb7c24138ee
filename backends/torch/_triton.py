"""One fused Triton kernel per chunk: Philox4x64-10 and the recipe's arithmetic in registers.

Each program of :func:`_fill_kernel` takes ``BLOCK`` consecutive Philox counters, runs the ten
rounds on them (``tl.umulhi`` gives the high word of each 64 x 64-bit product), turns each of
the four output words into its float64 value with the recipe's operations, in the order of
``docs/identity.md``, and stores the value rounded to the parameter's dtype: the words and
the float64 temporaries never leave the registers, and one pass writes the output.

The arithmetic is exact in the IEEE sense only when nothing contracts ``a * b + c`` into a
fused multiply-add; the kernel is therefore always launched with ``enable_fp_fusion=False``
(Triton then also passes ``--fmad=false`` to ``ptxas``). ``+ - * /`` on float64 lower to the
round-to-nearest PTX instructions (``add.rn.f64``, ``mul.rn.f64``, ``div.rn.f64``) and
``tl.sqrt`` on float64 to ``sqrt.rn.f64``; ``frexp`` is done on the bits (every input is a
positive normal double). Unlike the host path, which gathers the tail elements, every element
evaluates the central and both tail formulas and selects, so the bits are the same.

What is verified where: ``tests/test_fill_triton.py`` runs this kernel bit for bit against
the NumPy reference in Triton's interpreter (``TRITON_INTERPRET=1``: each operation a NumPy
operation on the CPU, so no contraction can happen there). On a GPU the same code is compiled
by Triton's NVPTX backend; the bits there rest on ``enable_fp_fusion=False`` and on the PTX
instructions above, and are checked by ``bench/cuda.py`` (it compares slices with the
reference) wherever a GPU is available. Triton ships with the CUDA builds of torch; without it
the torch-ops path of :mod:`deferral_torch._native` is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import triton
import triton.language as tl

from deferral import random as _r

if TYPE_CHECKING:
    import torch

__all__ = ["BLOCK", "KINDS", "fill"]

#: Philox counters per program (four values each).
BLOCK = 512
#: Recipe kinds and their kernel codes.
KINDS = {"uniform": 0, "normal": 1, "truncated_normal": 2}

_M0 = 0xD2E7470EE14C6C93
_M1 = 0xCA5A826395121157
_W0 = 0x9E3779B97F4A7C15
_W1 = 0xBB67AE8584CAA73B

A0, A1, A2, A3, A4, A5, A6, A7 = (tl.constexpr(c) for c in _r._A)
B0, B1, B2, B3, B4, B5, B6, B7 = (tl.constexpr(c) for c in _r._B)
C0, C1, C2, C3, C4, C5, C6, C7 = (tl.constexpr(c) for c in _r._C)
D0, D1, D2, D3, D4, D5, D6, D7 = (tl.constexpr(c) for c in _r._D)
E0, E1, E2, E3, E4, E5, E6, E7 = (tl.constexpr(c) for c in _r._E)
F0, F1, F2, F3, F4, F5, F6, F7 = (tl.constexpr(c) for c in _r._F)
L0, L1, L2, L3, L4, L5, L6, L7, L8, L9, L10, L11 = (tl.constexpr(c) for c in _r._ATANH_COEFFS)
LN2 = tl.constexpr(_r._LN2)
SQRT_HALF = tl.constexpr(_r._SQRT_HALF)
PHI_M2 = tl.constexpr(_r._PHI_M2)
PHI_MASS2 = tl.constexpr(_r._PHI_MASS2)
TWO_M53 = tl.constexpr(_r._TWO_M53)
UNIT_OFFSET = tl.constexpr(1.0 - 2.0**-53)


@triton.jit
def _horner8(x, c0, c1, c2, c3, c4, c5, c6, c7):
    """``c0 + x*(c1 + ... + x*c7)`` as ``acc = c7*x; acc = (acc + c6)*x; ...; acc + c0``."""
    acc = x * c7
    acc = (acc + c6) * x
    acc = (acc + c5) * x
    acc = (acc + c4) * x
    acc = (acc + c3) * x
    acc = (acc + c2) * x
    acc = (acc + c1) * x
    return acc + c0


@triton.jit
def _log(x):
    """The recipe's log of positive normal doubles: frexp on the bits, then the atanh series."""
    bits = x.to(tl.uint64, bitcast=True)
    e = ((bits >> 52) & 0x7FF).to(tl.int64) - 1022
    m = ((bits & 0x000FFFFFFFFFFFFF) | (0x3FE << 52)).to(tl.float64, bitcast=True)  # [0.5, 1)
    small = m < SQRT_HALF
    m = tl.where(small, m * 2.0, m)
    ef = (e - small.to(tl.int64)).to(tl.float64)
    f = m - 1.0
    s = f / (f + 2.0)
    s2 = s * s
    acc = s2 * L11
    acc = (acc + L10) * s2
    acc = (acc + L9) * s2
    acc = (acc + L8) * s2
    acc = (acc + L7) * s2
    acc = (acc + L6) * s2
    acc = (acc + L5) * s2
    acc = (acc + L4) * s2
    acc = (acc + L3) * s2
    acc = (acc + L2) * s2
    acc = (acc + L1) * s2
    series = acc + L0
    return ef * LN2 + (s + s) * series


@triton.jit
def _quantile(p):
    """AS 241: the central formula where ``|p - 0.5| <= 0.425``, else the tail formulas."""
    q = p - 0.5
    r = 0.180625 - q * q
    central = (q * _horner8(r, A0, A1, A2, A3, A4, A5, A6, A7)) / _horner8(r, B0, B1, B2, B3, B4, B5, B6, B7)
    rt = tl.where(q < 0.0, p, 1.0 - p)
    rt = tl.where(tl.abs(q) > 0.425, rt, 0.5)  # any valid argument where the tail is not used
    rt = tl.sqrt(-_log(rt))
    rn = rt - 1.6
    near = _horner8(rn, C0, C1, C2, C3, C4, C5, C6, C7) / _horner8(rn, D0, D1, D2, D3, D4, D5, D6, D7)
    rf = rt - 5.0
    far = _horner8(rf, E0, E1, E2, E3, E4, E5, E6, E7) / _horner8(rf, F0, F1, F2, F3, F4, F5, F6, F7)
    z = tl.where(rt <= 5.0, near, far)
    z = tl.where(q < 0.0, -z, z)
    return tl.where(tl.abs(q) > 0.425, z, central)


@triton.jit
def transform(w, a, b, KIND: tl.constexpr):
    """Float64 value of recipe ``KIND`` (see :data:`KINDS`) for the uint64 words ``w``."""
    if KIND == 0:
        k = (w >> 11).to(tl.float64)  # below 2**53: exact
        return k * ((b - a) * TWO_M53) + a
    p = ((w >> 12) | (0x3FF << 52)).to(tl.float64, bitcast=True) - UNIT_OFFSET  # (2k + 1) * 2**-53
    if KIND == 2:
        p = PHI_M2 + PHI_MASS2 * p
        z = tl.minimum(tl.maximum(_quantile(p), -2.0), 2.0)
    else:
        z = _quantile(p)
    return a + b * z


@triton.jit
def _store(out_ptr, index, n, v, OUT_KIND: tl.constexpr):
    """Store float64 ``v`` rounded once to float32 (and again to float16/bfloat16), or as is.

    bfloat16 goes out as its bit pattern (``out_ptr`` an int16 view), rounded on the float32
    bits to nearest-even as :func:`deferral._dtypes.float32_to_bfloat16_bits` does.
    """
    mask = (index >= 0) & (index < n)
    if OUT_KIND == 0:
        tl.store(out_ptr + index, v, mask=mask)
    elif OUT_KIND == 1:
        tl.store(out_ptr + index, v.to(tl.float32), mask=mask)
    elif OUT_KIND == 3:
        bits = v.to(tl.float32).to(tl.uint32, bitcast=True)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16  # finite values: no overflow
        tl.store(out_ptr + index, rounded.to(tl.uint16).to(tl.int16, bitcast=True), mask=mask)
    else:
        tl.store(out_ptr + index, v.to(tl.float32).to(out_ptr.dtype.element_ty, fp_downcast_rounding="rtne"), mask=mask)


@triton.jit
def _fill_kernel(out_ptr, n, skip, first, k0_bits, k1_bits, a, b,
                 KIND: tl.constexpr, OUT_KIND: tl.constexpr, BLOCK: tl.constexpr):
    """Values ``4 * first + skip ..`` of the stream into ``out_ptr[0 .. n)`` (``skip`` in 0..3)."""
    pid = tl.program_id(0)
    local = pid * BLOCK + tl.arange(0, BLOCK)  # counters relative to ``first``
    x0 = (first + local).to(tl.uint64)
    x1 = tl.zeros_like(x0)
    x2 = tl.zeros_like(x0)
    x3 = tl.zeros_like(x0)
    k0 = k0_bits.to(tl.uint64, bitcast=True)
    k1 = k1_bits.to(tl.uint64, bitcast=True)
    for _ in tl.static_range(10):
        lo0 = x0 * _M0
        hi0 = tl.umulhi(x0, _M0)
        lo1 = x2 * _M1
        hi1 = tl.umulhi(x2, _M1)
        x0, x1, x2, x3 = hi1 ^ x1 ^ k0, lo1, hi0 ^ x3 ^ k1, lo0
        k0 = k0 + _W0
        k1 = k1 + _W1
    base = local * 4 - skip
    _store(out_ptr, base, n, transform(x0, a, b, KIND), OUT_KIND)
    _store(out_ptr, base + 1, n, transform(x1, a, b, KIND), OUT_KIND)
    _store(out_ptr, base + 2, n, transform(x2, a, b, KIND), OUT_KIND)
    _store(out_ptr, base + 3, n, transform(x3, a, b, KIND), OUT_KIND)


def _signed(word: int) -> int:
    return word - (1 << 64) if word >> 63 else word


def fill(flat: torch.Tensor, kind: str, a: float, b: float, key: tuple[int, int], start: int) -> None:
    """Write values ``start .. start + flat.numel() - 1`` of recipe ``kind`` into ``flat``.

    ``flat`` is a contiguous 1-D float64, float32, float16 or bfloat16 tensor on the device
    the kernel runs on (a CUDA device; the CPU under ``TRITON_INTERPRET=1``). Counters stay
    below 2**62 (the index of an element of any tensor), so the high counter words are 0.
    """
    import torch

    n = flat.numel()
    if n == 0:
        return
    first, skip = divmod(start, 4)
    counters = (skip + n + 3) // 4
    out_kind = {torch.float64: 0, torch.float32: 1, torch.float16: 2, torch.bfloat16: 3}[flat.dtype]
    if flat.dtype == torch.bfloat16:
        flat = flat.view(torch.int16)
    grid = (triton.cdiv(counters, BLOCK),)
    _fill_kernel[grid](flat, n, skip, first, _signed(key[0]), _signed(key[1]), float(a), float(b),
                       KIND=KINDS[kind], OUT_KIND=out_kind, BLOCK=BLOCK, enable_fp_fusion=False)
