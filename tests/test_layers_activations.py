"""Activations: values against torch.nn.functional (when torch is installed), the ways to give
a layer its activation, and what is refused. The float64 formulas and the three backends are
checked by the conformance suite (deferral/testing/_layers_act.py)."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import numpy as np
import pytest

import deferral
from deferral import InputDtypeError, Parameter, nn, ops
from deferral.testing._layers_act import ACTIVATION_REFERENCE, activation_inputs

# case id of ACTIVATION_REFERENCE -> the same function in torch.nn.functional
_TORCH: dict[str, Any] = {
    "relu": lambda F, x: F.relu(x),
    "relu6": lambda F, x: F.relu6(x),
    "leaky_relu": lambda F, x: F.leaky_relu(x),
    "leaky_relu-0.2": lambda F, x: F.leaky_relu(x, 0.2),
    "leaky_relu-1.5": lambda F, x: F.leaky_relu(x, 1.5),
    "leaky_relu--0.5": lambda F, x: F.leaky_relu(x, -0.5),
    "elu": lambda F, x: F.elu(x),
    "elu-0.5": lambda F, x: F.elu(x, 0.5),
    "selu": lambda F, x: F.selu(x),
    "silu": lambda F, x: F.silu(x),
    "gelu": lambda F, x: F.gelu(x),
    "gelu-tanh": lambda F, x: F.gelu(x, approximate="tanh"),
    # torch returns x itself where beta * x > threshold (20 by default), off by up to exp(-20);
    # deferral computes the exact value everywhere: compare with torch's threshold at 40, where
    # x is the float64 value rounded (exp(-40) is below half an ulp of 40).
    "softplus": lambda F, x: F.softplus(x, threshold=40.0),
    "softplus-2": lambda F, x: F.softplus(x, beta=2.0, threshold=40.0),
    "hard_sigmoid": lambda F, x: F.hardsigmoid(x),
    "hard_swish": lambda F, x: F.hardswish(x),
    "mish": lambda F, x: F.mish(x),
    "sigmoid": lambda F, x: F.sigmoid(x),
    "tanh": lambda F, x: F.tanh(x),
    "softmax": lambda F, x: F.softmax(x, -1),
    "log_softmax": lambda F, x: F.log_softmax(x, -1),
}


def test_every_reference_case_has_a_torch_counterpart() -> None:
    assert set(_TORCH) == set(ACTIVATION_REFERENCE)


@pytest.mark.parametrize("dtype,rtol,atol", [("float32", 2e-6, 1e-6), ("float64", 1e-13, 1e-14)])
@pytest.mark.parametrize("case", sorted(_TORCH))
def test_activation_matches_torch_functional(case: str, dtype: str, rtol: float, atol: float) -> None:
    """deferral's activation (NumPy backend) against torch.nn.functional on the same inputs."""
    torch = pytest.importorskip("torch")
    x = activation_inputs(np.random.default_rng(7)).astype(dtype)
    want = _TORCH[case](torch.nn.functional, torch.from_numpy(x)).numpy()
    with deferral.use_backend("numpy"):
        got = ACTIVATION_REFERENCE[case][0]()(x)
    assert got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def test_torch_backend_activation_equals_torch_functional_closely() -> None:
    """On the torch backend (float64) each activation is within a few ulps of torch's own."""
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(activation_inputs(np.random.default_rng(8)))
    for case, (make, _) in ACTIVATION_REFERENCE.items():
        with deferral.use_backend("torch"):
            got = make()(x)
        assert isinstance(got, torch.Tensor)
        torch.testing.assert_close(got, _TORCH[case](torch.nn.functional, x), rtol=1e-13, atol=1e-14, msg=case)


def test_the_four_ways_to_give_an_activation_agree() -> None:
    x = np.random.default_rng(1).standard_normal((3, 5)).astype("float32")
    outs = []
    for spec in (("leaky_relu", 0.2), nn.LeakyReLU(0.2),
                 lambda v: ops.maximum(v, ops.multiply(v, 0.2))):
        layer = nn.Dense(4, activation=spec)
        layer.initialize(seed=0)
        outs.append(layer(x))
    assert all(np.array_equal(o, outs[0]) for o in outs)
    assert np.array_equal(nn.Activation(("leaky_relu", 0.2))(x), nn.LeakyReLU(0.2)(x))
    assert np.array_equal(nn.Activation("swish")(x), nn.SiLU()(x))
    assert np.array_equal(nn.Activation("gelu_tanh")(x), nn.GELU("tanh")(x))


