"""Conformance checks for the activation layers and the ``activation`` argument.

Each activation is checked against an independent float64 formula written here with NumPy
(PyTorch's definitions, see :mod:`deferral.nn`), on float32 and float64 inputs that cover the
regions where the formulas change (around 0, the hard functions' corners at -3 and 3, large
magnitudes where naive forms overflow).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from .. import nn, ops, registry
from ..errors import InputDtypeError
from ..registry import Backend
from ._base import ConformanceBase
from ._reference import assert_matches_reference

__all__ = ["ACTIVATION_REFERENCE", "ActivationLayerChecks", "activation_inputs"]

_erf = np.vectorize(math.erf, otypes=[np.float64])
_SELU = (1.6732632423543772848170429916717, 1.0507009873554804934193349852946)


def _softplus(x: np.ndarray, beta: float = 1.0) -> np.ndarray:
    # Another algorithm than the layer's: logaddexp(0, bx) / beta.
    return np.logaddexp(0.0, beta * x) / beta


def _elu(x: np.ndarray, alpha: float) -> np.ndarray:
    return np.where(x > 0, x, alpha * np.vectorize(math.expm1, otypes=[np.float64])(np.minimum(x, 0.0)))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


#: layer id -> (the layer, its float64 formula). Ids name the layer and its arguments.
ACTIVATION_REFERENCE: dict[str, tuple[Callable[[], nn.Block], Callable[[np.ndarray], np.ndarray]]] = {
    "relu": (nn.ReLU, lambda x: np.where(x > 0, x, 0.0)),
    "relu6": (nn.ReLU6, lambda x: np.clip(x, 0.0, 6.0)),
    "leaky_relu": (nn.LeakyReLU, lambda x: np.where(x >= 0, x, 0.01 * x)),
    "leaky_relu-0.2": (lambda: nn.LeakyReLU(0.2), lambda x: np.where(x >= 0, x, 0.2 * x)),
    "leaky_relu-1.5": (lambda: nn.LeakyReLU(1.5), lambda x: np.where(x >= 0, x, 1.5 * x)),
    "leaky_relu--0.5": (lambda: nn.LeakyReLU(-0.5), lambda x: np.where(x >= 0, x, -0.5 * x)),
    "elu": (nn.ELU, lambda x: _elu(x, 1.0)),
    "elu-0.5": (lambda: nn.ELU(0.5), lambda x: _elu(x, 0.5)),
    "selu": (nn.SELU, lambda x: _SELU[1] * _elu(x, _SELU[0])),
    "silu": (nn.SiLU, lambda x: x / (1.0 + np.exp(-x))),
    "gelu": (nn.GELU, lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))),
    "gelu-tanh": (lambda: nn.GELU("tanh"),
                  lambda x: 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))),
    "softplus": (nn.Softplus, _softplus),
    "softplus-2": (lambda: nn.Softplus(2.0), lambda x: _softplus(x, 2.0)),
    "hard_sigmoid": (nn.HardSigmoid, lambda x: np.clip(x + 3.0, 0.0, 6.0) / 6.0),
    "hard_swish": (nn.HardSwish, lambda x: x * np.clip(x + 3.0, 0.0, 6.0) / 6.0),
    "mish": (nn.Mish, lambda x: x * np.tanh(_softplus(x))),
    "sigmoid": (nn.Sigmoid, lambda x: 1.0 / (1.0 + np.exp(-x))),
    "tanh": (nn.Tanh, np.tanh),
    "softmax": (nn.Softmax, _softmax),
    "log_softmax": (nn.LogSoftmax, lambda x: np.log(_softmax(x))),
}


def activation_inputs(rng: np.random.Generator) -> np.ndarray:
    """``(4, 32)`` float64 inputs: the corners (0, +-3, +-6), tiny and large magnitudes, and normals."""
    special = [0.0, -0.0, 3.0, -3.0, 6.0, -6.0, 1e-7, -1e-7, 1e-3, -1e-3, 25.0, -25.0, 60.0, -60.0, 0.5, -0.5]
    return np.concatenate([np.array(special), rng.standard_normal(112) * 3.0]).reshape(4, 32)


class ActivationLayerChecks(ConformanceBase):
    """Activation layers: values against the float64 formulas; names, tuples, layers and
    callables as a Dense layer's ``activation``; integer inputs refused."""

    def _act_run(self, under_test: Backend, layer: nn.Block, x: np.ndarray) -> np.ndarray:
        with registry.use_backend(self.backend):  # a block without parameters: the default backend
            return self.host(under_test, layer(x))

    @pytest.mark.parametrize("dtype", ["float32", "float64"])
    @pytest.mark.parametrize("case", list(ACTIVATION_REFERENCE))
    def test_activation_matches_formula(self, case: str, dtype: str, under_test: Backend,
                                        rng: np.random.Generator) -> None:
        """Each activation layer agrees with its float64 formula within the op tolerances,
        keeps the input's dtype and shape, and gives no inf or NaN where the formula has none."""
        if dtype not in under_test.info.dtypes:
            pytest.skip(f"backend {self.backend!r} does not declare {dtype}")
        make, formula = ACTIVATION_REFERENCE[case]
        x = activation_inputs(rng).astype(dtype)
        got = self._act_run(under_test, make(), x)
        want = formula(x.astype(np.float64))
        assert got.dtype == np.dtype(dtype) and got.shape == x.shape, (got.dtype, got.shape)
        rtol, atol = (self.op_rtol * 10, self.op_atol * 10) if dtype == "float32" else (
            self.op_rtol64 * 100, self.op_atol64 * 100)
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=f"{case} ({dtype}) on {self.backend}")

    def test_every_name_and_spelling_of_an_activation(self, under_test: Backend,
                                                      rng: np.random.Generator) -> None:
        """A Dense layer given an activation by name, by ``(name, *args)``, as a layer object
        and as a function of ``deferral.ops`` computes its formula on its own output; the
        parameters keep the reference bits whatever the activation."""
        x = rng.standard_normal((3, 5)).astype(np.float32)
        spellings: list[tuple[nn.ActivationLike, str]] = [
            *((name, name) for name in nn.ACTIVATIONS),
            (("leaky_relu", 0.2), "leaky_relu-0.2"), (("elu", 0.5), "elu-0.5"), (("gelu", "tanh"), "gelu-tanh"),
            (nn.LeakyReLU(0.2), "leaky_relu-0.2"), (nn.Softplus(2.0), "softplus-2"),
            (lambda v: ops.multiply(v, ops.tanh(nn.Softplus().apply(v))), "mish"),
        ]
        aliases = {"swish": "silu", "gelu_tanh": "gelu-tanh"}
        for spec, case in spellings:
            layer = nn.Dense(4, activation=spec)
            self.initialize(layer, seed=3)
            got = self.host(under_test, layer(x))
            w, b = (p.astype(np.float64) for p in layer.get_weights())
            want = ACTIVATION_REFERENCE[aliases.get(case, case)][1](x.astype(np.float64) @ w.T + b)
            np.testing.assert_allclose(got, want, rtol=self.op_rtol * 10, atol=self.op_atol * 10,
                                       err_msg=f"Dense(activation={spec!r}) on {self.backend}")
            for param in layer.collect_params().values():
                assert_matches_reference(param, under_test)

    def test_activation_layers_refuse_integer_input(self, under_test: Backend) -> None:
        """An integer or boolean input to an activation layer raises InputDtypeError naming the
        layer (NumPy would truncate or promote, the frameworks differ)."""
        for make, _ in ACTIVATION_REFERENCE.values():
            layer = make()
            for bad in (np.arange(6).reshape(2, 3), np.ones((2, 3), dtype=bool)):
                with pytest.raises(InputDtypeError, match=rf"{type(layer).__name__}: expected a floating input"):
                    self._act_run(under_test, layer, bad)
