"""The JAX backend passes the conformance suite (float64 with JAX's 64-bit mode switched on)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from deferral.testing import BackendConformance

jax = pytest.importorskip("jax")


class TestJaxConformance(BackendConformance):
    backend = "jax"

    @pytest.fixture(scope="class")
    @classmethod
    def backend_environment(cls) -> Iterator[None]:
        # float64 needs JAX's 64-bit mode, off by default; the backend refuses float64 without it.
        with jax.enable_x64(True):
            yield
