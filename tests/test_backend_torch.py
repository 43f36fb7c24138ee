"""The PyTorch backend: identical bits to the NumPy reference, ops, devices, autograd, copying.

Identity is checked on integer views of the values (``view(np.uint32)`` and friends), never
with a tolerance. Tolerances are used only where the two frameworks compute (forward passes
and ops): float32 ``rtol=1e-5, atol=1e-6``; float64 ``rtol=1e-12, atol=1e-12``; CUDA against
CPU float32 ``rtol=1e-4, atol=1e-5`` (different kernels, summation orders).
"""

from __future__ import annotations

import copy
import math
import pickle
import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import deferral  # noqa: E402
import deferral_torch  # noqa: E402
from deferral import init, nn, ops  # noqa: E402
from deferral._dtypes import bfloat16_bits_to_float32, float32_to_bfloat16_bits  # noqa: E402
from deferral.hookspec import MaterializeRequest  # noqa: E402

TOL = {"float32": {"rtol": 1e-5, "atol": 1e-6}, "float64": {"rtol": 1e-12, "atol": 1e-12}}
CUDA_TOL = {"float32": {"rtol": 1e-4, "atol": 1e-5}, "float64": {"rtol": 1e-10, "atol": 1e-12}}

INITIALIZERS: dict[str, Callable[[], init.Initializer]] = {
    "Zeros": init.Zeros,
    "Ones": init.Ones,
    "Constant(0.5)": lambda: init.Constant(0.5),
    "Uniform(0.3)": lambda: init.Uniform(0.3),
    "Normal(0.02)": lambda: init.Normal(0.02),
    "TruncatedNormal(0.5)": lambda: init.TruncatedNormal(0.5),
    "XavierUniform": init.XavierUniform,
    "XavierNormal": init.XavierNormal,
    "KaimingUniform": init.KaimingUniform,
    "KaimingNormal": init.KaimingNormal,
    "Orthogonal": init.Orthogonal,
}
SEEDS = (0, 2**63 + 12345)
X = np.random.default_rng(7).standard_normal((4, 5))

needs_cuda = pytest.mark.skipif(
    not (deferral.load_backend("torch").info.supports_cuda and torch.cuda.is_available()),
    reason="needs a backend that supports CUDA and a CUDA device",
)


# -- helpers --------------------------------------------------------------------------------
def bits(a: np.ndarray) -> np.ndarray:
    """The values of a NumPy float array as unsigned integers of the same width."""
    return a.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize])


def tbits(t: Any) -> np.ndarray:
    """The values of a tensor (any float dtype, any device) as unsigned-integer bit patterns."""
    signed = {2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    host = t.detach().cpu().contiguous().view(signed).numpy()
    return host.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[t.element_size()])


def mlp(initializer: init.Initializer | None = None) -> nn.Sequential:
    return nn.Sequential([nn.Dense(7, activation="relu", weight_initializer=initializer), nn.Dense(3)])


def materialized(net: nn.Block, x: Any = X, **kwargs: Any) -> nn.Block:
    net.initialize(**kwargs)
    net(x)
    return net


def reference(name: str, seed: int, dtype: str = "float32") -> list[np.ndarray]:
    """The NumPy backend's values for ``mlp(INITIALIZERS[name]())``."""
    return materialized(mlp(INITIALIZERS[name]()), seed=seed, dtype=dtype, backend="numpy").get_weights()


def tensors(net: nn.Block) -> list[Any]:
    return [p.data() for p in net.collect_params().values()]


