"""Reference models: published parameter counts, forward passes and identical weights everywhere."""

from __future__ import annotations

import importlib.util
import math
from typing import Any

import numpy as np
import pytest

import deferral
from deferral import TensorSpec, models
from deferral.interop import load_numpy_dict

FRAMEWORKS = [
    pytest.param(name, marks=pytest.mark.skipif(importlib.util.find_spec(name) is None,
                                                 reason=f"{name} is not installed"))
    for name in ("torch", "tensorflow")
]


@pytest.mark.parametrize(
    "make,shapes,trainable,total",
    [
        # LeNet-5 of Dive into Deep Learning, 10 classes, 1x28x28 inputs.
        (models.lenet5, [(None, 1, 28, 28)], 61_706, 61_706),
        # torchvision vgg11, 1000 classes, 3x224x224.
        (models.vgg11, [(None, 3, 224, 224)], 132_863_336, 132_863_336),
        # torchvision resnet18, 1000 classes; BatchNorm running statistics are non-trainable.
        (models.resnet18, [(None, 3, 224, 224)], 11_689_512, 11_689_512 + 9_600),
        # One BERT-base encoder layer: width 768, 12 heads, 3072 feed-forward units.
        (lambda: models.transformer_encoder_block(12, 3072, units=768), [(None, 128, 768)], 7_087_872, 7_087_872),
    ],
    ids=["lenet5", "vgg11", "resnet18", "bert-base-layer"],
)
def test_published_parameter_counts(make: Any, shapes: list[Any], trainable: int, total: int) -> None:
    summary = deferral.summary(make(), *shapes)
    assert summary.trainable_params == trainable
    assert summary.total_params == total


def test_gpt3_175b_summary_matches_the_published_size() -> None:
    net = models.gpt3_175b()
    tokens = TensorSpec((1, 2048), "int64")
    summary = deferral.summary(net, tokens, tokens)
    assert summary.total_params == 174_604_259_328
    assert abs(summary.total_params / 175e9 - 1) < 0.005
    assert summary.rows[0].output_shape == (1, 2048, 50257)
    assert net.blocks[95].ffn1.weight.shape == (4 * 12288, 12288)


@pytest.mark.parametrize("size", [32, 64, 224])
def test_vgg11_has_torchvisions_parameters_at_every_resolution(size: int) -> None:
    """AdaptiveAvgPool2D((7, 7)) before the classifier, as torchvision: the first Dense always
    reads 512x7x7 features, whatever the input size."""
    net = models.vgg11()
    summary = deferral.summary(net, (None, 3, size, size))
    assert summary.total_params == summary.trainable_params == 132_863_336
    assert type(net[13]).__name__ == "AdaptiveAvgPool2D" and net[13].output_size == (7, 7)
    assert net.collect_params()["15.weight"].shape == (4096, 512 * 7 * 7)
    assert net.infer_shape((2, 3, size, size)) == (2, 1000)


def _torchvision() -> Any:
    """torchvision, imported with the CPU torch of the test environment.

    torchvision's C++ operators (``torchvision._C``) do not load against a CPU-only torch build
    of another version, and ``torchvision._meta_registrations`` registers meta kernels for them
    at import; stubbing that module lets the pure-Python models import (the models under test
    use no torchvision operator).
    """
    pytest.importorskip("torch")
    if importlib.util.find_spec("torchvision") is None:
        pytest.skip("torchvision is not installed")
    import sys
    import types

    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    import torchvision

    return torchvision


@pytest.mark.slow
def test_vgg11_matches_torchvision_with_copied_weights() -> None:
    """Same architecture as torchvision's vgg11: every parameter maps one to one, in order,
    with torch's layouts; with torchvision's weights loaded into a never-initialized model, the
    outputs agree in eval mode at 32x32 (the adaptive pooling repeats the 1x1 feature map) and
    at 80x80 (2x2 to 7x7: overlapping windows). On the torch backend, for speed (132M weights);
    the adaptive pooling's agreement between backends is a conformance check."""
    torchvision, torch = _torchvision(), pytest.importorskip("torch")
    torch.manual_seed(0)
    theirs = torchvision.models.vgg11(num_classes=10).eval()
    ours = models.vgg11(num_classes=10)
    state = theirs.state_dict()
    names = list(ours.collect_params())
    assert len(names) == len(state) == 22
    with deferral.use_backend("torch"):
        load_numpy_dict(ours, {name: value.numpy() for name, value in zip(names, state.values())})
    assert [p.shape for p in ours.collect_params().values()] == [tuple(v.shape) for v in state.values()]
    for size in (32, 80):
        x = torch.from_numpy(np.random.default_rng(size).standard_normal((2, 3, size, size)).astype("float32"))
        with torch.no_grad():
            np.testing.assert_allclose(ours(x).numpy(), theirs(x).numpy(), rtol=1e-4, atol=1e-5)


SMALL = [
    ("lenet5", lambda: models.lenet5(), (2, 1, 28, 28)),
    ("resnet18", lambda: models.resnet18(num_classes=10), (2, 3, 32, 32)),
    ("vgg11", lambda: models.vgg11(num_classes=10), (1, 3, 32, 32)),
    ("encoder", lambda: models.transformer_encoder_block(4, 64, units=32), (2, 5, 32)),
]


