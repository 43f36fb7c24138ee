"""Discovery, declared capabilities and conversions: what the registry and core rely on."""

from __future__ import annotations

import numpy as np
import pytest

from .. import registry
from .._fill import aligned_empty
from ..hookspec import DTYPES, BackendInfo
from ..nn import Dense
from ..ops import check_namespace
from ..registry import Backend
from ._base import ConformanceBase
from ._reference import assert_bits_equal, host_bits, snapshot

__all__ = ["DiscoveryChecks"]

_INVALID_DEVICE = "no-such-device:99"


class DiscoveryChecks(ConformanceBase):
    """The backend is found, describes itself truthfully and converts arrays as specified."""

    def test_listed_by_available_backends(self, under_test: Backend) -> None:
        """``deferral.available_backends()`` lists the backend (found through its entry point
        or registration, its ``requires`` importable)."""
        assert self.backend in registry.available_backends()

    def test_info(self, under_test: Backend) -> None:
        """``load_backend(name).info`` is a BackendInfo with the same name, known dtypes
        (float32, ``initialize()``'s default, among them) and a device that canonicalizes to
        itself."""
        info = under_test.info
        assert isinstance(info, BackendInfo)
        assert info.name == self.backend == under_test.name
        assert info.dtypes, "BackendInfo.dtypes is empty"
        assert set(info.dtypes) <= set(DTYPES), f"unknown dtypes {set(info.dtypes) - set(DTYPES)}"
        assert len(set(info.dtypes)) == len(info.dtypes), f"repeated dtypes in {info.dtypes}"
        assert "float32" in info.dtypes, "initialize() defaults to float32; every backend supports it"
        assert under_test.canonical_device(info.default_device) == info.default_device
        assert under_test.canonical_device(None) == info.default_device
        for device in self.devices:
            assert under_test.canonical_device(device) == device, (
                f"{device!r} listed in devices is not a canonical spelling"
            )
        assert registry.load_backend(self.backend) is under_test, "load_backend must cache"

    def test_invalid_device_raises_value_error(self, under_test: Backend) -> None:
        """An unusable device string raises ValueError, at initialize() too, changing nothing."""
        with pytest.raises(ValueError):
            under_test.canonical_device(_INVALID_DEVICE)
        net = Dense(4, in_units=3)
        before = snapshot(net)
        with pytest.raises(ValueError):
            self.initialize(net, device=_INVALID_DEVICE)
        assert snapshot(net) == before

    def test_unsupported_dtype_raises_type_error(self, under_test: Backend) -> None:
        """A dtype the backend does not declare (or no float dtype at all) raises TypeError,
        at initialize() too, changing nothing."""
        unsupported = [d for d in DTYPES if d not in under_test.info.dtypes] + ["int32"]
        for dtype in unsupported:
            with pytest.raises(TypeError):
                under_test.canonical_dtype(dtype)
            net = Dense(4, in_units=3)
            before = snapshot(net)
            with pytest.raises(TypeError):
                self.initialize(net, dtype=dtype)
            assert snapshot(net) == before
        for dtype in under_test.info.dtypes:
            assert under_test.canonical_dtype(dtype) == dtype

    def test_op_namespace(self, under_test: Backend) -> None:
        """The op namespace provides every name in ``deferral.ops.OP_NAMES`` and is resolved once."""
        check_namespace(self.backend, under_test.ops)
        assert under_test.ops is under_test.ops

    def test_is_native(self, under_test: Backend, device: str) -> None:
        """``is_native`` recognises the backend's arrays and rejects non-arrays."""
        native = under_test.to_native(np.ones((2, 3), dtype=np.float32), None, device)
        assert under_test.is_native(native)
        assert not under_test.is_native([1.0, 2.0])
        assert not under_test.is_native(None)
        assert not under_test.is_native("array")

    def test_to_native_and_back(self, under_test: Backend, device: str, rng: np.random.Generator) -> None:
        """Inputs convert as the hookspec says: float inputs cast to the requested dtype,
        ``dtype=None`` and integer inputs keep theirs, native inputs of that dtype come back
        unchanged, non-arrays give None; ``to_numpy`` returns an independent copy."""
        wide = rng.standard_normal((3, 4))
        native = under_test.to_native(wide, "float32", device)
        assert_bits_equal(
            host_bits(self.host(under_test, native), "float32"),
            wide.astype(np.float32).view(np.uint32),
            "to_native(float64 input, 'float32')",
        )
        single = rng.standard_normal((2, 5)).astype(np.float32)
        kept = under_test.to_native(single, None, device)
        assert_bits_equal(
            host_bits(self.host(under_test, kept), "float32"), single.view(np.uint32), "to_native(dtype=None)"
        )
        assert under_test.to_native(kept, "float32", device) is kept, "a native input must come back as is"
        ints = np.arange(6, dtype=np.int64).reshape(2, 3)
        back = self.host(under_test, under_test.to_native(ints, "float32", device))
        assert back.dtype.kind == "i", f"an integer input must keep an integer dtype; got {back.dtype}"
        np.testing.assert_array_equal(back, ints)
        assert under_test.to_native([[1.0, 2.0]], "float32", device) is None
        copy = under_test.to_numpy(kept)
        copy[...] = 0.0
        assert_bits_equal(
            host_bits(self.host(under_test, kept), "float32"), single.view(np.uint32), "to_numpy must copy"
        )

    def test_parameter_from_numpy_keeps_bits(self, under_test: Backend) -> None:
        """``parameter_from_numpy`` stores exactly the given bits, for every declared dtype and
        device (bfloat16 given as uint16 patterns, read back as float32)."""
        values = np.array([0.0, -0.0, 1.0, -2.5, 1e-3, 3.14159, 65504.0, 1.1754944e-38], dtype=np.float64)
        for device in self.device_list(under_test):
            for dtype in under_test.info.dtypes:
                if dtype == "bfloat16":
                    single = values.astype(np.float32)
                    given = ((single.view(np.uint32) + 0x8000) >> 16).astype(np.uint16)
                    expected = given
                else:
                    given = values.astype(dtype)
                    expected = host_bits(given, dtype)
                mine = aligned_empty((2, 4), given.dtype.name)  # a framework may use aligned memory as it is
                mine[...] = given.reshape(2, 4)
                native = under_test.parameter_from_numpy(mine, dtype, device, True)
                mine[...] = 0  # the caller's array (owned=False): the parameter must not share it
                got = host_bits(self.host(under_test, native), dtype, f"{dtype} on {device}")
                assert_bits_equal(got, expected.reshape(2, 4), f"parameter_from_numpy {dtype} on {device}")
                native = under_test.parameter_from_numpy(given.reshape(2, 4).copy(), dtype, device, True, True)
                got = host_bits(self.host(under_test, native), dtype, f"{dtype} on {device}")
                assert_bits_equal(got, expected.reshape(2, 4), f"parameter_from_numpy owned {dtype} on {device}")
