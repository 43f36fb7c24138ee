"""Activation layers, Flatten and the NumPy op namespace against direct formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deferral import nn, ops


@pytest.fixture
def x() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(3, 5)).astype("float32")


@pytest.mark.parametrize(
    "layer,fn",
    [(nn.ReLU(), lambda v: np.maximum(v, 0)),
     (nn.Sigmoid(), lambda v: 1 / (1 + np.exp(-v))),
     (nn.Tanh(), np.tanh),
     (nn.GELU(), lambda v: v * 0.5 * (1 + np.vectorize(math.erf)(v / math.sqrt(2)))),
     (nn.Softmax(), lambda v: np.exp(v) / np.exp(v).sum(-1, keepdims=True)),
     (nn.Activation("tanh"), np.tanh)],
)
def test_activation_layers(layer: nn.Block, fn, x: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    y = layer(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.allclose(y, fn(x.astype(np.float64)), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh", "gelu", "softmax", None, "linear"])
def test_dense_activation_strings(name: str | None, x: np.ndarray) -> None:
    layer = nn.Dense(4, activation=name, in_units=5)
    layer.initialize(seed=0)
    w, b = layer.get_weights()
    pre = x @ w.T + b
    expected = {None: pre, "linear": pre, "relu": np.maximum(pre, 0), "tanh": np.tanh(pre),
                "sigmoid": 1 / (1 + np.exp(-pre)),
                "gelu": pre * 0.5 * (1 + np.vectorize(math.erf)(pre / math.sqrt(2))),
                "softmax": np.exp(pre) / np.exp(pre).sum(-1, keepdims=True)}[name]
    assert np.allclose(layer(x), expected, rtol=1e-5, atol=1e-6)


def test_dense_on_higher_rank_input_uses_the_last_axis() -> None:
    layer = nn.Dense(4)
    layer.initialize(seed=0)
    x = np.random.default_rng(0).normal(size=(2, 3, 5)).astype("float32")
    y = layer(x)
    assert y.shape == (2, 3, 4) and layer.weight.shape == (4, 5)
    w, b = (a.astype(np.float64) for a in layer.get_weights())
    np.testing.assert_allclose(y, x.astype(np.float64) @ w.T + b, rtol=1e-5, atol=1e-6)


def test_dense_without_bias() -> None:
    layer = nn.Dense(2, use_bias=False, in_units=3)
    layer.initialize(seed=0)
    assert list(layer.collect_params()) == ["weight"]
    (w,) = layer.get_weights()
    assert np.allclose(layer(np.eye(3, dtype="float32")), w.T)


def test_flatten() -> None:
    x = np.arange(24, dtype="float32").reshape(2, 3, 4)
    assert np.array_equal(nn.Flatten()(x), x.reshape(2, 12))
    net = nn.Sequential([nn.Flatten(), nn.Dense(3)])
    net.initialize(seed=0)
    assert net(x).shape == (2, 3) and net[1].weight.shape == (3, 12)
    with pytest.raises(ValueError, match="batch axis"):
        nn.Flatten()(np.ones(()))


def test_unknown_activation_lists_known() -> None:
    with pytest.raises(ValueError, match=r"Choose one of: elu, gelu, gelu_tanh, hard_sigmoid, .*, tanh, linear"):
        nn.Activation("swishy")


def test_sigmoid_does_not_overflow() -> None:
    x = np.array([-1000.0, 0.0, 1000.0], dtype="float32")
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        assert np.array_equal(ops.sigmoid(x), np.array([0.0, 0.5, 1.0], dtype="float32"))


def test_numpy_ops_namespace(x: np.ndarray) -> None:
    y = x[:, ::-1].copy()
    assert np.array_equal(ops.add(x, y), x + y)
    assert np.array_equal(ops.subtract(x, y), x - y)
    assert np.array_equal(ops.multiply(x, y), x * y)
    assert np.array_equal(ops.divide(x, 2.0), x / 2.0)
    assert np.array_equal(ops.maximum(x, y), np.maximum(x, y))
    assert np.array_equal(ops.matmul(x, x.T), x @ x.T)
    assert np.allclose(ops.exp(x), np.exp(x)) and np.allclose(ops.log(np.abs(x)), np.log(np.abs(x)))
    assert np.allclose(ops.log_softmax(x), np.log(ops.softmax(x)), atol=1e-6)
    assert np.allclose(ops.softmax(x, axis=0).sum(axis=0), 1.0)
    assert ops.reshape(x, (5, 3)).shape == (5, 3)
    assert ops.transpose(x).shape == (5, 3)
    assert ops.transpose(np.ones((2, 3, 4)), (1, 0, 2)).shape == (3, 2, 4)
    assert ops.concat([x, y], axis=1).shape == (3, 10)
    assert np.isclose(ops.sum(x), x.sum()) and ops.sum(x, axis=1, keepdims=True).shape == (3, 1)
    assert np.isclose(ops.mean(x), x.mean()) and ops.mean(x, axis=(0, 1)).shape == ()
    assert np.allclose(ops.linear(x, np.ones((2, 5), "float32"), np.array([1.0, 2.0], "float32")),
                       x.sum(1, keepdims=True) + np.array([1.0, 2.0]))


def test_train_and_eval_modes() -> None:
    import deferral

    net = nn.Sequential([nn.Dense(3), nn.Sequential([nn.Dense(2)])])
    blocks = [net, net[0], net[1], net[1][0]]
    assert not any(b.training for b in blocks)
    assert net.train() is net and all(b.training is True for b in blocks)
    assert net[1].eval() is net[1] and net[0].training and not net[1].training and not net[1][0].training
    assert net.eval() is net and not any(b.training for b in blocks)
    assert net[1][0].train().training and not net.training and not net[1].training
    assert net.train(False) is net and not any(b.training for b in blocks)
    with pytest.raises(AttributeError, match=r"\.train\(\) or \.eval\(\)"):
        net.training = True
    assert not net.training
    assert not hasattr(deferral, "train_mode") and not hasattr(deferral, "predict_mode")
    assert not hasattr(nn, "train_mode") and not hasattr(nn, "predict_mode")
    assert not hasattr(nn.Block, "is_training") and not hasattr(net, "is_training")


def test_optional_ops_missing_from_a_backend_raise_clearly() -> None:
    import types

    from deferral import ops

    core_only = types.SimpleNamespace(**{n: (lambda *a: None) for n in ops.CORE_OPS})
    completed = ops.check_namespace("mini", core_only)
    assert ops.implements(completed, "relu") and not ops.implements(completed, "conv")
    with pytest.raises(NotImplementedError, match="backend 'mini' does not implement the op 'conv'"):
        completed.conv()
    full = deferral_numpy_ops()
    assert ops.check_namespace("numpy", full) is full


def deferral_numpy_ops():  # type: ignore[no-untyped-def]
    import deferral

    return deferral.load_backend("numpy").ops


def test_parameterless_block_runs_on_the_backend_of_its_input() -> None:
    torch = pytest.importorskip("torch")
    import deferral

    deferral.load_backend("torch")
    out = nn.ReLU()(torch.tensor([[-1.0, 2.0]]))
    assert isinstance(out, torch.Tensor) and out.tolist() == [[0.0, 2.0]]