# -- 1. identical initial values ------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(INITIALIZERS))
def test_initial_values_match_numpy_bit_for_bit(name: str, dtype: str, seed: int) -> None:
    expected = reference(name, seed, dtype)
    net = materialized(mlp(INITIALIZERS[name]()), seed=seed, dtype=dtype, backend="torch")
    got = net.get_weights()
    assert [w.shape for w in got] == [(7, 5), (7,), (3, 7), (3,)]
    for g, e in zip(got, expected):
        assert g.dtype == e.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(bits(g), bits(e))
    # The values are the initializer's, not a placeholder: check one property of each.
    w = got[0].astype(np.float64)
    if name in ("Zeros", "Ones", "Constant(0.5)"):
        assert set(w.ravel()) == {{"Zeros": 0.0, "Ones": 1.0}.get(name, 0.5)}
    elif name == "Orthogonal":
        np.testing.assert_allclose(w.T @ w, np.eye(5), atol=1e-5)
    else:
        assert len(np.unique(w)) == w.size
    assert not got[1].any()  # biases start at zero


@pytest.mark.parametrize("name", list(INITIALIZERS))
def test_float16_is_the_float32_reference_rounded_once(name: str) -> None:
    expected = reference(name, 3)
    net = materialized(mlp(INITIALIZERS[name]()), seed=3, dtype="float16", backend="torch")
    for t, ref32 in zip(tensors(net), expected):
        assert t.dtype == torch.float16
        np.testing.assert_array_equal(tbits(t), bits(ref32.astype(np.float16)))


@pytest.mark.parametrize("name", list(INITIALIZERS))
def test_bfloat16_is_the_float32_reference_rounded_once(name: str) -> None:
    expected = reference(name, 3)
    net = materialized(mlp(INITIALIZERS[name]()), seed=3, dtype="bfloat16", backend="torch")
    for t, w, ref32 in zip(tensors(net), net.get_weights(), expected):
        assert t.dtype == torch.bfloat16
        ref_bits = float32_to_bfloat16_bits(ref32)
        np.testing.assert_array_equal(tbits(t), ref_bits)
        assert w.dtype == np.float32  # get_weights widens bfloat16 exactly
        np.testing.assert_array_equal(bits(w), bits(bfloat16_bits_to_float32(ref_bits)))


def _request(shape: tuple[int, ...], initializer: init.Initializer, dtype: str) -> MaterializeRequest:
    return MaterializeRequest(
        name="w", shape=shape, dtype=dtype, device="cpu", trainable=True,
        key=deferral.random.derive_key(11, "w"), recipe=initializer.recipe(shape),
    )


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("initializer", [init.Normal(1.0), init.TruncatedNormal(1.0), init.Uniform(1.0)])
def test_chunked_fill_covers_every_element_once_with_the_reference_bits(
    monkeypatch: pytest.MonkeyPatch, initializer: init.Initializer, dtype: str
) -> None:
    # A chunk of 5 elements is not a multiple of Philox's 4-word block: slices start mid-block.
    monkeypatch.setattr(deferral_torch, "CHUNK_ELEMENTS", 5)
    calls: list[tuple[int, int]] = []
    original = MaterializeRequest.host_values

    def recording(self: MaterializeRequest, start: int = 0, stop: int | None = None) -> np.ndarray:
        calls.append((start, stop))
        return original(self, start, stop)

    request = _request((6, 7), initializer, dtype)
    full = request.host_values().reshape(6, 7)
    monkeypatch.setattr(MaterializeRequest, "host_values", recording)
    # The chunked copy serves devices other than the CPU; exercise it on a CPU tensor.
    values = torch.empty((6, 7), dtype=getattr(torch, dtype))
    deferral_torch._copy_in_chunks(values, request)
    assert calls == [(s, min(s + 5, 42)) for s in range(0, 42, 5)]  # never more than one chunk
    np.testing.assert_array_equal(tbits(values), full if dtype == "bfloat16" else bits(full))


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_cpu_materialize_writes_in_place(monkeypatch: pytest.MonkeyPatch, dtype: str) -> None:
    request = _request((6, 7), init.Normal(1.0), dtype)
    full = request.host_values().reshape(6, 7)
    targets: list[np.ndarray] = []
    original = MaterializeRequest.fill_host

    def recording(self: MaterializeRequest, out: np.ndarray, start: int = 0) -> None:
        targets.append(out)
        original(self, out, start)

    monkeypatch.setattr(MaterializeRequest, "fill_host", recording)
    param = deferral_torch.deferral_materialize(request=request)
    assert len(targets) == 1 and targets[0].shape == (6, 7)
    assert np.shares_memory(targets[0], param.detach().view(torch.int16 if dtype == "bfloat16" else param.dtype).numpy())
    assert isinstance(param, torch.nn.Parameter) and param.requires_grad
    assert tuple(param.shape) == (6, 7) and param.dtype == getattr(torch, dtype)
    np.testing.assert_array_equal(tbits(param), full if dtype == "bfloat16" else bits(full))


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(1, 6), min_size=0, max_size=3).map(tuple),
    chunk=st.integers(1, 17),
    seed=st.integers(0, 2**64 - 1),
    dtype=st.sampled_from(["float16", "bfloat16", "float32", "float64"]),
)
def test_any_chunk_size_gives_the_reference_bits(
    shape: tuple[int, ...], chunk: int, seed: int, dtype: str
) -> None:
    request = MaterializeRequest(
        name="p", shape=shape, dtype=dtype, device="cpu", trainable=False,
        key=deferral.random.derive_key(seed, "p"), recipe=init.Normal(2.0).recipe(shape),
    )
    full = request.host_values()
    saved, deferral_torch.CHUNK_ELEMENTS = deferral_torch.CHUNK_ELEMENTS, chunk
    try:
        values = torch.empty(shape, dtype=getattr(torch, dtype))
        deferral_torch._copy_in_chunks(values, request)
    finally:
        deferral_torch.CHUNK_ELEMENTS = saved
    np.testing.assert_array_equal(tbits(values).reshape(-1), full if dtype == "bfloat16" else bits(full))


