"""``deferral.functional``: a model as a pure function of its parameter values (core, NumPy).

The JAX backend's tests (tests/test_backend_jax.py) run the same mechanism under ``jax.jit``,
``grad`` and ``vmap``; these prove what it does without any framework.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import deferral
from deferral import DeferralError, FunctionalUseError, ShapeMismatchError, nn


def cnn() -> nn.Sequential:
    return nn.Sequential([nn.Conv2D(4, 3, padding=1), nn.BatchNorm(), nn.Activation("relu"),
                          nn.Flatten(), nn.Dense(3)])


def built(seed: int = 0) -> tuple[nn.Sequential, np.ndarray]:
    x = np.random.default_rng(seed).normal(size=(5, 2, 6, 6)).astype("float32")
    net = cnn()
    net.initialize(seed=seed, backend="numpy")
    net(x)
    return net, x


def host(net: nn.Block) -> dict[str, np.ndarray]:
    return {k: np.array(p.data()) for k, p in net.collect_params().items()}


def test_params_are_the_values_by_path_and_apply_reproduces_the_model() -> None:
    net, x = built()
    apply, params = deferral.functional(net)
    assert list(params) == list(net.collect_params())
    assert all(params[k] is p.data() for k, p in net.collect_params().items())  # NumPy: the arrays
    np.testing.assert_array_equal(apply(params, x), net(x))


def test_apply_uses_the_values_given_and_changes_nothing() -> None:
    net, x = built()
    other, _ = built(seed=7)
    before = host(net)
    apply, _ = deferral.functional(net)
    got = apply(host(other), x)
    np.testing.assert_allclose(got, other(x), rtol=1e-6, atol=1e-6)
    assert not np.allclose(got, net(x))
    for k, v in host(net).items():
        np.testing.assert_array_equal(v, before[k])


def test_training_returns_the_running_statistics_and_leaves_the_model_as_it_was() -> None:
    net, x = built()
    twin, _ = built()
    apply, params = deferral.functional(net)
    before = host(net)
    out, state = apply(params, x, training=True)
    assert sorted(state) == ["1.running_mean", "1.running_var"]
    assert not net.training and not net[1].training  # the call's mode was the call's only
    twin.train()
    np.testing.assert_allclose(out, twin(x), rtol=1e-6, atol=1e-6)  # the stateful training step
    for k in state:
        np.testing.assert_allclose(state[k], np.array(twin.collect_params()[k].data()), rtol=1e-6)
    for k, v in host(net).items():
        np.testing.assert_array_equal(v, before[k])
    # The merged state feeds the next step, as the stateful model's own storage would.
    _, state2 = apply({**params, **state}, x, training=True)
    twin(x)
    np.testing.assert_allclose(state2["1.running_var"], np.array(twin[1].running_var.data()), rtol=1e-6)


def test_the_mode_is_the_calls_inside_and_the_blocks_outside() -> None:
    seen: list[bool] = []

    class Probe(nn.Block):
        def forward(self, x: np.ndarray) -> np.ndarray:
            seen.append(self.training)
            return x

    net = nn.Sequential([nn.Dense(2, in_units=3), Probe()])
    net.initialize(seed=0, backend="numpy")
    apply, params = deferral.functional(net)
    x = np.ones((1, 3), "float32")
    apply(params, x, training=True)
    apply(params, x)
    net(x)
    assert seen == [True, False, False]
    net.train()
    apply(params, x)
    assert seen[-1] is False and net.training


@pytest.mark.parametrize("change", ["missing", "unknown", "shape", "not a dict"])
def test_params_that_do_not_fit_are_refused_naming_the_path(change: str) -> None:
    net, x = built()
    apply, params = deferral.functional(net)
    bad: object = dict(params)
    if change == "missing":
        del bad["4.bias"]  # type: ignore[attr-defined]
        match, error = "Missing: 4.bias", FunctionalUseError
    elif change == "unknown":
        bad["4.gain"] = np.ones(3)  # type: ignore[index]
        match, error = "unknown: 4.gain", FunctionalUseError
    elif change == "shape":
        bad["0.weight"] = np.ones((4, 2, 3, 2), "float32")  # type: ignore[index]
        match, error = r"'0.weight' has shape \(4, 2, 3, 3\)", ShapeMismatchError
    else:
        bad, match, error = list(params.values()), "Received: list", FunctionalUseError
    with pytest.raises(error, match=match) as info:
        apply(bad, x)
    assert isinstance(info.value, DeferralError) and isinstance(info.value, ValueError)


def test_one_array_for_two_updated_parameters_is_refused() -> None:
    net, x = built()
    apply, params = deferral.functional(net)
    same = np.ones(4, "float32")
    with pytest.raises(FunctionalUseError, match=r"1\.running_mean, 1\.running_var"):
        apply({**params, "1.running_mean": same, "1.running_var": same}, x, training=True)


def test_a_deferred_model_is_refused_with_the_fix() -> None:
    net = cnn()
    net.initialize(seed=0, backend="numpy")
    with pytest.raises(deferral.DeferredInitializationError, match=r"Run one forward pass"):
        deferral.functional(net)


def test_concurrent_calls_each_see_their_own_values() -> None:
    net, x = built()
    apply, params = deferral.functional(net)
    variants = [{k: v * (1 + i / 10) for k, v in params.items()} for i in range(4)]
    want = [apply(v, x) for v in variants]
    stateful = net(x)
    errors: list[BaseException] = []
    barrier = threading.Barrier(5)

    def worker(i: int) -> None:
        try:
            barrier.wait()
            for _ in range(20):
                if i == 4:
                    np.testing.assert_array_equal(net(x), stateful)
                else:
                    np.testing.assert_array_equal(apply(variants[i], x), want[i])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
