"""Checkpoints: safetensors save/load on every backend, bad files, interop mappings."""

from __future__ import annotations

import importlib.util
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import deferral
from deferral import CheckpointError, interop, nn
from deferral._safetensors_read import read_safetensors
from tests.conftest import snapshot

BACKENDS = [
    pytest.param(name, marks=pytest.mark.skipif(
        name != "numpy" and importlib.util.find_spec(name) is None, reason=f"{name} is not installed"))
    for name in ("numpy", "torch", "tensorflow", "jax")
]
# JAX computes float64 only in its 64-bit mode (off by default).
pytestmark = pytest.mark.usefixtures("jax_float64")


def mlp() -> nn.Sequential:
    return nn.Sequential([nn.Dense(8, activation="relu"), nn.Dense(3)])


def trained(backend: str = "numpy", dtype: str = "float32", seed: int = 1) -> nn.Sequential:
    net = mlp()
    net.initialize(seed=seed, backend=backend, dtype=dtype)
    net(np.ones((1, 5), dtype="float32"))
    return net


def bits(weights: list[np.ndarray], dtype: str) -> list[bytes]:
    if dtype == "bfloat16":
        return [deferral._dtypes.float32_to_bfloat16_bits(w.astype(np.float32)).tobytes() for w in weights]
    return [w.tobytes() for w in weights]


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    path = tmp_path / "mlp.safetensors"
    trained().save_parameters(path)
    return path


def test_file_layout_is_safetensors(saved: Path) -> None:
    raw = saved.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    assert n % 8 == 0
    meta = header.pop("__metadata__")
    assert meta["format"] == "deferral" and meta["spec_version"] == "1"
    assert json.loads(meta["seeds"]) == {"0.weight": 1, "0.bias": 1, "1.weight": 1, "1.bias": 1}
    assert header["0.weight"] == {"dtype": "F32", "shape": [8, 5], "data_offsets": [0, 160]}
    assert header["1.bias"]["data_offsets"][1] == len(raw) - 8 - n
    w = np.frombuffer(raw[8 + n:8 + n + 160], dtype="<f4").reshape(8, 5)
    assert np.array_equal(w, trained().get_weights()[0])


def test_load_completes_a_deferred_model(saved: Path) -> None:
    fresh = mlp()
    meta = fresh.load_parameters(saved)
    assert meta["format"] == "deferral"
    assert [p.state for p in fresh.collect_params().values()] == ["materialized"] * 4
    assert fresh[0].weight.shape == (8, 5) and fresh[0].weight.backend == "numpy"
    assert bits(fresh.get_weights(), "float32") == bits(trained().get_weights(), "float32")
    x = np.random.default_rng(0).normal(size=(2, 5)).astype("float32")
    assert np.array_equal(fresh(x), trained()(x))


def test_load_keeps_the_bound_backend_and_dtype(saved: Path) -> None:
    net = mlp()
    net.initialize(seed=9, dtype="float32")
    net.load_parameters(saved)
    assert net[0].weight.seed == 9 and net[0].weight.dtype == "float32"
    assert bits(net.get_weights(), "float32") == bits(trained().get_weights(), "float32")


@pytest.mark.parametrize("source", BACKENDS)
@pytest.mark.parametrize("target", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_cross_backend_matrix(source: str, target: str, dtype: str, tmp_path: Path) -> None:
    if dtype == "bfloat16" and "numpy" in (source, target):
        pytest.skip("the numpy backend has no bfloat16")
    path = tmp_path / "m.safetensors"
    original = trained(source, dtype, seed=5)
    original.save_parameters(path)
    loaded = mlp()
    loaded.initialize(backend=target, dtype=dtype, seed=0)
    loaded.load_parameters(path)
    assert all(p.backend == target for p in loaded.collect_params().values())
    assert bits(loaded.get_weights(), dtype) == bits(original.get_weights(), dtype)
    reference = trained("numpy", "float32" if dtype == "bfloat16" else dtype, seed=5).get_weights()
    if dtype == "bfloat16":
        reference = [deferral._dtypes.bfloat16_bits_to_float32(deferral._dtypes.float32_to_bfloat16_bits(w))
                     for w in reference]
    assert bits(loaded.get_weights(), dtype) == bits(reference, dtype)


def _problems(exc: pytest.ExceptionInfo[CheckpointError]) -> list[str]:
    return [line.strip()[2:] for line in str(exc.value).splitlines()[1:]]


@pytest.mark.parametrize("cut", [0, 5, 8, 40, -1, -100])
def test_truncated_files(saved: Path, tmp_path: Path, cut: int) -> None:
    raw = saved.read_bytes()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(raw[:cut] if cut >= 0 else raw[:len(raw) + cut])
    net = mlp()
    net.initialize(seed=0)
    before = snapshot(net)
    with pytest.raises(CheckpointError, match=r"truncated|not a safetensors|not valid safetensors JSON"):
        net.load_parameters(bad)
    assert snapshot(net) == before


def test_corrupted_header(saved: Path, tmp_path: Path) -> None:
    raw = bytearray(saved.read_bytes())
    raw[8] = ord("x")  # the header no longer starts a JSON object
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="not valid safetensors JSON"):
        mlp().load_parameters(bad)


def _write(path: Path, header: dict[str, Any], data: bytes) -> None:
    blob = json.dumps(header).encode()
    path.write_bytes(len(blob).to_bytes(8, "little") + blob + data)


