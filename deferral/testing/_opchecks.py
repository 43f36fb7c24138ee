"""Forward ops: every name in ``deferral.ops.OP_NAMES`` agrees with the NumPy backend.

Each case gives the arguments of one call of a :mod:`deferral.ops` function as NumPy values;
arrays are converted with the backend's ``to_native`` (lists of arrays element-wise), every
other argument passes as is. The call goes through the public :mod:`deferral.ops` function
outside any forward pass, so it also proves that an op dispatches on its argument's type.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from .. import ops
from ..registry import Backend
from ._base import ConformanceBase
from ._opcases_conv import CONV_CASES
from ._opcases_norm import NORM_CASES
from ._opcases_seq import SEQ_CASES

__all__ = ["OP_CASES", "OpChecks"]

Case = Callable[[np.random.Generator], tuple[Any, ...]]


def _n(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _positive(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.uniform(0.1, 5.0, shape).astype(np.float32)


def _away_from_zero(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return (rng.choice([-1.0, 1.0], shape) * rng.uniform(0.5, 3.0, shape)).astype(np.float32)


def _binary(rng: np.random.Generator) -> list[tuple[Any, ...]]:
    return [(_n(rng, 3, 4), _n(rng, 3, 4)), (_n(rng, 2, 3, 4), _n(rng, 4)), (_n(rng, 3, 1), _n(rng, 1, 5))]


def _reductions(rng: np.random.Generator) -> list[tuple[Any, ...]]:
    x = _n(rng, 3, 4, 5)
    return [(x, None, False), (x, 1, False), (x, -1, True), (x, (0, 2), True), (x, (0, 2), False)]


def _softmaxes(rng: np.random.Generator) -> list[tuple[Any, ...]]:
    return [(_n(rng, 3, 5, scale=4.0), -1), (_n(rng, 3, 5), 0), (_n(rng, 2, 3, 4, scale=20.0), 1)]


#: Calls of each op: name -> function of a generator giving a list of argument tuples.
OP_CASES: dict[str, Callable[[np.random.Generator], list[tuple[Any, ...]]]] = {
    "shape": lambda r: [(_n(r, 2, 3, 4),), (_n(r, 7, 1),)],
    "linear": lambda r: [(_n(r, 5, 3), _n(r, 4, 3), _n(r, 4)), (_n(r, 2, 5, 3), _n(r, 4, 3), None)],
    "matmul": lambda r: [(_n(r, 3, 4), _n(r, 4, 5)), (_n(r, 2, 3, 4), _n(r, 4, 5)), (_n(r, 2, 3, 4), _n(r, 2, 4, 2))],
    "add": _binary,
    "subtract": _binary,
    "multiply": _binary,
    "divide": lambda r: [(_n(r, 3, 4), _away_from_zero(r, 3, 4)), (_n(r, 2, 3), _away_from_zero(r, 3))],
    "maximum": _binary,
    "relu": lambda r: [(_n(r, 4, 5),)],
    "sigmoid": lambda r: [(_n(r, 4, 5),), (np.array([[-30.0, -5.0, 0.0, 5.0, 30.0]], dtype=np.float32),)],
    "tanh": lambda r: [(_n(r, 4, 5, scale=3.0),)],
    "gelu": lambda r: [(_n(r, 4, 5, scale=3.0),)],
    "softmax": _softmaxes,
    "log_softmax": _softmaxes,
    "exp": lambda r: [(_n(r, 4, 5, scale=2.0),)],
    "log": lambda r: [(_positive(r, 4, 5),)],
    "reshape": lambda r: [(_n(r, 2, 3, 4), (6, 4)), (_n(r, 2, 3, 4), (2, -1)), (_n(r, 6), (1, 2, 3))],
    "flatten": lambda r: [(_n(r, 2, 3, 4, 5),), (_n(r, 3, 4),)],
    "transpose": lambda r: [(_n(r, 2, 3), None), (_n(r, 2, 3, 4), (1, 0, 2)), (_n(r, 2, 3, 4), None)],
    "concat": lambda r: [([_n(r, 2, 3), _n(r, 4, 3)], 0), ([_n(r, 2, 3), _n(r, 2, 5)], -1),
                         ([_n(r, 2, 1, 3), _n(r, 2, 2, 3), _n(r, 2, 3, 3)], 1)],
    "sum": _reductions,
    "mean": _reductions,
}
OP_CASES.update(CONV_CASES)
OP_CASES.update(NORM_CASES)
OP_CASES.update(SEQ_CASES)


def _to(backend: Backend, device: str, arg: Any) -> Any:
    if isinstance(arg, np.ndarray):
        return backend.to_native(arg, None, device)
    if isinstance(arg, list):
        return [_to(backend, device, a) for a in arg]
    return arg


class OpChecks(ConformanceBase):
    """Each op, called on the backend's arrays, matches the NumPy backend within tolerance."""

    def test_op_table_covers_op_names(self) -> None:
        """The cases below exercise every op a backend must provide."""
        assert set(OP_CASES) == set(ops.OP_NAMES)

    @pytest.mark.parametrize("name", ops.OP_NAMES)  # optional families skip where not provided
    def test_op_matches_numpy(self, name: str, under_test: Backend, reference: Backend,
                              rng: np.random.Generator) -> None:
        """The op returns the backend's own arrays (0-d results excepted, which are only
        converted) of the reference's shape and dtype, with values within op_rtol/op_atol of
        the NumPy backend's on float32 inputs, on every checked device."""
        fn = getattr(ops, name)
        if name not in ops.CORE_OPS and not ops.implements(under_test.ops, name):
            pytest.skip(f"backend {self.backend!r} does not provide the optional op {name!r}")
        for device in self.device_list(under_test):
            for i, args in enumerate(OP_CASES[name](rng)):
                where = f"ops.{name} case {i} on {device}"
                expected = fn(*(_to(reference, reference.canonical_device(None), a) for a in args))
                got = fn(*(_to(under_test, device, a) for a in args))
                if name == "shape":
                    assert got == expected and isinstance(got, tuple), f"{where}: {got!r} != {expected!r}"
                    assert all(type(d) is int for d in got), f"{where}: dimensions must be Python ints: {got!r}"
                    continue
                want = np.asarray(reference.to_numpy(expected))
                assert under_test.is_native(got), f"{where}: returned {type(got).__name__}, not a native array"
                host = np.asarray(under_test.to_numpy(got))
                assert host.shape == want.shape, f"{where}: shape {host.shape} != {want.shape}"
                assert host.dtype == want.dtype, f"{where}: dtype {host.dtype} != {want.dtype}"
                np.testing.assert_allclose(host, want, rtol=self.op_rtol, atol=self.op_atol, err_msg=where)
