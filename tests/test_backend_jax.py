"""The JAX backend: values, devices, float64, functional training under jit/grad/vmap, dropout
keys, sharded materialization and the Flax NNX module.

Identity with the other backends is checked in tests/test_identity.py and by the conformance
suite (tests/test_conformance_jax.py); here the JAX-specific parts. Sharding needs several
devices, which XLA makes on the CPU only when told before JAX is imported: those checks run in
a subprocess.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

import deferral  # noqa: E402
import deferral_jax  # noqa: E402
from deferral import DeferralError, nn, ops  # noqa: E402

HAS_FLAX = importlib.util.find_spec("flax") is not None
HAS_OPTAX = importlib.util.find_spec("optax") is not None


def cnn(rate: float = 0.0) -> nn.Sequential:
    layers = [nn.Conv2D(6, 3, padding=1), nn.BatchNorm(), nn.Activation("relu"), nn.MaxPool2D(2),
              nn.Flatten()]
    if rate:
        layers.append(nn.Dropout(rate))
    return nn.Sequential([*layers, nn.Dense(3)])


def data(seed: int = 0, n: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Three classes of 8x8 images told apart by where their bright square is."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(scale=0.3, size=(n, 1, 8, 8)).astype("float32")
    for i, label in enumerate(y):
        x[i, 0, 2 * label:2 * label + 3, 2:5] += 2.0
    return x, y


def built(make: Any = cnn, seed: int = 0) -> tuple[nn.Block, np.ndarray, np.ndarray]:
    x, y = data()
    net = make()
    net.initialize(seed=seed, backend="jax")
    net(x)
    return net, x, y


def cross_entropy(logits: Any, y: Any) -> Any:
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


def run(code: str, devices: int = 4) -> str:
    """Run ``code`` in a fresh interpreter with ``devices`` CPU devices; return its stdout."""
    env = {"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "PATH": "/usr/bin:/bin",
           "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


# -- 1. plugin and arrays ---------------------------------------------------------------------
def test_plugin_import_and_discovery_import_no_jax() -> None:
    code = """
        import sys, deferral_jax, deferral
        assert "jax" in deferral.available_backends()
        info = deferral.load_backend("jax").info
        print("LEAKED", sorted(m for m in ("jax", "flax", "torch", "tensorflow") if m in sys.modules))
    """
    assert "LEAKED []" in run(code, devices=1)


def test_parameters_are_variables_of_jax_arrays_with_the_reference_bits() -> None:
    net, x, _ = built()
    ref = cnn()
    ref.initialize(seed=0, backend="numpy")
    ref(x)
    for (path, p), want in zip(net.collect_params().items(), ref.get_weights()):
        storage = p.data()
        assert isinstance(storage, deferral_jax.Variable) and isinstance(storage.value, jax.Array), path
        assert storage.trainable == p.trainable
        np.testing.assert_array_equal(np.asarray(storage.value).view(np.uint32), want.view(np.uint32))
    assert isinstance(net(x), jax.Array)


@pytest.mark.parametrize(("spelling", "canonical"), [(None, "cpu:0"), ("cpu", "cpu:0"), ("CPU:0", "cpu:0")])
def test_device_spellings(spelling: str | None, canonical: str) -> None:
    assert deferral.load_backend("jax").canonical_device(spelling) == canonical


@pytest.mark.parametrize(("device", "match"), [("cpu:7", "JAX lists cpu:0"), ("gpu:0", "JAX lists"),
                                               ("mps", "Accepted forms")])
def test_unusable_devices_are_refused(device: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cnn().initialize(device=device, backend="jax")


def test_float64_without_64_bit_mode_is_a_clear_error_and_changes_nothing() -> None:
    assert not jax.config.jax_enable_x64
    net = nn.Sequential([nn.Dense(3, in_units=4), nn.Dense(2)])
    states = [p.state for p in net.collect_params().values()]
    with pytest.raises(deferral_jax.Float64DisabledError, match=r"jax_enable_x64.*dtype='float32'") as info:
        net.initialize(seed=0, dtype="float64", backend="jax")
    assert isinstance(info.value, DeferralError) and isinstance(info.value, TypeError)
    assert [p.state for p in net.collect_params().values()] == states
    assert not net[0].weight.initialized and net[0].weight.backend is None
    with jax.enable_x64(True):
        net.initialize(seed=0, dtype="float64", backend="jax")
        assert net(np.ones((1, 4))).dtype == jnp.float64


def test_take_refuses_out_of_range_indices_eagerly() -> None:
    emb = nn.Embedding(5, 2)
    emb.initialize(seed=0, backend="jax")
    with pytest.raises(deferral.InvalidIndexError, match=r"Embedding: indices must lie in \[0, 5\)"):
        emb(np.array([1, 5]))  # the layer's check, on every backend
    with pytest.raises(IndexError, match="out of range for 5 rows"):
        ops.take(emb.weight.data(), jnp.array([1, 5]))  # the backend's own, eagerly


# -- 2. functional use ------------------------------------------------------------------------
def test_functional_params_are_a_dict_of_jax_arrays_and_jit_matches_the_model() -> None:
    net, x, _ = built()
    apply, params = deferral.functional(net)
    assert list(params) == list(net.collect_params())
    assert all(type(v) is not deferral_jax.Variable and isinstance(v, jax.Array) for v in params.values())
    assert all(params[k] is p.data().value for k, p in net.collect_params().items())  # no copy
    want = np.asarray(net(x))
    np.testing.assert_allclose(np.asarray(jax.jit(apply)(params, x)), want, rtol=1e-5, atol=1e-6)
    batches = jnp.stack([x[:8], x[8:16], x[16:]])
    per_batch = jax.vmap(apply, in_axes=(None, 0))(params, batches)
    np.testing.assert_allclose(np.asarray(per_batch).reshape(24, 3), want, rtol=1e-5, atol=1e-6)


def test_grad_matches_finite_differences() -> None:
    net, x, y = built()
    apply, params = deferral.functional(net)

    @jax.jit
    def loss(p: dict[str, Any]) -> Any:
        return cross_entropy(apply(p, x), y)

    value, grads = jax.value_and_grad(loss)(params)
    assert sorted(grads) == sorted(params) and np.isfinite(float(value))
    eps = 1e-2
    bump = jnp.zeros_like(params["5.weight"]).at[1, 4].set(eps)
    numeric = (loss({**params, "5.weight": params["5.weight"] + bump})
               - loss({**params, "5.weight": params["5.weight"] - bump})) / (2 * eps)
    np.testing.assert_allclose(float(grads["5.weight"][1, 4]), float(numeric), rtol=2e-2, atol=1e-4)


def sgd_training(steps: int, update: Any) -> tuple[list[float], nn.Block, dict[str, Any], dict[str, Any]]:
    net, x, y = built()
    apply, params = deferral.functional(net)
    trainable = {k for k, p in net.collect_params().items() if p.trainable}

    def loss(p: dict[str, Any], state: dict[str, Any]) -> Any:
        out, new_state = apply({**p, **state}, x, training=True)
        return cross_entropy(out, y), new_state

    weights = {k: v for k, v in params.items() if k in trainable}
    state = {k: v for k, v in params.items() if k not in trainable}
    losses, carry = [], None
    step = jax.jit(lambda w, s, c: update(jax.value_and_grad(loss, has_aux=True), w, s, c))
    for _ in range(steps):
        (value, weights, state, carry) = step(weights, state, carry)
        losses.append(float(value))
    return losses, net, weights, state


def test_a_small_cnn_trains_with_plain_sgd_under_jit() -> None:
    def update(grad_fn: Any, w: Any, s: Any, carry: Any) -> Any:
        (value, new_state), grads = grad_fn(w, s)
        return value, jax.tree.map(lambda a, g: a - 0.1 * g, w, grads), new_state, carry

    losses, net, _, state = sgd_training(30, update)
    assert losses[-1] < 0.5 * losses[0], losses
    # The model's own storage is untouched: the training lived in the arrays.
    before = cnn()
    before.initialize(seed=0, backend="numpy")
    before(data()[0])
    np.testing.assert_array_equal(net.get_weights()[0], before.get_weights()[0])
    # The running statistics moved away from their initial zeros/ones.
    assert float(jnp.abs(state["1.running_mean"]).max()) > 1e-3


@pytest.mark.skipif(not HAS_OPTAX, reason="optax is not installed")
def test_a_small_cnn_trains_with_optax() -> None:
    import optax

    opt = optax.adam(1e-2)

    def update(grad_fn: Any, w: Any, s: Any, carry: Any) -> Any:
        (value, new_state), grads = grad_fn(w, s)
        carry = opt.init(w) if carry is None else carry
        updates, carry = opt.update(grads, carry, w)
        return value, optax.apply_updates(w, updates), new_state, carry

    losses, *_ = sgd_training(30, update)
    assert losses[-1] < 0.5 * losses[0], losses


def test_stateful_training_updates_the_running_statistics_in_place() -> None:
    net, x, _ = built()
    apply, params = deferral.functional(net)
    _, state = apply(params, x, training=True)
    net.train()
    net(x)
    for k, v in state.items():
        np.testing.assert_allclose(np.asarray(net.collect_params()[k].data().value), np.asarray(v), rtol=1e-6)


def test_a_stateful_update_under_jit_is_refused() -> None:
    net, x, _ = built()
    net.train()
    with pytest.raises(deferral_jax.TracedStateError, match=r"deferral\.functional"):
        jax.jit(lambda x: net(x))(x)
    assert isinstance(net[1].running_mean.data().value, jax.Array)  # no tracer was stored


# -- 3. dropout keys ----------------------------------------------------------------------------
def test_dropout_under_jit_needs_a_key_and_follows_it() -> None:
    net, x, _ = built(lambda: cnn(rate=0.5))
    apply, params = deferral.functional(net)
    with pytest.raises(deferral_jax.TracedStateError, match="dropout_key"):
        jax.jit(lambda p, x: apply(p, x, training=True))(params, x)

    @jax.jit
    def forward(p: Any, x: Any, key: Any) -> Any:
        with deferral_jax.dropout_key(key):
            return apply(p, x, training=True)[0]

    a, b, c = (np.asarray(forward(params, x, jax.random.key(k))) for k in (1, 1, 2))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    np.testing.assert_allclose(np.asarray(apply(params, x)), np.asarray(net(x)), rtol=1e-5)  # inference


def test_eager_dropout_is_reproducible_after_seeding() -> None:
    layer = nn.Dropout(0.5)
    layer.initialize(backend="jax")
    layer.train()
    x = jnp.ones((4, 50))
    deferral_jax.seed_dropout(3)
    a = np.asarray(layer(x))
    deferral_jax.seed_dropout(3)
    np.testing.assert_array_equal(np.asarray(layer(x)), a)
    assert set(np.unique(a)) == {0.0, 2.0}


# -- 4. sharded materialization ------------------------------------------------------------------
def test_sharded_parameters_equal_the_unsharded_values_bit_for_bit() -> None:
    code = """
        import numpy as np, jax
        from jax.sharding import NamedSharding, PartitionSpec as P
        import deferral, deferral_jax
        from deferral import nn
        assert len(jax.devices()) == 4
        def model():
            return nn.Sequential([nn.Conv2D(8, 3, in_channels=8), nn.Flatten(), nn.Dense(12, in_units=8 * 5 * 5),
                                  nn.Dense(7, in_units=12), nn.Dense(20, in_units=7)])
        plain = model(); plain.initialize(seed=5, backend="jax", init="normal")
        want = {k: np.asarray(p.data().value) for k, p in plain.collect_params().items()}
        one = jax.make_mesh((4,), ("m",)); two = jax.make_mesh((2, 2), ("a", "b"))
        layouts = {
            "1-D, dim 0": lambda path, shape: NamedSharding(one, P("m")) if shape[0] % 4 == 0 else None,
            "1-D, inner dim": lambda path, shape: NamedSharding(one, P(None, "m")) if len(shape) > 1 and shape[1] % 4 == 0 else None,
            "2-D, both dims": lambda path, shape: NamedSharding(two, P("a", "b")) if len(shape) > 1 and shape[0] % 2 == 0 and shape[1] % 2 == 0 else None,
            "2-D, replicated on a": lambda path, shape: NamedSharding(two, P(None, "b")) if len(shape) > 1 and shape[1] % 2 == 0 else None,
            "2-D, conv input channels": lambda path, shape: NamedSharding(two, P(None, ("a", "b"))) if len(shape) == 4 else None,
        }
        for name, rule in layouts.items():
            net = model()
            with deferral_jax.sharded(rule):
                net.initialize(seed=5, backend="jax", init="normal")
            sharded = 0
            for k, p in net.collect_params().items():
                arr = p.data().value
                spec = rule(k, p.shape)
                if spec is not None:
                    sharded += 1
                    assert arr.sharding == spec, (name, k, arr.sharding)
                    for shard in arr.addressable_shards:
                        assert np.array_equal(np.asarray(shard.data), want[k][shard.index]), (name, k)
                assert np.asarray(arr).view(np.uint32).tolist() == want[k].view(np.uint32).tolist(), (name, k)
            print(name, "sharded", sharded)
        # bfloat16, a deferred model materialized by its first call, and a forward on sharded weights.
        net = nn.Sequential([nn.Dense(8), nn.Dense(4)])
        net.initialize(seed=1, backend="jax", dtype="bfloat16")
        with deferral_jax.sharded(NamedSharding(one, P("m"))):
            y = net(np.ones((2, 6), "float32"))
        ref = nn.Sequential([nn.Dense(8), nn.Dense(4)]); ref.initialize(seed=1, backend="jax", dtype="bfloat16")
        ref(np.ones((2, 6), "float32"))
        for a, b in zip(net.collect_params().values(), ref.collect_params().values()):
            assert len(a.data().value.sharding.device_set) == 4
            assert np.asarray(a.data().value).view(np.uint16).tolist() == np.asarray(b.data().value).view(np.uint16).tolist()
        print("bfloat16 ok", y.dtype)
        # What JAX refuses (a dimension the mesh does not divide) is JAX's clear error, and nothing changes.
        bad = nn.Dense(10, in_units=3)
        try:
            with deferral_jax.sharded(NamedSharding(one, P("m"))):
                bad.initialize(seed=0, backend="jax")
        except ValueError as exc:
            print("indivisible:", type(exc).__name__, bad.weight.state)
    """
    out = run(code)
    assert "1-D, dim 0 sharded 6" in out, out  # every parameter but the 7-unit layer's
    for name in ("1-D, inner dim", "2-D, both dims", "2-D, replicated on a", "2-D, conv input channels"):
        assert f"{name} sharded" in out and f"{name} sharded 0" not in out, out
    assert "bfloat16 ok bfloat16" in out
    assert "indivisible: IndivisibleError shaped" in out, out


def test_shard_values_generates_only_the_shards_elements(monkeypatch: pytest.MonkeyPatch) -> None:
    from deferral._lifecycle import request_for
    from deferral.hookspec import MaterializeRequest
    from deferral_jax._sharding import shard_values

    net = nn.Dense(6, in_units=10)
    net.initialize(seed=3, backend="numpy")
    full = np.asarray(net.weight.data())
    request = request_for(net.weight, net.weight._intent)
    calls: list[tuple[int, int]] = []
    original = MaterializeRequest.fill_host

    def spy(self: MaterializeRequest, out: np.ndarray, start: int = 0) -> None:
        calls.append((start, out.size))
        original(self, out, start)

    monkeypatch.setattr(MaterializeRequest, "fill_host", spy)
    got = shard_values(request, (slice(2, 5), slice(4, 8)))
    np.testing.assert_array_equal(got, full[2:5, 4:8])
    assert calls == [(24, 24)]  # the rows' short runs: the span covering them, once
    calls.clear()
    np.testing.assert_array_equal(shard_values(request, (slice(4, 6), slice(None))), full[4:])
    assert calls == [(40, 20)]  # whole rows: one run at its global offset


# -- 5. Flax NNX ------------------------------------------------------------------------------------
@pytest.mark.skipif(not HAS_FLAX, reason="flax is not installed")
def test_native_is_an_nnx_module_sharing_the_arrays() -> None:
    from flax import nnx

    net, x, _ = built()
    module = deferral.native(net)
    assert isinstance(module, nnx.Module) and deferral.native(net) is module
    for path, p in net.collect_params().items():
        variable = module.variable(path)
        assert isinstance(variable, nnx.Param if p.trainable else nnx.BatchStat), path
        assert variable.get_value() is p.data().value  # the same array: nothing copied
    np.testing.assert_allclose(np.asarray(module(x)), np.asarray(net(x)), rtol=1e-6)
    graphdef, state = nnx.split(module)
    again = nnx.merge(graphdef, state)
    np.testing.assert_allclose(np.asarray(again(x)), np.asarray(module(x)), rtol=1e-6)
    assert {path for path, _ in nnx.to_flat_state(nnx.state(module, nnx.Param))} == {
        ("params", *k.split(".")) for k, p in net.collect_params().items() if p.trainable}


@pytest.mark.skipif(not (HAS_FLAX and HAS_OPTAX), reason="flax and optax are needed")
def test_training_the_nnx_module_trains_the_model() -> None:
    import optax
    from flax import nnx

    net, x, y = built()
    module = deferral.native(net)
    module.train()
    optimizer = nnx.Optimizer(module, optax.sgd(0.1), wrt=nnx.Param)

    @nnx.jit
    def step(module: Any, optimizer: Any) -> Any:
        value, grads = nnx.value_and_grad(lambda m: cross_entropy(m(x), y))(module)
        optimizer.update(module, grads)
        return value

    losses = [float(step(module, optimizer)) for _ in range(20)]
    assert losses[-1] < 0.5 * losses[0], losses
    # The deferral model sees the trained values and statistics: its storage is the module's.
    np.testing.assert_array_equal(np.asarray(net[5].weight.data().value),
                                  np.asarray(module.variable("5.weight").get_value()))
    assert float(jnp.abs(net[1].running_mean.data().value).max()) > 1e-3
    module.eval()
    net.eval()
    np.testing.assert_allclose(np.asarray(module(x)), np.asarray(net(x)), rtol=1e-5, atol=1e-6)


def test_native_without_flax_names_the_extra() -> None:
    code = """
        import sys
        sys.modules["flax"] = None  # as if Flax were not installed
        import numpy as np, deferral
        from deferral import nn
        net = nn.Dense(2, in_units=3); net.initialize(seed=0, backend="jax")
        try:
            deferral.native(net)
        except ModuleNotFoundError as exc:
            print("ERROR", exc)
    """
    out = run(code, devices=1)
    assert 'pip install "deferral[jax]"' in out and "deferral.functional" in out, out
