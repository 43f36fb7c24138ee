"""Shared fixtures: every test starts with the default backend and no default seed."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import numpy as np
import pytest

import deferral
from deferral import random as drandom
from deferral import registry


@pytest.fixture(autouse=True)
def _clean_defaults(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("DEFERRAL_BACKEND", raising=False)
    seed, selected = drandom._default_seed, registry._selected
    yield
    drandom._default_seed, registry._selected = seed, selected


@pytest.fixture(scope="module")
def jax_float64() -> Iterator[None]:
    """JAX's 64-bit mode, for modules with float64 cases on every backend (JAX computes float64
    only in that mode, off by default, and the JAX backend refuses float64 without it). Use it
    with ``pytestmark = pytest.mark.usefixtures("jax_float64")``; without JAX it does nothing."""
    if importlib.util.find_spec("jax") is None:
        yield
        return
    import jax

    with jax.enable_x64(True):
        yield


@pytest.fixture
def x20() -> np.ndarray:
    return np.random.default_rng(0).uniform(size=(2, 20)).astype("float32")


def snapshot(net: deferral.nn.Block) -> list[tuple[str, tuple[int, ...], str, bytes | None]]:
    """Names, shapes, states and value bytes of every parameter: 'exactly as before'."""
    out = []
    for name, p in net.collect_params().items():
        data = None
        if p.initialized:
            data = np.asarray(deferral.load_backend(p.backend).to_numpy(p.data())).tobytes()
        out.append((name, p.shape, p.state, data))
    return out
