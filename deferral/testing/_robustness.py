"""Copies and threads: pickle/deepcopy keep every bit, concurrent first calls materialize once."""

from __future__ import annotations

import copy
import pickle
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from ..hookspec import MaterializeRequest
from ..nn import Dense, Sequential
from ..registry import Backend
from ._base import ConformanceBase
from ._models import ConcatHead
from ._reference import assert_bits_equal, assert_matches_reference, param_bits, snapshot

__all__ = ["RobustnessChecks"]

_COPIERS: dict[str, Callable[[Any], Any]] = {
    "pickle": lambda model: pickle.loads(pickle.dumps(model)),
    "deepcopy": copy.deepcopy,
}


class RobustnessChecks(ConformanceBase):
    """Models survive copying, and concurrent first calls, without changing a bit."""

    @pytest.mark.parametrize("how", sorted(_COPIERS))
    def test_copy_before_materialization(self, how: str, under_test: Backend, rng: np.random.Generator) -> None:
        """A partly deferred model (one layer materialized by initialize(), one waiting for
        its input size) copied with pickle or deepcopy keeps every parameter's state, intent and
        bits in new native objects; the copy and the original then materialize the same bits
        and compute the same output."""
        net = ConcatHead()
        self.initialize(net, seed=21)
        clone = _COPIERS[how](net)
        before = snapshot(net)
        assert before["a.weight"].state == "declared" and before["b.weight"].state == "materialized"
        assert snapshot(clone) == before
        assert clone.b.weight.data() is not net.b.weight.data()
        assert under_test.is_native(clone.b.weight.data())
        x = rng.standard_normal((2, 4)).astype(np.float32)
        out, out_clone = self.host(under_test, net(x)), self.host(under_test, clone(x))
        np.testing.assert_array_equal(out_clone, out)
        for path, param in net.collect_params().items():
            assert_matches_reference(clone.collect_params()[path], under_test)
            assert_bits_equal(param_bits(clone.collect_params()[path]), param_bits(param), path)

    @pytest.mark.parametrize("how", sorted(_COPIERS))
    def test_copy_after_materialization(self, how: str, under_test: Backend, rng: np.random.Generator) -> None:
        """A materialized model copied (pickle or deepcopy) in each declared dtype and on each
        checked device has the same bits in new native objects of the same backend and device,
        and computes the same output."""
        x = rng.standard_normal((2, 5)).astype(np.float32)
        for device in self.device_list(under_test):
            for dtype in under_test.info.dtypes:
                net = Sequential([Dense(4, activation="tanh"), Dense(3)])
                self.initialize(net, seed=22, dtype=dtype, device=device)
                out = net(x)
                clone = _COPIERS[how](net)
                before, after = snapshot(net), snapshot(clone)
                assert after == before, f"{how} changed the model ({dtype} on {device})"
                for path in before:
                    assert after[path].native is not before[path].native, f"{path} is shared with the copy"
                    assert under_test.is_native(after[path].native)
                if dtype in ("float32", "float64"):
                    np.testing.assert_array_equal(self.host(under_test, clone(x)), self.host(under_test, out))

    def test_concurrent_first_calls(self, under_test: Backend, rng: np.random.Generator,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
        """:attr:`threads` threads making the first call on one deferred model at once all get
        the same output bits, see the same native objects, and each parameter is materialized
        exactly once."""
        counts: dict[str, int] = {}
        lock = threading.Lock()
        original = under_test.materialize

        def counting(request: MaterializeRequest) -> Any:
            out = original(request)
            with lock:
                counts[request.name] = counts.get(request.name, 0) + 1
            return out

        monkeypatch.setattr(under_test, "materialize", counting)
        net = Sequential([Dense(32, activation="relu"), Dense(16, activation="relu"), Dense(4)])
        self.initialize(net, seed=23)
        x = rng.standard_normal((6, 10)).astype(np.float32)
        barrier = threading.Barrier(self.threads)
        outputs: list[np.ndarray | None] = [None] * self.threads
        natives: list[list[int] | None] = [None] * self.threads
        errors: list[BaseException] = []

        def worker(i: int) -> None:
            try:
                barrier.wait(timeout=60)
                outputs[i] = under_test.to_numpy(net(x))
                natives[i] = [id(p) for p in net.parameters()]
            except BaseException as exc:  # reported below, in the test's thread
                errors.append(exc)

        workers = [threading.Thread(target=worker, args=(i,)) for i in range(self.threads)]
        for t in workers:
            t.start()
        for t in workers:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in workers), "a thread did not finish its first call"
        if errors:
            raise AssertionError(f"{len(errors)} thread(s) failed; the first: {errors[0]!r}") from errors[0]
        params = net.collect_params()
        assert counts == dict.fromkeys(params, 1), f"materializations per parameter: {counts}"
        expected_ids = [id(p) for p in net.parameters()]
        for i in range(self.threads):
            assert natives[i] == expected_ids, f"thread {i} saw other native objects"
            np.testing.assert_array_equal(outputs[i], outputs[0])
        for param in params.values():
            assert_matches_reference(param, under_test)
