"""The seed chapter's program, in both tabs' styles, behaves as the chapter describes."""

from __future__ import annotations

import numpy as np
import pytest

import deferral
from deferral import nn


def get_net() -> nn.Sequential:
    net = nn.Sequential()
    net.add(nn.Dense(256, activation="relu"))
    net.add(nn.Dense(10))
    return net


def test_mxnet_tab(x20: np.ndarray) -> None:
    net = get_net()
    params = net.collect_params()
    assert {k: p.shape for k, p in params.items()} == {
        "0.weight": (256, -1), "0.bias": (256,), "1.weight": (10, -1), "1.bias": (10,),
    }
    text = repr(params)
    assert "0.weight" in text and "(256, -1)" in text and "declared" in text
    with pytest.raises(deferral.DeferredInitializationError, match="initialize"):
        net[0].weight.data()

    net.initialize()
    # initialize() records the intent; nothing is materialized.
    assert [p.state for p in net.collect_params().values()] == ["declared", "shaped", "declared", "shaped"]
    assert not any(p.initialized for p in net.collect_params().values())
    with pytest.raises(deferral.DeferredInitializationError, match="forward pass"):
        net[0].weight.data()

    y = net(x20)
    assert y.shape == (2, 10)
    assert net[0].weight.data().shape == (256, 20)
    assert net[1].weight.data().shape == (10, 256)
    assert all(p.state == "materialized" for p in net.collect_params().values())
    # The output is the model's computation on the materialized values.
    w0, b0, w1, b1 = net.get_weights()
    expected = np.maximum(x20 @ w0.T + b0, 0) @ w1.T + b1
    assert np.allclose(y, expected, rtol=1e-5, atol=1e-6)
    assert np.all(b0 == 0) and np.all(b1 == 0)


def test_tensorflow_tab(x20: np.ndarray) -> None:
    net = nn.Sequential([nn.Dense(256, activation="relu"), nn.Dense(10)])
    with pytest.raises(deferral.DeferredInitializationError):
        net.get_weights()
    net.initialize()
    with pytest.raises(deferral.DeferredInitializationError):
        net.get_weights()
    net(x20)
    assert [w.shape for w in net.get_weights()] == [(256, 20), (256,), (10, 256), (10,)]
    assert all(isinstance(w, np.ndarray) for w in net.get_weights())


def test_get_weights_are_copies(x20: np.ndarray) -> None:
    net = get_net()
    net.initialize(seed=0)
    net(x20)
    w = net.get_weights()[0]
    w[...] = 0
    assert not np.all(net.get_weights()[0] == 0)


def test_default_weight_initializer_is_xavier_uniform(x20: np.ndarray) -> None:
    net = get_net()
    net.initialize(seed=3)
    net(x20)
    assert net[0].weight.init == deferral.init.XavierUniform()
    assert net[0].bias.init == deferral.init.Zeros()
    w = net.get_weights()[0]
    bound = np.sqrt(6 / (20 + 256))
    assert np.abs(w).max() < bound and np.abs(w).max() > 0.9 * bound


def test_repr_shows_the_structure() -> None:
    net = get_net()
    assert repr(net) == "Sequential(\n  (0): Dense(-1 -> 256, relu)\n  (1): Dense(-1 -> 10, linear)\n)"
