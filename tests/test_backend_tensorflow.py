"""The TensorFlow backend: identical initial values, ops, devices, training, transactions, copies.

Identity is checked bit for bit through integer views; numerical results of ops and forward
passes are compared with the NumPy backend within the tolerances stated next to each test.
"""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow")

import deferral  # noqa: E402
import deferral_tensorflow._ops as tf_ops  # noqa: E402
from deferral import init, nn, ops  # noqa: E402
from deferral._dtypes import bfloat16_bits_to_float32, float32_to_bfloat16_bits  # noqa: E402
from deferral.errors import ShapeMismatchError  # noqa: E402

HAS_GPU = bool(tf.config.list_physical_devices("GPU"))
needs_gpu = pytest.mark.skipif(
    not (HAS_GPU and deferral.load_backend("tensorflow").info.supports_cuda),
    reason="TensorFlow lists no GPU",
)

INITIALIZERS = [
    init.Zeros(), init.Ones(), init.Constant(0.5), init.Uniform(0.3), init.Normal(0.02),
    init.TruncatedNormal(0.5), init.XavierUniform(), init.XavierNormal(), init.KaimingUniform(),
    init.KaimingNormal(), init.Orthogonal(),
]
SEEDS = [0, 2**64 - 1]
_UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}


# -- helpers ------------------------------------------------------------------------------
def bits(array: np.ndarray) -> np.ndarray:
    """The array's bit patterns as unsigned integers of the same width."""
    array = np.ascontiguousarray(array)
    return array.view(_UINT[array.dtype.itemsize])


