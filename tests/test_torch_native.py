"""Device-native generation in the torch backend (``deferral_torch._native``): the reference bits.

Everything is compared on integer views (bit patterns), never with a tolerance. The native code
is plain torch tensor ops, so the CPU tests here run the very code CUDA runs; the tests marked
``needs_cuda`` repeat the comparisons on a CUDA device where one exists.
"""

from __future__ import annotations

import doctest
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import deferral_torch  # noqa: E402
from deferral import _progress, init, nn  # noqa: E402
from deferral import random as drandom  # noqa: E402
from deferral._dtypes import round_to  # noqa: E402
from deferral.hookspec import MaterializeRequest  # noqa: E402
from deferral_torch import _native  # noqa: E402

KAT = Path(__file__).parent / "data" / "philox_kat.txt"
DTYPES = ("float32", "float64", "float16", "bfloat16")
MASK64 = (1 << 64) - 1
X = np.random.default_rng(7).standard_normal((4, 5))

#: Every recipe kind, through the initializers that produce them.
INITIALIZERS: dict[str, Callable[[], init.Initializer]] = {
    "Zeros": init.Zeros,
    "Constant(0.3)": lambda: init.Constant(0.3),
    "Uniform(0.3)": lambda: init.Uniform(0.3),
    "Normal(0.02)": lambda: init.Normal(0.02),
    "Normal(3.0)": lambda: init.Normal(3.0),
    "TruncatedNormal(0.5)": lambda: init.TruncatedNormal(0.5),
    "XavierUniform": init.XavierUniform,
    "KaimingNormal": init.KaimingNormal,
    "Orthogonal": init.Orthogonal,
}
STREAM_INITIALIZERS = ("Uniform(0.3)", "Normal(0.02)", "Normal(3.0)", "TruncatedNormal(0.5)")

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


# -- helpers --------------------------------------------------------------------------------
def tbits(t: Any) -> np.ndarray:
    """The values of a tensor (any float dtype, any device) as unsigned-integer bit patterns."""
    signed = {2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    host = t.detach().cpu().contiguous().view(signed).numpy()
    return host.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[t.element_size()])


def ref_bits(values: np.ndarray) -> np.ndarray:
    """Bit patterns of host reference values (bfloat16 already arrives as uint16 bits)."""
    return values.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[values.dtype.itemsize])


def request(
    shape: tuple[int, ...], initializer: init.Initializer, dtype: str, seed: int = 11,
    device: str = "cpu",
) -> MaterializeRequest:
    return MaterializeRequest(
        name="w", shape=shape, dtype=dtype, device=device, trainable=True,
        key=drandom.derive_key(seed, "w"), recipe=initializer.recipe(shape),
    )


def native_fill(req: MaterializeRequest, device: str = "cpu", **kwargs: Any) -> Any:
    values = torch.empty(req.shape, dtype=getattr(torch, req.dtype), device=device)
    _native.fill(values, req, **kwargs)
    return values


def as_tensor(words: np.ndarray, device: str = "cpu") -> Any:
    return torch.from_numpy(words.view(np.int64).copy()).to(device)


def reference_values(kind: str, words: np.ndarray, a: float, b: float) -> np.ndarray:
    return {"uniform": drandom.uniform, "normal": drandom.normal,
            "truncated_normal": drandom.truncated_normal}[kind](words, a, b)


def special_words() -> np.ndarray:
    """Words at the edges of every branch: p near 0 and 1, |q| = 0.425, r = 5, powers of two."""
    ks = [0, 1, 2, 3, (1 << 52) - 1, (1 << 52) - 2, 1 << 51, (1 << 51) - 1]
    for p in (0.075, 0.925, math.exp(-25.0), 1.0 - math.exp(-25.0), drandom._PHI_M2):
        k = int(p * 2.0**52)
        ks += list(range(max(0, k - 3), min(1 << 52, k + 4)))
    words = [k << 12 for k in ks] + [(k << 12) | 0xFFF for k in ks]
    words += [0, MASK64, 1 << 63, (1 << 63) - 1, 1 << 11, (1 << 11) - 1]
    return np.array(words, dtype=np.uint64)