# -- independent float64 references (plain NumPy, written here from the definitions) -------
def _conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray, pad: int) -> np.ndarray:
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    k = w.shape[-1]
    h, v = x.shape[2] - k + 1, x.shape[3] - k + 1
    out = np.zeros((x.shape[0], w.shape[0], h, v))
    for i in range(k):
        for j in range(k):  # one kernel tap at a time
            out += np.einsum("nchw,oc->nohw", x[:, :, i:i + h, j:j + v], w[:, :, i, j])
    return out + b[None, :, None, None]


def _avgpool2(x: np.ndarray) -> np.ndarray:
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def _lenet5_reference(w: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    y = _avgpool2(_sigmoid(_conv2d(x, w["0.weight"], w["0.bias"], 2)))
    y = _avgpool2(_sigmoid(_conv2d(y, w["2.weight"], w["2.bias"], 0))).reshape(x.shape[0], -1)
    y = _sigmoid(y @ w["5.weight"].T + w["5.bias"])
    y = _sigmoid(y @ w["6.weight"].T + w["6.bias"])
    return y @ w["7.weight"].T + w["7.bias"]


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-5) * gamma + beta


def _encoder_reference(w: dict[str, np.ndarray], x: np.ndarray, heads: int) -> np.ndarray:
    def dense(name: str, v: np.ndarray) -> np.ndarray:
        return v @ w[f"{name}.weight"].T + w[f"{name}.bias"]

    n, t, units = x.shape
    size = units // heads

    def split(v: np.ndarray) -> np.ndarray:  # (N, T, units) -> (N, heads, T, size)
        return v.reshape(n, t, heads, size).transpose(0, 2, 1, 3)

    q = split(dense("attention.query", x)) / np.sqrt(size)
    k, v = split(dense("attention.key", x)), split(dense("attention.value", x))
    scores = q @ k.transpose(0, 1, 3, 2)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    context = (weights @ v).transpose(0, 2, 1, 3).reshape(n, t, units)
    h = _layer_norm(x + dense("attention.output", context), w["norm1.gamma"], w["norm1.beta"])
    pre = dense("ffn1", h)
    gelu = pre * 0.5 * (1 + np.vectorize(math.erf)(pre / math.sqrt(2)))
    return _layer_norm(h + dense("ffn2", gelu), w["norm2.gamma"], w["norm2.beta"])


def test_lenet5_computes_the_reference_function() -> None:
    net = models.lenet5()
    net.initialize(seed=0, init="kaiming_uniform")
    x = np.random.default_rng(0).normal(size=(2, 1, 28, 28)).astype("float32")
    y = net(x)
    weights = {k: p.data().astype(np.float64) for k, p in net.collect_params().items()}
    want = _lenet5_reference(weights, x.astype(np.float64))
    assert y.shape == (2, 10) and y.dtype == np.float32
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)
    assert np.ptp(want) > 0.01  # the check is not vacuous: outputs differ between classes


def test_transformer_encoder_block_computes_the_reference_function() -> None:
    net = models.transformer_encoder_block(4, 64, units=32)
    net.initialize(seed=0)
    x = np.random.default_rng(1).normal(size=(2, 5, 32)).astype("float32")
    y = net(x)
    weights = {k: p.data().astype(np.float64) for k, p in net.collect_params().items()}
    np.testing.assert_allclose(y, _encoder_reference(weights, x.astype(np.float64), 4), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name,make,shape", SMALL[1:3], ids=[s[0] for s in SMALL[1:3]])
def test_numpy_forward_at_small_resolution(name: str, make: Any, shape: tuple[int, ...]) -> None:
    """ResNet-18 and VGG-11 outputs are compared with torchvision's in the porting tests; here
    the float32 forward on NumPy must agree with the same model run in float64."""
    x = np.random.default_rng(0).normal(size=shape)
    single, double = make(), make()
    single.initialize(seed=0)
    double.initialize(seed=0, dtype="float64")
    y32, y64 = single(x.astype("float32")), double(x)
    assert y32.dtype == np.float32 and y64.dtype == np.float64 and y32.shape == (shape[0], 10)
    np.testing.assert_allclose(y32, y64, rtol=1e-3, atol=1e-3)
    assert np.ptp(y64) > 1e-3


@pytest.mark.parametrize("backend", FRAMEWORKS)
@pytest.mark.parametrize("name,make,shape", SMALL, ids=[s[0] for s in SMALL])
def test_identical_weights_and_close_outputs_on_every_backend(backend: str, name: str, make: Any,
                                                              shape: tuple[int, ...]) -> None:
    x = np.random.default_rng(1).normal(size=shape).astype("float32")
    ref, other = make(), make()
    ref.initialize(seed=7)
    other.initialize(seed=7, backend=backend)
    y_ref = ref(x)
    y = deferral.load_backend(backend).to_numpy(other(x))
    for a, b in zip(ref.get_weights(), other.get_weights()):
        assert a.dtype == b.dtype and np.array_equal(a.view(np.uint32), b.view(np.uint32))
    assert np.allclose(y, y_ref, rtol=1e-4, atol=1e-4)