def test_every_problem_is_listed_and_nothing_changes(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    header = {
        "0.weight": {"dtype": "F32", "shape": [8, 5], "data_offsets": [0, 160]},
        "0.bias": {"dtype": "F64", "shape": [8], "data_offsets": [160, 224]},
        "1.weight": {"dtype": "F32", "shape": [4, 8], "data_offsets": [224, 352]},
        "extra": {"dtype": "F32", "shape": [1], "data_offsets": [352, 356]},
    }
    _write(bad, header, bytes(356))
    net = mlp()
    net.initialize(seed=0)
    before = snapshot(net)
    with pytest.raises(CheckpointError) as info:
        net.load_parameters(bad)
    problems = _problems(info)
    assert any(p.startswith("missing from") and "1.bias" in p for p in problems)
    assert any(p.startswith("not in the model: extra") for p in problems)
    assert any(p.startswith("0.bias: dtype float64") for p in problems)
    assert any(p.startswith("1.weight: shape (4, 8)") and "expects (3, -1)" in p for p in problems)
    assert len(problems) == 4
    assert snapshot(net) == before


def test_allow_missing_and_ignore_extra(tmp_path: Path) -> None:
    bad = tmp_path / "partial.safetensors"
    w = np.arange(40, dtype="<f4").reshape(8, 5)
    _write(bad, {"0.weight": {"dtype": "F32", "shape": [8, 5], "data_offsets": [0, 160]},
                 "other": {"dtype": "F32", "shape": [1], "data_offsets": [160, 164]}}, w.tobytes() + bytes(4))
    net = mlp()
    net.initialize(seed=0)
    with pytest.raises(CheckpointError):
        net.load_parameters(bad, allow_missing=True)
    net.load_parameters(bad, allow_missing=True, ignore_extra=True)
    assert np.array_equal(net[0].weight.data(), w) and net[1].weight.state == "declared"


@pytest.mark.parametrize(
    "entry,match",
    [({"dtype": "I9", "shape": [2], "data_offsets": [0, 8]}, "unknown dtype 'I9'"),
     ({"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}, "does not hold"),
     ({"dtype": "F32", "shape": [2]}, "missing data_offsets"),
     ({"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, "the file has 8: it is truncated")],
)
def test_malformed_entries(tmp_path: Path, entry: dict[str, Any], match: str) -> None:
    bad = tmp_path / "bad.safetensors"
    _write(bad, {"x": entry}, bytes(8))
    with pytest.raises(CheckpointError, match=match):
        read_safetensors(bad)


def test_loading_never_unpickles(saved: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("pickle used while loading")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    mlp().load_parameters(saved)


def test_save_before_materialization_says_what_to_do(tmp_path: Path) -> None:
    net = mlp()
    net.initialize(seed=0)
    with pytest.raises(deferral.DeferredInitializationError, match="forward pass"):
        net.save_parameters(tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def test_numpy_dict_round_trip() -> None:
    net = trained()
    arrays = interop.to_numpy_dict(net)
    fresh = mlp()
    interop.load_numpy_dict(fresh, arrays)
    assert bits(fresh.get_weights(), "float32") == bits(net.get_weights(), "float32")
    with pytest.raises(CheckpointError, match="missing"):
        interop.load_numpy_dict(mlp(), {"0.weight": arrays["0.weight"]})
    partial = mlp()
    interop.load_numpy_dict(partial, {"0.weight": arrays["0.weight"]}, strict=False)
    assert partial[0].weight.state == "materialized" and partial[1].weight.state == "declared"


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_torch_state_dict_round_trip() -> None:
    import torch

    net = trained("torch")
    state = interop.to_torch_state_dict(net)
    assert state["0.weight"].data_ptr() == net[0].weight.data().data_ptr()
    native = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    rename = {"0.weight": "0.weight", "0.bias": "0.bias", "1.weight": "2.weight", "1.bias": "2.bias"}
    native.load_state_dict({rename[k]: v for k, v in state.items()})
    x = torch.ones(2, 5)
    assert torch.equal(native(x), net(x))
    back = mlp()
    interop.load_torch_state_dict(back, {k: native.state_dict()[v] for k, v in rename.items()})
    assert bits(back.get_weights(), "float32") == bits(net.get_weights(), "float32")


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="tensorflow is not installed")
def test_tf_weights_round_trip() -> None:
    import tensorflow as tf

    net = trained("numpy")
    variables = interop.to_tf_variables(net)
    assert variables["0.weight"].shape == (8, 5)
    kernel = tf.transpose(variables["0.weight"])  # a Keras Dense kernel is (in, out)
    dense = tf.keras.layers.Dense(8)
    dense.build((None, 5))
    dense.set_weights([kernel.numpy(), variables["0.bias"].numpy()])
    back = nn.Sequential([nn.Dense(8, activation="relu"), nn.Dense(3)])
    back.initialize(backend="tensorflow", seed=0)
    interop.load_tf_weights(back, variables)
    assert bits(back.get_weights(), "float32") == bits(net.get_weights(), "float32")
    assert np.array_equal(dense(np.ones((1, 5), "float32")).numpy(),
                          (np.ones((1, 5), "float32") @ net.get_weights()[0].T + net.get_weights()[1]))