class _PReLU(nn.Block):
    """A user's activation block with a parameter of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.alpha = Parameter("alpha", (1,), init="ones")

    def forward(self, x: Any) -> Any:
        return ops.maximum(x, ops.multiply(x, self.alpha.data()))


def test_a_block_with_parameters_becomes_the_child_activation() -> None:
    layer = nn.Dense(4, activation=_PReLU())
    assert list(layer.collect_params()) == ["weight", "bias", "activation.alpha"]
    layer.initialize(seed=0)
    x = -np.ones((2, 3), dtype="float32")
    y = layer(x)
    w, b, alpha = layer.get_weights()
    assert alpha.tolist() == [1.0]
    np.testing.assert_allclose(y, x @ w.T + b, rtol=1e-6)
    # a built-in activation layer is applied as its function: no child, paths unchanged
    assert list(nn.Dense(4, activation=nn.ELU()).collect_params()) == ["weight", "bias"]


def test_shape_inference_runs_through_composed_activations() -> None:
    net = nn.Sequential([nn.Dense(8, activation=name) for name in nn.ACTIVATIONS])
    assert net.infer_shape((None, 3)) == (None, 8)
    assert net[0].weight.shape == (8, 3) and net[-1].weight.shape == (8, 8)


def test_named_and_parametrized_activations_survive_pickle_and_deepcopy() -> None:
    net = nn.Sequential([nn.Dense(4, activation=("elu", 0.3)), nn.Conv1D(2, 1, activation=nn.Softplus(2.0)),
                         nn.Mish(), nn.LogSoftmax(axis=1)])
    net.initialize(seed=1)
    x = np.random.default_rng(2).standard_normal((2, 3, 5)).astype("float32")
    y = net(x)
    for clone in (pickle.loads(pickle.dumps(net)), copy.deepcopy(net)):
        assert np.array_equal(clone(x), y)


def test_repr_names_the_activation() -> None:
    assert repr(nn.Dense(4, activation=("leaky_relu", 0.2))) == "Dense(-1 -> 4, ('leaky_relu', 0.2))"
    assert repr(nn.Dense(4, activation=nn.ELU(0.5))) == "Dense(-1 -> 4, ELU(alpha=0.5))"
    assert repr(nn.Conv2D(3, 3, activation="silu")).endswith(", silu)")
    assert repr(nn.LeakyReLU(0.1)) == "LeakyReLU(negative_slope=0.1)"
    assert repr(nn.GELU("tanh")) == "GELU(approximate='tanh')"


@pytest.mark.parametrize("spec,error,match", [
    ("swishy", ValueError, r"Dense: unknown activation 'swishy'\. Choose one of: elu, gelu"),
    (("relu", 1), ValueError, r"Dense: activation 'relu' takes the arguments \(\)\. Received: \('relu', 1\)"),
    (("leaky_relu", "a"), ValueError, r"LeakyReLU: expected a number .* negative_slope='a'"),
    (("gelu", "erf"), ValueError, r"GELU: expected 'none' or 'tanh'"),
    (("softplus", 0.0), ValueError, r"Softplus: expected a number in \(0, inf\) for beta"),
    ((), ValueError, r"unknown activation \(\)"),
    (3, TypeError, r"Dense: expected an activation name, .* Received: activation=3"),
])
def test_bad_activation_arguments_are_refused_at_creation(spec: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        nn.Dense(4, activation=spec)


def test_integer_input_to_a_dense_layer_is_refused_on_numpy() -> None:
    layer = nn.Dense(2)
    layer.initialize(seed=0)
    with pytest.raises(InputDtypeError, match=r"Dense: expected a floating input .* dtype int64.*Embedding"):
        layer(np.arange(6).reshape(2, 3))
    assert layer.weight.shape == (2, -1)  # nothing was built


def test_activation_on_gives_the_backends_own_op_only_for_the_one_op_activations() -> None:
    """``activation_on``: ``relu``/``sigmoid``/``tanh`` become the backend's function (which
    computes what ``apply`` does); a composite activation, a user function, and a subclass that
    changes ``apply`` keep what the layer would call."""
    from deferral.nn._activations import activation_on

    like = np.zeros(1, "float32")
    F = deferral.load_backend("numpy").ops
    for name, op in (("relu", F.relu), ("sigmoid", F.sigmoid), ("tanh", F.tanh)):
        fn = nn.activation_fn(name)
        assert activation_on(fn, like) is op
        x = np.linspace(-3, 3, 7, dtype="float32")
        assert np.array_equal(op(x), fn(x))

    class Shifted(nn.ReLU):
        def apply(self, x: Any) -> Any:
            return ops.add(super().apply(x), 1.0)

    silu, own = nn.activation_fn("silu"), nn.activation_fn(lambda v: ops.multiply(v, 2.0))
    shifted = Shifted().apply
    assert activation_on(silu, like) is not None and activation_on(silu, like).__func__ is nn.SiLU.apply
    assert activation_on(own, like) is own and activation_on(None, like) is None
    assert activation_on(shifted, like) == shifted
    assert float(activation_on(shifted, like)(np.array([-1.0]))[0]) == 1.0
