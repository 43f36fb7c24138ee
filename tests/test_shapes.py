"""Shape-only inference and deferral.summary: shapes without allocation, same as a real pass."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import deferral
from deferral import TensorSpec, nn, ops
from tests.conftest import snapshot


def test_infer_shape_shapes_everything_and_allocates_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    backend = deferral.load_backend("numpy")
    monkeypatch.setattr(backend, "materialize", lambda r: calls.append(r.name))
    net = nn.Sequential([nn.Dense(256, activation="relu"), nn.Dense(10)])
    net.initialize(seed=0)
    assert net.infer_shape((None, 20)) == (None, 10)
    assert [p.state for p in net.collect_params().values()] == ["shaped"] * 4
    assert net[0].weight.shape == (256, 20) and calls == []


def test_initialize_after_infer_shape_materializes_at_once() -> None:
    net = nn.Sequential([nn.Dense(32, activation="tanh"), nn.Dense(3)])
    net.infer_shape((8, 5))
    net.initialize(seed=4)
    assert all(p.state == "materialized" for p in net.collect_params().values())
    ref = nn.Sequential([nn.Dense(32, activation="tanh"), nn.Dense(3)])
    ref.initialize(seed=4)
    x = np.ones((2, 5), dtype="float32")
    assert np.array_equal(ref(x), net(x))
    assert all(a.tobytes() == b.tobytes() for a, b in zip(ref.get_weights(), net.get_weights()))


def test_custom_block_with_ops_and_several_outputs() -> None:
    class TwoHeads(nn.Block):
        def __init__(self) -> None:
            super().__init__()
            self.trunk = nn.Dense(16, activation="relu")
            self.a = nn.Dense(4)
            self.b = nn.Dense(2)

        def forward(self, x: Any, y: Any) -> Any:
            h = ops.concat([self.trunk(x), y], axis=-1)
            return self.a(h), ops.softmax(self.b(h))

    net = TwoHeads()
    assert net.infer_shape((None, 7), TensorSpec((None, 3))) == ((None, 4), (None, 2))
    assert net.a.weight.shape == (4, 19)


def test_infer_shape_errors_roll_back() -> None:
    net = nn.Sequential([nn.Dense(8), nn.Dense(2, in_units=100)])
    before = snapshot(net)
    with pytest.raises(deferral.ShapeMismatchError, match="expected 100"):
        net.infer_shape((None, 5))
    assert snapshot(net) == before
    with pytest.raises(ValueError, match="rank >= 2"):
        net.infer_shape((5,))
    assert snapshot(net) == before


def test_framework_calls_in_forward_get_a_clear_error() -> None:
    class Raw(nn.Block):
        def __init__(self) -> None:
            super().__init__()
            self.d = nn.Dense(3)

        def forward(self, x: Any) -> Any:
            return np.tanh(self.d(x))  # not deferral.ops

    with pytest.raises(TypeError, match=r"deferral\.ops equivalent"):
        Raw().infer_shape((None, 4))


def test_summary_rows_totals_and_markdown() -> None:
    shared = nn.Dense(16, activation="relu")
    net = nn.Sequential([nn.Dense(16, activation="relu"), shared, shared, nn.Dense(3)])
    s = deferral.summary(net, (None, 10))
    assert [r.path for r in s.rows] == ["", "0", "1", "1", "3"]  # a shared block keeps its first path
    assert [r.output_shape for r in s.rows] == [(None, 3), (None, 16), (None, 16), (None, 16), (None, 3)]
    assert [r.params for r in s.rows] == [0, 176, 272, 0, 51] and s.rows[3].shared
    assert s.total_params == 176 + 272 + 51 == s.trainable_params
    assert s.total_bytes == 4 * s.total_params and s.bytes_by_dtype == {"float32": 4 * 499}
    text = str(s)
    assert "Total params: 499" in text and "(N, 16)" in text and "shared" in text
    md = s.to_markdown()
    assert md.splitlines()[0] == "| Layer (path) | Type | Output shape | Params | Bytes |"
    assert "| `3` | Dense | `(N, 3)` | 51 | 204 B |" in md
    assert all(p.state == "shaped" for p in net.collect_params().values())


def test_summary_prices_dtypes() -> None:
    net = nn.Sequential([nn.Dense(4, in_units=3)])
    net.initialize(seed=0, dtype="float64")
    assert deferral.summary(net, (1, 3)).total_bytes == 16 * 8
    assert deferral.summary(net, (1, 3), dtype="bfloat16").total_bytes == 16 * 2


def test_tensor_spec_validates() -> None:
    with pytest.raises(ValueError, match="non-negative int or None"):
        TensorSpec((2, -1))
    assert TensorSpec([None, 3]).shape == (None, 3)
