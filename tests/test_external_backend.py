"""A backend living outside the deferral package, installed the way a distribution would be.

``tests/external_backend/deferral_boxed`` is copied into a temporary directory next to a
``deferral_boxed-1.0.dist-info`` directory (METADATA and an ``entry_points.txt`` declaring
``[deferral.backends] boxed = deferral_boxed``), and the directory is put on ``sys.path``:
exactly what ``pip install deferral-boxed`` leaves in site-packages. ``importlib.metadata``
then finds the entry point, and the registry loads the plugin by name. Its arrays are
``Box`` objects, not NumPy arrays, so every check proves dispatch goes through the registry.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import deferral
from deferral import nn, registry
from deferral.testing import BackendConformance, assert_bits_equal, assert_matches_reference, param_bits

PLUGIN_SOURCE = Path(__file__).parent / "external_backend" / "deferral_boxed"
NAME = "boxed"

METADATA = """\
Metadata-Version: 2.1
Name: deferral-boxed
Version: 1.0
Summary: A minimal third-party deferral backend (test fixture)
Requires-Dist: deferral
"""


def _forget_plugin_modules() -> None:
    for module in [m for m in sys.modules if m == "deferral_boxed" or m.startswith("deferral_boxed.")]:
        del sys.modules[module]


@contextlib.contextmanager
def installed_boxed(site: Path) -> Iterator[Path]:
    """Install deferral-boxed into ``site`` (package + dist-info) and put it on ``sys.path``.

    On exit ``sys.path`` is restored, the plugin's modules are forgotten and the registry's
    cache of the backend is cleared, so nothing of it survives.
    """
    assert NAME not in registry.available_backends(), "the boxed backend is already installed"
    assert "deferral_boxed" not in sys.modules, (
        "deferral_boxed was imported from elsewhere (e.g. by doctest collection); it would shadow "
        "the installed copy"
    )
    shutil.copytree(PLUGIN_SOURCE, site / "deferral_boxed", ignore=shutil.ignore_patterns("__pycache__"))
    dist_info = site / "deferral_boxed-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(METADATA)
    (dist_info / "entry_points.txt").write_text(f"[{registry.ENTRY_POINT_GROUP}]\n{NAME} = deferral_boxed\n")
    (dist_info / "top_level.txt").write_text("deferral_boxed\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(site))  # also invalidates the import caches
        try:
            yield site
        finally:
            registry.unregister_backend(NAME)
            _forget_plugin_modules()


def test_discovered_through_its_distribution(tmp_path: Path) -> None:
    """The entry point of the installed distribution is what makes the backend available; the
    plugin module is imported by the registry, and nothing remains after uninstalling."""
    with installed_boxed(tmp_path):
        dist = importlib.metadata.distribution("deferral-boxed")
        entry_points = [ep for ep in dist.entry_points if ep.group == registry.ENTRY_POINT_GROUP]
        assert [(ep.name, ep.value) for ep in entry_points] == [(NAME, "deferral_boxed")]
        assert "deferral_boxed" not in sys.modules
        assert NAME in deferral.available_backends()
        assert registry._plugins[NAME] is sys.modules["deferral_boxed"]
        assert Path(sys.modules["deferral_boxed"].__file__).is_relative_to(tmp_path)
        backend = deferral.load_backend(NAME)
        assert backend.info.name == NAME and backend.info.dtypes == ("float16", "bfloat16", "float32", "float64")
    assert NAME not in deferral.available_backends()
    assert "deferral_boxed" not in sys.modules
    with pytest.raises(deferral.BackendNotFoundError, match="Choose one of"):
        deferral.load_backend(NAME)


def test_model_runs_next_to_a_numpy_model(tmp_path: Path) -> None:
    """One model definition runs on the boxed backend (on either device, or chosen with
    use_backend) and on NumPy in the same process: identical parameter bits, outputs that
    are Box objects agreeing with NumPy's, and ops dispatching on the Box type."""
    x = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    with installed_boxed(tmp_path):
        boxed = nn.Sequential([nn.Dense(8, activation="relu"), nn.Dense(3)])
        numpy_net = nn.Sequential([nn.Dense(8, activation="relu"), nn.Dense(3)])
        boxed.initialize(seed=5, backend=NAME, device="box:1")
        numpy_net.initialize(seed=5, backend="numpy")
        out = boxed(x)
        box_type = type(out)
        assert box_type.__module__ == "deferral_boxed._box" and not isinstance(out, np.ndarray)
        assert out.device == "box:1"
        np.testing.assert_allclose(deferral.load_backend(NAME).to_numpy(out), numpy_net(x), rtol=1e-6, atol=1e-6)
        for path, param in boxed.collect_params().items():
            assert isinstance(param.data(), box_type) and param.data().device == "box:1"
            assert_matches_reference(param, deferral.load_backend(NAME))
            assert_bits_equal(param_bits(param), param_bits(numpy_net.collect_params()[path]), path)
        assert isinstance(deferral.ops.relu(out), box_type)
        assert isinstance(deferral.ops.relu(numpy_net(x)), np.ndarray)

        chosen = nn.Dense(2)
        with deferral.use_backend(NAME):
            chosen.initialize(seed=1)
        assert chosen.weight.backend == NAME
        assert isinstance(chosen(x), box_type)


class TestBoxedConformance(BackendConformance):
    """The whole conformance suite, against the boxed backend on both of its devices."""

    backend = NAME
    devices = ("box:1",)

    @pytest.fixture(scope="class")
    @classmethod
    def backend_environment(cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
        with installed_boxed(tmp_path_factory.mktemp("site-packages")):
            yield


def test_cuda_check_follows_the_declared_capability(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The suite's CUDA check skips, with its reason, when the backend declares no CUDA support
    or cannot place anything on "cuda" here, and otherwise runs its bit checks on the device
    that "cuda" canonicalizes to (simulated: the boxed backend's second device)."""
    rng = np.random.default_rng(0)
    check = TestBoxedConformance().test_cuda_bits_match_reference
    with installed_boxed(tmp_path):
        backend, reference = deferral.load_backend(NAME), deferral.load_backend("numpy")
        with pytest.raises(pytest.skip.Exception, match="does not declare supports_cuda"):
            check(backend, reference, rng)
        monkeypatch.setattr(backend, "info", dataclasses.replace(backend.info, supports_cuda=True))
        with pytest.raises(pytest.skip.Exception, match="cannot use a 'cuda' device here"):
            check(backend, reference, rng)
        canonical = backend.canonical_device
        monkeypatch.setattr(backend, "canonical_device", lambda d: canonical("box:1" if d == "cuda" else d))
        check(backend, reference, rng)
