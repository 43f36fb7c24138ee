"""Interop: entries of any dtype, backends without a dtype, torchvision state dicts, Keras layouts."""

from __future__ import annotations

import importlib.util
import re
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import deferral
from deferral import CheckpointError, interop, models, nn
from tests.conftest import snapshot

needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
needs_tf = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="tensorflow is not installed")


def mlp() -> nn.Sequential:
    return nn.Sequential([nn.Dense(8, activation="relu"), nn.Dense(3)])


def trained() -> nn.Sequential:
    net = mlp()
    net.initialize(seed=1)
    net(np.ones((1, 5), dtype="float32"))
    return net


def test_strict_false_skips_unknown_entries_of_any_dtype() -> None:
    arrays: dict[str, Any] = dict(interop.to_numpy_dict(trained()))
    arrays |= {"bn.num_batches_tracked": np.array(7, np.int64), "mask": np.ones(3, bool), "names": np.array(["x"])}
    net = mlp()
    with pytest.raises(CheckpointError, match=re.escape("not in the model: bn.num_batches_tracked, mask, names")):
        interop.load_numpy_dict(net, arrays)
    interop.load_numpy_dict(net, arrays, strict=False)
    assert [w.tobytes() for w in net.get_weights()] == [w.tobytes() for w in trained().get_weights()]


def test_an_integer_tensor_for_a_floating_parameter_says_what_to_do() -> None:
    arrays = dict(interop.to_numpy_dict(trained()))
    arrays["0.bias"] = np.arange(8, dtype=np.int64)
    arrays["1.bias"] = np.array(["a", "b", "c"])
    net = mlp()
    with pytest.raises(CheckpointError) as info:
        interop.load_numpy_dict(net, arrays)
    message = str(info.value)
    assert "0.bias: the arrays holds int64 values, the parameter is floating point (convert" in message
    assert "1.bias: expected a dtype a checkpoint can hold" in message
    assert all(p.state != "materialized" for p in net.collect_params().values())


def test_ignore_extra_skips_an_extra_int64_tensor_in_a_file(tmp_path: Path) -> None:
    arrays: dict[str, Any] = dict(interop.to_numpy_dict(trained()))
    arrays["bn.num_batches_tracked"] = np.array(3, np.int64)
    arrays["fp8"] = np.zeros(2, np.float32)
    path = tmp_path / "extra.safetensors"
    interop.save_safetensors(path, arrays)
    raw = bytearray(path.read_bytes())  # make "fp8" an F8_E4M3 tensor of 8 elements (same 8 bytes)
    n = int.from_bytes(raw[:8], "little")
    header = raw[8:8 + n].replace(b'"fp8":{"dtype":"F32","shape":[2]', b'"fp8":{"dtype":"F8_E4M3","shape":[8]')
    path.write_bytes(len(header).to_bytes(8, "little") + header + raw[8 + n:])
    net = mlp()
    with pytest.raises(CheckpointError, match=re.escape("not in the model: bn.num_batches_tracked, fp8")):
        net.load_parameters(path)
    net.load_parameters(path, ignore_extra=True)
    assert [w.tobytes() for w in net.get_weights()] == [w.tobytes() for w in trained().get_weights()]


@needs_torch
def test_a_bfloat16_file_into_a_numpy_model_is_a_checkpoint_error(tmp_path: Path) -> None:
    source = mlp()
    source.initialize(backend="torch", dtype="bfloat16", seed=0)
    source(np.ones((1, 5), dtype="float32"))
    path = tmp_path / "bf16.safetensors"
    source.save_parameters(path)
    with deferral.use_backend("numpy"):
        never = mlp()
        with pytest.raises(CheckpointError, match=r"dtype bfloat16 in .*backend 'numpy' does not support .*"
                                                  r"initialize the model on a backend that has bfloat16"):
            never.load_parameters(path)
        assert all(p.state != "materialized" for p in never.collect_params().values())
    on_numpy = mlp()
    on_numpy.initialize(backend="numpy", seed=0)
    before = snapshot(on_numpy)
    with pytest.raises(CheckpointError, match="backend 'numpy' does not support"):
        on_numpy.load_parameters(path)
    assert snapshot(on_numpy) == before


@needs_torch
def test_torch_state_dict_with_int64_entries_and_strict_false() -> None:
    import torch

    state = interop.to_torch_state_dict(trained())
    state["1.num_batches_tracked"] = torch.tensor(5)
    state["f8"] = torch.zeros(2, dtype=torch.float8_e4m3fn)
    net = mlp()
    with pytest.raises(CheckpointError, match=re.escape("not in the model: 1.num_batches_tracked, f8")):
        interop.load_torch_state_dict(net, state)
    interop.load_torch_state_dict(net, state, strict=False)
    assert [w.tobytes() for w in net.get_weights()] == [w.tobytes() for w in trained().get_weights()]


def _torchvision() -> Any:
    pytest.importorskip("torch")
    if importlib.util.find_spec("torchvision") is None:
        pytest.skip("torchvision is not installed")
    # torchvision's wheel is a CUDA build: importing it with the CPU torch fails while it
    # registers its C++ operators (torchvision._meta_registrations: "operator torchvision::nms
    # does not exist"). The model definitions are pure Python: stub that module first.
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    import torchvision

    return torchvision


