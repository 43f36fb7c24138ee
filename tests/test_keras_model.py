"""``deferral.native(net)`` on TensorFlow: a real ``keras.Model`` over deferral's own ``tf.Variable``s.

Values are compared bit for bit (``tobytes``) where deferral promises identity (initial values,
save/load round trips, the same variable seen from both sides, served outputs); outputs that
Keras computes in a graph in batches (``predict``) are compared with deferral's eager forward
pass on the same variables within float32 rounding (rtol 1e-5).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import deferral  # noqa: E402
from deferral import nn, ops  # noqa: E402
from deferral.errors import DeferralError  # noqa: E402
from deferral.parameter import transaction  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(0)
X = RNG.uniform(-1.0, 1.0, size=(64, 5)).astype("float32")
Y = (np.sin(2.0 * X[:, :1]) + X[:, 1:2] * X[:, 2:3]).astype("float32")


def mlp(dropout: float = 0.0) -> nn.Sequential:
    return nn.Sequential([nn.Dense(16, activation="tanh"), nn.BatchNorm(), nn.Dropout(dropout), nn.Dense(1)])


def cnn() -> nn.Sequential:
    return nn.Sequential([
        nn.Conv2D(4, 3, padding=1), nn.BatchNorm(), nn.Activation("relu"), nn.MaxPool2D(2),
        nn.Flatten(), nn.Dense(3),
    ])


def bound(net: nn.Block, seed: int = 0, backend: str = "tensorflow") -> nn.Block:
    net.initialize(seed=seed, backend=backend)
    return net


def weight_bytes(net: nn.Block) -> list[bytes]:
    return [w.tobytes() for w in net.get_weights()]


def by_path(model: Any) -> dict[str, Any]:
    """The model's Keras variables by deferral path (the variable's name)."""
    return {w.name: w for w in model.weights}


# -- the object ----------------------------------------------------------------------------
def test_native_is_a_keras_model_made_once() -> None:
    net = bound(mlp())
    model = deferral.native(net)
    assert isinstance(model, keras.Model)
    assert deferral.native(net) is model
    assert not model.built and model.weights == []  # deferred: nothing to adopt yet


def test_weights_are_the_deferral_variables() -> None:
    net = bound(mlp())
    model = deferral.native(net)
    model(X)
    params = net.collect_params()
    weights = by_path(model)
    assert sorted(weights) == sorted(params)
    for path, param in params.items():
        assert weights[path].value is param.data()  # the same tf.Variable: storage shared
    assert len(model.weights) == len(params)


def test_first_call_materializes_the_values_net_x_gives() -> None:
    ref = bound(mlp(), backend="numpy")
    want = ref(X)
    net = bound(mlp())
    out = deferral.native(net)(X)
    assert weight_bytes(net) == weight_bytes(ref)
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-5, atol=1e-6)
    assert np.array_equal(out.numpy(), net(X).numpy())


def test_keras_build_materializes_without_a_forward_pass() -> None:
    ref = bound(cnn(), backend="numpy")
    ref(np.zeros((1, 1, 8, 8), "float32"))
    net = bound(cnn())
    model = deferral.native(net)
    model.build((None, 1, 8, 8))
    assert model.built and all(p.initialized for p in net.collect_params().values())
    assert weight_bytes(net) == weight_bytes(ref)
    assert model.count_params() == sum(p.size for p in net.collect_params().values())


def test_a_materialized_model_is_built_at_once() -> None:
    net = bound(nn.Sequential([nn.Dense(4, in_units=3), nn.Dense(2, in_units=4)]))
    model = deferral.native(net)
    assert model.built and len(model.weights) == 4


def test_failed_build_leaves_the_model_as_it_was() -> None:
    net = bound(nn.Sequential([nn.Dense(4), nn.Dense(2, in_units=5)]))
    model = deferral.native(net)
    states = [p.state for p in net.collect_params().values()]
    assert [w.name for w in model.weights] == ["1.weight", "1.bias"]  # layer 1 is materialized
    with pytest.raises(deferral.ShapeMismatchError, match="Dense '1'"):
        model.build((None, 3))
    assert [p.state for p in net.collect_params().values()] == states
    assert states[0] == "declared"
    assert not model.built and [w.name for w in model.weights] == ["1.weight", "1.bias"]


# -- training ------------------------------------------------------------------------------
def test_fit_regression_trains_the_shared_variables() -> None:
    net = bound(mlp())
    model = deferral.native(net)
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="mse")
    history = model.fit(X, Y, epochs=15, batch_size=16, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < losses[0] / 3
    # Trained in place: deferral sees the trained values, and both forward passes agree.
    assert weight_bytes(net) == [by_path(model)[k].numpy().tobytes() for k in net.collect_params()]
    assert model.evaluate(X, Y, verbose=0) < losses[0] / 3
    np.testing.assert_allclose(model.predict(X, verbose=0), net(X).numpy(), rtol=1e-5, atol=1e-6)


def test_fit_cnn_classifier_updates_batch_statistics() -> None:
    images = RNG.uniform(size=(48, 1, 8, 8)).astype("float32")
    labels = (images[:, 0, :4].mean(axis=(1, 2)) * 3).astype("int64").clip(0, 2)
    net = bound(cnn())
    model = deferral.native(net)
    model.compile(optimizer=keras.optimizers.Adam(0.02),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.build((None, 1, 8, 8))
    running = net[1].running_mean.data().numpy().copy()
    history = model.fit(images, labels, epochs=10, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0] / 2
    assert not np.array_equal(running, net[1].running_mean.data().numpy())  # fit ran in training mode
    assert net.training is False  # the blocks' own mode is untouched
    frozen = net[1].running_mean.data().numpy().copy()
    logits = model.predict(images, verbose=0)  # inference: running statistics, not updated
    assert np.array_equal(frozen, net[1].running_mean.data().numpy())
    np.testing.assert_allclose(logits, net(images).numpy(), rtol=1e-6, atol=1e-6)


def test_trainable_and_non_trainable_weights_split_like_keras_layers() -> None:
    net = bound(cnn())
    model = deferral.native(net)
    model.build((None, 1, 8, 8))
    names = lambda ws: sorted(w.name for w in ws)  # noqa: E731
    params = net.collect_params()
    assert names(model.non_trainable_weights) == ["1.running_mean", "1.running_var"]
    assert names(model.trainable_weights) == sorted(k for k, p in params.items() if p.trainable)
    assert {id(w.value) for w in model.trainable_weights} == {id(v) for v in net.parameters()}


def test_summary_lists_the_blocks_with_their_parameter_counts() -> None:
    net = bound(nn.Sequential([nn.Sequential([nn.Dense(8), nn.BatchNorm()]), nn.Dropout(0.1), nn.Dense(2)]))
    model = deferral.native(net)
    model.build((None, 5))
    lines: list[str] = []
    model.summary(print_fn=lambda line, **_: lines.append(line), expand_nested=True)
    text = "\n".join(lines)
    size = lambda block: sum(p.size for p in block.collect_params().values())  # noqa: E731
    rows = [("0 (Sequential)", net[0]), ("0 (Dense)", net[0][0]), ("1 (BatchNorm)", net[0][1]),
            ("1 (Dropout)", net[1]), ("2 (Dense)", net[2])]
    for row, block in rows:
        count = f"{size(block):,}"
        assert any(row in line and line.rstrip(" │").endswith(count) for line in text.splitlines()), row
    assert size(net[0]) == 8 * 5 + 8 + 4 * 8 and size(net[2]) == 18
    assert f"Total params: {size(net)} " in text and "Non-trainable params: 16 " in text


# -- modes ---------------------------------------------------------------------------------
def test_training_argument_sets_the_mode_of_the_call() -> None:
    net = bound(nn.Sequential([nn.Dense(64, in_units=5), nn.Dropout(0.5)]))
    model = deferral.native(net)
    inference = model(X).numpy()
    assert np.array_equal(inference, net(X).numpy())
    dropped = model(X, training=True).numpy()
    assert (dropped == 0).mean() > 0.3 and not net.training
    assert np.array_equal(model(X, training=False).numpy(), inference)
    net.train()
    assert (model(X).numpy() == 0).mean() > 0.3  # None: the blocks' own mode
    assert np.array_equal(model(X, training=False).numpy(), inference)
    assert net.training


class _Probe(nn.Block):
    """Records the mode it ran in; waits inside its forward while ``hold`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[bool] = []
        self.entered, self.release = threading.Event(), threading.Event()
        self.hold = False

    def forward(self, x: Any) -> Any:
        self.seen.append(self.training)
        if self.hold:
            self.hold = False
            self.entered.set()
            assert self.release.wait(30)
        return ops.multiply(x, 1.0)


def test_the_mode_of_a_keras_call_does_not_leak_to_other_threads() -> None:
    probe = _Probe()
    net = bound(nn.Sequential([nn.Dense(3, in_units=5), probe]))
    model = deferral.native(net)
    model(X)
    probe.hold = True
    worker = threading.Thread(target=lambda: model(X, training=True))
    worker.start()
    try:
        assert probe.entered.wait(30)
        # The worker is inside a training-mode call right now; this thread is not.
        assert probe.training is False and net.training is False
        net(X)
        model(X, training=False)
    finally:
        probe.release.set()
        worker.join(30)
    assert probe.seen == [False, True, False, False]
    assert probe.training is False


# -- next to Keras layers -------------------------------------------------------------------
def test_inside_keras_sequential_next_to_keras_layers() -> None:
    net = bound(mlp())
    inner = deferral.native(net)
    outer = keras.Sequential([keras.Input((5,)), inner, keras.layers.Dense(1)])
    assert all(p.initialized for p in net.collect_params().values())  # built by Keras' build
    outer.compile(optimizer=keras.optimizers.Adam(0.02), loss="mse")
    before = weight_bytes(net)
    losses = outer.fit(X, Y, epochs=10, batch_size=16, verbose=0).history["loss"]
    assert losses[-1] < losses[0]
    assert weight_bytes(net) != before  # gradients flowed into deferral's variables
    kernel = outer.layers[-1].kernel.numpy()
    want = net(X).numpy() @ kernel + outer.layers[-1].bias.numpy()
    np.testing.assert_allclose(outer.predict(X, verbose=0), want, rtol=1e-5, atol=1e-6)


def test_inside_a_functional_model() -> None:
    net = bound(mlp())
    inputs = keras.Input((5,))
    outputs = keras.layers.Dense(2)(deferral.native(net)(inputs))
    model = keras.Model(inputs, outputs)
    ids = {id(w.value) for w in model.weights}
    assert all(id(p) in ids for p in net.parameters(trainable_only=False))
    model.compile(optimizer="adam", loss="mse")
    before = weight_bytes(net)
    model.fit(X, np.concatenate([Y, -Y], axis=1), epochs=2, verbose=0)
    assert weight_bytes(net) != before
    head = model.layers[-1]
    want = net(X).numpy() @ head.kernel.numpy() + head.bias.numpy()
    np.testing.assert_allclose(model.predict(X, verbose=0), want, rtol=1e-5, atol=1e-6)


# -- saving --------------------------------------------------------------------------------
# Keras 3.15's own variables trip NumPy 2's __array__(copy=) deprecation when saving (a plain
# keras.Sequential does too); only that warning is let through.
keras_saving = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


@keras_saving
def test_save_weights_and_load_weights_round_trip_bit_for_bit(tmp_path: Path) -> None:
    net = bound(cnn())
    model = deferral.native(net)
    model.build((None, 1, 8, 8))
    path = tmp_path / "cnn.weights.h5"
    model.save_weights(path)
    saved = weight_bytes(net)
    other = bound(cnn(), seed=1)
    copy = deferral.native(other)
    copy.build((None, 1, 8, 8))
    assert weight_bytes(other) != saved
    copy.load_weights(path)
    assert weight_bytes(other) == saved  # loaded into deferral's variables, in place
    for w in model.weights:
        w.assign(w * 0.0)
    model.load_weights(path)
    assert weight_bytes(net) == saved


_SERVE = textwrap.dedent("""
    import importlib.abc, json, os, site, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"

    class Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0].startswith("deferral"):
                raise ModuleNotFoundError(f"No module named {name!r} (hidden)", name=name)

    sys.meta_path.insert(0, Hide())
    for entry in json.loads(sys.argv[1]):
        site.addsitedir(entry)
    try:
        import deferral
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit("deferral is importable in the serving process")
    import numpy as np, tensorflow as tf
    x = np.load(sys.argv[3])
    loaded = tf.saved_model.load(sys.argv[2])
    if hasattr(loaded, "serve"):
        out = loaded.serve(tf.constant(x))
    else:
        out = next(iter(loaded.signatures["serving_default"](tf.constant(x)).values()))
    np.save(sys.argv[4], out.numpy())
    loaded_from = [m for m, mod in list(sys.modules.items()) if m.startswith("deferral")
                   or str(getattr(mod, "__file__", "") or "").startswith(tuple(json.loads(sys.argv[5])))]
    assert not loaded_from, loaded_from
""")


@keras_saving
@pytest.mark.parametrize("how", ["export", "tf.saved_model.save"])
def test_saved_model_serves_without_deferral(tmp_path: Path, how: str) -> None:
    net = bound(cnn())
    model = deferral.native(net)
    images = RNG.uniform(size=(5, 1, 8, 8)).astype("float32")
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(images, np.array([0, 1, 2, 0, 1]), epochs=1, verbose=0)  # trained values are exported
    want = model.predict(images, verbose=0)
    artifact = tmp_path / "served"
    if how == "export":
        model.export(artifact, verbose=False)
    else:
        tf.saved_model.save(model, str(artifact))
    np.save(tmp_path / "x.npy", images)
    # The directories holding TensorFlow and NumPy, without the project or its installation.
    dirs = sorted({str(Path(m.__file__).resolve().parents[1]) for m in (tf, np, keras)})
    subprocess.run(
        [sys.executable, "-I", "-S", "-c", _SERVE, json.dumps(dirs), str(artifact),
         str(tmp_path / "x.npy"), str(tmp_path / "y.npy"),
         # the project's sources (its virtual environments may live under ROOT too: .venv, .tox)
         json.dumps([str(ROOT / "deferral"), str(ROOT / "backends"), str(ROOT / "tests")])],
        check=True, cwd=tmp_path, timeout=300,
    )
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), want)


# -- errors --------------------------------------------------------------------------------
def test_a_model_moved_to_another_backend_names_both() -> None:
    net = bound(mlp())
    model = deferral.native(net)
    model(X)
    net.initialize(seed=0, backend="numpy", force_reinit=True)
    with pytest.raises(DeferralError, match=r"'tensorflow'.*'numpy'") as info:
        model(X)
    assert isinstance(info.value, RuntimeError)
    assert "force_reinit=True" in str(info.value)


# -- deferral replacing values ---------------------------------------------------------------
@keras_saving
def test_reinit_set_data_and_load_write_into_the_keras_models_variables(tmp_path: Path) -> None:
    net = bound(mlp())
    model = deferral.native(net)
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="mse")
    model.fit(X, Y, epochs=2, verbose=0)
    variables = [w.value for w in model.weights]
    trained = weight_bytes(net)
    net.save_parameters(tmp_path / "trained.safetensors")
    predict = model.predict_function  # traced before the changes, used after them

    net.initialize(seed=0, backend="tensorflow", force_reinit=True)
    fresh = bound(mlp())
    fresh(X)
    assert weight_bytes(net) == weight_bytes(fresh) != trained
    net[0].bias.set_data(np.full((16,), 0.25, "float32"))
    assert np.array_equal(by_path(model)["0.bias"].numpy(), np.full((16,), 0.25, "float32"))
    net.load_parameters(tmp_path / "trained.safetensors")
    assert weight_bytes(net) == trained

    # The same tf.Variable objects throughout: the Keras model, its optimizer and its traced
    # functions keep working on the parameters.
    assert all(w.value is v for w, v in zip(model.weights, variables))
    assert all(p.data() is by_path(model)[k].value for k, p in net.collect_params().items())
    assert model.predict_function is predict
    np.testing.assert_allclose(model.predict(X, verbose=0), net(X).numpy(), rtol=1e-5, atol=1e-6)
    model.fit(X, Y, epochs=1, verbose=0)
    assert weight_bytes(net) != trained


def test_a_rolled_back_reinit_leaves_the_variables_untouched() -> None:
    net = bound(mlp())
    model = deferral.native(net)
    model(X)
    before, variables = weight_bytes(net), [w.value for w in model.weights]
    with pytest.raises(RuntimeError, match="changed my mind"), transaction():
        net.initialize(seed=5, backend="tensorflow", force_reinit=True)
        assert weight_bytes(net) != before  # swapped in, not yet written into the variables
        raise RuntimeError("changed my mind")
    assert weight_bytes(net) == before
    with pytest.raises(deferral.ShapeMismatchError):
        net[0].weight.set_data(np.zeros((3, 3), "float32"))
    assert weight_bytes(net) == before
    assert all(w.value is v for w, v in zip(model.weights, variables))


def test_a_new_dtype_gives_new_variables_and_a_new_keras_model() -> None:
    net = bound(mlp())
    model = deferral.native(net)
    model(X)
    net.initialize(seed=0, backend="tensorflow", dtype="float64", force_reinit=True)
    with pytest.raises(DeferralError, match=r"0\.weight.*new tf\.Variable.*deferral\.native\(net\) again"):
        model(X)
    again = deferral.native(net)
    assert again is not model and again.dtype == "float64"
    out = again(X)
    assert out.dtype == tf.float64
    assert all(w.value is p.data() for w, p in zip(again.weights, net.collect_params().values()))


def test_a_structure_change_makes_the_old_keras_model_refuse_and_native_make_a_new_one() -> None:
    net = bound(mlp())
    model = deferral.native(net)
    y = RNG.uniform(size=(64, 1)).astype("float32")
    model.compile(optimizer="sgd", loss="mse")
    model.fit(X, y, epochs=1, verbose=0)
    extra = bound(nn.Dense(1), seed=1)
    net.add(extra)
    for call in (lambda: model(X), lambda: model.fit(X, y, epochs=1, verbose=0),
                 lambda: model.predict(X, verbose=0)):
        with pytest.raises(DeferralError, match=r"deferral\.native"):
            call()
    fresh = deferral.native(net)
    assert fresh is not model
    fresh.compile(optimizer="sgd", loss="mse")
    net(X)  # materializes the added block
    before = extra.get_weights()[0].copy()
    fresh.fit(X, y, epochs=1, verbose=0)
    assert not np.array_equal(before, extra.get_weights()[0])  # Keras trains the added block
    assert len(fresh.weights) == len(net.collect_params())


def test_native_follows_a_change_of_backend_on_keras() -> None:
    net = bound(mlp())
    model = deferral.native(net)
    model(X)
    net.initialize(seed=0, backend="numpy", force_reinit=True)
    assert deferral.native(net) is net
    net.initialize(seed=0, backend="tensorflow", force_reinit=True)
    again = deferral.native(net)
    assert again is not net and again is not model
    np.testing.assert_array_equal(again(X).numpy(), net(X).numpy())
