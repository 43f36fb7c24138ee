"""The in-place transforms of the reference path: the spec's bits, and no per-block temporaries."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

from deferral import _fill, _transforms, init
from deferral import random as drandom

# -- an independent, one-element-at-a-time reading of docs/identity.md -------------------


def _horner(c: tuple[float, ...], x: float) -> float:
    acc = c[-1] * x
    for coeff in reversed(c[1:-1]):
        acc = (acc + coeff) * x
    return acc + c[0]


def _log(x: float) -> float:
    m, e = math.frexp(x)
    if m < drandom._SQRT_HALF:
        m, e = m * 2.0, e - 1
    f = m - 1.0
    s = f / (f + 2.0)
    return e * drandom._LN2 + (s + s) * _horner(drandom._ATANH_COEFFS, s * s)


def _quantile(p: float) -> float:
    q = p - 0.5
    if abs(q) <= 0.425:
        r = 0.180625 - q * q
        return q * _horner(drandom._A, r) / _horner(drandom._B, r)
    r = math.sqrt(-_log(p if q < 0.0 else 1.0 - p))
    if r <= 5.0:
        z = _horner(drandom._C, r - 1.6) / _horner(drandom._D, r - 1.6)
    else:
        z = _horner(drandom._E, r - 5.0) / _horner(drandom._F, r - 5.0)
    return -z if q < 0.0 else z


def _spec(kind: str, w: int, a: float, b: float) -> float:
    if kind == "uniform":
        return a + (b - a) * ((w >> 11) * 2.0**-53)
    u = ((w >> 12) * 2.0 + 1.0) * 2.0**-53
    if kind == "normal":
        return a + b * _quantile(u)
    z = _quantile(drandom._PHI_M2 + drandom._PHI_MASS2 * u)
    return a + b * min(max(z, -2.0), 2.0)


def _words() -> np.ndarray:
    """Random words plus the edges: extremes, both tails, the far tails (r > 5), block seams."""
    rng = np.random.default_rng(7)
    random = drandom.raw_words(drandom.derive_key(4, "kernels"), 0, 3000)
    tiny = rng.integers(0, 1 << 20, 300, dtype=np.uint64) << np.uint64(12)  # p < 2**-32
    edges = np.array([0, 1, 4095, 4096, 2**63, 2**63 - 1, 2**64 - 1], dtype=np.uint64)
    return np.concatenate([random, tiny, ~tiny, edges])


@pytest.mark.parametrize("kind,a,b", [("uniform", -0.07, 0.07), ("uniform", 2.5, 3.75), ("normal", 0.0, 0.02),
                                      ("normal", -1.5, 3.0), ("normal", 0.0, 2.0**-1000),
                                      ("truncated_normal", 0.0, 0.5), ("truncated_normal", 1.0, 2.0)])
def test_in_place_transforms_match_the_spec_element_by_element(kind: str, a: float, b: float) -> None:
    words = _words()
    ws = _transforms.Workspace(words.size)
    fn = {"uniform": lambda w: _transforms.uniform(w, a, b, ws),
          "normal": lambda w: _transforms.normal(w, a, b, ws),
          "truncated_normal": lambda w: _transforms.truncated_normal(w, a, b, ws)}[kind]
    got = fn(words.copy())
    expected = np.array([_spec(kind, int(w), a, b) for w in words])
    assert np.array_equal(got.view(np.uint64), expected.view(np.uint64))


def test_the_words_reach_the_far_tails() -> None:
    """Some words give r > 5 (p < exp(-25)), where the E/F polynomials take over."""
    p = np.minimum(drandom._open_unit(_words()), 1.0 - drandom._open_unit(_words()))
    assert np.count_nonzero(p < math.exp(-25.0)) >= 10


def test_public_functions_leave_their_input_alone() -> None:
    words = _words()
    before = words.copy()
    for fn in (drandom.uniform, drandom.normal, drandom.truncated_normal):
        fn(words, 0.0, 1.0)
    assert np.array_equal(words, before)


def _fill_peak(n: int, kind: init.Initializer) -> int:
    """Bytes NumPy allocates at the peak of filling ``n`` float32 values (the output excluded)."""
    recipe = kind.recipe((n,))
    key = drandom.derive_key(0, "peak")
    out = np.empty(n, dtype=np.float32)
    _fill.fill(recipe, key, (n,), 0, out, "float32")  # warm-up: every thread has its workspace
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        _fill.fill(recipe, key, (n,), 0, out, "float32")
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert current - base < 64 << 10  # nothing is left behind
    return peak - base


@pytest.mark.parametrize("initializer", [init.Normal(0.02), init.TruncatedNormal(0.02), init.XavierUniform()])
def test_a_fill_allocates_no_per_block_temporaries(initializer: init.Initializer,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The peak is what one block's words need, whatever the parameter's size.

    One thread (the caller's), so that its workspace exists before the measured fill.
    """
    monkeypatch.setattr(_fill, "MIN_PIECE", 1 << 40)
    small, large = _fill_peak(1 << 20, initializer), _fill_peak(1 << 23, initializer)
    bound = 8 * _fill.BLOCK * 1.3  # a block's words, the tail's indices, a cast buffer
    assert large <= bound and large <= small + (64 << 10), (small, large)
