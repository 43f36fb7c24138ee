"""Conformance checks for the errors every backend must raise alike: out-of-range indices,
inputs of the wrong dtype, empty inputs, channels-last images.

Each case is run on a fresh (deferred) layer and again once the layer is materialized (the
fast path): the same :mod:`deferral.errors` class, naming the layer, on every backend, and the
model exactly as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from .. import nn, ops, registry
from ..errors import EmptyInputError, InputDtypeError, InvalidIndexError, ShapeMismatchError
from ..registry import Backend
from ._base import ConformanceBase
from ._reference import assert_unchanged, snapshot

__all__ = ["DTYPE_CASES", "EMPTY_CASES", "ErrorChecks"]

Factory = Callable[[], nn.Block]
_F32 = np.float32

#: Float layers refusing integer input: id -> (layer, a fitting input shape, the ops it needs).
DTYPE_CASES: dict[str, tuple[Factory, tuple[int, ...], tuple[str, ...]]] = {
    "Dense": (lambda: nn.Dense(3), (2, 4), ()),
    "Conv2D": (lambda: nn.Conv2D(2, 3, padding=1), (1, 2, 5, 5), ("conv",)),
    "Conv1DTranspose": (lambda: nn.Conv1DTranspose(2, 3), (1, 2, 5), ("conv_transpose",)),
    "MaxPool2D": (lambda: nn.MaxPool2D(2), (1, 2, 4, 4), ("max_pool",)),
    "AvgPool1D": (lambda: nn.AvgPool1D(2, ceil_mode=True), (1, 2, 5), ("avg_pool",)),
    "AdaptiveAvgPool2D": (lambda: nn.AdaptiveAvgPool2D(3), (1, 2, 5, 4), ("avg_pool", "stack", "unstack")),
    "GlobalMaxPool2D": (lambda: nn.GlobalMaxPool2D(), (1, 2, 4, 4), ("max_pool",)),
    "BatchNorm": (lambda: nn.BatchNorm(), (4, 3), ("batch_norm",)),
    "LayerNorm": (lambda: nn.LayerNorm(), (2, 5), ("moments", "rsqrt")),
    "GroupNorm": (lambda: nn.GroupNorm(2), (2, 4, 3), ("moments", "rsqrt")),
    "LSTM": (lambda: nn.LSTM(3, bidirectional=True), (2, 4, 3), ("split", "stack", "unstack")),
    "MultiHeadAttention": (lambda: nn.MultiHeadAttention(2, 4), (2, 3, 4), ("split", "stack", "unstack", "where")),
    "Dropout": (lambda: nn.Dropout(0.5), (2, 3), ("dropout",)),
}
# Dropout passes any input through in inference mode; it is checked in training mode.
_TRAINING = {"Dropout"}

#: Empty inputs: id -> (layer, a fitting input shape, an empty one, the ops it needs, training).
EMPTY_CASES: dict[str, tuple[Factory, tuple[int, ...], tuple[int, ...], tuple[str, ...], bool]] = {
    "Dense-no-features": (lambda: nn.Dense(3, in_units=4), (2, 4), (2, 0), (), False),
    "Conv2D-no-channels": (lambda: nn.Conv2D(2, 3, padding=1), (1, 2, 5, 5), (1, 0, 5, 5), ("conv",), False),
    "Conv2D-empty-H": (lambda: nn.Conv2D(2, 3, padding=2), (1, 2, 5, 5), (1, 2, 0, 5), ("conv",), False),
    "MaxPool2D-empty-W": (lambda: nn.MaxPool2D(2, padding=1), (1, 2, 4, 4), (1, 2, 4, 0), ("max_pool",), False),
    "AdaptiveMaxPool2D-empty-H": (lambda: nn.AdaptiveMaxPool2D(2), (1, 2, 4, 4), (1, 2, 0, 4),
                                  ("max_pool", "stack", "unstack"), False),
    "GlobalAvgPool2D-empty-W": (lambda: nn.GlobalAvgPool2D(), (1, 2, 4, 4), (1, 2, 4, 0), (), False),
    "BatchNorm-training-empty-batch": (lambda: nn.BatchNorm(in_channels=3), (4, 3), (0, 3),
                                       ("batch_norm", "moments", "assign"), True),
    "GroupNorm-empty-spatial": (lambda: nn.GroupNorm(2, in_channels=4), (2, 4, 3), (2, 4, 0),
                                ("moments", "rsqrt"), False),
    "LSTM-no-steps": (lambda: nn.LSTM(3), (2, 4, 3), (2, 0, 3), ("split", "stack", "unstack"), False),
    "MultiHeadAttention-no-keys": (lambda: nn.MultiHeadAttention(2, 4), (2, 3, 4), (2, 0, 4),
                                   ("split", "stack", "unstack", "where"), False),
}


class ErrorChecks(ConformanceBase):
    """The same error class, naming the layer, on every backend; the model unchanged."""

    def _err_require(self, under_test: Backend, names: tuple[str, ...]) -> None:
        for name in names:
            if not ops.implements(under_test.ops, name):
                pytest.skip(f"backend {self.backend!r} does not provide the optional op {name!r}")

    def _err_call(self, layer: nn.Block, *args: Any) -> Any:
        with registry.use_backend(self.backend):  # parameter-free layers run on the default backend
            return layer(*args)

    def _err_expect(self, layer: nn.Block, args: tuple[Any, ...], error: type[Exception], match: str,
                    stage: str) -> None:
        before = snapshot(layer)
        with pytest.raises(error, match=match):
            self._err_call(layer, *args)
        assert_unchanged(before, layer, f"{type(layer).__name__}: {stage}")

    def test_out_of_range_indices_raise_invalid_index_error(self, under_test: Backend) -> None:
        """Indices at input_dim, above it or negative raise InvalidIndexError (an IndexError
        and a ValueError) naming the Embedding, on every backend; uint8 and int32 indices give
        the same rows as int64; an empty index array gives an empty result."""
        self._err_require(under_test, ("take",))
        emb = nn.Embedding(6, 3)
        self.initialize(emb, seed=4)
        for bad in ([[1, 6]], [[7, 0]], [[-1, 2]]):
            self._err_expect(emb, (np.array(bad),), InvalidIndexError,
                             r"Embedding: indices must lie in \[0, 6\)", f"indices {bad}")
        want = self.host(under_test, emb(np.array([[0, 5, 3]])))
        for dtype in ("uint8", "int32", "int16"):
            got = self.host(under_test, emb(np.array([[0, 5, 3]], dtype=dtype)))
            np.testing.assert_array_equal(got, want, err_msg=f"{dtype} indices")
        assert self.host(under_test, emb(np.zeros((2, 0), dtype="int64"))).shape == (2, 0, 3)
        self._err_expect(emb, (np.array([[0.0, 1.0]]),), InputDtypeError,
                         r"Embedding: expected integer indices. Received an input of dtype float", "float indices")

    @pytest.mark.parametrize("case", list(DTYPE_CASES))
    def test_integer_input_raises_input_dtype_error(self, case: str, under_test: Backend,
                                                    rng: np.random.Generator) -> None:
        """Integer and boolean inputs to a float layer raise InputDtypeError naming the layer,
        before it is built and once it is materialized; a float input then works."""
        make, shape, needs = DTYPE_CASES[case]
        self._err_require(under_test, needs)
        layer = make()
        self.initialize(layer, seed=1)
        if case in _TRAINING:
            layer.train()
        name = type(layer).__name__
        for stage in ("deferred", "materialized"):
            for bad in (rng.integers(0, 3, shape), np.ones(shape, dtype=bool)):
                self._err_expect(layer, (bad,), InputDtypeError, rf"{name}: expected a floating",
                                 f"{bad.dtype} input, {stage}")
            out = self._err_call(layer, rng.standard_normal(shape).astype(_F32))
            assert under_test.is_native(out[0] if isinstance(out, tuple) else out)

    @pytest.mark.parametrize("case", list(EMPTY_CASES))
    def test_empty_input_raises_empty_input_error(self, case: str, under_test: Backend,
                                                  rng: np.random.Generator) -> None:
        """An empty axis the layer computes over raises EmptyInputError naming the layer and
        the axis, before it is built and once it is materialized."""
        make, shape, empty, needs, training = EMPTY_CASES[case]
        self._err_require(under_test, needs)
        layer = make()
        self.initialize(layer, seed=1)
        layer.train(training)
        name = type(layer).__name__
        bad = np.zeros(empty, dtype=_F32)
        self._err_expect(layer, (bad,), EmptyInputError, rf"{name}.*is empty", "deferred")
        self._err_call(layer, rng.standard_normal(shape).astype(_F32))
        self._err_expect(layer, (bad,), EmptyInputError, rf"{name}.*is empty", "materialized")

    def test_channels_last_image_gets_a_hint_at_the_first_convolution(self, under_test: Backend,
                                                                      rng: np.random.Generator) -> None:
        """(N, 28, 28, 1) into a LeNet-like model: the first Conv2D says the input looks
        channels-last and how to transpose it (not a later pooling layer); nothing is built;
        the transposed input then works, and in_channels=28 accepts the odd input."""
        self._err_require(under_test, ("conv", "max_pool"))
        net = nn.Sequential([nn.Conv2D(6, 5, padding=2, activation="relu"), nn.MaxPool2D(2), nn.Flatten(),
                             nn.Dense(10)])
        self.initialize(net, seed=0)
        x = rng.standard_normal((4, 28, 28, 1)).astype(_F32)
        self._err_expect(net, (x,), ShapeMismatchError,
                         r"Conv2D '0': the input of shape \(4, 28, 28, 1\) looks channels-last.*transpose\(0, 3, 1, 2\)",
                         "channels-last input")
        assert self.host(under_test, net(x.transpose(0, 3, 1, 2))).shape == (4, 10)
        odd = nn.Conv2D(6, 5, padding=2, in_channels=28)
        self.initialize(odd, seed=0)
        assert self.host(under_test, odd(x)).shape == (4, 6, 28, 1)
