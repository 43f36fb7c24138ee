"""The fixtures and settings every group of conformance checks shares.

A backend's test class sets the class attributes and, when the backend needs something set up
first (a distribution installed, a device prepared), overrides :meth:`backend_environment`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import pytest

from .. import registry
from ..nn import Block
from ..registry import Backend

__all__ = ["ConformanceBase"]


class ConformanceBase:
    """Settings and fixtures; see :class:`deferral.testing.BackendConformance`."""

    #: The name of the backend under test (its entry point's name). Subclasses must set it.
    backend: ClassVar[str] = ""
    #: Devices checked besides the backend's declared default device (canonical spellings).
    devices: ClassVar[tuple[str, ...]] = ()
    #: Tolerances of forward ops against the NumPy backend (layers) and against the float64
    #: op reference, on float32 inputs.
    op_rtol: ClassVar[float] = 1e-5
    op_atol: ClassVar[float] = 1e-6
    #: Tolerances of forward ops against the float64 op reference, on float64 inputs.
    op_rtol64: ClassVar[float] = 1e-12
    op_atol64: ClassVar[float] = 1e-12
    #: Tolerances of a forward pass on a CUDA device against the NumPy backend (other kernels,
    #: other summation orders).
    cuda_rtol: ClassVar[float] = 1e-4
    cuda_atol: ClassVar[float] = 1e-5
    #: Seeds the value checks use (both ends of the 64-bit range included).
    seeds: ClassVar[tuple[int, ...]] = (0, 20240531, 2**64 - 1)
    #: How many threads make the concurrent first call.
    threads: ClassVar[int] = 8
    #: The backend values and ops are compared with (the reference path's own backend).
    reference_backend_name: ClassVar[str] = "numpy"

    @pytest.fixture(scope="class")
    @classmethod
    def backend_environment(cls) -> Iterator[None]:
        """Prepare what the backend needs for the whole class; the default does nothing.

        Override it (same name, same scope) to install a distribution, set environment
        variables, and so on; every check depends on it through :meth:`under_test`.
        """
        yield

    @pytest.fixture
    def under_test(self, backend_environment: None) -> Backend:
        """The loaded backend named by :attr:`backend`."""
        if not self.backend:
            raise TypeError(
                f"{type(self).__name__}: set the class attribute backend to the name of the "
                'backend under test, e.g. backend = "numpy".'
            )
        return registry.load_backend(self.backend)

    @pytest.fixture
    def reference(self, backend_environment: None) -> Backend:
        """The backend the others are compared with (NumPy)."""
        return registry.load_backend(self.reference_backend_name)

    @pytest.fixture
    def device(self, under_test: Backend) -> str:
        """The backend's default device, canonicalized."""
        return under_test.canonical_device(None)

    @pytest.fixture
    def rng(self) -> np.random.Generator:
        """Inputs for forward passes; fixed so a failure reproduces."""
        return np.random.default_rng(1234)

    # -- helpers for the checks -------------------------------------------------------
    def device_list(self, backend: Backend) -> list[str]:
        """The default device followed by :attr:`devices`, without repeats."""
        out = [backend.canonical_device(None)]
        for device in self.devices:
            if device not in out:
                out.append(device)
        return out

    def initialize(self, model: Block, seed: int = 0, **kwargs: Any) -> int:
        """``model.initialize(seed=seed, backend=self.backend, **kwargs)``."""
        return model.initialize(seed=seed, backend=self.backend, **kwargs)

    def host(self, backend: Backend, value: Any) -> np.ndarray:
        """``backend.to_numpy(value)``, checking that ``value`` is the backend's native type."""
        assert backend.is_native(value), (
            f"backend {backend.name!r} returned {type(value).__name__}, which its "
            "deferral_is_native hook does not recognise as one of its arrays"
        )
        return np.asarray(backend.to_numpy(value))
