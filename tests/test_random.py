"""The value recipe: Philox known answers, key derivation, golden values, random access."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import pytest

from deferral import init
from deferral import random as drandom

KAT = Path(__file__).parent / "data" / "philox_kat.txt"


def _kat_rows() -> list[tuple[list[int], list[int], list[int]]]:
    rows = []
    for line in KAT.read_text().splitlines():
        parts = line.split()
        if not parts or parts[0] != "philox4x64":
            continue
        words = [int(w, 16) for w in parts[2:]]
        rows.append((words[0:4], words[4:6], words[6:10]))
    return rows


def test_kat_file_has_the_three_philox4x64_rows() -> None:
    assert len(_kat_rows()) == 3


@pytest.mark.parametrize("counter,key,expected", _kat_rows())
def test_philox_known_answers(counter: list[int], key: list[int], expected: list[int]) -> None:
    # raw_words(key, 4c, 4c + 4) is the Philox block of the 256-bit counter c.
    c = sum(w << (64 * i) for i, w in enumerate(counter))
    out = drandom.raw_words((key[0], key[1]), 4 * c, 4 * c + 4)
    assert [int(w) for w in out] == expected


def test_shared_reference_copy_is_identical() -> None:
    shared = Path(__file__).resolve().parents[2] / "shared" / "reference" / "philox_kat.txt"
    if not shared.exists():
        pytest.skip("../shared is not beside this checkout")
    assert shared.read_text() == KAT.read_text()


def test_random_access_matches_the_full_stream() -> None:
    key = drandom.derive_key(5, "layer.weight")
    full = drandom.raw_words(key, 0, 1000)
    for start, stop in [(0, 1), (1, 2), (3, 9), (4, 8), (997, 1000), (250, 777)]:
        assert np.array_equal(drandom.raw_words(key, start, stop), full[start:stop])
    assert drandom.raw_words(key, 10, 10).size == 0


def test_key_depends_on_seed_and_path_only() -> None:
    assert drandom.derive_key(1, "a") == drandom.derive_key(1, "a")
    assert drandom.derive_key(1, "a") != drandom.derive_key(2, "a")
    assert drandom.derive_key(1, "a") != drandom.derive_key(1, "b")
    # sha256("deferral/v1\0" "0" "\0" "0.weight"), first 16 bytes little-endian
    assert drandom.derive_key(0, "0.weight") == (16620811696721087623, 6242901658923319405)


@pytest.mark.parametrize("bad", [-1, 2**64, 1.5, "3", True, None])
def test_bad_seeds_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="seed must be an integer"):
        drandom.derive_key(bad, "w")  # type: ignore[arg-type]


# Golden values of SPEC_VERSION 1: (seed, path, shape, initializer) -> first float64 bits.
GOLDEN = [
    (0, "0.weight", (4, 3), init.XavierUniform(),
     ["0x3fa6ef2e58464270", "0x3fead1af75f7487a", "0xbf9eab646ac900c0", "0xbfcb9cabd18eb234"]),
    (42, "hidden.weight", (3, 5), init.Normal(0.02),
     ["0xbf915d325f3edab8", "0x3f81e5dcd975464d", "0x3f624caa56880364", "0x3fa4d4b600acbb91"]),
    (7, "1.weight", (2, 3), init.TruncatedNormal(0.5),
     ["0x3fe98375b2e023e7", "0xbfc3740ab68a6c4a", "0xbfeb2825e27db94b", "0x3fceaa5d934174dd"]),
    (123, "w", (2, 2), init.KaimingNormal(),
     ["0x3fe5bfbd80aae057", "0xbffeeffcb192be7e", "0xbff1fdfcb3c694a1", "0x3ff81fa35ae814bc"]),
    (2**63, "deep.0.bias", (5,), init.Uniform(0.07),
     ["0x3f9250a1c513555c", "0xbf9ae2d46cc571fa", "0x3f84e29370356c60", "0xbfa568caa58922f0"]),
]


@pytest.mark.parametrize("seed,path,shape,initializer,expected", GOLDEN)
def test_golden_values(seed: int, path: str, shape: tuple[int, ...], initializer: init.Initializer,
                       expected: list[str]) -> None:
    assert drandom.SPEC_VERSION == 1
    values = initializer.recipe(shape).values(drandom.derive_key(seed, path), shape, 0, 4)
    assert [hex(int(b)) for b in values.view(np.uint64)] == expected


def test_quantile_is_accurate_to_a_few_ulps() -> None:
    assert drandom.check_quantile_accuracy() < 2e-15


def test_own_log_matches_numpy_to_an_ulp() -> None:
    x = np.geomspace(2.0**-60, 1.0, 5001)
    rel = np.abs(drandom._log(x[:-1]) - np.log(x[:-1])) / np.abs(np.log(x[:-1]))
    assert rel.max() < 4.5e-16
    assert drandom._log(np.array([1.0]))[0] == 0.0


def test_distributions_have_the_right_moments() -> None:
    words = drandom.raw_words(drandom.derive_key(3, "moments"), 0, 400_000)
    u = drandom.uniform(words, -2.0, 2.0)
    assert u.min() >= -2.0 and u.max() < 2.0
    assert abs(u.mean()) < 0.01 and abs(u.std() - 4 / np.sqrt(12)) < 0.01
    z = drandom.normal(words, 1.0, 3.0)
    assert abs(z.mean() - 1.0) < 0.02 and abs(z.std() - 3.0) < 0.02
    t = drandom.truncated_normal(words, 0.0, 2.0)
    assert t.min() >= -4.0 and t.max() <= 4.0
    # std of a standard normal cut at +-2 is 0.8796
    assert abs(t.std() - 2.0 * 0.87962566103) < 0.01


def test_normal_matches_the_reference_quantile() -> None:
    words = drandom.raw_words(drandom.derive_key(9, "q"), 0, 50)
    p = ((words >> 12).astype(np.float64) * 2.0 + 1.0) * 2.0**-53
    ref = np.array([statistics.NormalDist().inv_cdf(float(v)) for v in p])
    assert np.allclose(drandom.normal(words, 0.0, 1.0), ref, rtol=1e-14, atol=1e-15)


def test_default_seed_round_trip() -> None:
    before = drandom.get_seed()
    try:
        drandom.seed(11)
        assert drandom.get_seed() == 11
    finally:
        drandom._default_seed = before
    with pytest.raises(ValueError):
        drandom.seed(-5)


def test_open_unit_is_exact_and_never_reaches_0_or_1() -> None:
    extremes = np.array([0, 2**64 - 1, 2**63, 4095, 4096], dtype=np.uint64)
    p = drandom._open_unit(extremes)
    assert p[0] == 2.0**-53 and p[1] == 1.0 - 2.0**-53 and 0.0 < p.min() and p.max() < 1.0
    assert p[2] == 0.5 + 2.0**-53 and p[3] == 2.0**-53 and p[4] == 3 * 2.0**-53
    assert np.all(1.0 - (1.0 - p) == p)  # 1 - p is exact too


def test_uniform_rewrite_rounds_like_the_formula() -> None:
    """k * ((high - low) * 2**-53) + low equals low + (high - low) * (k * 2**-53) bit for bit."""
    words = drandom.raw_words(drandom.derive_key(1, "u"), 0, 100_000)
    k = (words >> 11).astype(np.float64)
    for low, high in [(-0.07, 0.07), (-1.0, 1.0), (-0.0123456789, 0.0123456789), (2.5, 3.75)]:
        formula = low + (high - low) * (k * 2.0**-53)
        assert np.array_equal(drandom.uniform(words, low, high).view(np.uint64), formula.view(np.uint64))


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_threads_and_blocks_do_not_change_bits(threads: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from deferral import _fill

    recipe = init.TruncatedNormal(0.3).recipe((1000, 700))
    key = drandom.derive_key(8, "big")
    n = 700_000
    base = np.empty(n, dtype=np.float32)
    monkeypatch.setattr(_fill, "MIN_PIECE", 1 << 30)
    _fill.fill(recipe, key, (1000, 700), 0, base, "float32")
    monkeypatch.setattr(_fill, "MIN_PIECE", 1000)
    monkeypatch.setattr(_fill, "BLOCK", 777)
    _fill.set_num_threads(threads)
    try:
        out = np.empty(n - 13, dtype=np.float32)
        _fill.fill(recipe, key, (1000, 700), 13, out, "float32")
    finally:
        _fill.set_num_threads(None)
    assert np.array_equal(out.view(np.uint32), base[13:].view(np.uint32))


def test_set_num_threads_validates() -> None:
    from deferral import _fill

    with pytest.raises(ValueError, match="positive integer"):
        _fill.set_num_threads(0)
    _fill.set_num_threads(2)
    assert _fill.get_num_threads() == 2
    _fill.set_num_threads(None)
    assert _fill.get_num_threads() >= 1
