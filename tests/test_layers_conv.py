"""Convolution and pooling: ops against naive loops, layers across backends, deferred sizes, errors.

The NumPy ops are checked against straightforward loop implementations written here from the
definitions; the other backends are checked against NumPy. Tolerances: float64 1e-10 relative
(summation order only), float32 1e-5 relative with an absolute floor for values near zero.
Torch and TensorFlow parts skip where the framework is not installed.
"""

from __future__ import annotations

import copy
import importlib.util
import itertools
import math
import pickle
from typing import Any

import numpy as np
import pytest

import deferral
from deferral import nn, ops
from deferral.nn._conv import same_padding
from deferral.testing._layers_conv import CONV_LAYERS, POOL_LAYERS, small_cnn
from tests.conftest import snapshot

HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_TF = importlib.util.find_spec("tensorflow") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
needs_tf = pytest.mark.skipif(not HAS_TF, reason="tensorflow is not installed")

FRAMEWORKS = [
    pytest.param("torch", marks=needs_torch),
    pytest.param("tensorflow", marks=needs_tf),
]
BACKENDS = [pytest.param("numpy"), *FRAMEWORKS]
#: (rtol, atol) of a framework's forward pass against NumPy's.
TOLERANCE = {"float32": (1e-5, 1e-5), "float64": (1e-10, 1e-12)}


def host(value: Any) -> np.ndarray:
    """A backend array (or NumPy array) as a NumPy array."""
    if isinstance(value, np.ndarray):
        return value
    for name in ("torch", "tensorflow"):
        backend = deferral.load_backend(name) if importlib.util.find_spec(name) else None
        if backend is not None and backend.is_native(value):
            return np.asarray(backend.to_numpy(value))
    raise TypeError(type(value))


def native(backend: str, x: np.ndarray) -> Any:
    b = deferral.load_backend(backend)
    return b.to_native(x, None, b.canonical_device(None))


def bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.dtype(f"u{a.dtype.itemsize}"))


