"""bfloat16 rounding: nearest-even exactly as PyTorch and TensorFlow for every float32 bit pattern,
NaN kept (quiet), infinities kept."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from deferral._dtypes import float32_to_bfloat16_bits

HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_ML_DTYPES = importlib.util.find_spec("ml_dtypes") is not None  # TensorFlow's NumPy bfloat16


def independent(bits: np.ndarray) -> np.ndarray:
    """The nearest bfloat16 of non-NaN patterns, by comparing distances in float64 (ties to the
    even pattern; past the largest finite value the next step is 2**128, i.e. infinity)."""
    magnitude = bits & np.uint32(0x7FFFFFFF)
    low = magnitude & np.uint32(0xFFFF0000)
    high = low + np.uint32(0x10000)
    with np.errstate(invalid="ignore"):
        x = magnitude.view(np.float32).astype(np.float64)
        low_value = low.view(np.float32).astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # signaling NaN patterns warn when widened
        high_value = np.where(high == 0x7F800000, 2.0**128, high.view(np.float32).astype(np.float64))
    with np.errstate(invalid="ignore"):  # inf - inf: infinities are exact, chosen below
        below, above = x - low_value, high_value - x
    even_low = ((low >> np.uint32(16)) & np.uint32(1)) == 0
    choose_low = (magnitude == low) | (below < above) | ((below == above) & even_low)
    out = np.where(choose_low, low, high) >> np.uint32(16)
    return (out | ((bits >> np.uint32(16)) & np.uint32(0x8000))).astype(np.uint16)


def check(bits: np.ndarray) -> None:
    ours = float32_to_bfloat16_bits(bits.view(np.float32))
    nan = (bits & np.uint32(0x7FFFFFFF)) > 0x7F800000
    assert np.array_equal(ours[~nan], independent(bits[~nan]))
    assert np.all((ours[nan] & 0x7FC0) == 0x7FC0)  # a quiet NaN
    assert np.array_equal(ours[nan] >> 15, (bits[nan] >> 31).astype(np.uint16))  # with its sign
    if HAS_TORCH:
        import torch

        theirs = torch.from_numpy(bits.view(np.float32)).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
        assert np.array_equal(ours[~nan], theirs[~nan])
        assert np.all((theirs[nan] & 0x7F80) == 0x7F80) and np.all(theirs[nan] & 0x7F)  # NaN there too
    if HAS_ML_DTYPES:
        import ml_dtypes

        with np.errstate(invalid="ignore"):
            theirs = bits.view(np.float32).astype(ml_dtypes.bfloat16).view(np.uint16)
        assert np.array_equal(ours[~nan], theirs[~nan])
        assert np.array_equal(ours[nan], theirs[nan])  # TensorFlow's NaN: 0x7FC0 with the sign


def test_special_values() -> None:
    values = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 3.3895314e38, 3.4e38, 1.0, 1.00390625],
                      dtype=np.float32)
    assert [hex(b) for b in float32_to_bfloat16_bits(values)] == [
        "0x7fc0", "0xffc0", "0x7f80", "0xff80", "0x0", "0x8000", "0x7f7f", "0x7f80", "0x3f80", "0x3f80"]
    payloads = np.array([0x7F800001, 0x7FBFFFFF, 0x7FFFFFFF, 0xFF800001, 0xFFFFFFFF], dtype=np.uint32)
    assert [hex(b) for b in float32_to_bfloat16_bits(payloads.view(np.float32))] == [
        "0x7fc0", "0x7fc0", "0x7fc0", "0xffc0", "0xffc0"]


def test_2_to_the_24_sampled_bit_patterns() -> None:
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2**32, size=2**24, dtype=np.uint64).astype(np.uint32)
    # Every rounding boundary near 1.0, the overflow threshold and the NaN edges, exactly.
    edges = np.array([0x3F807FFF, 0x3F808000, 0x3F808001, 0x3F818000, 0x7F7F7FFF, 0x7F7F8000,
                      0x7F7FFFFF, 0x7F800000, 0x7F800001, 0x00008000, 0x00018000, 0x80008000], dtype=np.uint32)
    check(np.concatenate([bits, edges]))


@pytest.mark.slow
def test_every_float32_bit_pattern() -> None:
    step = 2**24
    for start in range(0, 2**32, step):
        check(np.arange(start, start + step, dtype=np.uint64).astype(np.uint32))


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
def test_set_data_of_nan_payloads_into_a_bfloat16_parameter_keeps_nan() -> None:
    import torch

    from deferral import nn

    layer = nn.Dense(4, in_units=2)
    layer.initialize(backend="torch", dtype="bfloat16", seed=0)
    payloads = np.array([[0x7F800001, 0xFFC00001], [0x7FFFFFFF, 0x7F800000], [0xFF800000, 0x3F800000],
                         [0x7FA00000, 0xFFFFFFFF]], dtype=np.uint32).view(np.float32)
    layer.weight.set_data(payloads)
    stored = layer.weight.data().detach()
    assert stored.dtype == torch.bfloat16
    expected_nan = np.isnan(payloads)
    assert np.array_equal(torch.isnan(stored).numpy(), expected_nan)
    finite = stored.float().numpy()[~expected_nan]
    assert finite.tolist() == [np.inf, -np.inf, 1.0]
