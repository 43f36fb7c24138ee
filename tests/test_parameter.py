"""Parameter and ParameterDict: states, names, set_data, selection, display."""

from __future__ import annotations

import numpy as np
import pytest

import deferral
from deferral import Parameter, ParameterDict, nn
from tests.conftest import snapshot


def test_states_and_sizes() -> None:
    p = Parameter("w", shape=(3, None))
    assert p.shape == (3, -1) and p.state == "declared" and p.size is None and p.nbytes is None
    assert not p.initialized and p.dtype == "float32" and p.backend is None and p.seed is None
    q = Parameter("b", shape=4)
    assert q.shape == (4,) and q.state == "shaped" and q.size == 4 and q.nbytes == 16


@pytest.mark.parametrize("bad", [(3, -2), (2.5,), ("a",), (True,)])
def test_bad_shapes(bad: tuple) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match="positive int"):
        Parameter("w", shape=bad)


def test_shape_must_be_a_tuple() -> None:
    with pytest.raises(TypeError, match="expected a shape"):
        Parameter("w", shape="3x4")


def test_data_errors_say_which_step_is_missing() -> None:
    layer = nn.Dense(3)
    with pytest.raises(deferral.DeferredInitializationError) as info:
        layer.weight.data()
    assert "initialize() was not called" in str(info.value) and "in_units" in str(info.value)
    assert isinstance(info.value, RuntimeError)
    layer.initialize(seed=0)
    with pytest.raises(deferral.DeferredInitializationError, match="is deferred"):
        layer.weight.data()


def test_set_data_fills_unknown_dims_and_materializes() -> None:
    layer = nn.Dense(3)
    layer.initialize(seed=0)
    value = np.arange(6, dtype="float64").reshape(3, 2)
    layer.weight.set_data(value)
    assert layer.weight.shape == (3, 2) and layer.weight.state == "materialized"
    data = layer.weight.data()
    assert data.dtype == np.float32 and np.array_equal(data, value.astype("float32"))
    value[0, 0] = 100.0
    assert data[0, 0] == 0.0  # a copy
    y = layer(np.ones((1, 2), dtype="float32"))
    assert np.allclose(y, [[1.0, 5.0, 9.0]])


def test_set_data_on_an_uninitialized_parameter_binds_the_default_backend() -> None:
    p = Parameter("w", shape=(2, -1))
    p.set_data(np.ones((2, 5)))
    assert p.backend == "numpy" and p.shape == (2, 5) and p.dtype == "float32"


def test_set_data_errors_leave_the_parameter_unchanged() -> None:
    layer = nn.Dense(3, in_units=2)
    layer.initialize(seed=0)
    before = snapshot(layer)
    with pytest.raises(deferral.ShapeMismatchError, match=r"expected shape \(3, 2\)"):
        layer.weight.set_data(np.ones((3, 4)))
    with pytest.raises(deferral.ShapeMismatchError):
        layer.weight.set_data(np.ones(6))
    with pytest.raises(TypeError, match="set_data expects"):
        layer.weight.set_data([[1.0, 2.0]] * 3)
    assert snapshot(layer) == before


def test_collect_params_select_is_a_full_match_regex() -> None:
    net = nn.Sequential([nn.Dense(4), nn.Sequential([nn.Dense(2), nn.Dense(1, use_bias=False)])])
    assert list(net.collect_params(".*weight")) == ["0.weight", "1.0.weight", "1.1.weight"]
    assert list(net.collect_params(r"1\..*bias")) == ["1.0.bias"]
    assert list(net.collect_params("weight")) == []
    assert net[1][0].weight.path == "1.0.weight"


def test_names_freeze_at_initialize() -> None:
    net = nn.Sequential([nn.Dense(4), nn.Dense(2)])
    net.initialize(seed=0)
    inner = net[1].collect_params()
    assert list(inner) == ["weight", "bias"]
    assert net[1].weight.path == "1.weight"


def test_parameter_dict_mapping_and_repr() -> None:
    net = nn.Sequential([nn.Dense(4), nn.Dense(2)])
    params = net.collect_params()
    assert len(params) == 4 and "0.bias" in params and params["1.weight"] is net[1].weight
    with pytest.raises(KeyError, match=r"Known: 0\.weight"):
        params["2.weight"]
    lines = repr(params).splitlines()
    assert lines[0] == "ParameterDict(" and lines[-1] == ")"
    assert lines[1].split() == ["0.weight", "shape=(4,", "-1)", "dtype=float32", "declared"]
    assert repr(ParameterDict()) == "ParameterDict()"
    assert repr(net[0].weight) == "Parameter 0.weight (shape=(4, -1), dtype=float32, declared)"


def test_block_parameters_gives_native_trainable_objects() -> None:
    net = nn.Sequential([nn.Dense(4, in_units=3)])
    with pytest.raises(deferral.DeferredInitializationError):
        net.parameters()
    net.initialize(seed=0)
    params = net.parameters()
    assert [p.shape for p in params] == [(4, 3), (4,)]
    assert params[0] is net[0].weight.data()
    net[0].bias.trainable = False
    assert len(net.parameters()) == 1 and len(net.parameters(trainable_only=False)) == 2


def test_dense_arguments_are_validated() -> None:
    with pytest.raises(ValueError, match="Received: units=-3"):
        nn.Dense(-3)
    with pytest.raises(ValueError, match="Received: in_units=0"):
        nn.Dense(3, in_units=0)
    with pytest.raises(ValueError, match="unknown activation 'relu7'"):
        nn.Dense(3, activation="relu7")
    with pytest.raises(deferral.InitializerError):
        nn.Dense(3, weight_initializer="bogus")


def test_block_requires_super_init() -> None:
    class Bad(nn.Block):
        def __init__(self) -> None:
            self.layer = nn.Dense(2)

    with pytest.raises(AttributeError, match="super"):
        Bad()


def test_sequential_indexing_len_iteration_nesting() -> None:
    a, b, c = nn.Dense(3), nn.Dense(2), nn.Dense(1)
    net = nn.Sequential().add(a, b)
    net.add(nn.Sequential([c]))
    assert len(net) == 3 and list(net)[:2] == [a, b] and net[-1][0] is c
    sub = net[0:2]
    assert isinstance(sub, nn.Sequential) and list(sub) == [a, b]
    with pytest.raises(IndexError, match="3 blocks"):
        net[5]
    with pytest.raises(TypeError, match=r"expected a deferral\.nn\.Block"):
        net.add("dense")  # type: ignore[arg-type]
    net.initialize(seed=0)
    assert net(np.ones((2, 4), dtype="float32")).shape == (2, 1)
