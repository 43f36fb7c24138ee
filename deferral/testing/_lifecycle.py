"""The parameter life cycle on a backend: states, re-initialization, errors, rollback, tying."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from ..errors import DeferredInitializationError, ShapeMismatchError
from ..hookspec import MaterializeRequest
from ..nn import Dense, Sequential
from ..registry import Backend
from ._base import ConformanceBase
from ._models import ConcatHead, Interrupting, Twin
from ._reference import assert_matches_reference, assert_unchanged, param_bits, snapshot

__all__ = ["LifecycleChecks", "count_materializations"]


def count_materializations(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Wrap ``backend.materialize`` (for this test) and return the live count per parameter path."""
    counts: dict[str, int] = {}
    original = backend.materialize

    def counting(request: MaterializeRequest) -> Any:
        out = original(request)
        counts[request.name] = counts.get(request.name, 0) + 1
        return out

    monkeypatch.setattr(backend, "materialize", counting)
    return counts


def _dense_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    y = x.astype(np.float64) @ weight.astype(np.float64).T
    return y if bias is None else y + bias


#: Inputs every model rejects, whatever its state: (factory, expected exception type).
_BAD_INPUTS: dict[str, tuple[Callable[[], Any], type[BaseException]]] = {
    "list": (lambda: [[1.0, 2.0, 3.0]], TypeError),
    "rank-1": (lambda: np.ones(3, dtype=np.float32), ValueError),
    "zero features": (lambda: np.ones((2, 0), dtype=np.float32), ValueError),
}


