"""Normalization, embedding and dropout layers: values, identity across backends, modes, errors.

NumPy values are checked against straightforward loops and formulas in float64. Torch and
TensorFlow parts skip where the framework is not installed. Tolerances: float32 outputs
within rtol 1e-5 / atol 1e-6 of NumPy's, float64 within rtol 1e-10 / atol 1e-12;
parameters (running statistics before training included) are compared bit for bit.
"""

from __future__ import annotations

import importlib.util
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import deferral
from deferral import init, nn
from deferral.parameter import DEFAULT_INIT
from tests.conftest import snapshot

HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_TF = importlib.util.find_spec("tensorflow") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
needs_tf = pytest.mark.skipif(not HAS_TF, reason="tensorflow is not installed")

FRAMEWORKS = [
    pytest.param("torch", marks=needs_torch),
    pytest.param("tensorflow", marks=needs_tf),
]
ALL_BACKENDS = [pytest.param("numpy"), *FRAMEWORKS]
TOL = {"float32": {"rtol": 1e-5, "atol": 1e-6}, "float64": {"rtol": 1e-10, "atol": 1e-12}}
EPS = 1e-5


def bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.dtype(f"u{a.dtype.itemsize}"))


def host(net: nn.Block, value: Any) -> np.ndarray:
    backend = next(iter(net.collect_params().values())).backend or "numpy"
    return np.asarray(deferral.load_backend(backend).to_numpy(value))


def normal(shape: tuple[int, ...], seed: int = 0, dtype: str = "float64", scale: float = 1.0,
           shift: float = 0.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale + shift).astype(dtype)


def set_values(net: nn.Block, **values: np.ndarray) -> None:
    for name, value in values.items():
        net.collect_params()[name].set_data(value)


# -- NumPy values against explicit formulas ---------------------------------------------------
def bn_reference(x: np.ndarray, mean: np.ndarray, var: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                 axis: int = 1) -> np.ndarray:
    """Per-channel loop: (x - mean) / sqrt(var + eps) * gamma + beta."""
    out = np.empty_like(x, dtype=np.float64)
    for c in range(x.shape[axis]):
        sl = (slice(None),) * (axis % x.ndim) + (c,)
        out[sl] = (x[sl] - mean[c]) / np.sqrt(var[c] + EPS) * gamma[c] + beta[c]
    return out