# -- 2. forward passes ----------------------------------------------------------------------
def every_activation() -> nn.Sequential:
    return nn.Sequential([
        nn.Flatten(),
        nn.Dense(16, activation="relu"),
        nn.Dense(16, activation="sigmoid"),
        nn.Dense(16, activation="tanh"),
        nn.Dense(16, activation="gelu"),
        nn.Dense(16, activation="linear"),
        nn.ReLU(), nn.Dense(12), nn.Sigmoid(), nn.Dense(12), nn.Tanh(), nn.Dense(12), nn.GELU(),
        nn.Activation("relu"), nn.Dense(6, activation="softmax"), nn.Dense(5), nn.Softmax(axis=0),
    ])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_forward_matches_numpy_with_every_activation(dtype: str) -> None:
    x = np.random.default_rng(1).standard_normal((8, 2, 3)) * 2
    init_kw = {"init": init.Normal(0.5), "seed": 5, "dtype": dtype}
    ref = every_activation()
    ref.initialize(backend="numpy", **init_kw)
    net = every_activation()
    net.initialize(backend="torch", **init_kw)
    for _ in range(2):  # the first call materializes, the second takes the fast path
        expected, out = ref(x), net(x)
        assert isinstance(out, torch.Tensor) and out.dtype == getattr(torch, dtype)
        assert tuple(out.shape) == (8, 5)
        np.testing.assert_allclose(out.detach().numpy(), expected, **TOL[dtype])
    # A tensor input (already of the model's dtype) gives the same output.
    same = net(torch.from_numpy(x.astype(dtype)))
    np.testing.assert_allclose(same.detach().numpy(), expected, **TOL[dtype])


# -- 3. ops ---------------------------------------------------------------------------------
# The ops' values are checked against the shared case table by tests/test_conformance_torch.py.
def test_ops_dispatch_on_tensors_outside_a_forward_pass() -> None:
    deferral.load_backend("torch").ops  # noqa: B018 - loading the namespace is what is tested
    x = torch.tensor([[-1.0, 2.0], [3.0, -4.0]])
    out = ops.relu(x)
    assert isinstance(out, torch.Tensor)
    assert out.tolist() == [[0.0, 2.0], [3.0, 0.0]]
    assert ops.sum(x, axis=0).tolist() == [2.0, -2.0]
    assert ops.sum(x, axis=[0, 1]).item() == 0.0  # any sequence of axes, as documented
    assert ops.mean(torch.tensor([1, 2, 4])).dtype == torch.float64  # NumPy's rule for ints


