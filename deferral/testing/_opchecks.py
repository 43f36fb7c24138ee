"""Forward ops: every op, on every case of the shared table, against an independent reference.

The cases (:mod:`deferral.testing._opcases`) are calls of the public :mod:`deferral.ops`
functions outside any forward pass, so they also prove that an op dispatches on its argument's
type. Each case is checked three ways:

* values: the backend's result, for float32 and float64 inputs, is its own array type, of
  the dtype and shape the op's shape rule gives, with the float64 reference's values
  (:mod:`deferral.testing._opref`) within tolerance;
* shapes: the op's shape rule, run by shape-only inference on the case's specs, gives the
  shape and dtype of the backend's real result;
* errors: an error case raises on the backend; the reference backend (NumPy) and the shape
  rule both raise the case's error class. Other backends may raise their framework's class.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from .. import ops
from .._shapes import TensorSpec, spec_of
from ..nn import Block
from ..registry import Backend
from ._base import ConformanceBase
from ._opcases import OP_CASES, OpCase, Param
from ._opref import names as reference_names
from ._opref import reference

__all__ = ["OpChecks", "infer"]


class _OneOp(Block):
    """A block whose forward is one op call (the first argument only starts shape inference)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.op = getattr(ops, name)

    def forward(self, start: Any, *args: Any) -> Any:
        return self.op(*args)


def _spec(arg: Any) -> Any:
    if isinstance(arg, Param):
        return spec_of(arg.value)
    if isinstance(arg, np.ndarray):
        return spec_of(arg)
    if isinstance(arg, list):
        return [_spec(a) for a in arg]
    return arg


def infer(name: str, args: tuple[Any, ...]) -> Any:
    """What shape-only inference gives for ``deferral.ops.<name>(*args)`` (arrays as specs)."""
    return _OneOp(name)(TensorSpec(()), *(_spec(a) for a in args))


def _cast(arg: Any, dtype: str) -> Any:
    if isinstance(arg, Param):
        return Param(_cast(arg.value, dtype))
    if isinstance(arg, np.ndarray):
        return arg.astype(dtype) if arg.dtype.kind == "f" else arg
    if isinstance(arg, list):
        return [_cast(a, dtype) for a in arg]
    return arg