def random_words(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**64, size=n, dtype=np.uint64)


def kat_rows() -> list[tuple[list[int], list[int], list[int]]]:
    rows = []
    for line in KAT.read_text().splitlines():
        parts = line.split()
        if parts and parts[0] == "philox4x64":
            words = [int(w, 16) for w in parts[2:]]
            rows.append((words[0:4], words[4:6], words[6:10]))
    return rows


def words_on(device: str) -> None:
    """Native words equal the reference words on ``device`` (used on CPU and CUDA)."""
    key = drandom.derive_key(3, "p")
    starts = [0, 1, 2, 3, 4, 5, 1001, 4 * (2**64 - 2) + 3, 4 * 2**64 - 1, 4 * (2**128 - 1) - 7,
              4 * 2**256 - 6]
    for start in starts:
        got = _native.words(key, start, 37, device)
        assert got.device.type == torch.device(device).type and got.dtype == torch.int64
        np.testing.assert_array_equal(got.cpu().numpy(), drandom.raw_words(key, start, start + 37).view(np.int64))


# -- 1. Philox ------------------------------------------------------------------------------
def test_kat_file_has_the_three_philox4x64_rows() -> None:
    assert len(kat_rows()) == 3


@pytest.mark.parametrize("counter,key,expected", kat_rows())
def test_philox_known_answers_from_tensors(counter: list[int], key: list[int], expected: list[int]) -> None:
    # Each counter word as a one-element tensor of its bit pattern.
    ctr = [torch.tensor([_native._signed(w)], dtype=torch.int64) for w in counter]
    out = _native.philox4x64(ctr, (key[0], key[1]))
    assert [int(w.item()) & MASK64 for w in out] == expected


@pytest.mark.parametrize("counter,key,expected", kat_rows())
def test_philox_known_answers_from_words(counter: list[int], key: list[int], expected: list[int]) -> None:
    # Block c of the stream is words 4c .. 4c+3: the full 256-bit counter, carries included.
    c = sum(w << (64 * i) for i, w in enumerate(counter))
    got = _native.words((key[0], key[1]), 4 * c, 4)
    assert [int(w) & MASK64 for w in got.tolist()] == expected


@pytest.mark.parametrize("counter,key,expected", kat_rows())
def test_philox_known_answers_from_python_ints(counter: list[int], key: list[int], expected: list[int]) -> None:
    # Words that no tensor reaches stay Python ints: the same rounds, on the host.
    assert list(_native.philox4x64(counter, (key[0], key[1]))) == expected


@pytest.mark.parametrize("m", [_native._M0, _native._M1, MASK64, 1, 1 << 63])
def test_mulhilo_is_the_exact_128_bit_product(m: int) -> None:
    xs = [int(v) for v in random_words(2000, m & 0xFFFF)] + [0, 1, MASK64, 1 << 63, (1 << 63) - 1, 1 << 32, (1 << 32) - 1]
    hi, lo = _native._mulhilo(torch.tensor([_native._signed(x) for x in xs], dtype=torch.int64), m)
    assert [h & MASK64 for h in hi.tolist()] == [(x * m) >> 64 for x in xs]
    assert [v & MASK64 for v in lo.tolist()] == [(x * m) & MASK64 for x in xs]