# -- 4. parameters, devices, dtypes ---------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_parameters_are_trainable_torch_parameters(dtype: str) -> None:
    net = materialized(mlp(), seed=0, dtype=dtype, backend="torch", device="cpu")
    params = net.parameters()
    assert len(params) == 4
    for p in params:
        assert type(p) is torch.nn.Parameter
        assert p.requires_grad and p.is_leaf
        assert p.device == torch.device("cpu") and p.dtype == getattr(torch, dtype)
    assert {p.device for p in net.collect_params().values()} == {"cpu"}


def test_untrainable_parameter_does_not_require_grad() -> None:
    class Scaled(nn.Block):
        def __init__(self) -> None:
            super().__init__()
            self.dense = nn.Dense(3)
            self.scale = deferral.Parameter("scale", (3,), init="ones", trainable=False)

        def forward(self, x: Any) -> Any:
            return ops.multiply(self.dense(x), self.scale.data())

    net = materialized(Scaled(), seed=0, backend="torch")
    scale = net.scale.data()
    assert isinstance(scale, torch.nn.Parameter) and not scale.requires_grad
    assert scale.tolist() == [1.0, 1.0, 1.0]
    assert len(net.parameters()) == 2 and len(net.parameters(trainable_only=False)) == 3


def _snapshot(net: nn.Block) -> list[tuple[Any, ...]]:
    return [
        (name, p.shape, p.state, p.backend, p.device, p.dtype, p._data,
         None if p._data is None else tbits(p._data).copy())
        for name, p in net.collect_params().items()
    ]


def _same(before: list[tuple[Any, ...]], after: list[tuple[Any, ...]]) -> None:
    assert len(before) == len(after)
    for b, a in zip(before, after):
        assert b[:6] == a[:6]
        assert b[6] is a[6]  # the very same native object, not a copy
        if b[7] is not None:
            np.testing.assert_array_equal(a[7], b[7])


def test_cuda_without_a_gpu_raises_and_leaves_the_model_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    net = mlp()
    before = _snapshot(net)
    for device in ("cuda", "cuda:0", torch.device("cuda", 1)):
        with pytest.raises(ValueError, match="CUDA") as err:
            net.initialize(device=device, backend="torch", seed=0)
        assert repr(str(device)) in str(err.value) and "device='cpu'" in str(err.value)
        _same(before, _snapshot(net))
    # A materialized model is not touched either, even with force_reinit.
    materialized(net, seed=1, backend="torch")
    before = _snapshot(net)
    with pytest.raises(ValueError, match="CUDA"):
        net.initialize(device="cuda", backend="torch", seed=2, force_reinit=True)
    _same(before, _snapshot(net))


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "cuda:-1", "cpu:1", "tpu", "", "cuda:0:1", "mps"])
def test_bad_device_strings_raise_value_error_listing_the_accepted_forms(device: str) -> None:
    net = materialized(mlp(), seed=1, backend="torch")
    before = _snapshot(net)
    with pytest.raises(ValueError, match="Use one of: 'cpu', 'cuda'") as err:
        net.initialize(device=device, backend="torch", force_reinit=True)
    assert repr(device) in str(err.value)
    _same(before, _snapshot(net))


def test_canonical_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = deferral.load_backend("torch")
    assert backend.canonical_device(None) == "cpu"
    assert backend.canonical_device("cpu") == "cpu"
    assert backend.canonical_device(torch.device("cpu")) == "cpu"
    # Pretend two GPUs, the second current: the canonical spelling names the index.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert backend.canonical_device("cuda") == "cuda:1"
    assert backend.canonical_device("cuda:0") == "cuda:0"
    assert backend.canonical_device(torch.device("cuda", 1)) == "cuda:1"
    with pytest.raises(ValueError, match=r"'cuda:2' does not exist.*2 CUDA device\(s\) \(cuda:0, cuda:1\)"):
        backend.canonical_device("cuda:2")


