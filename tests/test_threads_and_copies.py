"""Concurrent first calls materialize once; models deep-copy and pickle in every state."""

from __future__ import annotations

import copy
import pickle
import threading
from typing import Any

import numpy as np
import pytest

import deferral
from deferral import nn, registry
from tests.conftest import snapshot


def test_concurrent_first_calls_materialize_each_parameter_once(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = deferral.load_backend("numpy")
    calls: list[str] = []
    original = backend.materialize

    def counting(request: Any) -> Any:
        calls.append(request.name)
        return original(request)

    monkeypatch.setattr(backend, "materialize", counting)
    net = nn.Sequential([nn.Dense(64, activation="relu"), nn.Dense(32, activation="tanh"), nn.Dense(4)])
    net.initialize(seed=0)
    x = np.random.default_rng(0).normal(size=(8, 16)).astype("float32")
    barrier = threading.Barrier(8)
    results: list[Any] = [None] * 8
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            barrier.wait()
            results[i] = net(x)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(calls) == sorted(net.collect_params())
    assert all(np.array_equal(r, results[0]) for r in results)
    assert registry.load_backend("numpy") is backend


@pytest.mark.parametrize("copier", [copy.deepcopy, lambda n: pickle.loads(pickle.dumps(n))])
def test_copies_before_initialize(copier: Any) -> None:
    net = nn.Sequential([nn.Dense(8, activation="relu"), nn.Dense(2)])
    clone = copier(net)
    assert snapshot(clone) == snapshot(net)
    clone.initialize(seed=1)
    net.initialize(seed=1)
    x = np.ones((1, 3), dtype="float32")
    assert np.array_equal(clone(x), net(x))
    assert clone[0].weight.data() is not net[0].weight.data()


@pytest.mark.parametrize("copier", [copy.deepcopy, lambda n: pickle.loads(pickle.dumps(n))])
def test_copies_while_deferred_and_after_materialization(copier: Any) -> None:
    net = nn.Sequential([nn.Dense(8, activation="relu"), nn.Dense(2)])
    net.initialize(seed=1)
    deferred = copier(net)
    assert [p.state for p in deferred.collect_params().values()] == ["declared", "shaped"] * 2
    assert deferred[0].weight.seed == 1
    x = np.ones((1, 3), dtype="float32")
    y = net(x)
    assert np.array_equal(deferred(x), y)  # the copy materializes the same bits itself
    done = copier(net)
    assert snapshot(done) == snapshot(net)
    assert np.array_equal(done(x), y)
    done[0].weight.data()[...] = 0
    assert not np.all(net[0].weight.data() == 0)


def test_copy_keeps_tied_parameters_tied() -> None:
    shared = nn.Dense(4)
    net = nn.Sequential([shared, shared])
    net.initialize(seed=0)
    net(np.ones((1, 4), dtype="float32"))
    for clone in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        assert clone[0] is clone[1] and clone[0].weight.data() is clone[1].weight.data()