@settings(max_examples=150, deadline=None)
@given(
    key=st.tuples(st.integers(0, MASK64), st.integers(0, MASK64)),
    start=st.one_of(st.integers(0, 10_000), st.integers(0, 2**66), st.integers(0, 2**258)),
    count=st.integers(0, 300),
)
@example(key=(0, 0), start=4 * (2**64 - 1) + 1, count=11)  # the low counter word wraps mid-call
@example(key=(MASK64, MASK64), start=4 * (2**256 - 1) + 2, count=9)  # the whole counter wraps
@example(key=(1, 2), start=3, count=1)
def test_words_equal_the_reference_stream(key: tuple[int, int], start: int, count: int) -> None:
    got = _native.words(key, start, count)
    assert got.dtype == torch.int64 and tuple(got.shape) == (count,)
    np.testing.assert_array_equal(got.numpy(), drandom.raw_words(key, start, start + count).view(np.int64))


def test_words_cross_a_block_index_of_2_to_the_64() -> None:
    # Blocks 2**64 - 2 .. 2**64 + 1: the carry into counter word 1 is exact.
    key = drandom.derive_key(9, "carry")
    start = 4 * (2**64 - 2)
    got = _native.words(key, start, 16)
    np.testing.assert_array_equal(got.numpy(), drandom.raw_words(key, start, start + 16).view(np.int64))
    assert _native._blocks(2**64 - 2, 4, key, torch.device("cpu")).shape == (4, 4)


def test_words_at_offsets_within_a_block() -> None:
    words_on("cpu")


# -- 2. the transforms ----------------------------------------------------------------------
def test_sqrt_is_correctly_rounded() -> None:
    rng = np.random.default_rng(0)
    y = rng.uniform(0.5, 8.0, 100_000)
    near_midpoints = y * y + y * np.spacing(y)  # within an ulp of (y + ulp/2)**2
    p2 = 2.0 ** np.arange(-300.0, 300.0)
    x = np.concatenate([
        rng.uniform(0.5, 40.0, 200_000), np.exp2(rng.uniform(-400, 400, 100_000)),
        near_midpoints, np.nextafter(near_midpoints, 0.0), np.nextafter(near_midpoints, np.inf),
        p2, np.nextafter(p2, 0.0), np.nextafter(p2, np.inf), np.nextafter(2 * p2, 0.0),
    ])
    got = _native._sqrt(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(got.view(np.uint64), np.sqrt(x).view(np.uint64))


@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_sqrt_correction_moves_a_one_ulp_error_back(offset: int) -> None:
    # Where torch.sqrt is exact (CUDA), the correction must leave it alone; where it is one ulp
    # off either way (MKL on the CPU), it must move it back, powers of two included.
    rng = np.random.default_rng(1)
    p2 = 2.0 ** np.arange(-20.0, 20.0)
    x = np.concatenate([rng.uniform(0.5, 40.0, 50_000), p2, p2 * p2, np.nextafter(p2, 0.0), np.nextafter(p2, 1e300)])
    exact = np.sqrt(x)
    start = (exact.view(np.int64) + offset).view(np.float64)
    got = _native._round_sqrt(torch.from_numpy(x), torch.from_numpy(start)).numpy()
    np.testing.assert_array_equal(got.view(np.uint64), exact.view(np.uint64))


def test_log_matches_the_reference() -> None:
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.uniform(0.0, 1.0, 100_000), np.exp2(rng.uniform(-60, 0, 100_000)),
                        [2.0**-53, 0.5, _native._SQRT_HALF, np.nextafter(_native._SQRT_HALF, 0.0), 1.0 - 2.0**-53]])
    np.testing.assert_array_equal(_native._log(torch.from_numpy(x)).numpy().view(np.uint64),
                                  drandom._log(x).view(np.uint64))


@pytest.mark.parametrize("compact", [True, False])
@pytest.mark.parametrize("kind,a,b", [
    ("uniform", -0.3, 0.7), ("uniform", 0.0, 1.0), ("normal", 0.0, 1.0), ("normal", 0.25, 3.0),
    ("truncated_normal", 0.0, 1.0), ("truncated_normal", -1.0, 0.02),
])
def test_transforms_match_the_reference(kind: str, a: float, b: float, compact: bool) -> None:
    words = np.concatenate([random_words(200_000, 5), special_words()])
    got = _native.transform(kind, a, b, as_tensor(words), compact)
    assert got.dtype == torch.float64
    np.testing.assert_array_equal(tbits(got), ref_bits(reference_values(kind, words, a, b)))