# -- naive references, written from the definitions -------------------------------------------
def naive_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, strides: tuple[int, ...],
               pads: tuple[tuple[int, int], ...], dilation: tuple[int, ...], groups: int) -> np.ndarray:
    """out[n, o, p] = b[o] + sum_{c, t} xpad[n, g*cg + c, p*s + t*d] * w[o, c, t]."""
    xp = np.pad(x.astype(np.float64), [(0, 0), (0, 0), *pads])
    n_out, cg = w.shape[0], x.shape[1] // groups
    og, kernel = n_out // groups, w.shape[2:]
    sizes = [(xp.shape[2 + i] - d * (k - 1) - 1) // s + 1 for i, (k, s, d) in enumerate(zip(kernel, strides, dilation))]
    out = np.zeros((x.shape[0], n_out, *sizes))
    for batch, o, pos in itertools.product(range(x.shape[0]), range(n_out), np.ndindex(*sizes)):
        g = o // og
        acc = 0.0 if b is None else float(b[o])
        for c, tap in itertools.product(range(cg), np.ndindex(*kernel)):
            at = tuple(p * s + t * d for p, s, t, d in zip(pos, strides, tap, dilation))
            acc += xp[(batch, g * cg + c, *at)] * w[(o, c, *tap)]
        out[(batch, o, *pos)] = acc
    return out


def naive_conv_transpose(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, strides: tuple[int, ...],
                         pads: tuple[tuple[int, int], ...], output_padding: tuple[int, ...],
                         dilation: tuple[int, ...], groups: int) -> np.ndarray:
    """Scatter: x[n, c, p] * w[c, oc, t] lands at p*s + t*d of the full output, then crop."""
    cg, og, kernel = x.shape[1] // groups, w.shape[1], w.shape[2:]
    full = [(size - 1) * s + d * (k - 1) + 1 + op
            for size, s, d, k, op in zip(x.shape[2:], strides, dilation, kernel, output_padding)]
    out = np.zeros((x.shape[0], og * groups, *full))
    for batch, c, pos in itertools.product(range(x.shape[0]), range(x.shape[1]), np.ndindex(*x.shape[2:])):
        g = c // cg
        for oc, tap in itertools.product(range(og), np.ndindex(*kernel)):
            at = tuple(p * s + t * d for p, s, t, d in zip(pos, strides, tap, dilation))
            out[(batch, g * og + oc, *at)] += x[(batch, c, *pos)] * w[(c, oc, *tap)]
    out = out[(slice(None), slice(None), *(slice(bf, f - af) for (bf, af), f in zip(pads, full)))]
    return out if b is None else out + b.reshape(-1, *(1,) * len(kernel))


def naive_pool(kind: str, x: np.ndarray, window: tuple[int, ...], strides: tuple[int, ...],
               pads: tuple[tuple[int, int], ...], count_include_pad: bool = True) -> np.ndarray:
    """Each window in padded coordinates; only in-bounds elements take part (max), or count
    toward the divisor (avg without count_include_pad)."""
    spatial = x.shape[2:]
    sizes = [(size + b + a - k) // s + 1 for size, (b, a), k, s in zip(spatial, pads, window, strides)]
    out = np.zeros((*x.shape[:2], *sizes))
    for batch, c, pos in itertools.product(range(x.shape[0]), range(x.shape[1]), np.ndindex(*sizes)):
        values = []
        for tap in np.ndindex(*window):
            at = tuple(p * s + t - b for p, s, t, (b, _) in zip(pos, strides, tap, pads))
            if all(0 <= i < size for i, size in zip(at, spatial)):
                values.append(float(x[(batch, c, *at)]))
        if kind == "max":
            out[(batch, c, *pos)] = max(values)
        else:
            out[(batch, c, *pos)] = sum(values) / (math.prod(window) if count_include_pad else len(values))
    return out


# -- NumPy ops against the loops ---------------------------------------------------------------
CONV_CONFIGS = [
    # id, x shape, weight shape, strides, padding, dilation, groups, bias
    ("1d-plain", (2, 3, 9), (4, 3, 3), (1,), ((0, 0),), (1,), 1, True),
    ("1d-stride-dilation-asym", (2, 4, 13), (6, 2, 4), (3,), ((2, 1),), (2,), 2, False),
    ("2d-same-even-kernel", (2, 3, 7, 8), (5, 3, 4, 2), (1, 1), ((1, 2), (0, 1)), (1, 1), 1, True),
    ("2d-stride-groups", (1, 6, 9, 7), (6, 2, 3, 3), (2, 3), ((1, 1), (2, 0)), (1, 1), 3, True),
    ("2d-depthwise-dilated", (2, 4, 8, 8), (4, 1, 3, 2), (1, 2), ((0, 0), (1, 1)), (2, 3), 4, False),
    ("3d", (1, 2, 5, 4, 6), (3, 2, 2, 3, 2), (2, 1, 2), ((1, 0), (1, 1), (0, 1)), (1, 1, 2), 1, True),
    ("3d-groups", (1, 4, 4, 4, 4), (4, 2, 2, 2, 2), (1, 1, 1), ((0, 0), (0, 0), (0, 0)), (2, 1, 1), 2, True),
]


@pytest.mark.parametrize("config", CONV_CONFIGS, ids=[c[0] for c in CONV_CONFIGS])
def test_numpy_conv_matches_naive_loops(config: tuple[Any, ...]) -> None:
    _, xs, ws, strides, pads, dilation, groups, with_bias = config
    r = np.random.default_rng(0)
    x, w = r.standard_normal(xs), r.standard_normal(ws)
    b = r.standard_normal(ws[0]) if with_bias else None
    got = ops.conv(x, w, b, strides, pads, dilation, groups)
    want = naive_conv(x, w, b, strides, pads, dilation, groups)
    assert got.shape == want.shape and got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    single = ops.conv(x.astype(np.float32), w.astype(np.float32), None if b is None else b.astype(np.float32),
                      strides, pads, dilation, groups)
    assert single.dtype == np.float32
    np.testing.assert_allclose(single, want, rtol=1e-4, atol=1e-4)


CONV_T_CONFIGS = [
    # id, x shape, weight shape (C_in, C_out / groups, *kernel), strides, padding, output_padding,
    # dilation, groups, bias
    ("1d-plain", (2, 3, 5), (3, 2, 3), (1,), ((0, 0),), (0,), (1,), 1, True),
    ("1d-stride-pad-outpad", (2, 4, 6), (4, 3, 4), (2,), ((1, 1),), (1,), (1,), 1, False),
    ("1d-asym-dilation-groups", (1, 4, 5), (4, 2, 3), (3,), ((2, 0),), (2,), (2,), 2, True),
    ("2d-stride", (2, 3, 4, 3), (3, 2, 3, 3), (2, 2), ((1, 1), (0, 0)), (1, 0), (1, 1), 1, True),
    ("2d-asym-groups-dilation", (1, 4, 3, 4), (4, 3, 2, 3), (2, 1), ((0, 1), (2, 1)), (1, 0), (1, 2), 2, False),
    ("3d", (1, 2, 3, 2, 3), (2, 2, 2, 2, 3), (2, 1, 2), ((1, 0), (0, 0), (1, 1)), (0, 0, 1), (1, 2, 1), 1, True),
]


@pytest.mark.parametrize("config", CONV_T_CONFIGS, ids=[c[0] for c in CONV_T_CONFIGS])
def test_numpy_conv_transpose_matches_naive_scatter(config: tuple[Any, ...]) -> None:
    _, xs, ws, strides, pads, op, dilation, groups, with_bias = config
    r = np.random.default_rng(1)
    x, w = r.standard_normal(xs), r.standard_normal(ws)
    b = r.standard_normal(ws[1] * groups) if with_bias else None
    got = ops.conv_transpose(x, w, b, strides, pads, op, dilation, groups)
    want = naive_conv_transpose(x, w, b, strides, pads, op, dilation, groups)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def _adjoint_case(config: tuple[Any, ...]) -> tuple[Any, ...]:
    """x, y, weight and the output_padding that makes conv_transpose(y) the size of x."""
    _, xs, ws, strides, pads, dilation, groups, _ = config
    r = np.random.default_rng(2)
    x, w = r.standard_normal(xs), r.standard_normal(ws)
    y_shape = ops.shape(ops.conv(x, w, None, strides, pads, dilation, groups))
    y = r.standard_normal(y_shape)
    op = tuple(size - ((m - 1) * s - b - a + d * (k - 1) + 1) for size, m, s, (b, a), d, k in
               zip(xs[2:], y_shape[2:], strides, pads, dilation, ws[2:]))
    assert all(0 <= o < s for o, s in zip(op, strides))
    return x, y, w, op


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("config", CONV_CONFIGS, ids=[c[0] for c in CONV_CONFIGS])
def test_conv_transpose_is_the_adjoint_of_conv(config: tuple[Any, ...], backend: str) -> None:
    """<conv(x), y> == <x, conv_transpose(y)> with the same weight, strides, padding, dilation."""
    _, _, _, strides, pads, dilation, groups, _ = config
    x, y, w, op = _adjoint_case(config)
    forward = host(ops.conv(native(backend, x), native(backend, w), None, strides, pads, dilation, groups))
    back = host(ops.conv_transpose(native(backend, y), native(backend, w), None, strides, pads, op, dilation,
                                   groups))
    assert back.shape == x.shape
    lhs, rhs = float(np.sum(forward * y)), float(np.sum(x * back))
    assert lhs == pytest.approx(rhs, rel=1e-12, abs=1e-12)


@needs_torch
@pytest.mark.parametrize("config", CONV_T_CONFIGS, ids=[c[0] for c in CONV_T_CONFIGS])
def test_numpy_conv_transpose_matches_torch(config: tuple[Any, ...]) -> None:
    """Against torch's own conv_transposeNd (asymmetric padding: its full output, cropped)."""
    import torch
    import torch.nn.functional as F

    _, xs, ws, strides, pads, op, dilation, groups, with_bias = config
    r = np.random.default_rng(3)
    x, w = r.standard_normal(xs), r.standard_normal(ws)
    b = r.standard_normal(ws[1] * groups) if with_bias else None
    fn = getattr(F, f"conv_transpose{len(strides)}d")
    full = fn(torch.tensor(x), torch.tensor(w), None if b is None else torch.tensor(b), strides, 0, 0, groups,
              dilation).numpy()
    full = np.pad(full, [(0, 0), (0, 0), *((0, o) for o in op)])
    if b is not None:  # torch's bias covers the output_padding too
        full[(slice(None), slice(None), *(slice(f - o, None) for f, o in zip(full.shape[2:], op)))] += (
            b.reshape(-1, *(1,) * len(op)))
    want = full[(slice(None), slice(None), *(slice(bf, size - af) for (bf, af), size in zip(pads, full.shape[2:])))]
    if all(bf == af for bf, af in pads):
        symmetric = fn(torch.tensor(x), torch.tensor(w), None if b is None else torch.tensor(b), strides,
                       tuple(bf for bf, _ in pads), op, groups, dilation).numpy()
        np.testing.assert_allclose(symmetric, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ops.conv_transpose(x, w, b, strides, pads, op, dilation, groups), want,
                               rtol=1e-12, atol=1e-12)


POOL_CONFIGS = [
    # id, x shape, window, strides, padding
    ("1d", (2, 3, 9), (3,), (2,), ((1, 1),)),
    ("1d-asym", (1, 2, 10), (4,), (3,), ((2, 1),)),
    ("2d", (2, 2, 6, 6), (2, 2), (2, 2), ((0, 0), (0, 0))),
    ("2d-overlap-asym", (1, 3, 7, 5), (3, 2), (1, 2), ((1, 2), (0, 1))),
    ("3d", (1, 2, 4, 5, 3), (2, 3, 2), (2, 1, 1), ((0, 1), (1, 1), (1, 0))),
]


@pytest.mark.parametrize("config", POOL_CONFIGS, ids=[c[0] for c in POOL_CONFIGS])
def test_numpy_pooling_matches_naive_loops(config: tuple[Any, ...]) -> None:
    _, xs, window, strides, pads = config
    x = np.random.default_rng(4).standard_normal(xs)
    np.testing.assert_array_equal(ops.max_pool(x, window, strides, pads), naive_pool("max", x, window, strides, pads))
    for include in (True, False):
        got = ops.avg_pool(x, window, strides, pads, include)
        np.testing.assert_allclose(got, naive_pool("avg", x, window, strides, pads, include), rtol=1e-12, atol=1e-14)
    single = ops.max_pool(x.astype(np.float32), window, strides, pads)
    assert single.dtype == np.float32 and np.isfinite(single).all()


def test_same_padding_gives_ceil_of_size_over_stride_with_the_extra_pad_after() -> None:
    for size, k, s, d in itertools.product(range(1, 12), range(1, 6), range(1, 4), range(1, 3)):
        ((before, after),) = same_padding((size,), (k,), (s,), (d,))
        padded = size + before + after
        assert (padded - d * (k - 1) - 1) // s + 1 == -(-size // s)
        assert after - before in (0, 1)
    assert same_padding((32, 32), (4, 4), (1, 2), (1, 1)) == ((1, 2), (1, 1))


@needs_tf
@pytest.mark.parametrize(("size", "kernel", "stride"), [(8, 4, 1), (9, 2, 2), (7, 3, 2), (10, 5, 3), (6, 4, 4)])
def test_same_padding_matches_tensorflow_same(size: int, kernel: int, stride: int) -> None:
    """Conv2D, MaxPool2D and AvgPool2D(count_include_pad=False) with "same" agree with TF's SAME."""
    import tensorflow as tf

    x = np.random.default_rng(5).standard_normal((2, 3, size, size + 1))
    conv = nn.Conv2D(4, kernel, strides=stride, padding="same", use_bias=False)
    conv.initialize(seed=1, dtype="float64")
    got = conv(x)
    assert got.shape[2:] == (-(-size // stride), -(-(size + 1) // stride))
    nhwc = tf.constant(x.transpose(0, 2, 3, 1))
    kernel_tf = tf.constant(conv.weight.data().transpose(2, 3, 1, 0))
    want = tf.nn.conv2d(nhwc, kernel_tf, stride, "SAME").numpy().transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    window = min(kernel, 3)
    for layer, fn in ((nn.MaxPool2D(window, stride, padding="same"), tf.nn.max_pool2d),
                      (nn.AvgPool2D(window, stride, padding="same", count_include_pad=False), tf.nn.avg_pool2d)):
        want = fn(nhwc, window, stride, "SAME").numpy().transpose(0, 3, 1, 2)
        np.testing.assert_allclose(layer(x), want, rtol=1e-12, atol=1e-12)


# -- layers on every backend --------------------------------------------------------------------
def run(make: Any, backend: str, x: np.ndarray, dtype: str, seed: int = 11) -> tuple[nn.Block, np.ndarray]:
    net = make()
    net.initialize(seed=seed, dtype=dtype, backend=backend)
    return net, host(net(x))


def assert_same_parameters(a: nn.Block, b: nn.Block) -> None:
    pa, pb = a.collect_params(), b.collect_params()
    assert list(pa) == list(pb)
    for (path, p), w, v in zip(pa.items(), a.get_weights(), b.get_weights()):
        assert p.shape == pb[path].shape and w.shape == v.shape and w.dtype == v.dtype, path
        assert np.array_equal(bits(w), bits(v)), f"{path}: bits differ"


@pytest.mark.parametrize("backend", FRAMEWORKS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", list(CONV_LAYERS))
def test_conv_layers_match_numpy(case: str, dtype: str, backend: str) -> None:
    make, shape = CONV_LAYERS[case]
    x = np.random.default_rng(6).standard_normal(shape).astype(dtype)
    ref, want = run(make, "numpy", x, dtype)
    net, got = run(make, backend, x, dtype)
    assert_same_parameters(net, ref)
    assert got.dtype == np.dtype(dtype) and got.shape == want.shape
    rtol, atol = TOLERANCE[dtype]
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


@pytest.mark.parametrize("backend", FRAMEWORKS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", list(POOL_LAYERS))
def test_pool_layers_match_numpy(case: str, dtype: str, backend: str) -> None:
    make, shape = POOL_LAYERS[case]
    x = np.random.default_rng(7).standard_normal(shape).astype(dtype)
    want = make()(x)
    got = host(_on(backend, make(), x))
    assert got.dtype == np.dtype(dtype) and got.shape == want.shape
    rtol, atol = TOLERANCE[dtype]
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def _on(backend: str, block: nn.Block, x: np.ndarray) -> Any:
    """Run a block without parameters on ``backend`` (it runs on the default backend)."""
    with deferral.use_backend(backend):
        return block(x)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_small_cnn_runs_everywhere_with_identical_weights(backend: str, dtype: str) -> None:
    """Conv2D -> MaxPool2D -> Conv2D -> AvgPool2D -> Flatten -> Dense -> Dense."""
    x = np.random.default_rng(8).standard_normal((4, 1, 12, 12)).astype(dtype)
    ref, want = run(small_cnn, "numpy", x, dtype, seed=2024)
    net, got = run(small_cnn, backend, x, dtype, seed=2024)
    assert_same_parameters(net, ref)
    shapes = {path: p.shape for path, p in net.collect_params().items()}
    assert shapes == {
        "0.weight": (6, 1, 5, 5), "0.bias": (6,), "2.weight": (16, 6, 3, 3), "2.bias": (16,),
        "5.weight": (24, 64), "5.bias": (24,), "6.weight": (10, 24), "6.bias": (10,),
    }
    rtol, atol = TOLERANCE[dtype]
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    # The materialized model takes another batch size with no checks but a flag.
    np.testing.assert_allclose(host(net(x[:1])), want[:1], rtol=rtol, atol=atol)


def test_input_resolution_changes_only_the_dense_after_flatten() -> None:
    """Before materialization, the input size is free: 28x28 and 32x32 give the same convolution
    parameters (same shapes, same bits: values depend on seed, path and shape), and only the
    first Dense after Flatten differs."""
    shapes, weights = {}, {}
    for size in (28, 32):
        net = small_cnn()
        net.initialize(seed=3)
        assert net.collect_params()["5.weight"].shape == (24, -1)
        assert net(np.ones((2, 1, size, size), dtype="float32")).shape == (2, 10)
        shapes[size] = {path: p.shape for path, p in net.collect_params().items()}
        weights[size] = dict(zip(net.collect_params(), net.get_weights()))
    differ = {path for path in shapes[28] if shapes[28][path] != shapes[32][path]}
    assert differ == {"5.weight"}
    # 28: conv5 pad 2 -> 28, pool -> 14, conv3 -> 12, pool -> 6;  32: 32 -> 16 -> 14 -> 7.
    assert shapes[28]["5.weight"] == (24, 16 * 6 * 6) and shapes[32]["5.weight"] == (24, 16 * 7 * 7)
    for path in ("0.weight", "0.bias", "2.weight", "2.bias", "6.weight", "6.bias"):
        assert np.array_equal(bits(weights[28][path]), bits(weights[32][path])), path


@needs_tf
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_tensorflow_layers_inside_tf_function_with_unknown_batch(dtype: str) -> None:
    import tensorflow as tf

    x = np.random.default_rng(9).standard_normal((3, 1, 12, 12)).astype(dtype)
    rtol, atol = TOLERANCE[dtype]

    def model() -> nn.Sequential:
        return nn.Sequential([small_cnn()[:4], nn.Conv2DTranspose(2, 3, strides=2, padding=(1, 0), output_padding=1),
                              nn.GlobalAvgPool2D(), nn.Flatten()])

    ref = model()
    ref.initialize(seed=4, dtype=dtype)
    want = ref(x)
    net = model()
    net.initialize(seed=4, dtype=dtype, backend="tensorflow")
    graph = tf.function(lambda t: net(t), input_signature=[tf.TensorSpec([None, 1, 12, 12], getattr(tf, dtype))])
    np.testing.assert_allclose(graph(tf.constant(x)).numpy(), want, rtol=rtol, atol=atol)  # first call inside
    np.testing.assert_allclose(graph(tf.constant(x[:1])).numpy(), want[:1], rtol=rtol, atol=atol)
    assert_same_parameters(net, ref)
    assert graph.get_concrete_function().structured_outputs.shape.as_list() == [None, 2]


@needs_tf
def test_same_padding_with_unknown_spatial_size_in_tf_function_says_what_to_do() -> None:
    import tensorflow as tf

    net = nn.Conv2D(2, 3, padding="same", in_channels=1)
    net.initialize(seed=0, backend="tensorflow")
    graph = tf.function(lambda t: net(t), input_signature=[tf.TensorSpec([None, 1, None, None], tf.float32)])
    with pytest.raises(ValueError, match="padding='same' depends on the spatial sizes"):
        graph.get_concrete_function()
    explicit = nn.Conv2D(2, 3, padding=1, in_channels=1)
    explicit.initialize(seed=0, backend="tensorflow")
    graph = tf.function(lambda t: explicit(t), input_signature=[tf.TensorSpec([None, 1, None, None], tf.float32)])
    assert graph(tf.ones((2, 1, 5, 6))).shape == (2, 2, 5, 6)


@needs_torch
def test_torch_autograd_flows_through_conv_and_gives_the_transposed_conv() -> None:
    """The gradient of <conv(x), g> with respect to x is conv_transpose(g): torch's autograd
    through F.pad (asymmetric "same" padding) and the conv agrees with the NumPy op."""
    import torch

    layer = nn.Conv2D(4, (4, 3), strides=2, padding="same", groups=2)
    layer.initialize(seed=5, dtype="float64", backend="torch")
    x = torch.tensor(np.random.default_rng(10).standard_normal((2, 6, 9, 8)), requires_grad=True)
    y = layer(x)
    g = np.random.default_rng(11).standard_normal(tuple(y.shape))
    (y * torch.tensor(g)).sum().backward()
    pads = same_padding((9, 8), (4, 3), (2, 2), (1, 1))
    w = layer.weight.data().detach().numpy()
    op = tuple(size - ((m - 1) * 2 - b - a + k) for size, m, (b, a), k in zip((9, 8), y.shape[2:], pads, (4, 3)))
    want = ops.conv_transpose(g, w, None, (2, 2), pads, op, (1, 1), 2)
    np.testing.assert_allclose(x.grad.numpy(), want, rtol=1e-12, atol=1e-12)
    assert layer.weight.data().grad is not None and layer.bias.data().grad is not None

    net = nn.Sequential([nn.Conv1DTranspose(3, 3, strides=2, padding=(1, 0)), nn.MaxPool1D(2, padding=1),
                         nn.AvgPool1D(2, count_include_pad=False, padding=(0, 1))])
    net.initialize(seed=6, backend="torch")
    net(torch.ones((1, 2, 5))).sum().backward()
    assert net[0].weight.data().grad.abs().sum() > 0


@needs_tf
def test_tensorflow_gradient_tape_reaches_conv_weights() -> None:
    import tensorflow as tf

    net = nn.Sequential([nn.Conv3D(2, 2, dilation=(1, 2, 1), groups=1), nn.Conv3DTranspose(2, 2, strides=2, groups=2),
                         nn.MaxPool3D(2), nn.AvgPool3D(2, padding=1, count_include_pad=False)])
    net.initialize(seed=7, backend="tensorflow")
    x = tf.constant(np.random.default_rng(12).standard_normal((1, 2, 4, 5, 4)).astype("float32"))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(net(x) ** 2)
    grads = tape.gradient(loss, net.parameters())
    assert len(grads) == 4 and all(g is not None for g in grads)
    assert float(tf.reduce_sum(tf.abs(grads[0]))) > 0


# -- deferred sizes --------------------------------------------------------------------------------
def test_in_channels_are_inferred_on_the_first_call() -> None:
    net = nn.Sequential([nn.Conv2D(16, 3, groups=2), nn.Conv2DTranspose(8, 2, strides=2), nn.Conv1D(4, 3)])
    assert net[0].weight.shape == (16, -1, 3, 3) and net[0].in_channels is None
    assert net[1].weight.shape == (-1, 8, 2, 2)
    net.initialize(seed=0)
    assert [p.state for p in net.collect_params().values()] == ["declared", "shaped"] * 3
    net[:2](np.ones((1, 6, 10, 10), dtype="float32"))
    assert net[0].weight.shape == (16, 3, 3, 3) and net[0].in_channels == 6
    assert net[1].weight.shape == (16, 8, 2, 2) and net[1].in_channels == 16
    assert net[2].weight.shape == (4, -1, 3)


def test_known_in_channels_materialize_at_initialize() -> None:
    net = nn.Sequential([nn.Conv2D(8, 3, in_channels=4, groups=4), nn.Conv2DTranspose(3, 3, in_channels=8),
                         nn.Conv2D(2, 1)])
    net.initialize(seed=1)
    params = net.collect_params()
    assert params["0.weight"].state == "materialized" and params["0.weight"].shape == (8, 1, 3, 3)
    assert params["1.weight"].state == "materialized" and params["1.weight"].shape == (8, 3, 3, 3)
    assert params["2.weight"].state == "declared"


def test_conv_weight_fans_follow_out_in_kernel() -> None:
    """Kaiming/Xavier see (out, in/groups, *kernel); for a transposed weight (in, out/groups,
    *kernel) that makes fan_in = out/groups * prod(kernel), as PyTorch computes it."""
    conv = nn.Conv2D(32, 3, in_channels=8, groups=2, weight_initializer=deferral.init.Uniform(1.0))
    assert deferral.init.fans(conv.weight.shape) == (4 * 9, 32 * 9)
    up = nn.Conv2DTranspose(6, 3, in_channels=8, groups=2)
    assert deferral.init.fans(up.weight.shape) == (3 * 9, 8 * 9)
    up.initialize(seed=0, init="he_uniform", dtype="float64")
    bound = math.sqrt(2.0) * math.sqrt(3.0 / (3 * 9))
    w = up.weight.data()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.8 * bound


# -- errors --------------------------------------------------------------------------------------
def test_wrong_rank_names_the_layer_and_the_layout() -> None:
    net = nn.Sequential([nn.MaxPool1D(1), nn.MaxPool1D(1), nn.MaxPool1D(1), nn.Conv2D(4, 3)])
    net.initialize(seed=0)
    with pytest.raises(ValueError) as info:
        net(np.ones((2, 3, 32), dtype="float32"))
    assert str(info.value).startswith(
        "Conv2D '3': expected input of rank 4 (N, C, H, W); received shape (2, 3, 32).")
    with pytest.raises(ValueError, match=r"MaxPool1D '0': expected input of rank 3 \(N, C, W\)"):
        net(np.ones((2, 3), dtype="float32"))
    with pytest.raises(ValueError, match=r"expected input of rank 5 \(N, C, D, H, W\)"):
        nn.GlobalAvgPool3D()(np.ones((2, 3, 4, 4), dtype="float32"))


def test_mismatching_in_channels_roll_back_the_whole_first_call() -> None:
    net = nn.Sequential([nn.Conv2D(8, 3, activation="relu"), nn.MaxPool2D(), nn.Conv2D(4, 3, in_channels=6)])
    net.initialize(seed=0)
    before = snapshot(net)
    with pytest.raises(deferral.ShapeMismatchError) as info:
        net(np.ones((2, 3, 16, 16), dtype="float32"))
    msg = str(info.value)
    assert "Conv2D '2'" in msg and "expected 6 input channels" in msg and "(2, 8, 7, 7) with 8" in msg
    assert snapshot(net) == before  # layer 0, materialized during the failed call, is declared again
    assert net[0].weight.shape == (8, -1, 3, 3)


def test_channels_not_divisible_by_groups() -> None:
    net = nn.Sequential([nn.Conv2D(6, 1), nn.Conv2D(4, 3, groups=4)])
    net.initialize(seed=0)
    before = snapshot(net)
    with pytest.raises(deferral.ShapeMismatchError, match=r"Conv2D '1': the input's 6 channels are not divisible by groups=4"):
        net(np.ones((1, 3, 8, 8), dtype="float32"))
    assert snapshot(net) == before
    with pytest.raises(ValueError, match=r"Conv2D: channels must be divisible by groups. Received: channels=6, groups=4"):
        nn.Conv2D(6, 3, groups=4)
    with pytest.raises(ValueError, match=r"in_channels must be divisible by groups. Received: in_channels=6"):
        nn.Conv2DTranspose(4, 3, groups=4, in_channels=6)


def test_kernel_larger_than_the_padded_input() -> None:
    net = nn.Sequential([nn.Conv2D(4, 3), nn.Conv2D(2, (5, 1), dilation=2)])
    net.initialize(seed=0)
    before = snapshot(net)
    with pytest.raises(deferral.ShapeMismatchError) as info:
        net(np.ones((1, 3, 10, 10), dtype="float32"))
    msg = str(info.value)
    assert "Conv2D '1'" in msg and "spans 9 along H" in msg and "padded input's 8" in msg
    assert snapshot(net) == before
    assert net(np.ones((1, 3, 11, 5), dtype="float32")).shape == (1, 2, 1, 3)
    # A materialized layer checks a new spatial size too, and then still works on the old one.
    with pytest.raises(deferral.ShapeMismatchError, match="spans 9 along H"):
        net(np.ones((1, 3, 6, 6), dtype="float32"))
    assert net(np.ones((1, 3, 11, 5), dtype="float32")).shape == (1, 2, 1, 3)
    with pytest.raises(deferral.ShapeMismatchError, match=r"MaxPool2D.*window \(pool_size=\(3, 3\)\) spans 3 along W"):
        nn.MaxPool2D(3)(np.ones((1, 1, 4, 2)))
    layer = nn.Conv1DTranspose(2, 2, padding=(1, 1), in_channels=1)
    layer.initialize(seed=0)
    with pytest.raises(deferral.ShapeMismatchError, match="the output would have size 0 along W"):
        layer(np.ones((1, 1, 1), dtype="float32"))
    assert layer(np.ones((1, 1, 2), dtype="float32")).shape == (1, 2, 1)


@pytest.mark.parametrize(("make", "message"), [
    (lambda: nn.Conv2D(-3, 3), "Conv2D: expected a positive integer for channels. Received: channels=-3"),
    (lambda: nn.Conv2D(4, (3, 3, 3)), "Conv2D: expected a positive integer or a tuple of 2 positive integers for kernel_size. Received: kernel_size=(3, 3, 3)"),
    (lambda: nn.Conv1D(4, 3, strides=0), "Conv1D: expected a positive integer or a tuple of 1 positive integers for strides. Received: strides=0"),
    (lambda: nn.Conv2D(4, 3, padding="full"), "Conv2D: expected padding as a non-negative integer, a tuple of 2 of them, a tuple of 2 (before, after) pairs, 'valid' or 'same'. Received: padding='full'"),
    (lambda: nn.Conv2D(4, 3, padding=(1, -1)), "Received: padding=(1, -1)"),
    (lambda: nn.Conv3D(4, 3, dilation=True), "for dilation. Received: dilation=True"),
    (lambda: nn.Conv2D(4, 3, in_channels=0), "expected a positive integer for in_channels. Received: in_channels=0"),
    (lambda: nn.Conv2D(4, 3, activation="swishy"), "unknown activation 'swishy'"),
    (lambda: nn.Conv2DTranspose(4, 3, strides=2, output_padding=2), "output_padding must be smaller than strides or dilation"),
    (lambda: nn.MaxPool2D(2, padding=2), "padding must be smaller than pool_size on each side"),
    (lambda: nn.AvgPool1D(0), "expected a positive integer or a tuple of 1 positive integers for pool_size"),
])
def test_constructor_arguments_are_validated(make: Any, message: str) -> None:
    with pytest.raises(ValueError) as info:
        make()
    assert message in str(info.value)


# -- behaviour details ---------------------------------------------------------------------------
def test_padding_forms_are_equivalent() -> None:
    x = np.random.default_rng(13).standard_normal((1, 2, 6, 7))
    outs = []
    for padding in (1, (1, 1), ((1, 1), (1, 1)), [[1, 1], [1, 1]]):
        layer = nn.Conv2D(3, 3, padding=padding)
        layer.initialize(seed=0, dtype="float64")
        outs.append(layer(x))
        assert layer.padding == ((1, 1), (1, 1))
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])
    assert nn.Conv2D(3, 3, padding="VALID").padding == ((0, 0), (0, 0))
    assert nn.Conv1D(3, 3, padding=(2, 0)).padding == ((2, 0),)


def test_global_pools_keep_size_one_spatial_axes() -> None:
    x = np.random.default_rng(14).standard_normal((2, 3, 4, 5))
    avg = nn.GlobalAvgPool2D()(x)
    assert avg.shape == (2, 3, 1, 1)
    np.testing.assert_allclose(avg[:, :, 0, 0], x.mean(axis=(2, 3)), rtol=1e-14)
    assert np.array_equal(nn.GlobalMaxPool2D()(x)[:, :, 0, 0], x.max(axis=(2, 3)))
    assert nn.Sequential([nn.GlobalAvgPool2D(), nn.Flatten()])(x).shape == (2, 3)


def test_repr_shows_the_configuration() -> None:
    net = nn.Sequential([nn.Conv2D(16, 3, padding="same", activation="relu"),
                         nn.Conv2DTranspose(8, 4, strides=2, padding=1, groups=2, use_bias=False),
                         nn.MaxPool2D(), nn.AvgPool1D(3, 1, padding=(1, 0), count_include_pad=False),
                         nn.GlobalAvgPool2D()])
    assert repr(net) == (
        "Sequential(\n"
        "  (0): Conv2D(-1 -> 16, kernel_size=(3, 3), strides=(1, 1), padding='same', relu)\n"
        "  (1): Conv2DTranspose(-1 -> 8, kernel_size=(4, 4), strides=(2, 2), padding=(1, 1), groups=2, use_bias=False)\n"
        "  (2): MaxPool2D(pool_size=(2, 2), strides=(2, 2))\n"
        "  (3): AvgPool1D(pool_size=(3,), strides=(1,), padding=((1, 0),), count_include_pad=False)\n"
        "  (4): GlobalAvgPool2D()\n"
        ")"
    )
    net.initialize(seed=0)
    net[:2](np.ones((1, 3, 8, 8), dtype="float32"))
    assert repr(net[0]).startswith("Conv2D(3 -> 16,") and repr(net[1]).startswith("Conv2DTranspose(16 -> 8,")


def test_pickle_and_deepcopy_keep_every_bit() -> None:
    net = small_cnn()
    net.initialize(seed=9)
    x = np.random.default_rng(15).standard_normal((2, 1, 12, 12)).astype("float32")
    want = net(x)
    for clone in (pickle.loads(pickle.dumps(net)), copy.deepcopy(net)):
        assert_same_parameters(clone, net)
        np.testing.assert_array_equal(clone(x), want)


# -- ceil_mode and adaptive pooling against PyTorch --------------------------------------------
_TORCH_POOLS: list[tuple[str, Any, Any]] = [
    # (id, deferral layer, torch.nn.functional call)
    ("max-ceil", lambda: nn.MaxPool2D(3, strides=2, padding=1, ceil_mode=True),
     lambda F, x: F.max_pool2d(x, 3, 2, 1, ceil_mode=True)),
    ("max-ceil-last-window-dropped", lambda: nn.MaxPool1D(3, strides=3, padding=1, ceil_mode=True),
     lambda F, x: F.max_pool1d(x, 3, 3, 1, ceil_mode=True)),
    ("max-ceil-2", lambda: nn.MaxPool2D(2, ceil_mode=True), lambda F, x: F.max_pool2d(x, 2, ceil_mode=True)),
    ("avg-ceil", lambda: nn.AvgPool2D(3, strides=2, padding=1, ceil_mode=True),
     lambda F, x: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True)),
    ("avg-ceil-exclude-pad", lambda: nn.AvgPool2D(3, strides=2, padding=1, ceil_mode=True, count_include_pad=False),
     lambda F, x: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False)),
    ("avg-ceil-nopad", lambda: nn.AvgPool2D((2, 3), strides=(2, 2), ceil_mode=True),
     lambda F, x: F.avg_pool2d(x, (2, 3), (2, 2), ceil_mode=True)),
    ("avg1d-ceil-dropped", lambda: nn.AvgPool1D(3, strides=3, padding=1, ceil_mode=True),
     lambda F, x: F.avg_pool1d(x, 3, 3, 1, ceil_mode=True)),
    ("adaptive-avg", lambda: nn.AdaptiveAvgPool2D((3, 4)), lambda F, x: F.adaptive_avg_pool2d(x, (3, 4))),
    ("adaptive-avg-up", lambda: nn.AdaptiveAvgPool2D(7), lambda F, x: F.adaptive_avg_pool2d(x, 7)),
    ("adaptive-avg-none", lambda: nn.AdaptiveAvgPool2D((None, 2)), lambda F, x: F.adaptive_avg_pool2d(x, (None, 2))),
    ("adaptive-avg1d", lambda: nn.AdaptiveAvgPool1D(3), lambda F, x: F.adaptive_avg_pool1d(x, 3)),
    ("adaptive-max", lambda: nn.AdaptiveMaxPool2D((2, 3)), lambda F, x: F.adaptive_max_pool2d(x, (2, 3))),
    ("adaptive-max1d", lambda: nn.AdaptiveMaxPool1D(4), lambda F, x: F.adaptive_max_pool1d(x, 4)),
]


@pytest.mark.parametrize("shape", [(2, 3, 7, 9), (1, 2, 5, 5), (1, 1, 3, 4)])
@pytest.mark.parametrize("case,make,theirs", _TORCH_POOLS, ids=[c[0] for c in _TORCH_POOLS])
def test_pooling_matches_torch(case: str, make: Any, theirs: Any, shape: tuple[int, ...]) -> None:
    """ceil_mode (output sizes, the dropped last window, divisors of overhanging windows) and
    the adaptive windows agree with torch.nn.functional in float64."""
    torch = pytest.importorskip("torch")
    layer = make()
    x = np.random.default_rng(sum(shape)).standard_normal(shape if layer._ndim == 2 else shape[:2] + shape[3:])
    want = theirs(torch.nn.functional, torch.from_numpy(x)).numpy()
    with deferral.use_backend("numpy"):
        got = layer(x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)


def test_ceil_mode_output_sizes_and_repr() -> None:
    assert nn.MaxPool2D(2, ceil_mode=True).infer_shape((1, 3, 7, 8)) == (1, 3, 4, 4)
    assert nn.MaxPool2D(2).infer_shape((1, 3, 7, 8)) == (1, 3, 3, 4)
    # the last window would start in the right padding: dropped, as PyTorch does
    assert nn.MaxPool1D(3, strides=3, padding=1, ceil_mode=True).infer_shape((1, 1, 5)) == (1, 1, 2)
    assert repr(nn.AvgPool2D(2, ceil_mode=True)) == "AvgPool2D(pool_size=(2, 2), strides=(2, 2), ceil_mode=True)"
    assert repr(nn.AdaptiveAvgPool2D((7, 7))) == "AdaptiveAvgPool2D(output_size=(7, 7))"
    with pytest.raises(ValueError, match="expected True or False for ceil_mode"):
        nn.MaxPool2D(2, ceil_mode=1)


@pytest.mark.parametrize("bad", [0, -1, (2,), (2, 0), 2.5, "7"])
def test_adaptive_output_size_is_validated(bad: Any) -> None:
    with pytest.raises(ValueError, match=r"AdaptiveAvgPool2D: expected output_size as a positive integer"):
        nn.AdaptiveAvgPool2D(bad)


# -- the channels-last hint ----------------------------------------------------------------------
@pytest.mark.parametrize("shape,hint", [
    ((4, 28, 28, 1), True), ((2, 224, 224, 3), True), ((2, 32, 32, 4), True), ((1, 16, 16, 16, 1), True),
    ((2, 3, 224, 224), False), ((2, 4, 4, 4), False), ((2, 1, 28, 28), False), ((2, 64, 32, 3), False),
    ((2, 28, 28, 5), False),
])
def test_channels_last_heuristic(shape: tuple[int, ...], hint: bool) -> None:
    """The hint fires for square channels-last images only (last axis 1-4, axis 1 more than 4
    and equal to another spatial size); a given in_channels skips it."""
    layer = (nn.Conv2D if len(shape) == 4 else nn.Conv3D)(2, 1)
    if hint:
        with pytest.raises(deferral.ShapeMismatchError, match=r"looks channels-last"):
            layer.infer_shape(shape)
        assert layer.weight.shape[1] == -1
        given = (nn.Conv2D if len(shape) == 4 else nn.Conv3D)(2, 1, in_channels=shape[1])
        assert given.infer_shape(shape)[1] == 2
    else:
        assert layer.infer_shape(shape)[1] == 2