def test_backend_info() -> None:
    info = deferral.load_backend("torch").info
    assert info == deferral.hookspec.BackendInfo(
        name="torch", requires=("torch",), install='pip install "deferral[torch]"',
        dtypes=("float16", "bfloat16", "float32", "float64"), default_device="cpu", supports_cuda=True,
        keeps_storage=True,
    )


def test_conversion_hooks() -> None:
    backend = deferral.load_backend("torch")
    t = torch.ones(2, 3, dtype=torch.float64)
    assert backend.is_native(t) and backend.is_native(torch.nn.Parameter(t))
    assert not backend.is_native(np.ones(3)) and not backend.is_native([1.0])
    # Native inputs are returned unchanged, whatever the model's dtype.
    assert backend.to_native(t, "float32", "cpu") is t
    # Floating NumPy inputs take the model's dtype, integer ones keep theirs.
    x = backend.to_native(np.arange(6.0).reshape(2, 3), "bfloat16", "cpu")
    assert x.dtype == torch.bfloat16 and x.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert backend.to_native(np.arange(3), "float32", "cpu").dtype == torch.int64
    assert backend.to_native(np.arange(3.0), None, "cpu").dtype == torch.float64
    # Read-only, strided and big-endian arrays convert without warnings (filterwarnings=error).
    ro = np.arange(4.0)
    ro.flags.writeable = False
    assert backend.to_native(ro, "float32", "cpu").tolist() == [0, 1, 2, 3]
    assert backend.to_native(np.arange(8.0)[::-2], "float32", "cpu").tolist() == [7, 5, 3, 1]
    assert backend.to_native(np.arange(3.0, dtype=">f8"), "float64", "cpu").tolist() == [0, 1, 2]
    assert backend.to_native([1.0, 2.0], "float32", "cpu") is None
    assert backend.to_native("x", "float32", "cpu") is None
    # to_numpy: a detached host copy; bfloat16 becomes float32.
    p = torch.nn.Parameter(torch.tensor([1.5, -2.0], dtype=torch.bfloat16))
    host = backend.to_numpy(p)
    assert host.dtype == np.float32 and host.tolist() == [1.5, -2.0]
    q = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    host = backend.to_numpy(q)
    host[0] = 9.0
    assert q.tolist() == [1.0, 2.0]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_parameter_from_numpy_copies_and_rounds_once(dtype: str) -> None:
    backend = deferral.load_backend("torch")
    values = np.random.default_rng(0).standard_normal((3, 2))
    host = deferral._dtypes.round_to(values, dtype)
    param = backend.parameter_from_numpy(host, dtype, "cpu", True)
    assert type(param) is torch.nn.Parameter and param.requires_grad
    assert param.dtype == getattr(torch, dtype) and tuple(param.shape) == (3, 2)
    np.testing.assert_array_equal(tbits(param), host if dtype == "bfloat16" else bits(host))
    host[...] = 0  # the parameter owns its storage
    assert param.detach().abs().sum().item() > 0
    frozen = backend.parameter_from_numpy(host, dtype, "cpu", False)
    assert not frozen.requires_grad


def test_set_data_on_a_torch_model() -> None:
    net = materialized(mlp(), seed=0, backend="torch", dtype="bfloat16")
    # Values halfway between two bfloat16 numbers round to the even one: down, then up.
    new = np.full((7, 5), 1.0 + 2**-8)
    new[:, 0] = 1.0 + 3 * 2**-8
    net[0].weight.set_data(new)
    w = net[0].weight.data()
    assert isinstance(w, torch.nn.Parameter) and w.dtype == torch.bfloat16 and w.requires_grad
    assert set(tbits(w)[:, 0]) == {0x3F82} and set(tbits(w)[:, 1:].ravel()) == {0x3F80}
    assert isinstance(net(X), torch.Tensor)