class LifecycleChecks(ConformanceBase):
    """Parameters move declared -> shaped -> materialized, and failures leave no trace."""

    def test_state_transitions(self, under_test: Backend, device: str, rng: np.random.Generator) -> None:
        """Before initialize() nothing has values; initialize() materializes the layer whose
        input size was given (with the reference bits) and leaves the next deferred; the first
        call materializes the rest; the output is native and computed from those values."""
        net = Sequential([Dense(4, in_units=3), Dense(2)])
        params = net.collect_params()
        states = {path: p.state for path, p in params.items()}
        assert states == {"0.weight": "shaped", "0.bias": "shaped", "1.weight": "declared", "1.bias": "shaped"}
        assert params["1.weight"].shape == (2, -1)
        for param in params.values():
            with pytest.raises(DeferredInitializationError):
                param.data()

        assert self.initialize(net, seed=11) == 11
        states = {path: p.state for path, p in params.items()}
        assert states == {
            "0.weight": "materialized", "0.bias": "materialized", "1.weight": "declared", "1.bias": "shaped",
        }
        for param in params.values():
            assert (param.backend, param.seed, param.device, param.dtype) == (self.backend, 11, device, "float32")
        assert_matches_reference(params["0.weight"], under_test)
        assert_matches_reference(params["0.bias"], under_test)
        for path in ("1.weight", "1.bias"):
            with pytest.raises(DeferredInitializationError):
                params[path].data()

        x = rng.standard_normal((5, 3)).astype(np.float32)
        out = self.host(under_test, net(x))
        assert params["1.weight"].shape == (2, 4)
        for param in params.values():
            assert_matches_reference(param, under_test)
        w0, b0, w1, b1 = net.get_weights()
        expected = _dense_forward(_dense_forward(x, w0, b0), w1, b1)
        np.testing.assert_allclose(out, expected, rtol=self.op_rtol * 10, atol=self.op_atol * 10)

    def test_reinitialize(self, under_test: Backend) -> None:
        """initialize() again without force_reinit warns and changes nothing (same native
        objects, same bits); with force_reinit and a new seed it gives the new seed's values."""
        net = Sequential([Dense(4, in_units=3), Dense(2, in_units=4)])
        self.initialize(net, seed=1)
        before = snapshot(net)
        with pytest.warns(UserWarning, match="force_reinit"):
            self.initialize(net, seed=2)
        assert_unchanged(before, net, "initialize() without force_reinit")

        self.initialize(net, seed=2, force_reinit=True)
        for path, param in net.collect_params().items():
            assert param.seed == 2
            assert_matches_reference(param, under_test)
            if path.endswith("weight"):
                assert param_bits(param).tobytes() != before[path].bits, f"{path} kept its old values"

    @pytest.mark.parametrize("bad", sorted(_BAD_INPUTS))
    def test_bad_input_changes_nothing(self, bad: str, under_test: Backend, rng: np.random.Generator) -> None:
        """A list (TypeError), a rank-1 input or one with zero features (ValueError) is rejected
        by a deferred model and by a materialized one, leaving either exactly as it was."""
        make, error = _BAD_INPUTS[bad]
        net = Sequential([Dense(4), Dense(2)])
        self.initialize(net, seed=4)
        for stage in ("deferred", "materialized"):
            before = snapshot(net)
            with pytest.raises(error):
                net(make())
            assert_unchanged(before, net, f"{bad} input to the {stage} model")
            net(rng.standard_normal((2, 3)).astype(np.float32))
        for param in net.collect_params().values():
            assert_matches_reference(param, under_test)

    def test_feature_size_mismatch(self, under_test: Backend, rng: np.random.Generator) -> None:
        """A materialized model fed another feature size raises ShapeMismatchError (never
        re-initializes), as does a layer whose in_units contradicts the input; nothing changes."""
        net = Sequential([Dense(4), Dense(2)])
        self.initialize(net, seed=6)
        net(rng.standard_normal((2, 3)).astype(np.float32))
        before = snapshot(net)
        with pytest.raises(ShapeMismatchError):
            net(np.ones((2, 5), dtype=np.float32))
        assert_unchanged(before, net, "second call with another feature size")

        fixed = Sequential([Dense(4, in_units=3), Dense(2)])
        self.initialize(fixed, seed=6)
        before = snapshot(fixed)
        with pytest.raises(ShapeMismatchError):
            fixed(np.ones((2, 5), dtype=np.float32))
        assert_unchanged(before, fixed, "input contradicting in_units")
        fixed(rng.standard_normal((2, 3)).astype(np.float32))
        for param in (*net.collect_params().values(), *fixed.collect_params().values()):
            assert_matches_reference(param, under_test)

    def test_failure_in_second_layer_rolls_back(self, under_test: Backend, rng: np.random.Generator,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
        """A first call that materializes layer ``a`` and then fails in layer ``b`` (shape
        mismatch) puts ``a`` back to its previous state; a correct call then works."""
        net = ConcatHead()
        self.initialize(net, seed=8)
        before = snapshot(net)
        assert before["a.weight"].state == "declared" and before["b.weight"].state == "materialized"
        counts = count_materializations(under_test, monkeypatch)
        with pytest.raises(ShapeMismatchError):
            net(np.ones((2, 5), dtype=np.float32))
        assert counts == {"a.weight": 1, "a.bias": 1}, f"the failing call materialized {counts}"
        assert_unchanged(before, net, "first call failing in the second layer")
        out = net(rng.standard_normal((2, 4)).astype(np.float32))
        assert self.host(under_test, out).shape == (2, 3)
        for param in net.collect_params().values():
            assert_matches_reference(param, under_test)

    def test_interrupt_rolls_back(self, under_test: Backend, rng: np.random.Generator,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
        """A KeyboardInterrupt raised inside a custom block's forward, after both its layers
        materialized, puts every parameter back; a call without the interrupt then works."""
        net = Interrupting()
        self.initialize(net, seed=9)
        before = snapshot(net)
        counts = count_materializations(under_test, monkeypatch)
        x = rng.standard_normal((3, 4)).astype(np.float32)
        interrupted = False
        try:
            net(x)
        except KeyboardInterrupt:
            interrupted = True
        assert interrupted
        assert counts == {"a.weight": 1, "a.bias": 1, "b.weight": 1, "b.bias": 1}
        assert_unchanged(before, net, "first call interrupted")
        net.interrupt = False
        assert self.host(under_test, net(x)).shape == (3, 2)
        for param in net.collect_params().values():
            assert_matches_reference(param, under_test)

    def test_same_block_twice(self, under_test: Backend, rng: np.random.Generator) -> None:
        """A Dense added twice to a Sequential has one set of parameters, listed once, held by
        one native object each, and the output applies it twice."""
        layer = Dense(4, activation="relu")
        net = Sequential().add(layer, layer)
        assert list(net.collect_params()) == ["0.weight", "0.bias"]
        self.initialize(net, seed=10)
        x = rng.standard_normal((3, 4)).astype(np.float32)
        out = self.host(under_test, net(x))
        assert net[0] is net[1]
        params = net.collect_params()
        assert list(params) == ["0.weight", "0.bias"]
        assert params["0.weight"].data() is layer.weight.data()
        natives = net.parameters()
        assert len(natives) == 2 and natives[0] is layer.weight.data()
        w, b = net.get_weights()
        once = np.maximum(_dense_forward(x, w, b), 0.0)
        np.testing.assert_allclose(out, np.maximum(_dense_forward(once, w, b), 0.0),
                                   rtol=self.op_rtol * 10, atol=self.op_atol * 10)
        for param in params.values():
            assert_matches_reference(param, under_test)

    def test_share_parameters(self, under_test: Backend, rng: np.random.Generator) -> None:
        """Parameters shared with ``share_parameters`` are one native object, listed once."""
        net = Twin()
        assert list(net.collect_params()) == ["a.weight", "a.bias"]
        self.initialize(net, seed=12)
        x = rng.standard_normal((3, 6)).astype(np.float32)
        out = self.host(under_test, net(x))
        assert net.a.weight.data() is net.b.weight.data()
        assert net.a.param("bias").data() is net.b.param("bias").data()
        assert len(net.parameters()) == 2
        w, b = net.get_weights()
        np.testing.assert_allclose(out, 2 * _dense_forward(x, w, b), rtol=self.op_rtol * 10, atol=self.op_atol * 10)
        for param in net.collect_params().values():
            assert_matches_reference(param, under_test)
