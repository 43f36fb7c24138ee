"""initialize(): intent, seeds, groups, re-initialization, dtypes, devices, errors."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

import deferral
from deferral import init, nn
from tests.conftest import snapshot


def mlp() -> nn.Sequential:
    return nn.Sequential([nn.Dense(16, activation="relu"), nn.Dense(4)])


def run(net: nn.Block, features: int = 6) -> list[np.ndarray]:
    net(np.ones((2, features), dtype="float32"))
    return net.get_weights()


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(x.dtype == y.dtype and x.tobytes() == y.tobytes() for x, y in zip(a, b))


def test_same_seed_same_bits_different_seed_different_bits() -> None:
    a, b, c = mlp(), mlp(), mlp()
    assert a.initialize(seed=1) == 1
    b.initialize(seed=1)
    c.initialize(seed=2)
    wa, wb, wc = run(a), run(b), run(c)
    assert same(wa, wb)
    assert not np.array_equal(wa[0], wc[0])


def test_values_depend_on_path_not_position_of_other_layers() -> None:
    a = nn.Sequential([nn.Dense(16, activation="relu"), nn.Dense(4)])
    b = nn.Sequential([nn.Dense(16, activation="relu"), nn.Dense(4), nn.Dense(3)])
    a.initialize(seed=9)
    b.initialize(seed=9)
    wa, wb = run(a), run(b)
    assert same(wa, wb[:4])

    class Named(nn.Block):
        def __init__(self, extra: bool) -> None:
            super().__init__()
            if extra:
                self.inserted = nn.Dense(16)
            self.body = nn.Dense(16, activation="relu")
            self.head = nn.Dense(4)

        def forward(self, x):  # type: ignore[no-untyped-def]
            return self.head(self.body(x))

    p, q = Named(False), Named(True)
    p.initialize(seed=4)
    q.initialize(seed=4)
    wp = run(p)
    q(np.ones((2, 6), dtype="float32"))
    params = q.collect_params()
    assert params["body.weight"].data().tobytes() == wp[0].tobytes()
    assert params["head.weight"].data().tobytes() == wp[2].tobytes()


def test_default_seed_and_explicit_override() -> None:
    deferral.seed(77)
    a, b, c = mlp(), mlp(), mlp()
    assert a.initialize() == 77
    b.initialize(seed=77)
    c.initialize(seed=78)
    assert same(run(a), run(b))
    assert not same(run(a), run(c))


def test_fresh_seed_is_recorded_and_repeats_the_run() -> None:
    a = mlp()
    used = a.initialize()
    assert isinstance(used, int) and all(p.seed == used for p in a.collect_params().values())
    b = mlp()
    b.initialize(seed=a[0].weight.seed)
    assert same(run(a), run(b))


def test_reinitialize_warns_and_changes_nothing() -> None:
    net = mlp()
    net.initialize(seed=1)
    before = run(net)
    with pytest.warns(UserWarning, match=re.escape("force_reinit=True")):
        net.initialize(seed=2)
    assert same(net.get_weights(), before)
    assert net[0].weight.seed == 1


def test_force_reinit_changes_values_in_place_of_shape() -> None:
    net = mlp()
    net.initialize(seed=1)
    before = run(net)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net.initialize(seed=2, force_reinit=True)
    after = net.get_weights()
    assert [w.shape for w in after] == [w.shape for w in before]
    assert not np.array_equal(after[0], before[0])
    ref = mlp()
    ref.initialize(seed=2)
    assert same(run(ref), after)


def test_group_initializers() -> None:
    net = mlp()
    net.collect_params(".*weight").initialize(init.Normal(0.5), seed=0)
    net.collect_params(".*bias").initialize(init.Ones(), seed=0)
    w0, b0, _, b1 = run(net)
    assert np.all(b0 == 1) and np.all(b1 == 1)
    assert net[0].weight.init == init.Normal(0.5)
    assert 0.3 < w0.std() < 0.7


def test_block_initialize_keeps_layers_own_initializers() -> None:
    net = nn.Sequential([nn.Dense(8, weight_initializer="ones"), nn.Dense(3, bias_initializer=init.Constant(2.0))])
    net.initialize(init.Normal(0.01), seed=0)
    w0, b0, _, b1 = run(net)
    assert np.all(w0 == 1) and np.all(b0 == 0) and np.all(b1 == 2)
    assert net[1].weight.init == init.Normal(0.01)


def test_initializer_by_name() -> None:
    net = mlp()
    net.initialize("he_normal", seed=0)
    assert net[0].weight.init == init.KaimingNormal()


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_dtypes(dtype: str) -> None:
    net = mlp()
    net.initialize(seed=3, dtype=dtype)
    out = net(np.ones((2, 6)))
    ws = net.get_weights()
    assert all(w.dtype == np.dtype(dtype) for w in ws)
    assert out.dtype == np.dtype(dtype)
    assert net[0].weight.dtype == dtype
    ref = mlp()
    ref.initialize(seed=3, dtype="float64")
    ref64 = run(ref)
    # Every dtype is the float64 reference rounded (float16 through float32).
    expect = ref64 if dtype == "float64" else [r.astype(np.float32).astype(dtype) for r in ref64]
    assert same(ws, expect)


def test_float16_and_bfloat16_from_float32() -> None:
    net = mlp()
    net.initialize(seed=3, dtype="float32")
    w32 = run(net)
    half = mlp()
    half.initialize(seed=3, dtype="float16")
    assert same(run(half), [w.astype(np.float16) for w in w32])


def test_unsupported_dtype_and_device_fail_before_anything_changes() -> None:
    net = mlp()
    before = snapshot(net)
    with pytest.raises(TypeError, match="does not support dtype bfloat16"):
        net.initialize(dtype="bfloat16")
    with pytest.raises(TypeError, match="expected a floating dtype"):
        net.initialize(dtype="int8")
    with pytest.raises(ValueError, match="cannot place parameters on device 'cuda'"):
        net.initialize(device="cuda")
    with pytest.raises(deferral.BackendNotFoundError, match="Choose one of"):
        net.initialize(backend="mxnet")
    with pytest.raises(deferral.InitializerError):
        net.initialize("nope")
    with pytest.raises(ValueError, match="seed"):
        net.initialize(seed=-3)
    assert snapshot(net) == before
    assert all(p.backend is None for p in net.collect_params().values())


def test_initializer_failing_on_a_known_shape_leaves_everything_as_before() -> None:
    net = nn.Sequential([nn.Dense(4, in_units=3), nn.Dense(2, in_units=4)])
    before = snapshot(net)
    # The group form applies Orthogonal to every selected parameter; the biases (vectors)
    # refuse it after the weights were materialized: all of it is undone.
    with pytest.raises(deferral.InitializerError, match="at least 2 dimensions"):
        net.collect_params().initialize(init.Orthogonal(), seed=0)
    assert snapshot(net) == before
    assert all(p.backend is None for p in net.collect_params().values())


def test_initializing_sub_blocks_uses_their_full_names() -> None:
    whole = nn.Sequential([nn.Dense(6), nn.Dense(6)])
    whole.initialize(seed=0)
    parts = nn.Sequential([nn.Dense(6), nn.Dense(6)])
    parts[0].initialize(seed=0)
    parts[1].initialize(seed=0)
    assert parts[1].weight.path == "1.weight"
    ww, wp = run(whole), run(parts)
    assert same(ww, wp)
    assert not np.array_equal(wp[0][:, :6], wp[2])  # same shapes, different names, different values


def test_names_follow_nesting_made_in_any_order() -> None:
    inner = nn.Sequential([nn.Dense(3)])
    assert inner[0].weight.path == "0.weight"
    outer = nn.Sequential([nn.Dense(2)])
    outer.add(inner)
    assert inner[0].weight.path == "1.0.weight" and inner[0]._path == "1.0"
