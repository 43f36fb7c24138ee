"""The PyTorch backend passes the conformance suite (CUDA checks run where a GPU is present)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from deferral.testing import BackendConformance

torch = pytest.importorskip("torch")


class TestTorchConformance(BackendConformance):
    backend = "torch"
    devices = ("cuda:0",) if torch.cuda.is_available() else ()

    @pytest.fixture(scope="class")
    @classmethod
    def backend_environment(cls) -> Iterator[None]:
        # On CUDA, PyTorch computes float32 convolutions and matmuls in TF32 by default
        # (about 1e-3 relative error); the suite compares against float32 NumPy at 1e-5.
        saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        yield
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
