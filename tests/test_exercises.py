"""The chapter's three exercises, as behaviour: immediate init, mismatches, tying."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import deferral
from deferral import nn, ops
from tests.conftest import snapshot


# -- Exercise 1: input size given to the first layer only ------------------------------------
def test_first_layer_with_in_units_materializes_at_initialize(x20: np.ndarray) -> None:
    net = nn.Sequential([nn.Dense(256, activation="relu", in_units=20), nn.Dense(10)])
    net.initialize(seed=0)
    params = net.collect_params()
    assert params["0.weight"].state == "materialized" and params["0.weight"].shape == (256, 20)
    assert params["0.bias"].state == "materialized"
    assert params["1.weight"].state == "declared" and params["1.bias"].state == "shaped"
    first = net[0].weight.data().copy()
    net(x20)
    assert params["1.weight"].state == "materialized"
    assert np.array_equal(net[0].weight.data(), first)


def test_every_size_known_materializes_everything() -> None:
    net = nn.Sequential([nn.Dense(256, activation="relu", in_units=20), nn.Dense(10, in_units=256)])
    net.initialize(seed=0)
    assert all(p.state == "materialized" for p in net.collect_params().values())


# -- Exercise 2: mismatching sizes -----------------------------------------------------------
def test_input_larger_than_in_units(x20: np.ndarray) -> None:
    net = nn.Sequential([nn.Dense(256, activation="relu", in_units=20), nn.Dense(10)])
    net.initialize(seed=0)
    before = snapshot(net)
    x30 = np.ones((2, 30), dtype="float32")
    with pytest.raises(deferral.ShapeMismatchError) as info:
        net(x30)
    msg = str(info.value)
    assert "Dense '0'" in msg and "expected 20" in msg and "30" in msg
    assert isinstance(info.value, ValueError)
    assert snapshot(net) == before
    assert net(x20).shape == (2, 10)


def test_in_units_mismatching_the_previous_layer(x20: np.ndarray) -> None:
    net = nn.Sequential([nn.Dense(256, activation="relu"), nn.Dense(10, in_units=100)])
    net.initialize(seed=0)
    before = snapshot(net)
    with pytest.raises(deferral.ShapeMismatchError) as info:
        net(x20)
    msg = str(info.value)
    assert "Dense '1'" in msg and "expected 100" in msg and "256" in msg
    # The first layer, materialized during the failed call, went back to declared.
    assert snapshot(net) == before
    assert net.collect_params()["0.weight"].shape == (256, -1)


class _Exploding(nn.Block):
    def __init__(self, exc: BaseException) -> None:
        super().__init__()
        self.body = nn.Dense(8, activation="tanh")
        self.head = nn.Dense(2)
        self.exc = exc
        self.armed = True

    def forward(self, x: Any) -> Any:
        h = self.body(x)
        if self.armed:
            raise self.exc
        return self.head(h)


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), MemoryError("simulated OOM"), RuntimeError("boom")])
def test_any_exception_in_a_custom_forward_rolls_back(exc: BaseException, x20: np.ndarray) -> None:
    net = _Exploding(exc)
    net.initialize(seed=1)
    before = snapshot(net)
    with pytest.raises(type(exc)):
        net(x20)
    assert snapshot(net) == before
    assert net.body.weight.state == "declared"
    net.armed = False
    assert net(x20).shape == (2, 2)
    assert net.body.weight.shape == (8, 20)


@pytest.mark.parametrize(
    "bad,exc,match",
    [([[1.0] * 20] * 2, TypeError, "expected an array"),
     ("not an array", TypeError, "Received: str"),
     (np.ones(20, dtype="float32"), ValueError, "rank >= 2"),
     (np.ones((2, 0), dtype="float32"), deferral.EmptyInputError, r"feature axis \(axis 1\) is empty")],
)
def test_bad_inputs_leave_the_model_deferred(bad: Any, exc: type, match: str) -> None:
    net = nn.Sequential([nn.Dense(4), nn.Dense(2)])
    net.initialize(seed=0)
    before = snapshot(net)
    with pytest.raises(exc, match=match):
        net(bad)
    assert snapshot(net) == before
    assert net.collect_params()["0.weight"].state == "declared"


def test_calling_before_initialize_says_what_to_do(x20: np.ndarray) -> None:
    net = nn.Sequential([nn.Dense(4)])
    with pytest.raises(deferral.DeferredInitializationError, match=r"call initialize\(\)"):
        net(x20)
    assert net[0].weight.state == "declared"


# -- Exercise 3: parameter tying ------------------------------------------------------------
def test_same_layer_twice_shares_one_parameter() -> None:
    shared = nn.Dense(8, activation="relu")
    net = nn.Sequential([nn.Dense(8, activation="relu"), shared, shared, nn.Dense(1)])
    params = net.collect_params()
    assert list(params) == ["0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "3.bias"]
    net.initialize(seed=0)
    x = np.ones((3, 5), dtype="float32")
    y = net(x)
    assert net[1].weight.data() is net[2].weight.data()
    w0, b0, w1, b1, w3, b3 = net.get_weights()
    h = np.maximum(x @ w0.T + b0, 0)
    h = np.maximum(h @ w1.T + b1, 0)
    h = np.maximum(h @ w1.T + b1, 0)
    assert np.allclose(y, h @ w3.T + b3, rtol=1e-5, atol=1e-6)


def test_share_parameters_across_blocks() -> None:
    a = nn.Dense(6)
    b = nn.Dense(6).share_parameters(a.collect_params())
    assert a.weight is b.weight and a.bias is b.bias
    net = nn.Sequential([a, nn.Dense(6), b])
    assert list(net.collect_params()) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    net.initialize(seed=0)
    net(np.ones((1, 6), dtype="float32"))
    assert net[0].weight.data() is net[2].weight.data()


def test_share_parameters_of_a_nested_block() -> None:
    def block() -> nn.Sequential:
        return nn.Sequential([nn.Dense(4, activation="relu"), nn.Dense(4)])

    a, b = block(), block()
    b.share_parameters(a.collect_params())
    assert a[0].weight is b[0].weight and a[1].bias is b[1].bias


def test_materialized_layer_fed_a_different_size_raises(x20: np.ndarray) -> None:
    net = nn.Sequential([nn.Dense(4)])
    net.initialize(seed=0)
    net(x20)
    before = snapshot(net)
    with pytest.raises(deferral.ShapeMismatchError, match="expected 20 input features"):
        net(np.ones((2, 21), dtype="float32"))
    assert snapshot(net) == before


def test_varying_input_sizes_through_shared_trunk() -> None:
    """Exercise 3's answer: per-size input layers feeding one shared, tied trunk."""
    trunk = nn.Sequential([nn.Dense(16, activation="relu"), nn.Dense(3)])
    small = nn.Sequential([nn.Dense(16, activation="relu"), trunk])
    large = nn.Sequential([nn.Dense(16, activation="relu"), trunk])
    small.initialize(seed=0)
    with pytest.warns(UserWarning, match="already initialized"):
        large.initialize(seed=0)
    assert small(np.ones((2, 5), dtype="float32")).shape == (2, 3)
    assert large(np.ones((2, 50), dtype="float32")).shape == (2, 3)
    assert small[1][0].weight.data() is large[1][0].weight.data()


def test_custom_block_uses_ops_and_gets_structural_names() -> None:
    class Residual(nn.Block):
        def __init__(self) -> None:
            super().__init__()
            self.hidden = nn.Dense(5, activation="relu")
            self.out = nn.Dense(5)

        def forward(self, x: Any) -> Any:
            return ops.add(x, self.out(self.hidden(x)))

    net = nn.Sequential([nn.Dense(5), Residual()])
    assert list(net.collect_params()) == [
        "0.weight", "0.bias", "1.hidden.weight", "1.hidden.bias", "1.out.weight", "1.out.bias",
    ]
    net.initialize(seed=0)
    assert net(np.ones((2, 3), dtype="float32")).shape == (2, 5)
    assert net[1].hidden.weight.path == "1.hidden.weight"
