"""The PyTorch backend passes the conformance suite (CUDA checks run where a GPU is present)."""

from __future__ import annotations

import pytest

from deferral.testing import BackendConformance

torch = pytest.importorskip("torch")


class TestTorchConformance(BackendConformance):
    backend = "torch"
    devices = ("cuda:0",) if torch.cuda.is_available() else ()