def assert_same_bits(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_array_equal(bits(got), bits(want))


def tf_bits(variable: Any) -> np.ndarray:
    """Bit patterns of a TF variable/tensor (uint16 for 2-byte dtypes)."""
    width = {2: tf.uint16, 4: tf.uint32, 8: tf.uint64}[variable.dtype.size]
    return tf.bitcast(tf.convert_to_tensor(variable), width).numpy()


def mlp(initializer: init.Initializer | None = None) -> nn.Sequential:
    return nn.Sequential([nn.Dense(7, activation="relu", weight_initializer=initializer), nn.Dense(3)])


def materialized(
    backend: str, dtype: str, seed: int, x: np.ndarray, initializer: init.Initializer | None = None,
    device: str | None = None,
) -> nn.Sequential:
    net = mlp(initializer)
    net.initialize(init=initializer, seed=seed, dtype=dtype, backend=backend, device=device)
    net(x)
    return net


@pytest.fixture
def x() -> np.ndarray:
    return np.random.default_rng(5).standard_normal((4, 5)).astype(np.float32)


# -- 1. identical initial values --------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("initializer", INITIALIZERS, ids=repr)
def test_weights_bit_identical_to_numpy(
    initializer: init.Initializer, dtype: str, seed: int, x: np.ndarray
) -> None:
    want = materialized("numpy", dtype, seed, x, initializer).get_weights()
    net = materialized("tensorflow", dtype, seed, x, initializer)
    got = net.get_weights()
    assert len(got) == len(want) == 4
    for g, w in zip(got, want):
        assert_same_bits(g, w)
    for variable, w in zip(net.parameters(), want):
        np.testing.assert_array_equal(tf_bits(variable), bits(w))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("initializer", INITIALIZERS, ids=repr)
def test_low_precision_is_float32_reference_rounded_once(
    initializer: init.Initializer, dtype: str, x: np.ndarray
) -> None:
    reference = materialized("numpy", "float32", 11, x, initializer).get_weights()
    net = materialized("tensorflow", dtype, 11, x, initializer)
    for variable, host, ref32 in zip(net.parameters(), net.get_weights(), reference):
        assert variable.dtype == getattr(tf, dtype)
        if dtype == "float16":
            want = ref32.astype(np.float16)
            assert_same_bits(host, want)
            np.testing.assert_array_equal(tf_bits(variable), bits(want))
        else:
            want_bits = float32_to_bfloat16_bits(ref32)
            np.testing.assert_array_equal(tf_bits(variable), want_bits)
            # to_numpy widens bfloat16 to float32 exactly.
            assert_same_bits(host, bfloat16_bits_to_float32(want_bits))


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize(
    "initializer", [init.Uniform(0.3), init.TruncatedNormal(0.5), init.Orthogonal(), init.Constant(0.5)],
    ids=repr,
)
def test_large_and_small_parameters_are_bit_identical(
    initializer: init.Initializer, dtype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = np.random.default_rng(1).standard_normal((3, 37)).astype(np.float32)
    ref_dtype = "float32" if dtype == "bfloat16" else dtype
    reference = materialized("numpy", ref_dtype, 3, x, initializer).get_weights()
    net = materialized("tensorflow", dtype, 3, x, initializer)
    for variable, ref in zip(net.parameters(), reference):
        want = float32_to_bfloat16_bits(ref) if dtype == "bfloat16" else bits(ref)
        np.testing.assert_array_equal(tf_bits(variable), want)


def test_set_data_and_parameter_from_numpy_round_like_the_core() -> None:
    layer = nn.Dense(3, in_units=2)
    layer.initialize(seed=0, backend="tensorflow", dtype="bfloat16")
    values = np.array([[1.0, 1.00390625], [1.005859375, -2.5], [3.0e-3, 7.0]])
    layer.weight.set_data(values)
    variable = layer.weight.data()
    assert isinstance(variable, tf.Variable) and variable.dtype == tf.bfloat16
    want = float32_to_bfloat16_bits(values.astype(np.float32))
    np.testing.assert_array_equal(tf_bits(variable), want)


# -- 2. forward passes ------------------------------------------------------------------
def every_activation() -> nn.Sequential:
    return nn.Sequential([
        nn.Dense(8, activation="relu"),
        nn.Dense(8, activation="sigmoid"),
        nn.Dense(8, activation="tanh"),
        nn.Dense(8, activation="gelu"),
        nn.Activation("relu"), nn.ReLU(), nn.Sigmoid(), nn.Tanh(), nn.GELU(),
        nn.Flatten(),
        nn.Dense(5, activation="softmax"),
        nn.Softmax(axis=0),
    ])


# float32: outputs are O(1) and pass through ~6 matmuls/nonlinearities: atol = rtol = 1e-5.
# float64: differences are reduction order and libm ulps only: atol = rtol = 1e-12.
TOLERANCE = {"float32": 1e-5, "float64": 1e-12}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_forward_matches_numpy_eager_and_in_tf_function(dtype: str) -> None:
    data = np.random.default_rng(2).standard_normal((6, 3, 4)).astype(dtype)
    reference = every_activation()
    reference.initialize(seed=9, dtype=dtype, backend="numpy")
    want = reference(data)

    net = every_activation()
    net.initialize(seed=9, dtype=dtype, backend="tensorflow")
    eager = net(data)
    assert isinstance(eager, tf.Tensor) and eager.dtype == getattr(tf, dtype)
    tol = TOLERANCE[dtype]
    np.testing.assert_allclose(eager.numpy(), want, rtol=tol, atol=tol)

    spec = tf.TensorSpec([None, 3, 4], getattr(tf, dtype))  # unknown batch: Flatten must cope
    graph = tf.function(lambda t: net(t), input_signature=[spec])
    np.testing.assert_allclose(graph(tf.constant(data)).numpy(), want, rtol=tol, atol=tol)
    np.testing.assert_allclose(graph(tf.constant(data[:2])).numpy(), reference(data[:2]), rtol=tol, atol=tol)


@pytest.mark.parametrize(("dtype", "tol"), [("float16", 2e-3), ("bfloat16", 2e-2)])
def test_low_precision_forward_is_close_to_float32(dtype: str, tol: float) -> None:
    # Weights are the float32 reference rounded once (8 or 11 significant bits), and every op
    # computes in the low precision: outputs (softmax probabilities) agree within `tol`.
    data = np.random.default_rng(2).standard_normal((6, 3, 4)).astype(np.float32)
    reference = every_activation()
    reference.initialize(seed=9, backend="numpy")
    want = reference(data)
    net = every_activation()
    net.initialize(seed=9, dtype=dtype, backend="tensorflow")
    eager = net(data)
    assert eager.dtype == getattr(tf, dtype)
    np.testing.assert_allclose(tf.cast(eager, tf.float32).numpy(), want, atol=tol)
    # A tf.function converts NumPy arguments itself (to float32): pass tensors of the model dtype.
    graph = tf.function(lambda t: net(t))
    traced = graph(tf.constant(data, dtype=getattr(tf, dtype)))
    np.testing.assert_array_equal(tf_bits(traced), tf_bits(eager))


def test_first_call_inside_tf_function_materializes_identical_values(x: np.ndarray) -> None:
    want = materialized("numpy", "float32", 4, x).get_weights()
    net = mlp()
    net.initialize(seed=4, backend="tensorflow")
    graph = tf.function(lambda t: net(t))
    out = graph(tf.constant(x))
    params = net.parameters()
    # Variables created on a tf.function's first call are tf.Variable subclasses it manages.
    assert all(isinstance(p, tf.Variable) and p.trainable for p in params)
    for got, w in zip(net.get_weights(), want):
        assert_same_bits(got, w)
    np.testing.assert_allclose(out.numpy(), net(x).numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(graph(tf.constant(x[:1])).numpy(), net(x[:1]).numpy(), rtol=1e-6, atol=1e-6)


def test_inputs_are_converted_to_the_model_dtype() -> None:
    net = nn.Dense(2, in_units=3)
    net.initialize(seed=0, backend="tensorflow", dtype="float64")
    out = net(np.ones((1, 3), dtype=np.float32))  # a NumPy input is cast, like the NumPy backend
    assert out.dtype == tf.float64
    backend = deferral.load_backend("tensorflow")
    tensor = tf.constant([1.0])
    assert backend.to_native(tensor, "float64", "/CPU:0") is tensor  # native: unchanged
    ints = backend.to_native(np.arange(3, dtype=np.int32), "float64", "/CPU:0")
    assert ints.dtype == tf.int32
    half = backend.to_native(np.array([1.00390625], np.float64), "bfloat16", "/CPU:0")
    assert half.dtype == tf.bfloat16 and tf_bits(half).tolist() == [0x3F80]
    assert backend.to_native([1.0, 2.0], "float32", "/CPU:0") is None
    assert backend.is_native(tensor) and backend.is_native(tf.Variable(1.0))
    assert not backend.is_native(np.ones(2))


# -- 3. ops -----------------------------------------------------------------------------
# The ops' values are checked against the shared case table by tests/test_conformance_tensorflow.py.
def test_shape_and_flatten_with_unknown_batch() -> None:
    seen: list[tuple[int | None, ...]] = []

    @tf.function(input_signature=[tf.TensorSpec([None, 3, 4], tf.float32)])
    def flat(t: Any) -> Any:
        seen.append(tf_ops.shape(t))
        out = tf_ops.flatten(t)
        seen.append(tf_ops.shape(out))
        return out

    data = np.random.default_rng(3).uniform(-3.0, 3.0, (5, 3, 4)).astype(np.float32)
    np.testing.assert_array_equal(flat(tf.constant(data)).numpy(), data.reshape(5, 12))
    assert flat(tf.zeros((0, 3, 4))).shape == (0, 12)
    assert seen == [(None, 3, 4), (None, 12)]
    assert tf_ops.shape(tf.zeros((2, 3))) == (2, 3)
    assert all(type(d) is int for d in tf_ops.shape(tf.Variable(tf.zeros((2, 3)))))


# -- 4. parameters and devices ----------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_parameters_are_trainable_variables_on_the_device(dtype: str, x: np.ndarray) -> None:
    net = materialized("tensorflow", dtype, 0, x)
    params = net.parameters()
    assert len(params) == 4
    for variable in params:
        assert isinstance(variable, tf.Variable)
        assert variable.trainable
        assert variable.dtype == getattr(tf, dtype)
        assert variable.device.endswith("device:CPU:0")
    assert [p.device for p in net.collect_params().values()] == ["/CPU:0"] * 4


def test_non_trainable_parameter_is_a_non_trainable_variable() -> None:
    class Scaled(nn.Block):
        def __init__(self) -> None:
            super().__init__()
            self.scale = deferral.Parameter("scale", (3,), init="ones", trainable=False)

        def forward(self, t: Any) -> Any:
            return ops.multiply(t, self.scale.data())

    block = Scaled()
    block.initialize(backend="tensorflow")
    variable = block.scale.data()
    assert isinstance(variable, tf.Variable) and not variable.trainable
    assert block.parameters() == []
    assert block.parameters(trainable_only=False)[0] is variable


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [(None, "/CPU:0"), ("cpu", "/CPU:0"), ("CPU", "/CPU:0"), ("/CPU:0", "/CPU:0"),
     ("CPU:0", "/CPU:0"), ("/device:CPU:0", "/CPU:0"), (" cpu ", "/CPU:0")],
)
def test_cpu_spellings(spelling: str | None, canonical: str) -> None:
    assert deferral.load_backend("tensorflow").canonical_device(spelling) == canonical


@pytest.mark.parametrize("spelling", ["tpu", "gpu:x", "cuda:-1", "/CPU:1", "", "cpu0", "/GPU:0:1", "mps"])
def test_bad_device_strings_raise_and_leave_the_model_unchanged(spelling: str, x: np.ndarray) -> None:
    net = mlp()
    with pytest.raises(ValueError, match="device") as info:
        net.initialize(seed=0, backend="tensorflow", device=spelling)
    assert repr(spelling) in str(info.value)
    assert all(p.state == "declared" or p.backend is None for p in net.collect_params().values())
    assert [p.backend for p in net.collect_params().values()] == [None] * 4
    net.initialize(seed=0, backend="tensorflow")
    assert net(x).shape == (4, 3)


@pytest.mark.skipif(HAS_GPU, reason="checks the error raised when TensorFlow lists no GPU")
@pytest.mark.parametrize("spelling", ["/GPU:0", "gpu", "GPU:1", "cuda", "cuda:0", "CUDA:2"])
def test_missing_gpu_raises_and_leaves_the_model_unchanged(spelling: str, x: np.ndarray) -> None:
    net = mlp()
    net.initialize(seed=1, backend="tensorflow")
    net(x)
    before = net.get_weights()
    variables = net.parameters()
    with pytest.raises(ValueError, match="no GPU") as info:
        net.initialize(seed=2, backend="tensorflow", device=spelling, force_reinit=True)
    message = str(info.value)
    assert repr(spelling) in message and "/CPU:0" in message and "pip install" in message
    assert all(a is b for a, b in zip(net.parameters(), variables))
    for got, want in zip(net.get_weights(), before):
        assert_same_bits(got, want)
    assert [p.seed for p in net.collect_params().values()] == [1] * 4


# -- 5. training ------------------------------------------------------------------------
def test_training_with_gradient_tape_and_keras_adam() -> None:
    rng = np.random.default_rng(0)
    inputs = rng.uniform(-1.0, 1.0, size=(256, 3)).astype(np.float32)
    targets = (np.sin(2.0 * inputs[:, :1]) + inputs[:, 1:2] * inputs[:, 2:3]).astype(np.float32)
    net = nn.Sequential([nn.Dense(32, activation="tanh"), nn.Dense(32, activation="tanh"), nn.Dense(1)])
    net.initialize(seed=0, backend="tensorflow")
    xs, ys = tf.constant(inputs), tf.constant(targets)
    initial = float(tf.reduce_mean((net(xs) - ys) ** 2))  # the eager first call materializes
    params = net.parameters()
    optimizer = tf.keras.optimizers.Adam(learning_rate=0.01)

    @tf.function
    def step() -> Any:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((net(xs) - ys) ** 2)
        grads = tape.gradient(loss, params)
        optimizer.apply_gradients(zip(grads, params))
        return loss

    for _ in range(300):
        step()
    final = float(tf.reduce_mean((net(xs) - ys) ** 2))
    assert final < initial / 10, (initial, final)
    assert all(p is q for p, q in zip(net.parameters(), params))  # updated in place


# -- 6. the first call is a transaction -------------------------------------------------
class TwoPath(nn.Block):
    """Layer ``b`` sees ``a``'s output joined with the input, so a wrong input fails at ``b``."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Dense(4, activation="relu")
        self.b = nn.Dense(2, in_units=6)

    def forward(self, t: Any) -> Any:
        return self.b(ops.concat([self.a(t), t], axis=-1))


@pytest.mark.parametrize("in_tf_function", [False, True])
def test_failing_first_call_rolls_back(in_tf_function: bool) -> None:
    net = TwoPath()
    net.initialize(seed=8, backend="tensorflow")
    params = net.collect_params()
    b_weight = params["b.weight"].data()
    b_bits = tf_bits(b_weight)
    before = {k: (p.state, p.shape) for k, p in params.items()}
    assert before["a.weight"] == ("declared", (4, -1))

    bad = np.ones((2, 3), np.float32)  # a gets 3 features, b then gets 7 instead of 6
    # Inside tf.function AutoGraph re-raises deferral's errors as its StagingError unless the
    # core marks them (see test_errors_keep_their_type_inside_tf_function); match the message.
    expected = Exception if in_tf_function else ShapeMismatchError
    with pytest.raises(expected, match=r"Dense 'b': expected 6 input features"):
        if in_tf_function:
            tf.function(lambda t: net(t))(tf.constant(bad))
        else:
            net(bad)
    assert {k: (p.state, p.shape) for k, p in params.items()} == before
    assert params["b.weight"].data() is b_weight
    np.testing.assert_array_equal(tf_bits(b_weight), b_bits)

    good = np.random.default_rng(0).standard_normal((2, 2)).astype(np.float32)
    # A tf.function whose first trace created variables and then raised is unusable in
    # TensorFlow itself (later calls return None), so the retry uses a new one.
    out = tf.function(lambda t: net(t))(tf.constant(good)) if in_tf_function else net(good)
    reference = TwoPath()
    reference.initialize(seed=8, backend="numpy")
    np.testing.assert_allclose(out.numpy(), reference(good), rtol=1e-6, atol=1e-6)
    for got, want in zip(net.get_weights(), reference.get_weights()):
        assert_same_bits(got, want)


def test_errors_keep_their_type_inside_tf_function() -> None:
    net = TwoPath()
    net.initialize(seed=8, backend="tensorflow")
    with pytest.raises(ShapeMismatchError, match=r"Dense 'b'"):
        tf.function(lambda t: net(t))(tf.ones((2, 3)))


# -- 7. copies --------------------------------------------------------------------------
def _round_trips() -> list[Callable[[Any], Any]]:
    return [lambda m: pickle.loads(pickle.dumps(m)), copy.deepcopy]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("how", _round_trips(), ids=["pickle", "deepcopy"])
def test_copy_before_and_after_materialization(how: Callable[[Any], Any], dtype: str, x: np.ndarray) -> None:
    net = mlp(init.Normal(0.5))
    net.initialize(seed=6, backend="tensorflow", dtype=dtype)
    deferred_copy = how(net)
    assert [p.state for p in deferred_copy.collect_params().values()] == ["declared", "shaped"] * 2

    net(x)
    want = net.get_weights()
    for clone in (deferred_copy, how(net)):
        clone(x)
        for got, w in zip(clone.get_weights(), want):
            assert_same_bits(got, w)
        for mine, theirs in zip(clone.parameters(), net.parameters()):
            assert isinstance(mine, tf.Variable) and mine is not theirs and mine.dtype == theirs.dtype
            np.testing.assert_array_equal(tf_bits(mine), tf_bits(theirs))
        np.testing.assert_array_equal(clone(x).numpy(), net(x).numpy())
    # The copy is independent of the original.
    clone = how(net)
    net.parameters()[0].assign_add(tf.ones_like(net.parameters()[0]))
    assert_same_bits(clone.get_weights()[0], want[0])


# -- 8. GPU -----------------------------------------------------------------------------
@needs_gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("initializer", INITIALIZERS, ids=repr)
def test_gpu_parameters_bit_identical_to_cpu(
    initializer: init.Initializer, dtype: str, x: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    cpu = materialized("tensorflow", dtype, 21, x, initializer)
    gpu = materialized("tensorflow", dtype, 21, x, initializer, device="cuda:0")
    for on_gpu, on_cpu in zip(gpu.parameters(), cpu.parameters()):
        assert on_gpu.device.endswith("device:GPU:0")
        np.testing.assert_array_equal(tf_bits(on_gpu), tf_bits(on_cpu))


@needs_gpu
def test_gpu_forward_and_spellings(x: np.ndarray) -> None:
    backend = deferral.load_backend("tensorflow")
    assert [backend.canonical_device(s) for s in ("gpu", "GPU:0", "/GPU:0", "cuda", "cuda:0")] == ["/GPU:0"] * 5
    count = len(tf.config.list_physical_devices("GPU"))
    with pytest.raises(ValueError, match=f"/GPU:{count}"):
        backend.canonical_device(f"cuda:{count}")
    cpu = materialized("tensorflow", "float32", 2, x)
    gpu = materialized("tensorflow", "float32", 2, x, device="/GPU:0")
    out = gpu(x)
    assert out.device.endswith("device:GPU:0")
    np.testing.assert_allclose(out.numpy(), cpu(x).numpy(), rtol=1e-5, atol=1e-5)


# -- 9. no framework import -------------------------------------------------------------
def test_plugin_and_discovery_import_no_tensorflow() -> None:
    code = (
        "import sys, deferral_tensorflow, deferral\n"
        "assert 'tensorflow' in deferral.available_backends()\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'torch') if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
