"""Conformance checks for the convolution and pooling layers.

Each check builds the same model on the backend under test and on the reference (NumPy)
backend with the same seed, then compares parameter bits exactly and outputs within a
tolerance: float64 (when the backend declares it) leaves only summation-order differences.
Backends without the optional conv ops (``deferral.ops.CONV_OPS``) skip, naming the op.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from .. import ops, registry
from ..errors import ShapeMismatchError
from ..nn import (
    AdaptiveAvgPool1D,
    AdaptiveAvgPool2D,
    AdaptiveMaxPool1D,
    AdaptiveMaxPool2D,
    AvgPool1D,
    AvgPool2D,
    AvgPool3D,
    Block,
    Conv1D,
    Conv1DTranspose,
    Conv2D,
    Conv2DTranspose,
    Conv3D,
    Conv3DTranspose,
    Dense,
    Flatten,
    GlobalAvgPool2D,
    GlobalMaxPool1D,
    MaxPool1D,
    MaxPool2D,
    MaxPool3D,
    Sequential,
)
from ..registry import Backend
from ._base import ConformanceBase
from ._reference import assert_bits_equal, assert_unchanged, param_bits, snapshot

__all__ = ["CONV_LAYERS", "POOL_LAYERS", "ConvLayerChecks", "adaptive_reference", "small_cnn"]

Factory = Callable[[], Block]

#: Convolution layers and the input shape each is checked with: id -> (factory, input shape).
CONV_LAYERS: dict[str, tuple[Factory, tuple[int, ...]]] = {
    "conv1d-same-stride": (lambda: Conv1D(5, 4, strides=2, padding="same", activation="tanh"), (2, 3, 11)),
    "conv2d-groups-dilation": (lambda: Conv2D(6, (3, 2), strides=(2, 1), padding="same", dilation=(1, 2),
                                              groups=2, activation="relu"), (2, 4, 9, 8)),
    "conv2d-valid-nobias": (lambda: Conv2D(3, 3, use_bias=False, weight_initializer="he_normal"), (1, 2, 6, 7)),
    "conv3d": (lambda: Conv3D(3, 2, padding=(1, 0, 1), bias_initializer="normal"), (1, 2, 4, 5, 3)),
    "conv1d-transpose": (lambda: Conv1DTranspose(4, 3, strides=2, padding=1, output_padding=1), (2, 3, 6)),
    "conv2d-transpose-groups": (lambda: Conv2DTranspose(6, (3, 4), strides=2, padding=((1, 2), (1, 0)),
                                                        groups=2, bias_initializer="uniform"), (1, 4, 4, 5)),
    "conv3d-transpose-same": (lambda: Conv3DTranspose(2, 2, strides=(2, 1, 2), padding="same"), (1, 3, 2, 3, 2)),
}

#: Pooling layers and the input shape each is checked with.
POOL_LAYERS: dict[str, tuple[Factory, tuple[int, ...]]] = {
    "maxpool1d-pad": (lambda: MaxPool1D(3, strides=2, padding=1), (2, 3, 10)),
    "maxpool2d-same": (lambda: MaxPool2D((3, 2), strides=(2, 1), padding="same"), (2, 3, 7, 9)),
    "maxpool3d": (lambda: MaxPool3D(2), (1, 2, 4, 6, 4)),
    "avgpool1d-exclude-pad": (lambda: AvgPool1D(4, strides=3, padding=(2, 1), count_include_pad=False),
                              (2, 3, 10)),
    "avgpool2d": (lambda: AvgPool2D(3, strides=1, padding=1), (2, 3, 6, 5)),
    "avgpool3d-same": (lambda: AvgPool3D(2, padding="same", count_include_pad=False), (1, 2, 3, 5, 4)),
    "globalavgpool2d": (lambda: GlobalAvgPool2D(), (2, 3, 5, 4)),
    "globalmaxpool1d": (lambda: GlobalMaxPool1D(), (2, 3, 7)),
    "maxpool2d-ceil": (lambda: MaxPool2D(3, strides=2, padding=1, ceil_mode=True), (2, 3, 8, 7)),
    "maxpool1d-ceil-last-window-dropped": (lambda: MaxPool1D(3, strides=3, padding=1, ceil_mode=True), (2, 3, 5)),
    "avgpool2d-ceil": (lambda: AvgPool2D((3, 2), strides=2, padding=(1, 0), ceil_mode=True), (2, 3, 8, 7)),
    "avgpool1d-ceil-exclude-pad": (lambda: AvgPool1D(3, strides=2, padding=1, count_include_pad=False,
                                                     ceil_mode=True), (2, 3, 8)),
    "adaptiveavgpool2d-irregular": (lambda: AdaptiveAvgPool2D((3, 4)), (2, 3, 7, 10)),
    "adaptiveavgpool2d-divisible": (lambda: AdaptiveAvgPool2D(2), (2, 3, 6, 4)),
    "adaptiveavgpool2d-upsample": (lambda: AdaptiveAvgPool2D((7, None)), (2, 3, 2, 5)),
    "adaptiveavgpool1d": (lambda: AdaptiveAvgPool1D(4), (2, 3, 9)),
    "adaptivemaxpool2d": (lambda: AdaptiveMaxPool2D((2, 3)), (2, 3, 5, 7)),
    "adaptivemaxpool1d": (lambda: AdaptiveMaxPool1D(5), (2, 3, 3)),
}


def adaptive_reference(x: np.ndarray, output_size: tuple[int | None, ...], average: bool) -> np.ndarray:
    """Adaptive pooling one output element at a time over its whole rectangle of PyTorch's
    windows ``[floor(i * L / out), ceil((i + 1) * L / out))`` (no separable shortcut)."""
    sizes = x.shape[2:]
    outs = [n if o is None else o for n, o in zip(sizes, output_size)]
    y = np.empty((*x.shape[:2], *outs))
    for index in np.ndindex(*outs):
        box = tuple(slice(i * n // o, -(-(i + 1) * n // o)) for i, n, o in zip(index, sizes, outs))
        window, at = (slice(None), slice(None), *box), (slice(None), slice(None), *index)
        seen = x[window]
        spatial = tuple(range(2, x.ndim))
        y[at] = seen.mean(axis=spatial) if average else seen.max(axis=spatial)
    return y


def small_cnn() -> Sequential:
    """LeNet-like: Conv2D -> MaxPool2D -> Conv2D -> AvgPool2D -> Flatten -> Dense -> Dense."""
    return Sequential([
        Conv2D(6, 5, padding=2, activation="relu"),
        MaxPool2D(2),
        Conv2D(16, 3, activation="tanh"),
        AvgPool2D(2),
        Flatten(),
        Dense(24, activation="relu"),
        Dense(10),
    ])


class ConvLayerChecks(ConformanceBase):
    """Layers of the conv family: parameters bit-identical to the reference, outputs agree."""

    def _require(self, backend: Backend, *names: str) -> None:
        for name in names:
            if not ops.implements(backend.ops, name):
                pytest.skip(f"backend {self.backend!r} does not provide the optional op {name!r}")

    def _dtype(self, backend: Backend) -> tuple[str, float, float]:
        """float64 where the backend has it (tolerance: summation order only), else float32."""
        if "float64" in backend.info.dtypes:
            return "float64", 1e-10, 1e-12
        return "float32", 10 * self.op_rtol, 10 * self.op_atol

    def _compare(self, make: Factory, x: np.ndarray, under_test: Backend, reference: Backend,
                 seed: int = 7) -> tuple[Block, np.ndarray]:
        """Run ``make()`` on both backends; assert equal parameter bits and close outputs."""
        dtype, rtol, atol = self._dtype(under_test)
        net, ref = make(), make()
        self.initialize(net, seed=seed, dtype=dtype)
        ref.initialize(seed=seed, dtype=dtype, backend=reference.name)
        want = np.asarray(reference.to_numpy(ref(x)))
        got = self.host(under_test, net(x))
        assert got.shape == want.shape, f"output shape {got.shape} != {want.shape}"
        assert got.dtype == np.dtype(dtype), f"output dtype {got.dtype} != {dtype}"
        mine, theirs = net.collect_params(), ref.collect_params()
        assert list(mine) == list(theirs)
        for path in mine:
            assert mine[path].shape == theirs[path].shape, path
            assert_bits_equal(param_bits(mine[path]), param_bits(theirs[path]), f"parameter {path!r}")
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
        return net, got

    @pytest.mark.parametrize("case", list(CONV_LAYERS))
    def test_conv_layer_matches_reference(self, case: str, under_test: Backend, reference: Backend,
                                          rng: np.random.Generator) -> None:
        """Each convolution layer (1-3 spatial axes, strides, "same" and asymmetric padding,
        dilation, groups, transposed with output_padding) infers its input channels and gets
        the reference's parameter bits; its output agrees with the NumPy backend's."""
        make, shape = CONV_LAYERS[case]
        layer: Any = make()
        self._require(under_test, "conv_transpose" if "Transpose" in type(layer).__name__ else "conv")
        assert -1 in layer.weight.shape
        net, _ = self._compare(make, rng.standard_normal(shape), under_test, reference)
        weight = net.param("weight")
        assert weight.shape == layer._weight_shape(shape[1]) and weight.state == "materialized"

    @pytest.mark.parametrize("case", list(POOL_LAYERS))
    def test_pool_layer_matches_reference(self, case: str, under_test: Backend, reference: Backend,
                                          rng: np.random.Generator) -> None:
        """Each pooling layer (ceil_mode and adaptive poolings included) agrees with the NumPy
        backend, padding and divisors included; an adaptive pooling also with a float64
        reference that pools each output's rectangle of PyTorch's windows directly."""
        make, shape = POOL_LAYERS[case]
        self._require(under_test, "max_pool", "avg_pool", *(("stack", "unstack") if "adaptive" in case else ()))
        dtype, rtol, atol = self._dtype(under_test)
        x = rng.standard_normal(shape).astype(dtype)
        with registry.use_backend(self.reference_backend_name):
            want = np.asarray(reference.to_numpy(make()(x)))
        # A block without parameters runs on the default backend.
        with registry.use_backend(self.backend):
            got = self.host(under_test, make()(x))
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
        if "adaptive" in case:
            pool: Any = make()
            direct = adaptive_reference(x.astype(np.float64), pool.output_size, "avg" in case)
            np.testing.assert_allclose(got, direct, rtol=rtol, atol=atol)

    def test_small_cnn_matches_reference(self, under_test: Backend, reference: Backend,
                                         rng: np.random.Generator) -> None:
        """A LeNet-like Sequential (Conv2D, MaxPool2D, Conv2D, AvgPool2D, Flatten, Dense, Dense)
        gets every parameter bit of the reference and agrees on the output."""
        self._require(under_test, "conv", "max_pool", "avg_pool")
        net, out = self._compare(small_cnn, rng.standard_normal((3, 1, 12, 12)), under_test, reference, seed=2024)
        assert out.shape == (3, 10)
        assert net.collect_params()["5.weight"].shape == (24, 16 * 2 * 2)

    def test_conv_mismatch_leaves_model_unchanged(self, under_test: Backend,
                                                  rng: np.random.Generator) -> None:
        """A first call that fails in the second convolution (its in_channels contradicts the
        first's channels), or on an input of the wrong rank, or too small for the kernel,
        leaves every parameter as before; a fitting input then works."""
        self._require(under_test, "conv")
        net = Sequential([Conv2D(8, 3, activation="relu"), Conv2D(4, 3, in_channels=5)])
        self.initialize(net, seed=3)
        assert net[1].weight.state == "materialized" and net[0].weight.shape == (8, -1, 3, 3)
        before = snapshot(net)
        with pytest.raises(ShapeMismatchError, match=r"Conv2D '1'.*expected 5 input channels"):
            net(rng.standard_normal((2, 3, 9, 9)))
        assert_unchanged(before, net, "after a channel mismatch")
        with pytest.raises(ValueError, match=r"Conv2D '0'.*expected input of rank 4"):
            net(rng.standard_normal((3, 9, 9)))
        assert_unchanged(before, net, "after an input of the wrong rank")
        with pytest.raises(ShapeMismatchError, match=r"Conv2D '0'.*kernel"):
            net(rng.standard_normal((2, 3, 2, 9)))
        assert_unchanged(before, net, "after an input smaller than the kernel")

        fixed = Sequential([Conv2D(5, 3, activation="relu"), Conv2D(4, 3, in_channels=5)])
        self.initialize(fixed, seed=3)
        out = self.host(under_test, fixed(rng.standard_normal((2, 3, 9, 9))))
        assert out.shape == (2, 4, 5, 5)
        assert fixed[0].weight.shape == (5, 3, 3, 3)

    def test_conv_on_known_in_channels_materializes_at_initialize(self, under_test: Backend) -> None:
        """With in_channels given, initialize() materializes the layer with the reference bits."""
        self._require(under_test, "conv_transpose")
        net = Sequential([Conv2DTranspose(4, 3, strides=2, in_channels=6, groups=2), Conv1D(3, 2)])
        self.initialize(net, seed=5)
        params = net.collect_params()
        assert params["0.weight"].state == "materialized" and params["0.weight"].shape == (6, 2, 3, 3)
        assert params["1.weight"].state == "declared"
        ref = Conv2DTranspose(4, 3, strides=2, in_channels=6, groups=2)
        Sequential([ref]).initialize(seed=5, backend=self.reference_backend_name)
        assert_bits_equal(param_bits(params["0.weight"]), param_bits(ref.weight), "0.weight")