def batch_stats(x: np.ndarray, axis: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per channel: mean, biased variance and unbiased variance of every value of the channel."""
    chans = np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1).astype(np.float64)
    n = chans.shape[1]
    mean = np.array([sum(row) / n for row in chans])
    biased = np.array([sum((v - m) ** 2 for v in row) / n for row, m in zip(chans, mean)])
    return mean, biased, biased * n / (n - 1)


def make_bn(channels: int, axis: int = 1, momentum: float = 0.9) -> tuple[nn.BatchNorm, dict[str, np.ndarray]]:
    bn = nn.BatchNorm(axis=axis, momentum=momentum, in_channels=channels)
    bn.initialize(seed=0, dtype="float64")
    values = {
        "gamma": normal((channels,), 1, shift=1.0),
        "beta": normal((channels,), 2),
        "running_mean": normal((channels,), 3),
        "running_var": normal((channels,), 4) ** 2 + 0.5,
    }
    set_values(bn, **values)
    return bn, values


@pytest.mark.parametrize(("shape", "axis"), [((4, 3), 1), ((2, 3, 5), 1), ((2, 3, 4, 5), 1), ((2, 4, 3), -1)])
def test_batchnorm_inference_uses_running_statistics(shape: tuple[int, ...], axis: int) -> None:
    x = normal(shape, 5, scale=2.0, shift=0.3)
    bn, v = make_bn(shape[axis], axis)
    y = bn(x)
    np.testing.assert_allclose(y, bn_reference(x, v["running_mean"], v["running_var"], v["gamma"], v["beta"], axis),
                               rtol=1e-12, atol=1e-12)
    # inference changes no statistic
    np.testing.assert_array_equal(bn.running_mean.data(), v["running_mean"])
    np.testing.assert_array_equal(bn.running_var.data(), v["running_var"])


@pytest.mark.parametrize(("shape", "axis"), [((6, 3), 1), ((2, 3, 5), 1), ((2, 3, 4, 2), 1), ((3, 4, 2), -1)])
def test_batchnorm_training_batch_statistics_and_running_update(shape: tuple[int, ...], axis: int) -> None:
    m = 0.8
    bn, v = make_bn(shape[axis], axis, momentum=m)
    rm, rv = v["running_mean"].copy(), v["running_var"].copy()
    bn.train()
    for step in (1, 2):
        x = normal(shape, 10 + step, scale=1.5 * step, shift=step)
        y = bn(x)
        mean, biased, unbiased = batch_stats(x, axis)
        np.testing.assert_allclose(y, bn_reference(x, mean, biased, v["gamma"], v["beta"], axis), rtol=1e-10, atol=1e-12)
        rm = m * rm + (1 - m) * mean
        rv = m * rv + (1 - m) * unbiased
        np.testing.assert_allclose(bn.running_mean.data(), rm, rtol=1e-12, atol=1e-14, err_msg=f"step {step}")
        np.testing.assert_allclose(bn.running_var.data(), rv, rtol=1e-12, atol=1e-14, err_msg=f"step {step}")
    bn.eval()
    x = normal(shape, 99)
    np.testing.assert_allclose(bn(x), bn_reference(x, rm, rv, v["gamma"], v["beta"], axis), rtol=1e-10, atol=1e-12)


def test_batchnorm_train_then_eval_switches_statistics() -> None:
    bn, v = make_bn(3)
    x = normal((4, 3), 7)
    mean, biased, _ = batch_stats(x)
    assert bn.train() is bn and bn.training
    np.testing.assert_allclose(bn(x), bn_reference(x, mean, biased, v["gamma"], v["beta"]), rtol=1e-10, atol=1e-12)
    assert not np.array_equal(bn.running_mean.data(), v["running_mean"])
    rm, rv = bn.running_mean.data().copy(), bn.running_var.data().copy()
    assert bn.eval() is bn and not bn.training
    np.testing.assert_allclose(bn(x), bn_reference(x, rm, rv, v["gamma"], v["beta"]), rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(bn.running_mean.data(), rm)
    np.testing.assert_array_equal(bn.running_var.data(), rv)
    bn.train()
    np.testing.assert_allclose(bn(x), bn_reference(x, mean, biased, v["gamma"], v["beta"]), rtol=1e-10, atol=1e-12)
    assert not np.array_equal(bn.running_mean.data(), rm)


def test_batchnorm_without_center_and_scale() -> None:
    bn = nn.BatchNorm(center=False, scale=False)
    bn.initialize(seed=0, dtype="float64")
    x = normal((5, 2, 3), 1)
    y = bn.train()(x)
    assert list(bn.collect_params()) == ["running_mean", "running_var"]
    mean, biased, _ = batch_stats(x)
    np.testing.assert_allclose(y, bn_reference(x, mean, biased, np.ones(2), np.zeros(2)), rtol=1e-10, atol=1e-12)


def test_layernorm_matches_formula() -> None:
    ln = nn.LayerNorm(gamma_initializer="normal", beta_initializer="normal")
    ln.initialize(seed=3, dtype="float64")
    x = normal((2, 3, 6), 4, scale=3.0, shift=1.0)
    y = ln(x)
    gamma, beta = ln.gamma.data(), ln.beta.data()
    assert ln.gamma.shape == (6,)
    for i in range(2):
        for j in range(3):
            row = x[i, j]
            mean = sum(row) / 6
            var = sum((r - mean) ** 2 for r in row) / 6
            np.testing.assert_allclose(y[i, j], (row - mean) / np.sqrt(var + EPS) * gamma + beta, rtol=1e-10)


def test_layernorm_on_another_axis() -> None:
    ln = nn.LayerNorm(axis=1, center=False)
    ln.initialize(seed=0, dtype="float64")
    x = normal((2, 4, 3), 4)
    y = ln(x)
    assert ln.gamma.shape == (4,) and ln.beta is None
    for i in range(2):
        for k in range(3):
            col = x[i, :, k]
            expected = (col - col.mean()) / np.sqrt(col.var() + EPS) * ln.gamma.data()
            np.testing.assert_allclose(y[i, :, k], expected, rtol=1e-10)


def groupnorm_reference(x: np.ndarray, groups: int, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Reshape each sample to (groups, -1), normalize each row, reshape back, scale per channel."""
    n, c = x.shape[:2]
    out = np.empty_like(x, dtype=np.float64)
    for i in range(n):
        rows = x[i].reshape(groups, -1)
        normed = np.stack([(r - r.mean()) / np.sqrt(r.var() + EPS) for r in rows]).reshape(x.shape[1:])
        for ch in range(c):
            out[i, ch] = normed[ch] * gamma[ch] + beta[ch]
    return out


@pytest.mark.parametrize(("shape", "groups"), [((2, 6, 4, 3), 3), ((3, 4), 2), ((2, 4, 5), 4), ((2, 6, 3), 1)])
def test_groupnorm_matches_manual_reshape(shape: tuple[int, ...], groups: int) -> None:
    gn = nn.GroupNorm(groups, gamma_initializer="normal", beta_initializer="normal")
    gn.initialize(seed=1, dtype="float64")
    x = normal(shape, 2, scale=2.0, shift=-1.0)
    y = gn(x)
    assert gn.gamma.shape == (shape[1],) and gn.in_channels == shape[1]
    np.testing.assert_allclose(y, groupnorm_reference(x, groups, gn.gamma.data(), gn.beta.data()), rtol=1e-10, atol=1e-12)


def test_embedding_lookup() -> None:
    emb = nn.Embedding(7, 3)
    emb.initialize(seed=0)
    assert emb.weight.state == "materialized" and emb.weight.shape == (7, 3)
    idx = np.array([[0, 6, 2], [2, 2, 5]])
    y = emb(idx)
    weight = emb.weight.data()
    assert y.shape == (2, 3, 3) and y.dtype == np.float32
    for i in range(2):
        for j in range(3):
            assert np.array_equal(bits(y[i, j]), bits(weight[idx[i, j]]))
    assert np.array_equal(emb(np.array(4, dtype=np.int32)), weight[4])
    assert emb(np.zeros((0,), dtype=np.int64)).shape == (0, 3)


def test_embedding_initializer_choice() -> None:
    default = nn.Embedding(5, 4)
    default.initialize(seed=0)
    assert default.weight.init == DEFAULT_INIT
    given = nn.Embedding(5, 4)
    given.initialize(init=init.Normal(1.0), seed=0)
    assert given.weight.init == init.Normal(1.0)
    own = nn.Embedding(5, 4, weight_initializer="ones")
    own.initialize(init=init.Normal(1.0), seed=0)
    assert np.array_equal(own.weight.data(), np.ones((5, 4), dtype=np.float32))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_layers_keep_the_model_dtype(dtype: str) -> None:
    net = nn.Sequential([nn.BatchNorm(), nn.GroupNorm(2), nn.LayerNorm(), nn.Dropout(0.5)])
    net.initialize(seed=0, dtype=dtype)
    x = normal((3, 4, 5), 0, "float32")
    assert net(x).dtype == dtype
    assert net.train()(x).dtype == dtype
    assert all(w.dtype == dtype for w in net.get_weights())


# -- parameters, counts, deferral --------------------------------------------------------------
def test_batchnorm_parameters_counts_and_trainable_flags() -> None:
    bn = nn.BatchNorm(in_channels=64)
    bn.initialize(seed=0)
    params = bn.collect_params()
    assert list(params) == ["gamma", "beta", "running_mean", "running_var"]
    assert all(p.state == "materialized" and p.shape == (64,) for p in params.values())
    assert sum(p.size for p in params.values()) == 4 * 64
    assert sum(p.size for p in params.values() if p.trainable) == 2 * 64
    assert [p.trainable for p in params.values()] == [True, True, False, False]
    assert len(bn.get_weights()) == 4
    assert len(bn.parameters()) == 2 and len(bn.parameters(trainable_only=False)) == 4
    np.testing.assert_array_equal(bn.running_mean.data(), np.zeros(64, np.float32))
    np.testing.assert_array_equal(bn.running_var.data(), np.ones(64, np.float32))
    np.testing.assert_array_equal(bn.gamma.data(), np.ones(64, np.float32))
    np.testing.assert_array_equal(bn.beta.data(), np.zeros(64, np.float32))


def test_initializers_of_the_statistics_are_configurable() -> None:
    bn = nn.BatchNorm(in_channels=2, running_mean_initializer=init.Constant(0.5),
                      running_variance_initializer=init.Constant(2.0), gamma_initializer="zeros",
                      beta_initializer="ones")
    bn.initialize(seed=0)
    assert [w.tolist() for w in bn.get_weights()] == [[0.0, 0.0], [1.0, 1.0], [0.5, 0.5], [2.0, 2.0]]


def test_channels_are_deferred_until_the_first_call() -> None:
    net = nn.Sequential([nn.Dense(6), nn.BatchNorm(), nn.LayerNorm(), nn.GroupNorm(3)])
    net.initialize(seed=0)
    for name, p in net.collect_params().items():
        if not name.startswith("0."):
            assert p.shape == (-1,) and p.state == "declared", name
    assert net[1].in_channels is None
    assert repr(net[1]) == "BatchNorm(-1, axis=1, momentum=0.9, epsilon=1e-05)"
    net(normal((4, 5), 0, "float32"))
    assert all(p.state == "materialized" for p in net.collect_params().values())
    assert net[1].running_var.shape == (6,) and net[2].gamma.shape == (6,) and net[3].beta.shape == (6,)
    assert net[1].in_channels == 6
    assert repr(net[3]) == "GroupNorm(6, num_groups=3, epsilon=1e-05)"


def test_known_channels_materialize_at_initialize() -> None:
    net = nn.Sequential([nn.BatchNorm(in_channels=3), nn.LayerNorm(in_channels=5),
                         nn.GroupNorm(3, in_channels=3), nn.Embedding(4, 2)])
    net.initialize(seed=0)
    assert all(p.state == "materialized" for p in net.collect_params().values())


def test_shape_inference_without_allocation() -> None:
    net = nn.Sequential([nn.Embedding(10, 8), nn.LayerNorm(), nn.Dropout(0.1)])
    assert net.infer_shape((None, 7), dtype="int64") == (None, 7, 8)
    conv_like = nn.Sequential([nn.BatchNorm(), nn.GroupNorm(2)])
    assert conv_like.train().infer_shape((None, 4, 5)) == (None, 4, 5)
    assert [p.state for p in conv_like.collect_params().values()] == ["shaped"] * 6
    conv_like.initialize(seed=0)
    assert all(p.state == "materialized" for p in conv_like.collect_params().values())


def test_running_statistics_are_saved_and_pickled(tmp_path: Path) -> None:
    bn = nn.BatchNorm()
    bn.initialize(seed=0)
    bn.train()(normal((8, 3, 2), 0, "float32", shift=2.0))
    trained = bn.get_weights()
    path = tmp_path / "bn.safetensors"
    bn.save_parameters(path)
    fresh = nn.BatchNorm()
    fresh.load_parameters(path)
    for a, b in zip(fresh.get_weights(), trained):
        assert np.array_equal(bits(a), bits(b))
    copy = pickle.loads(pickle.dumps(bn))
    for a, b in zip(copy.get_weights(), trained):
        assert np.array_equal(bits(a), bits(b))


# -- dropout -----------------------------------------------------------------------------------
def backend_array(backend: str, x: np.ndarray) -> Any:
    return deferral.load_backend(backend).to_native(x, None, deferral.load_backend(backend).info.default_device)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("rate", [0.5, 0.25, 0.9])
def test_dropout_modes(backend: str, rate: float) -> None:
    x = np.random.default_rng(0).uniform(1.0, 2.0, (400, 250)).astype(np.float32)
    native = backend_array(backend, x)
    drop = nn.Dropout(rate)
    be = deferral.load_backend(backend)
    with deferral.use_backend(backend):
        same = be.to_numpy(drop(native))
        drop.train()
        out = be.to_numpy(drop(native))
        other = be.to_numpy(drop(native))
    assert np.array_equal(bits(same), bits(x))
    zero = out == 0
    assert abs(zero.mean() - rate) < 0.01, zero.mean()
    np.testing.assert_allclose(out[~zero], x[~zero] * np.float32(1 / (1 - rate)), rtol=1e-6)
    assert not np.array_equal(out == 0, other == 0), "two calls drew the same mask"


def test_numpy_dropout_masks_can_be_seeded() -> None:
    from deferral_numpy._ops_norm import seed_dropout

    drop = nn.Dropout(0.5)
    x = np.ones((50, 50), np.float32)
    drop.train()
    seed_dropout(3)
    a = drop(x)
    seed_dropout(3)
    b = drop(x)
    seed_dropout(None)
    assert np.array_equal(a, b)


def test_dropout_rate_zero_and_repr() -> None:
    drop = nn.Dropout(0)
    x = normal((3, 4), 0, "float32")
    assert drop.train()(x) is x
    assert repr(nn.Dropout(0.25)) == "Dropout(rate=0.25)"


# -- argument validation and errors ----------------------------------------------------------
@pytest.mark.parametrize(("make", "message"), [
    (lambda: nn.Dropout(1.0), r"Dropout: expected a number in \[0, 1\) for rate. Received: rate=1.0"),
    (lambda: nn.Dropout(-0.1), r"rate=-0.1"),
    (lambda: nn.Dropout(True), r"rate=True"),
    (lambda: nn.Dropout(float("nan")), r"rate=nan"),
    (lambda: nn.BatchNorm(momentum=1.5), r"BatchNorm: expected a number in \[0, 1\] for momentum"),
    (lambda: nn.BatchNorm(epsilon=0.0), r"BatchNorm: expected a number in \(0, inf\) for epsilon"),
    (lambda: nn.BatchNorm(in_channels=-3), r"expected a positive integer for in_channels. Received: in_channels=-3"),
    (lambda: nn.BatchNorm(axis=1.0), r"expected an integer for axis"),
    (lambda: nn.LayerNorm(epsilon=-1), r"LayerNorm: .*epsilon=-1"),
    (lambda: nn.GroupNorm(0), r"GroupNorm: expected a positive integer for num_groups. Received: num_groups=0"),
    (lambda: nn.GroupNorm(4, in_channels=6), r"in_channels must be divisible by num_groups. Received: in_channels=6, num_groups=4"),
    (lambda: nn.Embedding(0, 3), r"Embedding: expected a positive integer for input_dim. Received: input_dim=0"),
    (lambda: nn.Embedding(3, 2.5), r"output_dim=2.5"),
])
def test_bad_arguments(make: Callable[[], nn.Block], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_groupnorm_channels_not_divisible_rolls_back() -> None:
    net = nn.Sequential([nn.Dense(5), nn.BatchNorm(), nn.GroupNorm(2)])
    net.initialize(seed=0)
    before = snapshot(net)
    with pytest.raises(ValueError, match=r"GroupNorm '2'.*divisible by num_groups=2.*5 channels"):
        net(normal((3, 4), 0, "float32"))
    assert snapshot(net) == before
    ok = nn.Sequential([nn.Dense(6), nn.BatchNorm(), nn.GroupNorm(2)])
    ok.initialize(seed=0)
    assert ok(normal((3, 4), 0, "float32")).shape == (3, 6)


def test_channel_mismatch_after_materialization() -> None:
    bn = nn.BatchNorm()
    bn.initialize(seed=0)
    bn(normal((2, 3, 4), 0, "float32"))
    before = snapshot(bn)
    with pytest.raises(deferral.ShapeMismatchError, match=r"expected 3 channels on axis 1.*\(2, 5, 4\) with 5"):
        bn(normal((2, 5, 4), 0, "float32"))
    with pytest.raises(ValueError, match=r"rank >= 2"):
        bn(normal((3,), 0, "float32"))
    assert snapshot(bn) == before
    ln = nn.LayerNorm(in_channels=4)
    ln.initialize(seed=0)
    with pytest.raises(deferral.ShapeMismatchError, match=r"LayerNorm: expected 4 channels"):
        ln(normal((2, 5), 0, "float32"))


def test_batchnorm_training_needs_more_than_one_value_per_channel() -> None:
    bn = nn.BatchNorm()
    bn.initialize(seed=0)
    before = snapshot(bn)
    bn.train()
    with pytest.raises(ValueError, match=r"more than 1 value per channel"):
        bn(normal((1, 3), 0, "float32"))
    assert snapshot(bn) == before
    assert bn.eval()(normal((1, 3), 0, "float32")).shape == (1, 3)  # inference is fine
    before = snapshot(bn)
    bn.train()
    with pytest.raises(ValueError, match=r"more than 1 value per channel"):
        bn(normal((1, 3), 0, "float32"))
    assert snapshot(bn) == before


def test_embedding_index_errors_leave_the_model_unchanged() -> None:
    net = nn.Sequential([nn.Embedding(5, 3), nn.Dense(2)])
    net.initialize(seed=0)
    before = snapshot(net)
    with pytest.raises(TypeError, match=r"Embedding '0': expected integer indices. Received an input of dtype float32"):
        net(np.array([[1.0, 2.0]], dtype=np.float32))
    with pytest.raises(TypeError, match=r"dtype bool"):
        net(np.array([[True]]))
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 5\).*index 5"):
        net(np.array([[1, 5]]))
    with pytest.raises(ValueError, match=r"index -1"):
        net(np.array([[-1, 2]]))
    assert snapshot(net) == before
    assert net(np.array([[1, 4]])).shape == (1, 2, 2)


# -- identity across backends ---------------------------------------------------------------------
LAYERS: dict[str, tuple[Callable[[], nn.Block], tuple[int, ...]]] = {
    "batchnorm": (lambda: nn.BatchNorm(gamma_initializer="normal", beta_initializer="uniform",
                                       running_mean_initializer="uniform",
                                       running_variance_initializer=init.Constant(1.5)), (4, 3, 5)),
    "batchnorm-4d": (lambda: nn.BatchNorm(momentum=0.5), (2, 3, 4, 4)),
    "batchnorm-last": (lambda: nn.BatchNorm(axis=-1), (3, 4, 6)),
    "layernorm": (lambda: nn.LayerNorm(gamma_initializer="normal", beta_initializer="normal"), (3, 7)),
    "groupnorm": (lambda: nn.GroupNorm(2, gamma_initializer="normal", beta_initializer="normal"), (2, 4, 3, 3)),
    "mixed": (lambda: nn.Sequential([nn.Dense(8), nn.BatchNorm(), nn.LayerNorm(), nn.GroupNorm(4)]), (5, 3)),
}


def run(make: Callable[[], nn.Block], backend: str, dtype: str, x: np.ndarray, seed: int = 11
        ) -> tuple[nn.Block, np.ndarray]:
    """The model initialized on ``backend`` and its first (inference) output as a host array."""
    net = make()
    net.initialize(seed=seed, backend=backend, dtype=dtype)
    return net, host(net, net(x))


@pytest.mark.parametrize("backend", FRAMEWORKS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layer", list(LAYERS))
def test_parameters_bit_identical_and_outputs_agree(backend: str, dtype: str, layer: str) -> None:
    make, shape = LAYERS[layer]
    x = normal(shape, 1, "float32", scale=2.0, shift=0.5)
    ref, want = run(make, "numpy", dtype, x)
    net, got = run(make, backend, dtype, x)
    names = list(net.collect_params())
    assert names == list(ref.collect_params())
    for name, a, b in zip(names, net.get_weights(), ref.get_weights()):
        assert a.dtype == b.dtype == dtype and np.array_equal(bits(a), bits(b)), name
    np.testing.assert_allclose(got, want, **TOL[dtype])
    for step in (1, 2):
        xs = x * np.float32(step) + np.float32(step)
        net.train()
        ref.train()
        got, want = host(net, net(xs)), ref(xs)
        np.testing.assert_allclose(got, want, **TOL[dtype], err_msg=f"training step {step}")
        for name, a, b in zip(names, net.get_weights(), ref.get_weights()):
            np.testing.assert_allclose(a, b, **TOL[dtype], err_msg=f"{name} after step {step}")


@pytest.mark.parametrize("backend", FRAMEWORKS)
@pytest.mark.parametrize("index_dtype", ["int64", "int32"])
def test_embedding_identical_across_backends(backend: str, index_dtype: str) -> None:
    idx = np.random.default_rng(0).integers(0, 9, (4, 5)).astype(index_dtype)
    ref, want = run(lambda: nn.Embedding(9, 6), "numpy", "float32", idx)
    net, got = run(lambda: nn.Embedding(9, 6), backend, "float32", idx)
    assert np.array_equal(bits(net.get_weights()[0]), bits(ref.get_weights()[0]))
    assert got.shape == (4, 5, 6) and np.array_equal(bits(got), bits(want))
    native = backend_array(backend, idx)  # the backend's own integer arrays are accepted too
    assert np.array_equal(bits(host(net, net(native))), bits(want))


@pytest.mark.parametrize("backend", FRAMEWORKS)
def test_native_index_errors_are_deferral_errors(backend: str) -> None:
    """The backends' own index arrays: the same InputDtypeError and InvalidIndexError as NumPy's
    (formerly torch's IndexError and TensorFlow's InvalidArgumentError); uint8 indices work."""
    emb = nn.Embedding(5, 2)
    emb.initialize(seed=0, backend=backend)
    with pytest.raises(deferral.InputDtypeError, match=r"Embedding: expected integer indices.*dtype float32"):
        emb(backend_array(backend, np.zeros(3, dtype="float32")))
    with pytest.raises(deferral.InvalidIndexError, match=r"Embedding: indices must lie in \[0, 5\).*index 5"):
        emb(backend_array(backend, np.array([5])))
    with pytest.raises(IndexError, match="index -1"):
        emb(backend_array(backend, np.array([-1])))
    assert host(emb, emb(np.array([4], dtype=np.uint8))).shape == (1, 2)


# -- training steps under the frameworks' own machinery ------------------------------------------
@needs_torch
def test_torch_training_step_matches_torch_batchnorm_and_numpy() -> None:
    """Output and gradients agree with torch's own F.batch_norm(training=True); the running
    statistics agree with torch's (momentum 0.1 = Gluon's 0.9, unbiased variance) and NumPy's."""
    import torch
    import torch.nn.functional as F

    x1, x2 = normal((4, 3, 5), 1, scale=2.0, shift=1.0), normal((4, 3, 5), 2, scale=0.5, shift=-1.0)
    net = nn.BatchNorm(gamma_initializer="normal", beta_initializer="normal")
    net.initialize(seed=5, backend="torch", dtype="float64")
    ref = nn.BatchNorm(gamma_initializer="normal", beta_initializer="normal")
    ref.initialize(seed=5, dtype="float64")
    net(x1)
    ref(x1)
    gamma0 = net.gamma.data().detach().clone()
    rm, rv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    assert len(net.parameters()) == 2 and not net.running_mean.data().requires_grad
    weights = torch.tensor(normal((4, 3, 5), 3))
    net.train()
    ref.train()
    for x in (x1, x2):
        xt = torch.tensor(x, requires_grad=True)
        opt.zero_grad()
        y = net(xt)
        (y * weights).sum().backward()
        # torch's own batch norm with the same (current) gamma and beta
        xr = torch.tensor(x, requires_grad=True)
        g = net.gamma.data().detach().clone().requires_grad_(True)
        b = net.beta.data().detach().clone().requires_grad_(True)
        yr = F.batch_norm(xr, rm, rv, g, b, training=True, momentum=0.1, eps=EPS)
        (yr * weights).sum().backward()
        torch.testing.assert_close(y, yr, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(xt.grad, xr.grad, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(net.gamma.data().grad, g.grad, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(net.beta.data().grad, b.grad, rtol=1e-10, atol=1e-12)
        opt.step()
        ref(x)
        torch.testing.assert_close(net.running_mean.data().detach(), rm, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(net.running_var.data().detach(), rv, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(net.running_mean.data().detach().numpy(), ref.running_mean.data(), rtol=1e-10)
        np.testing.assert_allclose(net.running_var.data().detach().numpy(), ref.running_var.data(), rtol=1e-10)
    assert not torch.equal(net.gamma.data().detach(), gamma0), "the optimizer updated gamma"


@needs_tf
@pytest.mark.parametrize("signature", [False, True], ids=["traced-shapes", "unknown-batch"])
def test_tensorflow_training_step_in_tf_function(signature: bool) -> None:
    """Inside tf.function (with a known batch size, or an input_signature leaving it unknown),
    a training step gives gradients for gamma and beta and updates the running statistics as
    NumPy does."""
    import tensorflow as tf

    x1, x2 = normal((6, 3, 4), 1, "float32", 2.0, 1.0), normal((6, 3, 4), 2, "float32", 0.5, -1.0)
    net = nn.BatchNorm(momentum=0.7)
    net.initialize(seed=5, backend="tensorflow")
    ref = nn.BatchNorm(momentum=0.7)
    ref.initialize(seed=5)
    weights = tf.constant(normal((6, 3, 4), 3, "float32"))
    kwargs = {"input_signature": [tf.TensorSpec([None, 3, 4], tf.float32)]} if signature else {}

    def step(x: tf.Tensor) -> tuple[tf.Tensor, list[tf.Tensor]]:
        with tf.GradientTape() as tape:
            y = net(x)
            loss = tf.reduce_sum(y * weights)
        return y, tape.gradient(loss, net.parameters())

    net.train()
    ref.train()
    compiled = tf.function(step, **kwargs)
    for x in (x1, x2):
        y, grads = compiled(tf.constant(x))
        want = ref(x)
        np.testing.assert_allclose(y.numpy(), want, rtol=1e-5, atol=1e-5)
        assert len(grads) == 2 and all(g is not None for g in grads)
        np.testing.assert_allclose(net.running_mean.data().numpy(), ref.running_mean.data(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(net.running_var.data().numpy(), ref.running_var.data(), rtol=1e-5, atol=1e-6)
    assert len(net.parameters()) == 2 and not net.running_var.data().trainable