def test_quantile_strategies_agree_without_a_tail() -> None:
    # A chunk whose values are all central: the compact strategy has nothing to gather.
    p = torch.tensor([0.3, 0.5, 0.7], dtype=torch.float64)
    expected = drandom._normal_quantile(p.numpy())
    for compact in (True, False):
        np.testing.assert_array_equal(_native._normal_quantile(p, compact).numpy(), expected)


def test_values_rejects_other_kinds() -> None:
    with pytest.raises(ValueError, match="orthogonal"):
        _native.transform("orthogonal", 1.0, 0.0, torch.zeros(3, dtype=torch.int64))


# -- 3. rounding to the parameter dtype ------------------------------------------------------
def rounding_on(device: str, dtype: str) -> None:
    """``_round_into`` on ``device`` equals ``round_to`` on values that tell roundings apart."""
    rng = np.random.default_rng(3)
    # float32 values whose low bits sit exactly on the bfloat16 / float16 halfway points, and
    # float64 values halfway between float32 neighbours, plus float16 subnormals.
    f32 = rng.uniform(-4.0, 4.0, 20_000).astype(np.float32)
    ties_bf16 = ((f32.view(np.uint32) & ~np.uint32(0xFFFF)) | np.uint32(0x8000)).view(np.float32)
    ties_f16 = ((f32.view(np.uint32) & ~np.uint32(0x1FFF)) | np.uint32(0x1000)).view(np.float32)
    f64 = rng.uniform(-4.0, 4.0, 20_000)
    ties_f32 = ((f64.view(np.uint64) & ~np.uint64(0x1FFFFFFF)) | np.uint64(0x10000000)).view(np.float64)
    tiny = rng.uniform(-1e-5, 1e-5, 20_000)
    # Just above a halfway point: float32 rounds them onto it, so rounding twice (the spec)
    # and rounding once (a direct float64 -> float16 conversion) differ.
    above = np.concatenate([ties_bf16, ties_f16]).astype(np.float64) * (1.0 + 2.0**-40)
    values = np.concatenate([ties_bf16.astype(np.float64), ties_f16.astype(np.float64), ties_f32, tiny, above, [0.0, -0.0]])
    if dtype == "float16":
        assert (values.astype(np.float16) != round_to(values, dtype)).any()  # the data tell them apart
    out = torch.empty(values.size, dtype=getattr(torch, dtype), device=device)
    _native._round_into(out, torch.from_numpy(values).to(device))
    np.testing.assert_array_equal(tbits(out), ref_bits(round_to(values, dtype)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_rounding_matches_round_to_on_ties_and_subnormals(dtype: str) -> None:
    rounding_on("cpu", dtype)


# -- 4. filling a parameter -----------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(list(INITIALIZERS)),
    dtype=st.sampled_from(DTYPES),
    shape=st.lists(st.integers(1, 9), min_size=0, max_size=3).map(tuple),
    seed=st.integers(0, MASK64),
    chunk=st.integers(1, 40),
    compact=st.booleans(),
)
def test_fill_gives_the_reference_bits(
    name: str, dtype: str, shape: tuple[int, ...], seed: int, chunk: int, compact: bool
) -> None:
    assume(name != "Orthogonal" or len(shape) >= 2)  # a matrix or more
    req = request(shape, INITIALIZERS[name](), dtype, seed)
    got = native_fill(req, chunk=chunk, compact=compact)
    np.testing.assert_array_equal(tbits(got).reshape(-1), ref_bits(req.host_values()))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", STREAM_INITIALIZERS)
def test_fill_with_the_default_chunks(name: str, dtype: str) -> None:
    # Two CPU chunks and a partial third: the default chunking of a real parameter.
    shape = (3 * _native.CPU_CHUNK_ELEMENTS // 1000 + 1, 1000)
    req = request(shape, INITIALIZERS[name](), dtype, seed=2**63 + 1)
    np.testing.assert_array_equal(tbits(native_fill(req)).reshape(-1), ref_bits(req.host_values()))


@pytest.mark.parametrize("chunk", [1, 2, 3, 4, 5, 7, 8, 64, 1000])
def test_every_chunk_size_covers_each_element_once(monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    calls: list[tuple[int, int]] = []
    original = _native.words

    def recording(key: tuple[int, int], start: int, count: int, device: Any = "cpu") -> Any:
        calls.append((start, count))
        return original(key, start, count, device)

    monkeypatch.setattr(_native, "words", recording)
    req = request((10, 13), init.Normal(1.0), "float32")
    got = native_fill(req, chunk=chunk)
    assert calls == [(s, min(chunk, 130 - s)) for s in range(0, 130, chunk)]
    np.testing.assert_array_equal(tbits(got).reshape(-1), ref_bits(req.host_values()))


def test_fill_reports_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    counts: list[int] = []
    monkeypatch.setattr(_progress, "advance_elements", lambda dtype: counts.append)
    native_fill(request((50, 7), init.Uniform(1.0), "float16"), chunk=64)
    assert counts == [64, 64, 64, 64, 64, 30]


def test_fill_of_a_parameter_that_requires_grad() -> None:
    req = request((4, 6), init.Normal(1.0), "float32")
    values = torch.nn.Parameter(torch.empty(4, 6))
    _native.fill(values, req)
    assert values.requires_grad
    np.testing.assert_array_equal(tbits(values).reshape(-1), ref_bits(req.host_values()))


@pytest.mark.parametrize("tensor", [
    lambda: torch.empty(4, 6, dtype=torch.float64),  # wrong dtype
    lambda: torch.empty(6, 4),  # wrong shape
    lambda: torch.empty(6, 4).t(),  # not contiguous
])
def test_fill_rejects_a_tensor_that_does_not_match(tensor: Callable[[], Any]) -> None:
    with pytest.raises(TypeError, match="contiguous float32 tensor of shape"):
        _native.fill(tensor(), request((4, 6), init.Normal(1.0), "float32"))


def test_fill_rejects_an_unknown_kind() -> None:
    req = MaterializeRequest(name="w", shape=(2,), dtype="float32", device="cpu", trainable=False,
                             key=(1, 2), recipe=init.Recipe("cauchy", 0.0, 1.0))
    with pytest.raises(ValueError, match="cauchy"):
        _native.fill(torch.empty(2), req)


def test_doc_examples() -> None:
    for module in (_native, deferral_torch):
        assert doctest.testmod(module).failed == 0


# -- 5. the materialize dispatch ------------------------------------------------------------
def mlp(initializer: init.Initializer | None = None) -> nn.Sequential:
    return nn.Sequential([nn.Dense(7, activation="relu", weight_initializer=initializer), nn.Dense(3)])


def weights(name: str, seed: int, dtype: str, backend: str, **kwargs: Any) -> list[Any]:
    net = mlp(INITIALIZERS[name]())  # both weights use the initializer; biases are zeros
    net.initialize(init=INITIALIZERS[name](), seed=seed, dtype=dtype, backend=backend, **kwargs)
    net(X)
    return [p.data() for p in net.collect_params().values()]


def record_native_fills(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    kinds: list[str] = []
    original = _native.fill

    def recording(values: Any, req: MaterializeRequest, *args: Any, **kwargs: Any) -> None:
        kinds.append(req.recipe.kind)
        original(values, req, *args, **kwargs)

    monkeypatch.setattr(_native, "fill", recording)
    return kinds


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(INITIALIZERS))
def test_forced_native_materialize_matches_the_reference(
    monkeypatch: pytest.MonkeyPatch, name: str, dtype: str
) -> None:
    # NumPy has no bfloat16: the torch backend's reference path (native off) is the reference.
    reference_backend = "torch" if dtype == "bfloat16" else "numpy"
    monkeypatch.setenv(deferral_torch.NATIVE_ENV, "0")
    expected = weights(name, 2**63 + 5, dtype, reference_backend)
    monkeypatch.setenv(deferral_torch.NATIVE_ENV, "1")
    kinds = record_native_fills(monkeypatch)
    got = weights(name, 2**63 + 5, dtype, "torch")
    weight_kind = INITIALIZERS[name]().recipe((7, 5)).kind
    assert kinds == ([weight_kind] * 2 if weight_kind in _native.NATIVE_KINDS else [])  # biases: Zeros
    for g, e in zip(got, expected):
        assert isinstance(g, torch.nn.Parameter) and g.requires_grad and g.dtype == getattr(torch, dtype)
        e_bits = tbits(e) if isinstance(e, torch.Tensor) else ref_bits(e)
        np.testing.assert_array_equal(tbits(g), e_bits)


def test_cpu_stays_on_the_reference_path_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(deferral_torch.NATIVE_ENV, raising=False)
    kinds = record_native_fills(monkeypatch)
    weights("Normal(0.02)", 1, "float32", "torch")
    assert kinds == []


@pytest.mark.parametrize("mode,device,kind,expected", [
    ("", "cpu", "normal", False), ("auto", "cpu", "uniform", False), ("", "cuda", "normal", True),
    (" AUTO ", "cuda", "truncated_normal", True), ("1", "cpu", "normal", True), ("1", "cuda", "uniform", True),
    ("0", "cuda", "normal", False), ("1", "cpu", "constant", False), ("1", "cuda", "orthogonal", False),
])
def test_native_generation_switch(
    monkeypatch: pytest.MonkeyPatch, mode: str, device: str, kind: str, expected: bool
) -> None:
    monkeypatch.setenv(deferral_torch.NATIVE_ENV, mode)
    assert deferral_torch.native_generation(device, kind) is expected


def test_native_generation_switch_rejects_other_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(deferral_torch.NATIVE_ENV, "yes")
    with pytest.raises(ValueError, match="DEFERRAL_TORCH_NATIVE must be 0"):
        deferral_torch.native_generation("cuda", "normal")


def test_forced_native_materialize_of_a_large_parameter(monkeypatch: pytest.MonkeyPatch) -> None:
    # Several default-size chunks through the hook itself, against the NumPy reference.
    monkeypatch.setenv(deferral_torch.NATIVE_ENV, "1")
    req = request((5, _native.CPU_CHUNK_ELEMENTS // 2 + 3), init.TruncatedNormal(0.1), "float32", seed=4)
    param = deferral_torch.deferral_materialize(request=req)
    assert isinstance(param, torch.nn.Parameter) and param.requires_grad
    np.testing.assert_array_equal(tbits(param).reshape(-1), ref_bits(req.host_values()))


# -- 6. CUDA (skipped without a device) -----------------------------------------------------
@needs_cuda
def test_cuda_philox_known_answers() -> None:
    for counter, key, expected in kat_rows():
        ctr = [torch.tensor([_native._signed(w)], dtype=torch.int64, device="cuda") for w in counter]
        out = _native.philox4x64(ctr, (key[0], key[1]))
        assert all(w.device.type == "cuda" for w in out)
        assert [int(w.item()) & MASK64 for w in out] == expected


@needs_cuda
def test_cuda_words_equal_the_reference_stream() -> None:
    words_on("cuda")
    key = drandom.derive_key(8, "big")
    got = _native.words(key, 12_345, 3_000_001, "cuda")
    np.testing.assert_array_equal(got.cpu().numpy(), drandom.raw_words(key, 12_345, 3_012_346).view(np.int64))


@needs_cuda
def test_cuda_sqrt_and_log_match_the_reference() -> None:
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.uniform(0.5, 40.0, 500_000), np.exp2(rng.uniform(-400, 400, 100_000))])
    got = _native._sqrt(torch.from_numpy(x).cuda()).cpu().numpy()
    np.testing.assert_array_equal(got.view(np.uint64), np.sqrt(x).view(np.uint64))
    u = rng.uniform(0.0, 1.0, 500_000)
    got = _native._log(torch.from_numpy(u).cuda()).cpu().numpy()
    np.testing.assert_array_equal(got.view(np.uint64), drandom._log(u).view(np.uint64))


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_rounding_matches_round_to(dtype: str) -> None:
    # A CUDA double -> half conversion may round once; the float32 step must make it twice.
    rounding_on("cuda", dtype)


@needs_cuda
@pytest.mark.parametrize("compact", [True, False])
@pytest.mark.parametrize("kind,a,b", [("uniform", -0.3, 0.7), ("normal", 0.25, 3.0), ("truncated_normal", -1.0, 0.02)])
def test_cuda_transforms_match_the_reference(kind: str, a: float, b: float, compact: bool) -> None:
    words = np.concatenate([random_words(1_000_000, 6), special_words()])
    got = _native.transform(kind, a, b, as_tensor(words, "cuda"), compact)
    assert got.device.type == "cuda"
    np.testing.assert_array_equal(tbits(got), ref_bits(reference_values(kind, words, a, b)))


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(INITIALIZERS))
def test_cuda_fill_gives_the_reference_bits(name: str, dtype: str) -> None:
    shapes = [((33, 5), 7), ((3, 1000), None)] + ([] if name == "Orthogonal" else [((1,), None), ((), None)])
    for shape, chunk in shapes:
        req = request(shape, INITIALIZERS[name](), dtype, seed=21, device="cuda:0")
        got = native_fill(req, "cuda:0", chunk=chunk)
        assert got.device == torch.device("cuda", 0)
        np.testing.assert_array_equal(tbits(got).reshape(-1), ref_bits(req.host_values()))


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", STREAM_INITIALIZERS)
def test_cuda_fill_across_default_chunks(name: str, dtype: str) -> None:
    # More than two default chunks, the last one partial.
    n = 2 * _native.CHUNK_ELEMENTS + 12_347
    req = request((n,), INITIALIZERS[name](), dtype, seed=5, device="cuda:0")
    got = native_fill(req, "cuda:0")
    np.testing.assert_array_equal(tbits(got), ref_bits(req.host_values()))


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(INITIALIZERS))
def test_cuda_materialize_is_native_by_default_and_matches(
    monkeypatch: pytest.MonkeyPatch, name: str, dtype: str
) -> None:
    monkeypatch.delenv(deferral_torch.NATIVE_ENV, raising=False)
    expected = weights(name, 21, dtype, "torch")  # CPU: the reference path
    kinds = record_native_fills(monkeypatch)
    got = weights(name, 21, dtype, "torch", device="cuda")
    weight_kind = INITIALIZERS[name]().recipe((7, 5)).kind
    assert kinds == ([weight_kind] * 2 if weight_kind in _native.NATIVE_KINDS else [])
    for g, e in zip(got, expected):
        assert g.device.type == "cuda" and isinstance(g, torch.nn.Parameter)
        np.testing.assert_array_equal(tbits(g), tbits(e))


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_cuda_fill_on_a_second_device() -> None:
    req = request((100, 33), init.Normal(1.0), "float32", device="cuda:1")
    got = native_fill(req, "cuda:1", chunk=1000)
    assert got.device == torch.device("cuda", 1)
    np.testing.assert_array_equal(tbits(got).reshape(-1), ref_bits(req.host_values()))
