"""Initial values: bit-identical to the reference for every dtype, device, initializer and seed."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from .. import init as _init
from ..nn import Block, Dense, Sequential
from ..parameter import Parameter, ParameterDict
from ..registry import Backend
from ._base import ConformanceBase
from ._models import Stack, ThreeStage, TwoStage, TwoStageRenamed
from ._reference import assert_bits_equal, assert_matches_reference, param_bits

__all__ = ["INITIALIZERS", "ValueChecks"]

#: One instance of each built-in initializer, with non-default arguments where they have any.
INITIALIZERS: dict[str, Callable[[], _init.Initializer]] = {
    "Zeros": _init.Zeros,
    "Ones": _init.Ones,
    "Constant": lambda: _init.Constant(-0.375),
    "Uniform": lambda: _init.Uniform(0.5),
    "Normal": lambda: _init.Normal(0.25),
    "TruncatedNormal": lambda: _init.TruncatedNormal(0.5),
    "XavierUniform": _init.XavierUniform,
    "XavierNormal": lambda: _init.XavierNormal(gain=2.0),
    "KaimingUniform": _init.KaimingUniform,
    "KaimingNormal": lambda: _init.KaimingNormal(mode="fan_out"),
    "Orthogonal": lambda: _init.Orthogonal(gain=1.5),
}


def _free_parameters(initializer: _init.Initializer) -> ParameterDict:
    """Parameters outside any layer, all shapes known: a conv-like kernel and a vector."""
    params = {"kernel": Parameter("kernel", (6, 3, 2, 2))}
    if not isinstance(initializer, _init.Orthogonal):
        params["vector"] = Parameter("vector", (9,))
    return ParameterDict(params)


class ValueChecks(ConformanceBase):
    """Materialized values equal the host reference and the NumPy backend, bit for bit."""

    def _assert_same_as(self, ours: Block | ParameterDict, theirs: Block | ParameterDict) -> None:
        mine = ours.collect_params() if isinstance(ours, Block) else ours
        other = theirs.collect_params() if isinstance(theirs, Block) else theirs
        assert list(mine) == list(other)
        for path, param in mine.items():
            assert_bits_equal(param_bits(param), param_bits(other[path]), f"{path!r} vs the NumPy backend")

    def _check_model_dtype(self, under_test: Backend, dtype: str, device: str, rng: np.random.Generator) -> None:
        net = Sequential([
            Dense(5, in_units=3, weight_initializer=_init.Normal(1.0), bias_initializer=_init.Uniform(1.0)),
            Dense(4, weight_initializer=_init.TruncatedNormal(3.0), bias_initializer=_init.Normal(2.0)),
        ])
        self.initialize(net, seed=99, dtype=dtype, device=device)
        first = net.collect_params()
        for path in ("0.weight", "0.bias"):
            assert first[path].dtype == dtype and first[path].device == device
            assert_matches_reference(first[path], under_test)
        out = net(rng.standard_normal((2, 3)).astype(np.float32))
        for param in net.collect_params().values():
            assert param.dtype == dtype and param.device == device
            assert_matches_reference(param, under_test)
        if dtype in ("float32", "float64"):
            assert self.host(under_test, out).dtype == np.dtype(dtype), "output dtype follows the parameters"

    def test_every_dtype_matches_reference(self, under_test: Backend, rng: np.random.Generator) -> None:
        """For every declared dtype and checked device, materialized bits equal the reference
        (bfloat16 through float32_to_bfloat16_bits of the float32 reference), both for a layer
        materialized by initialize() and for one materialized by the first call."""
        for device in self.device_list(under_test):
            for dtype in under_test.info.dtypes:
                self._check_model_dtype(under_test, dtype, device, rng)

    def test_dtypes_shared_with_numpy_match_numpy(self, under_test: Backend, reference: Backend) -> None:
        """Every dtype both backends declare gives the same bits on both."""
        for dtype in sorted(set(under_test.info.dtypes) & set(reference.info.dtypes)):
            ours = Dense(6, in_units=5, weight_initializer=_init.Normal(1.5))
            theirs = Dense(6, in_units=5, weight_initializer=_init.Normal(1.5))
            self.initialize(ours, seed=5, dtype=dtype)
            theirs.initialize(seed=5, dtype=dtype, backend=reference.name)
            self._assert_same_as(ours, theirs)

    def test_initializer_table_covers_builtins(self) -> None:
        """The initializer check below covers every public initializer of ``deferral.init``."""
        public = {
            name for name in _init.__all__
            if isinstance(getattr(_init, name), type)
            and issubclass(getattr(_init, name), _init.Initializer)
            and getattr(_init, name) is not _init.Initializer
        }
        assert public == set(INITIALIZERS)

    @pytest.mark.parametrize("name", sorted(INITIALIZERS))
    def test_initializer_bits(self, name: str, under_test: Backend, reference: Backend,
                              rng: np.random.Generator) -> None:
        """Each built-in initializer gives the reference bits, identical to the NumPy backend's,
        for shapes known at initialize() and inferred ones, matrices with more rows or more
        columns, a 4-d kernel and a vector, and every seed in :attr:`seeds`."""
        x = rng.standard_normal((4, 3)).astype(np.float32)
        for seed in self.seeds:
            ours, theirs = Stack(INITIALIZERS[name]()), Stack(INITIALIZERS[name]())
            self.initialize(ours, seed=seed)
            theirs.initialize(seed=seed, backend=reference.name)
            up = ours.collect_params()
            assert up["up.weight"].state == "materialized" and up["low.weight"].state == "declared"
            assert_matches_reference(up["up.weight"], under_test)
            ours(x)
            theirs(x)
            for param in ours.collect_params().values():
                assert_matches_reference(param, under_test)
            self._assert_same_as(ours, theirs)

            free, free_ref = _free_parameters(INITIALIZERS[name]()), _free_parameters(INITIALIZERS[name]())
            free.initialize(INITIALIZERS[name](), seed=seed, backend=self.backend)
            free_ref.initialize(INITIALIZERS[name](), seed=seed, backend=reference.name)
            for param in free.values():
                assert_matches_reference(param, under_test)
            self._assert_same_as(free, free_ref)

    def test_scalar_parameter(self, under_test: Backend) -> None:
        """A 0-d parameter (shape ``()``) stays 0-d when materialized and has the reference
        bits, for every declared dtype and every initializer that accepts a scalar."""
        for dtype in under_test.info.dtypes:
            for name, make in INITIALIZERS.items():
                if name == "Orthogonal":
                    continue
                params = ParameterDict({"scalar": Parameter("scalar", ())})
                params.initialize(make(), seed=31, dtype=dtype, backend=self.backend)
                assert_matches_reference(params["scalar"], under_test)

    def test_value_independence(self, under_test: Backend, rng: np.random.Generator) -> None:
        """A parameter's values depend on (seed, path, index) only: inserting a layer between
        two others, or appending one to a Sequential, leaves every other layer's bits unchanged,
        while the same layer under another name gets different bits (so the comparison means
        something)."""
        x = rng.standard_normal((3, 4)).astype(np.float32)
        base, longer, renamed = TwoStage(), ThreeStage(), TwoStageRenamed()
        for net in (base, longer, renamed):
            self.initialize(net, seed=77)
            net(x)
        b, lo, rn = base.collect_params(), longer.collect_params(), renamed.collect_params()
        for path in ("encoder.weight", "encoder.bias", "head.weight", "head.bias"):
            assert_bits_equal(param_bits(lo[path]), param_bits(b[path]), f"{path!r} after inserting a layer")
        assert not np.array_equal(param_bits(rn["classifier.weight"]), param_bits(b["head.weight"])), (
            "two parameters with different paths got the same values: the key ignores the path"
        )

        short = Sequential([Dense(8, activation="relu"), Dense(3)])
        grown = Sequential([Dense(8, activation="relu"), Dense(3), Dense(5)])
        for model in (short, grown):
            self.initialize(model, seed=78)
            model(x)
        s, g = short.collect_params(), grown.collect_params()
        for path in s:
            assert_bits_equal(param_bits(g[path]), param_bits(s[path]), f"{path!r} after appending a layer")
        for param in (*s.values(), *g.values(), *lo.values()):
            assert_matches_reference(param, under_test)

    def test_cuda_bits_match_reference(self, under_test: Backend, reference: Backend,
                                       rng: np.random.Generator) -> None:
        """On a backend declaring ``supports_cuda`` and a machine with a CUDA device, every
        declared dtype materializes the reference bits on ``"cuda"`` and a forward pass there
        agrees with the NumPy backend."""
        if not under_test.info.supports_cuda:
            pytest.skip(f"backend {self.backend!r} does not declare supports_cuda")
        try:
            cuda = under_test.canonical_device("cuda")
        except ValueError as exc:
            pytest.skip(f"backend {self.backend!r} supports CUDA but cannot use a 'cuda' device here: {exc}")
        for dtype in under_test.info.dtypes:
            self._check_model_dtype(under_test, dtype, cuda, rng)
        x = rng.standard_normal((4, 3)).astype(np.float32)
        ours, theirs = Stack(_init.Normal(0.5)), Stack(_init.Normal(0.5))
        self.initialize(ours, seed=3, device=cuda)
        theirs.initialize(seed=3, backend=reference.name)
        out = self.host(under_test, ours(x))
        np.testing.assert_allclose(out, theirs(x), rtol=self.cuda_rtol, atol=self.cuda_atol)
        self._assert_same_as(ours, theirs)