def _randomized(module: Any) -> Any:
    """Random weights and BatchNorm statistics (torchvision's init leaves them at 0 and 1)."""
    import torch

    torch.manual_seed(0)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 2.0)
            elif name.endswith(("running_mean", "bn1.bias", "bn2.bias")) or ".1.bias" in name:
                tensor.normal_(0.0, 0.1)
            elif name.endswith(("bn1.weight", "bn2.weight")) or name.endswith("downsample.1.weight"):
                tensor.uniform_(0.5, 1.5)
            elif name.endswith("num_batches_tracked"):
                tensor.fill_(100)
    return module.eval()


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_a_torchvision_resnet18_computes_the_same_outputs(backend: str) -> None:
    import torch

    tv = _randomized(_torchvision().models.resnet18(num_classes=10))
    net = models.resnet18(num_classes=10)
    net.initialize(backend=backend, seed=0)
    interop.load_torchvision_state_dict(net, tv.state_dict())
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = tv(x).numpy()
    got = net(x if backend == "torch" else x.numpy())
    got = got.detach().numpy() if backend == "torch" else got
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert net[1].running_var.data().tolist() == tv.bn1.running_var.tolist()


def test_a_torchvision_vgg11_at_224_computes_the_same_outputs() -> None:
    import torch

    tv = _torchvision().models.vgg11(num_classes=10).eval()
    state = tv.state_dict()
    net = models.vgg11(num_classes=10)
    net.initialize(backend="torch", seed=0)
    interop.load_torchvision_state_dict(net, state)
    # At 224x224 the features are 7x7, where torchvision's AdaptiveAvgPool2d((7, 7)) is the
    # identity; deferral's VGG-11 has no adaptive pooling, so other sizes differ there.
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = tv(x)
        got = net(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_torchvision_errors_name_the_mismatch() -> None:
    tv = _torchvision().models.resnet18()
    state = dict(tv.state_dict())
    state["extra.weight"] = state["fc.weight"]
    net = models.resnet18(num_classes=10)
    with pytest.raises(CheckpointError, match=re.escape("names the resnet18 map does not know: extra.weight")):
        interop.load_torchvision_state_dict(net, state)
    with pytest.raises(CheckpointError, match=r"14.weight: shape \(1000, 512\) in the torchvision resnet18 "
                                              r"state dict, the model expects \(10, -1\)"):
        interop.load_torchvision_state_dict(net, state, strict=False)
    with pytest.raises(CheckpointError, match=re.escape("no torchvision name map for 'resnet50'. Choose one of: resnet18, vgg11")):
        interop.load_torchvision_state_dict(net, state, model="resnet50")
    assert all(p.state != "materialized" for p in net.collect_params().values())


def test_the_torchvision_maps_cover_the_models_exactly() -> None:
    for name in interop.TORCHVISION_MODELS:
        net = getattr(models, name)()
        assert sorted(interop.torchvision_names(name)) == sorted(net.collect_params())


@needs_tf
def test_keras_weights_reproduce_the_outputs() -> None:
    import keras

    net = nn.Sequential([nn.Conv2D(4, 3, padding=1), nn.BatchNorm(), nn.ReLU(), nn.Flatten(), nn.Dense(5),
                         nn.LayerNorm()])
    net.initialize(seed=3)
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype("float32")
    net(x)
    bn = net[1]
    bn.running_mean.set_data(np.linspace(-0.5, 0.5, 4))
    bn.running_var.set_data(np.linspace(0.5, 2.0, 4))
    layers = {"0": keras.layers.Conv2D(4, 3, padding="same"), "1": keras.layers.BatchNormalization(epsilon=1e-5),
              "4": keras.layers.Dense(5), "5": keras.layers.LayerNormalization(epsilon=1e-5)}
    h = inputs = keras.Input((6, 6, 3))
    h = layers["1"](layers["0"](h))
    h = keras.layers.Permute((3, 1, 2))(keras.layers.ReLU()(h))  # back to channels first before Flatten
    model = keras.Model(inputs, layers["5"](layers["4"](keras.layers.Flatten()(h))))
    for path, weights in interop.to_keras_weights(net).items():
        layers[path].set_weights(weights)
    np.testing.assert_allclose(model(x.transpose(0, 2, 3, 1)).numpy(), net(x), rtol=1e-4, atol=1e-4)


@needs_tf
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_keras_recurrent_weights_reproduce_the_outputs(kind: str) -> None:
    import keras

    net = nn.Sequential([getattr(nn, kind)(6, batch_first=True)])
    net.initialize(seed=4, init="normal")
    x = np.random.default_rng(1).standard_normal((2, 5, 3)).astype("float32")
    out = net(x)
    ours = out[0] if isinstance(out, tuple) else out
    layer = getattr(keras.layers, kind)(6, return_sequences=True)
    model = keras.Sequential([keras.Input((5, 3)), layer])
    layer.set_weights(interop.to_keras_weights(net)["0"])
    np.testing.assert_allclose(model(x).numpy(), ours, rtol=1e-5, atol=1e-5)


def test_keras_weights_name_blocks_without_a_rule() -> None:
    net = nn.Sequential([nn.MultiHeadAttention(2, 4)])
    net.initialize(seed=0)
    net(np.ones((1, 3, 4), dtype="float32"))
    with pytest.raises(CheckpointError, match=r"MultiHeadAttention '0': Keras's MultiHeadAttention keeps"):
        interop.to_keras_weights(net)
