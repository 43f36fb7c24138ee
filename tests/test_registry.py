"""Backend discovery and selection: entry points, defaults, errors, no framework imports."""

from __future__ import annotations

import subprocess
import sys
import types
from collections.abc import Iterator
from typing import Any

import numpy as np
import pluggy
import pytest

import deferral
import deferral_numpy
from deferral import nn, registry
from deferral.hookspec import BackendInfo


def test_numpy_is_installed_through_its_entry_point() -> None:
    names = [ep.name for ep in registry._entry_points().values()]
    assert "numpy" in names
    assert "numpy" in deferral.available_backends()
    backend = deferral.load_backend("numpy")
    assert backend.info.name == "numpy" and backend.plugin is deferral_numpy
    assert deferral.load_backend("numpy") is backend


def test_default_backend_order(monkeypatch: pytest.MonkeyPatch) -> None:
    assert deferral.get_backend() == "numpy"
    monkeypatch.setenv("DEFERRAL_BACKEND", "shadow")
    assert deferral.get_backend() == "shadow"
    deferral.set_backend("numpy")
    assert deferral.get_backend() == "numpy"
    with deferral.use_backend("numpy") as name:
        assert name == "numpy" and deferral.get_backend() == "numpy"
    deferral.set_backend(None)
    assert deferral.get_backend() == "shadow"


def test_unknown_backend_lists_the_known_ones() -> None:
    with pytest.raises(deferral.BackendNotFoundError) as info:
        deferral.set_backend("mxnet")
    assert "Choose one of:" in str(info.value) and "numpy" in str(info.value)
    assert isinstance(info.value, LookupError)
    with pytest.raises(deferral.BackendNotFoundError):
        with deferral.use_backend("mxnet"):
            pass  # pragma: no cover


def _plugin(name: str, requires: tuple[str, ...] = (), **extra: Any) -> types.SimpleNamespace:
    """A backend plugin reusing the NumPy primitives under another name."""
    info = BackendInfo(name=name, requires=requires, install=f'pip install "deferral-{name}"',
                       dtypes=("float32", "float64"))

    @deferral.hookimpl
    def deferral_backend_info() -> BackendInfo:
        return info

    ns = types.SimpleNamespace(
        deferral_backend_info=deferral_backend_info,
        deferral_ops=deferral_numpy.deferral_ops,
        deferral_is_native=deferral_numpy.deferral_is_native,
        deferral_to_native=deferral_numpy.deferral_to_native,
        deferral_to_numpy=deferral_numpy.deferral_to_numpy,
        deferral_parameter_from_numpy=deferral_numpy.deferral_parameter_from_numpy,
    )
    for key, value in extra.items():
        setattr(ns, key, value)
    return ns


@pytest.fixture
def scratch() -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        registry.unregister_backend(name)


def test_missing_framework_gives_the_install_command(scratch: list[str]) -> None:
    scratch.append(registry.register_backend(_plugin("ghost", requires=("no_such_framework_xyz",))))
    assert "ghost" not in deferral.available_backends()
    with pytest.raises(deferral.BackendNotFoundError) as info:
        nn.Dense(3).initialize(backend="ghost")
    msg = str(info.value)
    assert "no_such_framework_xyz" in msg and 'pip install "deferral-ghost"' in msg
    assert "numpy" in msg.split("Installed backends: ")[1].rstrip(".").split(", ")


def test_two_models_on_two_backends_in_one_process(scratch: list[str]) -> None:
    materialized: list[str] = []

    @deferral.hookimpl
    def deferral_materialize(request: Any) -> Any:
        materialized.append(request.name)
        return request.host_values().reshape(request.shape).copy()

    scratch.append(registry.register_backend(_plugin("twin", deferral_materialize=deferral_materialize)))
    a = nn.Sequential([nn.Dense(5), nn.Dense(2)])
    b = nn.Sequential([nn.Dense(5), nn.Dense(2)])
    with deferral.use_backend("twin"):
        a.initialize(seed=3)
    b.initialize(seed=3)
    x = np.ones((2, 4), dtype="float32")
    ya, yb = a(x), b(x)
    assert materialized == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert a[0].weight.backend == "twin" and b[0].weight.backend == "numpy"
    assert np.array_equal(ya, yb)
    assert all(wa.tobytes() == wb.tobytes() for wa, wb in zip(a.get_weights(), b.get_weights()))


