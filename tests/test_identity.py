"""Cross-framework identity: the same definition and seed give the same bits everywhere.

These tests run where the frameworks are installed (tox's ``torch``, ``tensorflow`` and
``all`` environments); elsewhere they skip with the reason.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import deferral
from deferral import init, nn, ops
from deferral._dtypes import float32_to_bfloat16_bits

FRAMEWORKS = [
    pytest.param(name, marks=pytest.mark.skipif(
        importlib.util.find_spec(module) is None, reason=f"{module} is not installed"))
    for name, module in (("torch", "torch"), ("tensorflow", "tensorflow"), ("jax", "jax"))
]

# JAX computes float64 only in its 64-bit mode (off by default).
pytestmark = pytest.mark.usefixtures("jax_float64")

INITIALIZERS = [
    init.Zeros(), init.Ones(), init.Constant(-0.75), init.Uniform(0.3), init.Normal(0.02),
    init.TruncatedNormal(0.5), init.XavierUniform(), init.XavierNormal(), init.KaimingUniform(),
    init.KaimingNormal(), init.KaimingNormal(gain=1.0, mode="fan_out"), init.Orthogonal(gain=1.5),
]


def bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.dtype(f"u{a.dtype.itemsize}"))


def weights(make: Any, backend: str, seed: int, dtype: str, x: np.ndarray) -> list[np.ndarray]:
    net = make()
    net.initialize(seed=seed, dtype=dtype, backend=backend)
    net(x)
    return net.get_weights()


def assert_same_bits(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.shape == y.shape and x.dtype == y.dtype
        assert np.array_equal(bits(x), bits(y))


@pytest.mark.parametrize("backend", FRAMEWORKS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    initializer=st.sampled_from(INITIALIZERS),
    dtype=st.sampled_from(["float32", "float64"]),
    seed=st.integers(0, 2**64 - 1),
    units=st.integers(1, 33),
    hidden=st.integers(2, 17),
    features=st.integers(1, 19),
    batch=st.integers(1, 3),
)
def test_weights_are_bit_identical(backend: str, initializer: init.Initializer, dtype: str, seed: int,
                                   units: int, hidden: int, features: int, batch: int) -> None:
    def make() -> nn.Sequential:
        return nn.Sequential([nn.Dense(hidden, activation="tanh", weight_initializer=initializer),
                              nn.Dense(units, weight_initializer=initializer)])

    x = np.random.default_rng(seed % 1000).normal(size=(batch, features)).astype("float32")
    ref = weights(make, "numpy", seed, dtype, x)
    assert_same_bits(weights(make, backend, seed, dtype, x), ref)


@pytest.mark.parametrize("backend", FRAMEWORKS)
@pytest.mark.parametrize("initializer", INITIALIZERS, ids=repr)
def test_half_precision_is_the_float32_value_rounded_once(backend: str, initializer: init.Initializer) -> None:
    def make() -> nn.Sequential:
        return nn.Sequential([nn.Dense(24, weight_initializer=initializer, bias_initializer=initializer
                                       if not isinstance(initializer, init.Orthogonal) else "ones"),
                              nn.Dense(5)])

    x = np.ones((2, 7), dtype="float32")
    ref32 = weights(make, "numpy", 11, "float32", x)
    half = weights(make, backend, 11, "float16", x)
    assert_same_bits(half, [w.astype(np.float16) for w in ref32])
    bf16 = weights(make, backend, 11, "bfloat16", x)  # to_numpy widens bfloat16 to float32 exactly
    for got, want in zip(bf16, ref32):
        assert got.dtype == np.float32
        assert np.array_equal(float32_to_bfloat16_bits(got), float32_to_bfloat16_bits(want))
        assert np.array_equal(bits(got) & 0xFFFF, np.zeros_like(bits(got)))


class Tower(nn.Block):
    """Nested custom blocks, a layer with a given input size, and a tied layer."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Dense(12, activation="relu", in_units=6)
        self.body = nn.Sequential([nn.Dense(12, activation="gelu"), nn.Dense(12, activation="sigmoid")])
        self.shared = nn.Dense(12, activation="tanh", weight_initializer="orthogonal")
        self.head = nn.Dense(3, weight_initializer=init.TruncatedNormal(0.2))

    def forward(self, x: Any) -> Any:
        h = self.stem(x)
        h = ops.add(h, self.body(h))
        h = self.shared(self.shared(h))
        return ops.log_softmax(self.head(h))


@pytest.mark.parametrize("backend", FRAMEWORKS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_nested_partly_shaped_tied_model(backend: str, dtype: str) -> None:
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    ref_net, net = Tower(), Tower()
    ref_net.initialize(seed=2024, dtype=dtype)
    net.initialize(seed=2024, dtype=dtype, backend=backend)
    # in_units was given to the stem: it is materialized by initialize() alone, on both.
    assert net.stem.weight.initialized and not net.head.weight.initialized
    y_ref = ref_net(x)
    y = deferral.load_backend(backend).to_numpy(net(x))
    assert list(net.collect_params()) == list(ref_net.collect_params())
    assert "shared.weight" in net.collect_params() and len(net.collect_params()) == 10
    assert_same_bits(net.get_weights(), ref_net.get_weights())
    # Forward outputs agree within float rounding of different kernels.
    tol = 1e-5 if dtype == "float32" else 1e-12
    assert np.allclose(y, y_ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("backend", FRAMEWORKS)
def test_compare_command_reports_a_match(backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    from deferral import cli

    assert cli.main(["compare", "--backends", "numpy", backend, "--init", "he_normal"]) == 0
    out = capsys.readouterr().out
    assert "all parameter bits match" in out and "DIFFER" not in out