class OpChecks(ConformanceBase):
    """Each op, called on the backend's arrays, matches the reference and its shape rule."""

    def _op_require(self, under_test: Backend, name: str) -> None:
        if not ops.implements(under_test.ops, name):
            pytest.skip(f"backend {self.backend!r} does not provide the optional op {name!r}")

    def _op_native(self, backend: Backend, device: str, arg: Any) -> Any:
        if isinstance(arg, Param):
            return backend.parameter_from_numpy(arg.value, arg.value.dtype.name, device, False)
        if isinstance(arg, np.ndarray):
            return backend.to_native(arg, None, device)
        if isinstance(arg, list):
            return [self._op_native(backend, device, a) for a in arg]
        return arg

    def _op_call(self, backend: Backend, device: str, name: str, args: tuple[Any, ...]) -> tuple[Any, list[Any]]:
        native = [self._op_native(backend, device, a) for a in args]
        return getattr(ops, name)(*native), native

    def _op_compare(self, backend: Backend, got: Any, spec: Any, want: Any, where: str, tol: tuple[float, float]) -> None:
        if isinstance(spec, list | tuple) and all(isinstance(s, TensorSpec) for s in spec):
            assert isinstance(got, list | tuple) and len(got) == len(spec), (
                f"{where}: returned {type(got).__name__} of {len(got)}; expected {len(spec)} arrays")
            for i, (g, s, w) in enumerate(zip(got, spec, want)):
                self._op_compare(backend, g, s, w, f"{where}, part {i}", tol)
            return
        # A 0-d result may be a scalar the backend converts (NumPy gives np.float32 for a dot).
        assert backend.is_native(got) or spec.shape == (), f"{where}: returned {type(got).__name__}, not a native array"
        host = np.asarray(backend.to_numpy(got))
        assert host.shape == spec.shape, f"{where}: shape {host.shape} != {spec.shape}"
        assert host.dtype == np.dtype(spec.dtype), f"{where}: dtype {host.dtype} != {spec.dtype}"
        np.testing.assert_allclose(host, want, rtol=tol[0], atol=tol[1], err_msg=where)

    def _op_tolerance(self, dtype: str) -> tuple[float, float]:
        return (self.op_rtol64, self.op_atol64) if dtype == "float64" else (self.op_rtol, self.op_atol)

    def test_op_table_covers_op_names(self, rng: np.random.Generator) -> None:
        """The table and the reference cover every declared op, each with a case that succeeds."""
        assert list(OP_CASES) == list(ops.OP_NAMES)
        assert set(reference_names()) == set(ops.OP_NAMES)
        for name, cases in OP_CASES.items():
            assert any(c.error is None for c in cases(rng)), f"ops.{name} has no case that succeeds"

    @pytest.mark.parametrize("dtype", ["float32", "float64"])
    @pytest.mark.parametrize("name", ops.OP_NAMES)  # optional families skip where not provided
    def test_op_matches_reference(self, name: str, dtype: str, under_test: Backend,
                                  rng: np.random.Generator) -> None:
        """On every case that succeeds, on every checked device, the op returns the backend's
        own arrays of its shape rule's shape and dtype, with the float64 reference's values
        within op_rtol/op_atol (float32) or op_rtol64/op_atol64 (float64); ``assign`` writes
        them into the parameter it is given; ``shape`` gives a tuple of Python ints."""
        self._op_require(under_test, name)
        cases = [c for c in OP_CASES[name](rng) if c.error is None]
        assert cases, f"ops.{name} has no case that succeeds"
        for device in self.device_list(under_test):
            for i, case in enumerate(cases):
                where = f"ops.{name} case {i} ({dtype}) on {device}"
                args = tuple(_cast(a, dtype) for a in case.args)
                got, native = self._op_call(under_test, device, name, args)
                want, spec = reference(name, args), infer(name, args)
                if name == "shape":
                    assert got == want and type(got) is tuple, f"{where}: {got!r} != {want!r}"
                    assert all(type(d) is int for d in got), f"{where}: dimensions must be Python ints: {got!r}"
                    continue
                if name == "assign":
                    assert got is None, f"{where}: returned {got!r}, not None"
                    got, spec = native[0], spec_of(args[0].value)
                self._op_compare(under_test, got, spec, want, where, self._op_tolerance(dtype))

    @pytest.mark.parametrize("name", ops.OP_NAMES)
    def test_shape_rule_matches_op(self, name: str, under_test: Backend, reference: Backend,
                                   device: str, rng: np.random.Generator) -> None:
        """On every case, shape inference and the real call agree: the same shapes and dtypes,
        or both raise (the case's error class on the reference backend and in the rule)."""
        self._op_require(under_test, name)
        strict = under_test.name == reference.name
        for i, case in enumerate(OP_CASES[name](rng)):
            where = f"ops.{name} case {i} on {device}"
            args = tuple(_cast(a, "float32") for a in case.args)
            if case.error is not None:
                self._op_check_error(under_test, device, name, args, case, strict, where)
                continue
            got, native = self._op_call(under_test, device, name, args)
            spec = infer(name, args)
            if name == "assign":
                got, spec = native[0], spec_of(args[0].value)
            assert _shapes_of(under_test, got) == _shapes_of(None, spec), f"{where}: shape rule {spec} != {got!r}"

    def _op_check_error(self, backend: Backend, device: str, name: str, args: tuple[Any, ...], case: OpCase,
                        strict: bool, where: str) -> None:
        assert case.error is not None
        with pytest.raises(case.error if strict else Exception):
            self._op_call(backend, device, name, args)
        with pytest.raises(case.error):
            infer(name, args)


def _shapes_of(backend: Backend | None, value: Any) -> Any:
    """The (shape, dtype) of a result or a spec, recursively through lists and tuples."""
    if isinstance(value, TensorSpec):
        return value.shape, value.dtype
    if isinstance(value, list | tuple) and not all(isinstance(v, int | type(None)) for v in value):
        return [_shapes_of(backend, v) for v in value]
    if isinstance(value, tuple):  # ops.shape
        return value
    assert backend is not None
    host = np.asarray(backend.to_numpy(value))
    return tuple(host.shape), host.dtype.name