def test_a_model_on_two_backends_is_refused(scratch: list[str]) -> None:
    scratch.append(registry.register_backend(_plugin("half")))
    net = nn.Sequential([nn.Dense(5), nn.Dense(2)])
    net[0].initialize(backend="half", seed=0)
    net[1].initialize(backend="numpy", seed=0)
    with pytest.raises(ValueError, match="several backends"):
        net(np.ones((1, 3), dtype="float32"))


def test_plugin_without_required_hooks_is_refused(scratch: list[str]) -> None:
    broken = _plugin("broken")
    del broken.deferral_to_numpy
    with pytest.raises(pluggy.PluginValidationError, match="deferral_to_numpy"):
        registry.register_backend(broken)


def test_plugin_with_a_mismatching_name_is_refused() -> None:
    with pytest.raises(deferral.BackendNotFoundError, match="must agree"):
        registry.register_backend(_plugin("alpha"), name="beta")


def test_duplicate_names_are_refused(scratch: list[str]) -> None:
    scratch.append(registry.register_backend(_plugin("dup")))
    with pytest.raises(ValueError, match="already registered"):
        registry.register_backend(_plugin("dup"))
    with pytest.raises(ValueError, match="already"):
        registry.register_backend(_plugin("numpy"))


def test_op_namespace_missing_an_op_is_refused(scratch: list[str]) -> None:
    @deferral.hookimpl
    def deferral_ops() -> Any:
        return types.SimpleNamespace(relu=np.abs)

    scratch.append(registry.register_backend(_plugin("thin", deferral_ops=deferral_ops)))
    with pytest.raises(TypeError, match="lacks shape, linear"):
        _ = deferral.load_backend("thin").ops


def test_default_device_is_the_only_device_by_default() -> None:
    backend = deferral.load_backend("numpy")
    assert backend.canonical_device(None) == "cpu" == backend.canonical_device("cpu")
    with pytest.raises(ValueError, match="supports 'cpu'"):
        backend.canonical_device("gpu")


def test_ops_dispatch_outside_a_forward_pass() -> None:
    x = np.array([[-1.0, 0.5]], dtype="float32")
    assert np.array_equal(deferral.ops.relu(x), np.array([[0.0, 0.5]], dtype="float32"))
    assert deferral.ops.shape(x) == (1, 2)


def test_import_deferral_imports_no_framework() -> None:
    code = (
        "import sys, deferral, deferral.nn, deferral.init, deferral.ops; "
        "names = deferral.available_backends(); "
        "leaked = [m for m in ('torch', 'tensorflow', 'jax', 'keras') if m in sys.modules]; "
        "assert not leaked, leaked; assert 'numpy' in names; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_import_deferral_does_not_import_numpy_either() -> None:
    code = "import sys, deferral; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_hookimpl_is_exported() -> None:
    assert isinstance(deferral.hookimpl, pluggy.HookimplMarker)


def test_a_block_without_parameters_runs_on_the_backend_it_was_initialized_for(scratch: list[str]) -> None:
    seen: list[str] = []

    @deferral.hookimpl
    def deferral_to_native(value: Any, dtype: Any, device: str) -> Any:
        seen.append("shadow")
        return deferral_numpy.deferral_to_native(value, dtype, device)

    scratch.append(registry.register_backend(_plugin("shadow2", deferral_to_native=deferral_to_native)))
    act = nn.ReLU()
    act.initialize(backend="shadow2")
    assert np.array_equal(act(np.array([[-1.0, 2.0]], dtype="float32")), [[0.0, 2.0]])
    assert seen == ["shadow"]
