"""The TensorFlow backend passes the conformance suite (GPU checks run where a GPU is present)."""

from __future__ import annotations

import os

import pytest

from deferral.testing import BackendConformance

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow")


class TestTensorflowConformance(BackendConformance):
    backend = "tensorflow"
    devices = ("/GPU:0",) if tf.config.list_physical_devices("GPU") else ()