# -- 5. training ----------------------------------------------------------------------------
def test_adam_fits_a_toy_regression() -> None:
    x = np.linspace(-3.0, 3.0, 256).reshape(-1, 1)
    features = np.concatenate([x, np.sin(x), np.cos(2 * x)], axis=1)
    target = torch.from_numpy(np.sin(2 * x) + 0.5 * x).float()
    net = nn.Sequential([nn.Dense(32, activation="tanh"), nn.Dense(32, activation="tanh"), nn.Dense(1)])
    net.initialize(seed=0, backend="torch")
    inputs = torch.from_numpy(features).float()
    first = net(inputs)  # materializes: only now do the parameters exist
    start = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    initial = final = torch.mean((first - target) ** 2).item()
    for _ in range(300):
        opt.zero_grad()
        loss = torch.mean((net(inputs) - target) ** 2)
        loss.backward()
        opt.step()
        final = loss.item()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    assert all(not torch.equal(a, p) for a, p in zip(start, net.parameters()))
    assert math.isfinite(final) and final < initial / 10, (initial, final)
    # The model's own view of its weights is the trained parameters (no stale copies).
    np.testing.assert_array_equal(net.get_weights()[0], net.parameters()[0].detach().numpy())


# -- 6. the first call is a transaction -----------------------------------------------------
class Skip(nn.Block):
    """``out(concat(hidden(x), x))``: ``out`` is built for 2 input features (7 + 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Dense(7, activation="relu")
        self.out = nn.Dense(3, in_units=9)

    def forward(self, x: Any) -> Any:
        return self.out(ops.concat([self.hidden(x), x], axis=-1))


def test_a_failing_first_call_leaves_every_parameter_as_before() -> None:
    net = Skip()
    net.initialize(seed=4, backend="torch", init=init.Normal(0.1))
    assert net.out.weight.state == "materialized" and net.hidden.weight.state == "declared"
    before = _snapshot(net)
    with pytest.raises(deferral.ShapeMismatchError, match=r"'out'.*expected 9 input features"):
        net(np.ones((4, 3)))  # hidden materializes as (7, 3), then out gets 10 features
    _same(before, _snapshot(net))
    assert net.hidden.weight.shape == (7, -1)
    # A correct call then works, with the values a fresh model gets (on either backend).
    x = np.random.default_rng(0).standard_normal((4, 2))
    out = net(x)
    assert tuple(out.shape) == (4, 3)
    fresh = Skip()
    fresh.initialize(seed=4, backend="numpy", init=init.Normal(0.1))
    expected_out = fresh(x)
    for got, expected in zip(net.get_weights(), fresh.get_weights()):
        np.testing.assert_array_equal(bits(got), bits(expected))
    np.testing.assert_allclose(out.detach().numpy(), expected_out, **TOL["float32"])


# -- 7. pickle and deepcopy -----------------------------------------------------------------
def _roundtrips(net: nn.Block) -> list[nn.Block]:
    return [pickle.loads(pickle.dumps(net)), copy.deepcopy(net)]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_copies_of_a_materialized_model_have_the_same_bits(dtype: str) -> None:
    net = materialized(mlp(init.Normal(0.3)), seed=9, dtype=dtype, backend="torch")
    out = net(X)
    for other in _roundtrips(net):
        for a, b in zip(tensors(net), tensors(other)):
            assert type(b) is torch.nn.Parameter and b.requires_grad and b.dtype == a.dtype
            assert b.data_ptr() != a.data_ptr()
            np.testing.assert_array_equal(tbits(b), tbits(a))
        assert torch.equal(other(X), out)
        with torch.no_grad():
            other.parameters()[0].zero_()
        assert tensors(net)[0].abs().sum() > 0  # the copy owns its storage


def test_copies_of_a_deferred_model_materialize_the_same_bits() -> None:
    net = mlp(init.TruncatedNormal(0.5))
    net.initialize(seed=2, backend="torch", dtype="float64")
    copies = _roundtrips(net)
    for other in [net, *copies]:
        assert other[0].weight.state == "declared"
        other(X)
    for other in copies:
        for a, b in zip(tensors(net), tensors(other)):
            assert type(b) is torch.nn.Parameter
            np.testing.assert_array_equal(tbits(b), tbits(a))


# -- 8. CUDA (skipped without a device) -----------------------------------------------------
@needs_cuda
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("name", list(INITIALIZERS))
def test_cuda_parameters_have_the_cpu_bits(name: str, dtype: str) -> None:
    cpu = materialized(mlp(INITIALIZERS[name]()), seed=21, dtype=dtype, backend="torch")
    gpu = materialized(mlp(INITIALIZERS[name]()), seed=21, dtype=dtype, backend="torch", device="cuda")
    current = torch.cuda.current_device()
    assert {p.device for p in gpu.collect_params().values()} == {f"cuda:{current}"}
    for a, b in zip(tensors(cpu), tensors(gpu)):
        assert type(b) is torch.nn.Parameter and b.requires_grad
        assert b.device == torch.device("cuda", current) and b.dtype == a.dtype
        np.testing.assert_array_equal(tbits(b), tbits(a))


@needs_cuda
def test_cuda_chunked_fill_has_the_reference_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deferral_torch, "CHUNK_ELEMENTS", 7)
    request = MaterializeRequest(
        name="w", shape=(33, 5), dtype="float32", device="cuda:0", trainable=True,
        key=deferral.random.derive_key(5, "w"), recipe=init.Normal(1.0).recipe((33, 5)),
    )
    param = deferral_torch.deferral_materialize(request=request)
    assert param.device == torch.device("cuda", 0)
    np.testing.assert_array_equal(tbits(param).ravel(), bits(request.host_values()))


@needs_cuda
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cuda_forward_matches_cpu(dtype: str) -> None:
    x = np.random.default_rng(1).standard_normal((8, 2, 3))
    kw = {"init": init.Normal(0.5), "seed": 5, "dtype": dtype, "backend": "torch"}
    cpu, gpu = every_activation(), every_activation()
    cpu.initialize(**kw)
    gpu.initialize(device="cuda:0", **kw)
    expected = cpu(x)
    for got in (gpu(x), gpu(torch.from_numpy(x.astype(dtype)).cuda())):
        assert got.device.type == "cuda"
        np.testing.assert_allclose(got.detach().cpu().numpy(), expected.detach().numpy(), **CUDA_TOL[dtype])


@needs_cuda
def test_cuda_training_step_updates_parameters() -> None:
    net = materialized(mlp(), seed=0, backend="torch", device="cuda")
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in net.parameters()]
    loss = net(X).square().mean()
    loss.backward()
    opt.step()
    assert all(p.device.type == "cuda" for p in net.parameters())
    assert any(not torch.equal(a, p) for a, p in zip(before, net.parameters()))


@needs_cuda
def test_cuda_device_index_past_the_last_raises() -> None:
    count = torch.cuda.device_count()
    with pytest.raises(ValueError, match=rf"'cuda:{count}' does not exist"):
        mlp().initialize(device=f"cuda:{count}", backend="torch")


# -- 9. importing the plugin imports no framework -------------------------------------------
def test_plugin_import_and_discovery_import_no_framework() -> None:
    code = textwrap.dedent(
        """
        import sys
        import deferral_torch
        import deferral
        names = deferral.available_backends()
        info = deferral.load_backend("torch").info  # loading the plugin is not selecting it
        assert "torch" in names, names
        assert info.supports_cuda
        leaked = sorted(m for m in ("torch", "tensorflow", "jax") if m in sys.modules)
        print("LEAKED", leaked)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "LEAKED []" in result.stdout, result.stdout
