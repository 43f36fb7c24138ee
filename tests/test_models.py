"""Reference models: published parameter counts, forward passes and identical weights everywhere."""

from __future__ import annotations

import importlib.util
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


@pytest.mark.parametrize("name,make,shape", SMALL, ids=[s[0] for s in SMALL])
def test_numpy_forward_at_small_resolution(name: str, make: Any, shape: tuple[int, ...]) -> None:
    net = make()
    net.initialize(seed=0)
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    y = net(x)
    assert np.all(np.isfinite(y)) and y.shape[0] == shape[0]


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
