"""Conformance checks for the norm layer family: BatchNorm, LayerNorm, GroupNorm, Embedding,
Dropout (the norm ops themselves are checked with every other op, by
:mod:`deferral.testing._opchecks`).

Each check builds the layer on the backend under test and on the reference (NumPy) backend
with the same seed, compares every parameter bit for bit (BatchNorm's running statistics
included) and the outputs within :attr:`~ConformanceBase.op_rtol` /
:attr:`~ConformanceBase.op_atol`. A check skips when the backend does not provide an op the
layer needs (the norm ops are optional for third-party backends).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import pytest

from .. import ops
from ..nn import BatchNorm, Block, Dropout, Embedding, GroupNorm, LayerNorm
from ..registry import Backend, use_backend
from ._base import ConformanceBase
from ._reference import assert_bits_equal, param_bits

_B = TypeVar("_B", bound=Block)
__all__ = ["NormLayerChecks"]


class NormLayerChecks(ConformanceBase):
    """Layers of the norm family: parameters bit-identical to the reference, outputs agree."""

    # -- helpers ---------------------------------------------------------------------------
    def _require(self, backend: Backend, *names: str) -> None:
        missing = [n for n in names if not ops.implements(backend.ops, n)]
        if missing:
            pytest.skip(f"backend {self.backend!r} does not provide the optional op(s) {', '.join(missing)}")

    def _pair(self, make: Callable[[], _B], device: str, seed: int = 0) -> tuple[_B, _B]:
        """The same definition initialized on the backend under test and on the reference."""
        tested, ref = make(), make()
        self.initialize(tested, seed=seed, device=device)
        ref.initialize(seed=seed, backend=self.reference_backend_name)
        return tested, ref

    def _same_params(self, tested: Block, ref: Block, what: str) -> None:
        mine, theirs = tested.collect_params(), ref.collect_params()
        assert list(mine) == list(theirs), f"{what}: parameter names {list(mine)} != {list(theirs)}"
        for path, param in mine.items():
            other = theirs[path]
            assert param.trainable == other.trainable, f"{what}: {path}.trainable differs"
            assert_bits_equal(param_bits(param), param_bits(other), f"{what}: parameter {path!r}")

    def _close(self, under_test: Backend, reference: Backend, got: Any, want: Any, what: str,
               device: str) -> None:
        """Within op_rtol/op_atol on the default device, cuda_rtol/cuda_atol on the others."""
        host, expected = self.host(under_test, got), self.host(reference, want)
        assert host.shape == expected.shape, f"{what}: shape {host.shape} != {expected.shape}"
        assert host.dtype == expected.dtype, f"{what}: dtype {host.dtype} != {expected.dtype}"
        default = device == under_test.canonical_device(None)
        rtol, atol = (self.op_rtol, self.op_atol) if default else (self.cuda_rtol, self.cuda_atol)
        np.testing.assert_allclose(host, expected, rtol=rtol, atol=atol, err_msg=f"{what} on {device}")

    def _running(self, under_test: Backend, reference: Backend, tested: Block, ref: Block, what: str,
                 device: str) -> None:
        mine, theirs = tested.collect_params(), ref.collect_params()
        for path in mine:
            if path.endswith(("running_mean", "running_var")):
                self._close(under_test, reference, mine[path].data(), theirs[path].data(), f"{what}: {path}",
                            device)

    # -- layers ----------------------------------------------------------------------------
    # Each check runs on the default device (the ``device`` fixture) and on every device of
    # ``devices``; outputs on the default device agree within op_rtol/op_atol, elsewhere
    # within cuda_rtol/cuda_atol.

    @pytest.mark.parametrize(("shape", "axis"), [((8, 3), 1), ((4, 3, 5, 2), 1), ((3, 4, 5), -1)])
    def test_batchnorm_matches_reference(self, shape: tuple[int, ...], axis: int, under_test: Backend,
                                         reference: Backend, device: str, rng: np.random.Generator) -> None:
        """BatchNorm with a deferred channel count: gamma, beta and the running statistics are
        bit-identical to the reference after the first (inference) call; inference outputs and
        two training steps (outputs and updated running statistics) agree within tolerance."""
        self._require(under_test, "batch_norm", "moments", "rsqrt", "assign")
        x = (rng.standard_normal(shape) * 2.0 + 0.5).astype(np.float32)
        what = f"BatchNorm(axis={axis}) on {shape}"
        for dev in self.device_list(under_test):
            tested, ref = self._pair(lambda: BatchNorm(axis=axis, momentum=0.8), dev, seed=7)
            self._close(under_test, reference, tested(x), ref(x), f"{what}, inference", dev)
            self._same_params(tested, ref, what)
            tested.train()
            ref.train()
            for step in (1, 2):
                batch = x * np.float32(step)
                got, want = tested(batch), ref(batch)
                self._close(under_test, reference, got, want, f"{what}, training step {step}", dev)
                self._running(under_test, reference, tested, ref, f"{what} after training step {step}", dev)
            tested.eval()
            ref.eval()
            self._close(under_test, reference, tested(x), ref(x), f"{what}, inference after training", dev)

    @pytest.mark.parametrize(("shape", "axis"), [((4, 6), -1), ((2, 3, 5), 1)])
    def test_layernorm_matches_reference(self, shape: tuple[int, ...], axis: int, under_test: Backend,
                                         reference: Backend, device: str, rng: np.random.Generator) -> None:
        """LayerNorm: bit-identical gamma and beta; outputs within tolerance."""
        self._require(under_test, "moments", "rsqrt")
        x = (rng.standard_normal(shape) * 3.0 - 1.0).astype(np.float32)
        for dev in self.device_list(under_test):
            tested, ref = self._pair(lambda: LayerNorm(axis=axis, gamma_initializer="normal",
                                                       beta_initializer="uniform"), dev, seed=3)
            self._close(under_test, reference, tested(x), ref(x), f"LayerNorm(axis={axis}) on {shape}", dev)
            self._same_params(tested, ref, "LayerNorm")

    @pytest.mark.parametrize(("shape", "groups"), [((2, 6, 4, 3), 3), ((4, 6), 2), ((2, 4, 5), 4)])
    def test_groupnorm_matches_reference(self, shape: tuple[int, ...], groups: int, under_test: Backend,
                                         reference: Backend, device: str, rng: np.random.Generator) -> None:
        """GroupNorm: bit-identical gamma and beta; outputs within tolerance."""
        self._require(under_test, "moments", "rsqrt")
        x = (rng.standard_normal(shape) * 2.0).astype(np.float32)
        for dev in self.device_list(under_test):
            tested, ref = self._pair(lambda: GroupNorm(groups, gamma_initializer="normal",
                                                       beta_initializer="uniform"), dev, seed=4)
            self._close(under_test, reference, tested(x), ref(x), f"GroupNorm({groups}) on {shape}", dev)
            self._same_params(tested, ref, "GroupNorm")

    @pytest.mark.parametrize("index_dtype", ["int64", "int32"])
    def test_embedding_matches_reference(self, index_dtype: str, under_test: Backend, reference: Backend,
                                         device: str, rng: np.random.Generator) -> None:
        """Embedding: the weight is materialized by initialize() with the reference bits, and a
        lookup returns exactly the selected rows (NumPy indices and the backend's own)."""
        self._require(under_test, "take")
        indices = rng.integers(0, 11, (3, 4)).astype(index_dtype)
        for dev in self.device_list(under_test):
            tested, ref = self._pair(lambda: Embedding(11, 5), dev, seed=2)
            assert tested.weight.state == "materialized"
            self._same_params(tested, ref, "Embedding")
            want = self.host(reference, ref(indices))
            for given in (indices, under_test.to_native(indices, None, dev)):
                got = self.host(under_test, tested(given))
                assert got.shape == (3, 4, 5), f"Embedding lookup on {dev}: shape {got.shape}"
                assert_bits_equal(got.view(np.uint32), want.view(np.uint32), f"Embedding lookup on {dev}")

    def test_dropout_inference_identity_and_training_statistics(
        self, under_test: Backend, reference: Backend, device: str, rng: np.random.Generator
    ) -> None:
        """Dropout passes its input unchanged in inference mode; in training mode it zeroes a
        fraction close to the rate and scales every survivor by 1 / (1 - rate)."""
        self._require(under_test, "dropout")
        x = rng.uniform(0.5, 1.5, (200, 100)).astype(np.float32)
        for dev in self.device_list(under_test):
            native = under_test.to_native(x, "float32", dev)
            for rate in (0.5, 0.2):
                layer = Dropout(rate)
                with use_backend(under_test.name):  # a block without parameters runs on the default
                    same = self.host(under_test, layer(native))
                    out = self.host(under_test, layer.train()(native))
                what = f"Dropout({rate}) on {dev}"
                assert_bits_equal(same.view(np.uint32), x.view(np.uint32), f"{what} in inference")
                dropped = out == 0
                fraction = float(dropped.mean())
                assert abs(fraction - rate) < 0.02, f"{what} zeroed {fraction:.3f} of the elements"
                scale = np.float32(1.0 / (1.0 - rate))
                np.testing.assert_allclose(out[~dropped], x[~dropped] * scale, rtol=1e-6, err_msg=what)
