"""Recurrent layers (RNN, GRU, LSTM), MultiHeadAttention and the sequence ops.

NumPy values are checked against straightforward float64 references written here (explicit
per-step loops with each gate's rows sliced out of the weights; attention per sample and per
head), and against PyTorch's own ``nn.RNN``/``nn.GRU``/``nn.LSTM``/``nn.MultiheadAttention``
with the weights copied over where torch is installed. Cross-backend checks compare the
parameters bit for bit and the outputs within float32 rtol 1e-5 / atol 1e-6 (float64: 1e-10 /
1e-12).
"""

from __future__ import annotations

import importlib.util
import math
from typing import Any

import numpy as np
import pytest

import deferral
from deferral import init, nn, ops
from tests.conftest import snapshot

HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_TF = importlib.util.find_spec("tensorflow") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
needs_tf = pytest.mark.skipif(not HAS_TF, reason="tensorflow is not installed")

FRAMEWORKS = [
    pytest.param("torch", marks=needs_torch),
    pytest.param("tensorflow", marks=needs_tf),
]
TOL = {"float32": {"rtol": 1e-5, "atol": 1e-6}, "float64": {"rtol": 1e-10, "atol": 1e-12}}
GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
BIAS = init.Uniform(0.5)  # non-zero biases, so every bias term is exercised


def make(kind: str, hidden: int = 5, **kwargs: Any) -> nn.Block:
    kwargs.setdefault("i2h_bias_initializer", BIAS)
    kwargs.setdefault("h2h_bias_initializer", BIAS)
    return getattr(nn, kind)(hidden, **kwargs)


def bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.dtype(f"u{a.dtype.itemsize}"))


def host(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


# -- independent references ------------------------------------------------------------------
def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def reference_recurrent(kind: str, x: np.ndarray, weights: list[np.ndarray], batch_first: bool,
                        states: list[np.ndarray] | None = None,
                        activation: str = "tanh") -> tuple[np.ndarray, list[np.ndarray]]:
    """Per-step loop in float64; gate ``k`` uses weight rows ``[k*H, (k+1)*H)``."""
    w = [np.asarray(a, dtype=np.float64) for a in weights]
    seq = np.asarray(x, dtype=np.float64)
    if batch_first:
        seq = seq.transpose(1, 0, 2)  # (T, N, C)
    steps, batch = seq.shape[:2]
    layers, hidden = len(w) // 4, w[1].shape[1]
    h0 = np.zeros((layers, batch, hidden)) if states is None else np.asarray(states[0], np.float64)
    c0 = np.zeros((layers, batch, hidden)) if states is None or kind != "LSTM" else np.asarray(states[1], np.float64)
    final_h, final_c = [], []
    for layer in range(layers):
        wi, wh, bi, bh = w[4 * layer: 4 * layer + 4]

        def part(k: int, wi: np.ndarray = wi, wh: np.ndarray = wh, bi: np.ndarray = bi,
                 bh: np.ndarray = bh) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
            rows = slice(k * hidden, (k + 1) * hidden)
            return wi[rows], wh[rows], bi[rows], bh[rows]

        h, c = h0[layer].copy(), c0[layer].copy()
        outputs = []
        for t in range(steps):
            xt = seq[t]
            if kind == "RNN":
                a, b, p, q = part(0)
                pre = xt @ a.T + p + h @ b.T + q
                h = np.tanh(pre) if activation == "tanh" else np.maximum(pre, 0.0)
            elif kind == "GRU":
                (ar, br, pr, qr), (az, bz, pz, qz), (an, bn, pn, qn) = part(0), part(1), part(2)
                r = sigmoid(xt @ ar.T + pr + h @ br.T + qr)
                z = sigmoid(xt @ az.T + pz + h @ bz.T + qz)
                n = np.tanh(xt @ an.T + pn + r * (h @ bn.T + qn))
                h = (1.0 - z) * n + z * h
            else:
                (ai, bi_, pi, qi), (af, bf, pf, qf), (ag, bg, pg, qg), (ao, bo, po, qo) = (
                    part(0), part(1), part(2), part(3))
                i = sigmoid(xt @ ai.T + pi + h @ bi_.T + qi)
                f = sigmoid(xt @ af.T + pf + h @ bf.T + qf)
                g = np.tanh(xt @ ag.T + pg + h @ bg.T + qg)
                o = sigmoid(xt @ ao.T + po + h @ bo.T + qo)
                c = f * c + i * g
                h = o * np.tanh(c)
            outputs.append(h)
        seq = np.stack(outputs)
        final_h.append(h)
        final_c.append(c)
    out = seq.transpose(1, 0, 2) if batch_first else seq
    new = [np.stack(final_h)] + ([np.stack(final_c)] if kind == "LSTM" else [])
    return out, new


def reference_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, weights: list[np.ndarray],
                        heads: int, mask: np.ndarray | None = None, use_bias: bool = True) -> np.ndarray:
    """Per sample, per head, in float64. ``weights`` in collect_params() order."""
    w = [np.asarray(a, dtype=np.float64) for a in weights]
    if use_bias:
        wq, bq, wk, bk, wv, bv, wo, bo = w
    else:
        wq, wk, wv, wo = w
        bq = bk = bv = bo = 0.0
    Q, K, V = q @ wq.T + bq, k @ wk.T + bk, v @ wv.T + bv
    batch, tq, units = Q.shape
    tk, size = K.shape[1], units // heads
    full = None
    if mask is not None:
        full = np.broadcast_to(mask, (batch, heads, tq, tk) if mask.ndim == 4 else (batch, tq, tk))
    out = np.zeros((batch, tq, units))
    for n in range(batch):
        for h in range(heads):
            cols = slice(h * size, (h + 1) * size)
            scores = Q[n, :, cols] @ K[n, :, cols].T / math.sqrt(size)
            if full is not None:
                allowed = full[n, h] if full.ndim == 4 else full[n]
                scores = np.where(allowed != 0, scores, -1e9)
            e = np.exp(scores - scores.max(axis=-1, keepdims=True))
            out[n, :, cols] = (e / e.sum(axis=-1, keepdims=True)) @ V[n, :, cols]
    return out @ wo.T + bo


def count(layer: nn.Block) -> int:
    return sum(p.size for p in layer.collect_params().values())


# -- recurrent layers on NumPy ---------------------------------------------------------------
@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("num_layers", [1, 3])
def test_recurrent_matches_per_step_reference(kind: str, batch_first: bool, num_layers: int) -> None:
    rng = np.random.default_rng(num_layers)
    layer = make(kind, num_layers=num_layers, batch_first=batch_first)
    layer.initialize(seed=3, dtype="float64")
    x = rng.standard_normal((2, 6, 4) if batch_first else (6, 2, 4))
    out = layer(x)
    assert out.dtype == np.float64 and out.shape == ((2, 6, 5) if batch_first else (6, 2, 5))
    want, _ = reference_recurrent(kind, x, layer.get_weights(), batch_first)
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-13)

    states = [rng.standard_normal((num_layers, 2, 5)) for _ in range(2 if kind == "LSTM" else 1)]
    out, new = layer(x, states)
    want, want_new = reference_recurrent(kind, x, layer.get_weights(), batch_first, states)
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-13)
    assert len(new) == len(want_new)
    for got, expected in zip(new, want_new):
        assert got.shape == (num_layers, 2, 5)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-13)
    # The top layer's last output is the top layer's final h.
    last = out[:, -1] if batch_first else out[-1]
    np.testing.assert_array_equal(new[0][-1], last)


def test_rnn_relu_matches_reference() -> None:
    x = np.random.default_rng(0).standard_normal((3, 4, 2)).astype("float32")
    layer = make("RNN", activation="relu", num_layers=2)
    layer.initialize(seed=1)
    out = layer(x)
    want, _ = reference_recurrent("RNN", x, layer.get_weights(), True, activation="relu")
    np.testing.assert_allclose(out, want, **TOL["float32"])
    assert (out >= 0).all() and (out == 0).any()


def test_float32_and_zero_begin_state_match_no_state() -> None:
    x = np.random.default_rng(5).standard_normal((3, 7, 4)).astype("float32")
    for kind in GATES:
        layer = make(kind, num_layers=2)
        layer.initialize(seed=2)
        out = layer(x)
        assert out.dtype == np.float32
        want, _ = reference_recurrent(kind, x, layer.get_weights(), True)
        np.testing.assert_allclose(out, want, **TOL["float32"])
        with_states, new = layer(x, layer.begin_state(3))
        np.testing.assert_allclose(with_states, out, rtol=1e-6, atol=1e-7)
        # Feeding the states back continues the sequence: two halves equal the whole.
        first, mid = layer(x[:, :3], layer.begin_state(3))
        second, end = layer(x[:, 3:], mid)
        np.testing.assert_allclose(np.concatenate([first, second], axis=1), with_states, rtol=1e-6, atol=1e-7)
        for a, b in zip(end, new):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_rnn_and_gru_accept_a_bare_state_array() -> None:
    x = np.random.default_rng(1).standard_normal((2, 3, 4)).astype("float32")
    gru = make("GRU")
    gru.initialize(seed=0)
    h = np.full((1, 2, 5), 0.25, dtype="float32")
    out, [new] = gru(x, h)
    want, _ = gru(x, [h])
    np.testing.assert_array_equal(out, want)
    assert new.shape == (1, 2, 5)


@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
def test_parameter_names_shapes_and_counts(kind: str) -> None:
    gates = GATES[kind]
    layer = make(kind, hidden=7, num_layers=3)
    params = layer.collect_params()
    assert list(params) == [f"l{i}_{n}" for i in range(3)
                            for n in ("i2h_weight", "h2h_weight", "i2h_bias", "h2h_bias")]
    assert params["l0_i2h_weight"].shape == (gates * 7, -1)
    assert params["l1_i2h_weight"].shape == (gates * 7, 7)
    assert params["l2_h2h_weight"].shape == (gates * 7, 7)
    assert params["l0_i2h_bias"].shape == params["l0_h2h_bias"].shape == (gates * 7,)
    assert layer.input_size is None
    layer.initialize(seed=0)
    layer(np.ones((2, 3, 11), dtype="float32"))
    assert layer.input_size == 11 and params["l0_i2h_weight"].shape == (gates * 7, 11)
    # PyTorch's count: per layer G*H*(input + H) + 2*G*H
    expected = sum(gates * 7 * ((11 if i == 0 else 7) + 7) + 2 * gates * 7 for i in range(3))
    assert count(layer) == expected


@needs_torch
@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize(("input_size", "hidden", "layers"), [(3, 4, 1), (10, 6, 2), (1, 1, 3)])
def test_parameter_count_equals_torch(kind: str, input_size: int, hidden: int, layers: int) -> None:
    import torch

    ours = getattr(nn, kind)(hidden, num_layers=layers, input_size=input_size)
    theirs = getattr(torch.nn, kind)(input_size, hidden, num_layers=layers)
    assert count(ours) == sum(p.numel() for p in theirs.parameters())
    for i in range(layers):
        for mine, name in (("i2h_weight", "weight_ih"), ("h2h_weight", "weight_hh"),
                           ("i2h_bias", "bias_ih"), ("h2h_bias", "bias_hh")):
            assert getattr(ours, f"l{i}_{mine}").shape == tuple(getattr(theirs, f"{name}_l{i}").shape)


_TORCH_NAMES = {"i2h_weight": "weight_ih", "h2h_weight": "weight_hh", "i2h_bias": "bias_ih", "h2h_bias": "bias_hh"}


def _torch_name(ours: str) -> str:
    """deferral's ``l0_i2h_weight`` / ``r1_h2h_bias`` as torch's ``weight_ih_l0`` / ``bias_hh_l1_reverse``."""
    prefix, kind = ours.split("_", 1)
    return f"{_TORCH_NAMES[kind]}_l{prefix[1:]}{'_reverse' if prefix[0] == 'r' else ''}"


def _torch_recurrent(layer: Any, kind: str, input_size: int, batch_first: bool) -> Any:
    """torch's module of the same configuration with ``layer``'s weights; its state_dict lists
    them in deferral's order."""
    import torch

    module = getattr(torch.nn, kind)(input_size, layer.hidden_size, num_layers=layer.num_layers,
                                     batch_first=batch_first, bidirectional=layer.bidirectional).double()
    names = [_torch_name(n) for n in layer.collect_params()]
    assert list(module.state_dict()) == names
    module.load_state_dict({n: torch.from_numpy(w.astype(np.float64)) for n, w in zip(names, layer.get_weights())})
    return module


@needs_torch
@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_recurrent_matches_torch_modules(kind: str, batch_first: bool, bidirectional: bool) -> None:
    """Outputs, final states and parameter layout agree with torch.nn.RNN/GRU/LSTM with the
    same weights, one- and bidirectional: states are (num_layers * directions, N, H), layer 0
    forward first, then layer 0 reverse, ..."""
    import torch

    rng = np.random.default_rng(7)
    layer = make(kind, hidden=6, num_layers=2, batch_first=batch_first, bidirectional=bidirectional)
    layer.initialize(seed=11, dtype="float64")
    x = rng.standard_normal((3, 5, 4) if batch_first else (5, 3, 4))
    out = layer(x)
    assert out.shape[-1] == 6 * (2 if bidirectional else 1)
    module = _torch_recurrent(layer, kind, 4, batch_first)
    theirs, _ = module(torch.from_numpy(x))
    np.testing.assert_allclose(out, host(theirs), rtol=1e-12, atol=1e-13)

    depth = 4 if bidirectional else 2
    assert [tuple(s.shape) for s in layer.begin_state(3)] == [(depth, 3, 6)] * (2 if kind == "LSTM" else 1)
    states = [rng.standard_normal((depth, 3, 6)) for _ in range(2 if kind == "LSTM" else 1)]
    out, new = layer(x, states)
    given = tuple(torch.from_numpy(s) for s in states)
    theirs, final = module(torch.from_numpy(x), given if kind == "LSTM" else given[0])
    final = final if kind == "LSTM" else (final,)
    np.testing.assert_allclose(out, host(theirs), rtol=1e-12, atol=1e-13)
    for got, want in zip(new, final):
        np.testing.assert_allclose(got, host(want), rtol=1e-12, atol=1e-13)


@needs_torch
def test_torch_autograd_through_lstm_matches_torch() -> None:
    import torch

    x = np.random.default_rng(3).standard_normal((2, 4, 3))
    layer = make("LSTM", hidden=5, num_layers=2)
    layer.initialize(seed=4, dtype="float64", backend="torch")
    out, (h, c) = layer(x, layer.begin_state(2))
    loss = (out ** 2).sum() + h.sum() + (c * 0.5).sum()
    loss.backward()
    module = _torch_recurrent(layer, "LSTM", 3, True)
    theirs, (th, tc) = module(torch.from_numpy(x))
    ((theirs ** 2).sum() + th.sum() + (tc * 0.5).sum()).backward()
    for i in range(2):
        for mine, name in (("i2h_weight", "weight_ih"), ("h2h_weight", "weight_hh"),
                           ("i2h_bias", "bias_ih"), ("h2h_bias", "bias_hh")):
            got = getattr(layer, f"l{i}_{mine}").data().grad
            assert got is not None, f"no gradient reached l{i}_{mine}"
            np.testing.assert_allclose(host(got), host(getattr(module, f"{name}_l{i}").grad),
                                       rtol=1e-10, atol=1e-12)


def test_input_size_given_materializes_at_initialize() -> None:
    layer = nn.LSTM(4, num_layers=2, input_size=3)
    assert all(p.state == "shaped" for p in layer.collect_params().values())
    layer.initialize(seed=0)
    assert all(p.state == "materialized" for p in layer.collect_params().values())
    assert layer(np.ones((1, 2, 3), dtype="float32")).shape == (1, 2, 4)


def test_deferred_layer_materializes_as_a_whole_on_first_call() -> None:
    layer = nn.GRU(4, num_layers=2)
    layer.initialize(seed=0)
    # Deeper layers' shapes are known, but the layer is one group: nothing materializes yet.
    states = {n: p.state for n, p in layer.collect_params().items()}
    assert states["l0_i2h_weight"] == "declared" and states["l1_i2h_weight"] == "shaped"
    assert not any(p.initialized for p in layer.collect_params().values())
    layer(np.ones((2, 3, 9), dtype="float32"))
    assert all(p.initialized for p in layer.collect_params().values())


class Tagger(nn.Block):
    """A custom block: LSTM encoder with a residual self-attention and a Dense head."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(8, num_layers=2)
        self.attn = nn.MultiHeadAttention(2, 8)
        self.head = nn.Dense(3)

    def forward(self, x: Any, mask: Any = None) -> Any:
        h = self.rnn(x)
        return self.head(ops.add(h, self.attn(h, mask=mask)))


def test_structural_names_inside_a_custom_block() -> None:
    net = Tagger()
    names = list(net.collect_params())
    assert names[:4] == ["rnn.l0_i2h_weight", "rnn.l0_h2h_weight", "rnn.l0_i2h_bias", "rnn.l0_h2h_bias"]
    assert "attn.query.weight" in names and "attn.output.bias" in names
    net.initialize(seed=0)
    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype("float32")
    out = net(x, mask=np.tril(np.ones((5, 5), dtype=bool)))
    assert out.shape == (2, 5, 3)
    assert net.rnn.l0_i2h_weight.shape == (32, 3)


def test_begin_state_shapes_and_like() -> None:
    lstm = nn.LSTM(6, num_layers=3)
    h, c = lstm.begin_state(4)
    assert h.shape == c.shape == (3, 4, 6) and h.dtype == np.float32 and not h.any()
    [h] = nn.RNN(2).begin_state(1, like=np.zeros(1, dtype="float64"))
    assert h.dtype == np.float64 and h.shape == (1, 1, 2)
    with pytest.raises(ValueError, match="batch_size"):
        lstm.begin_state(0)


def test_repr() -> None:
    assert repr(nn.RNN(4, num_layers=2)) == "RNN(-1 -> 4, NTC, num_layers=2, tanh)"
    assert repr(nn.LSTM(4, batch_first=False, input_size=3)) == "LSTM(3 -> 4, TNC, num_layers=1)"
    text = repr(nn.MultiHeadAttention(2, 8, key_units=5))
    assert text.startswith("MultiHeadAttention(-1/5/-1 -> 8, num_heads=2") and "(query): Dense(-1 -> 8" in text


# -- constructor validation --------------------------------------------------------------------
@pytest.mark.parametrize(("factory", "message"), [
    (lambda: nn.LSTM(-3), "positive integer for hidden_size. Received: hidden_size=-3"),
    (lambda: nn.GRU(4, num_layers=0), "num_layers=0"),
    (lambda: nn.RNN(4, activation="sigmoid"), "activation='sigmoid'"),
    (lambda: nn.RNN(4, batch_first="yes"), "batch_first='yes'"),
    (lambda: nn.LSTM(4, input_size=0), "input_size=0"),
    (lambda: nn.LSTM(True), "hidden_size=True"),
    (lambda: nn.MultiHeadAttention(3, 8), "units must be divisible by num_heads"),
    (lambda: nn.MultiHeadAttention(2, None), "units=None"),
    (lambda: nn.MultiHeadAttention(0, 8), "num_heads=0"),
    (lambda: nn.MultiHeadAttention(2, 8, key_units=-1), "key_units=-1"),
])
def test_constructor_arguments_are_validated(factory: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        factory()


# -- errors leave the model unchanged ------------------------------------------------------------
@pytest.mark.parametrize(("bad", "message"), [
    (lambda: np.ones((3, 5), dtype="float32"), "rank 3"),
    (lambda: np.ones((2, 0, 5), dtype="float32"), r"time axis \(axis 1\) is empty"),
])
def test_bad_recurrent_input_changes_nothing(bad: Any, message: str) -> None:
    # The Dense before the LSTM accepts the input (and materializes), then the LSTM rejects it:
    # the failed first call must undo the Dense as well.
    net = nn.Sequential([nn.Dense(3), nn.LSTM(4, num_layers=2)])
    net.initialize(seed=0)
    for _stage in ("deferred", "materialized"):
        before = snapshot(net)
        with pytest.raises(ValueError, match=message) as info:
            net(bad())
        assert "LSTM '1'" in str(info.value)
        assert snapshot(net) == before
        assert net(np.ones((2, 4, 5), dtype="float32")).shape == (2, 4, 4)


def test_bad_states_change_nothing() -> None:
    lstm = nn.LSTM(4, num_layers=2)
    lstm.initialize(seed=0)
    x = np.ones((2, 3, 5), dtype="float32")
    cases = [
        ([np.zeros((2, 2, 4), "float32")], ValueError, r"list \[h, c\] of 2"),
        (np.zeros((2, 2, 4), "float32"), ValueError, r"list \[h, c\]"),
        ([np.zeros((2, 3, 4), "float32")] * 2, deferral.ShapeMismatchError, r"\(2, 2, 4\). Received shape \(2, 3, 4\)"),
        ([np.zeros((1, 2, 4), "float32")] * 2, deferral.ShapeMismatchError, "state h"),
        ([[[0.0]]] * 2, TypeError, "state h as an array"),
    ]
    for _stage in ("deferred", "materialized"):
        for states, error, message in cases:
            before = snapshot(lstm)
            with pytest.raises(error, match=message):
                lstm(x, states)
            assert snapshot(lstm) == before
        lstm(x)


def test_feature_mismatch_message_names_the_layer() -> None:
    net = nn.Sequential([nn.GRU(4, input_size=3)])
    net.initialize(seed=0)
    before = snapshot(net)
    with pytest.raises(deferral.ShapeMismatchError) as info:
        net(np.ones((2, 5, 6), dtype="float32"))
    text = str(info.value)
    assert "GRU '0'" in text and "expected 3 input features" in text and "(2, 5, 6)" in text
    assert snapshot(net) == before


# -- attention on NumPy --------------------------------------------------------------------------
@pytest.mark.parametrize("heads", [1, 2, 4])
def test_self_attention_matches_reference(heads: int) -> None:
    rng = np.random.default_rng(heads)
    attn = nn.MultiHeadAttention(heads, 8, bias_initializer=BIAS)
    attn.initialize(seed=1, dtype="float64")
    x = rng.standard_normal((3, 5, 6))
    out = attn(x)
    assert out.shape == (3, 5, 8) and out.dtype == np.float64
    np.testing.assert_allclose(out, reference_attention(x, x, x, attn.get_weights(), heads), rtol=1e-12, atol=1e-13)
    assert [p.shape for p in attn.collect_params().values()] == [(8, 6), (8,)] * 3 + [(8, 8), (8,)]


@pytest.mark.parametrize("mask_shape", [(2, 4, 7), (4, 7), (7,), (2, 1, 7), (2, 2, 4, 7), (1, 2, 1, 7)])
def test_cross_attention_with_masks_matches_reference(mask_shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(len(mask_shape))
    attn = nn.MultiHeadAttention(2, 6, bias_initializer=BIAS)
    attn.initialize(seed=2, dtype="float64")
    q, k, v = rng.standard_normal((2, 4, 5)), rng.standard_normal((2, 7, 3)), rng.standard_normal((2, 7, 9))
    mask = rng.uniform(size=mask_shape) > 0.4
    out = attn(q, k, v, mask=mask)
    want = reference_attention(q, k, v, attn.get_weights(), 2, mask)
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-13)
    assert attn.key.weight.shape == (6, 3) and attn.value.weight.shape == (6, 9)
    # A 0/1 NumPy mask means the same as the boolean one.
    np.testing.assert_array_equal(attn(q, k, v, mask=mask.astype("float32")), out)


def test_mask_semantics_true_attends() -> None:
    rng = np.random.default_rng(9)
    attn = nn.MultiHeadAttention(1, 4)
    attn.initialize(seed=0, dtype="float64")
    q, k = rng.standard_normal((1, 2, 4)), rng.standard_normal((1, 3, 4))
    v = np.zeros((1, 3, 4))
    v[0, 1] = 5.0  # only key 1 carries information
    only_one = np.zeros((1, 2, 3), dtype=bool)
    only_one[..., 1] = True
    out = attn(q, k, v, mask=only_one)
    # Attending to key 1 alone gives exactly the projection of value 1.
    w = attn.get_weights()
    v1 = v[0, 1] @ w[4].T + w[5]
    np.testing.assert_allclose(out[0], np.tile(v1 @ w[6].T + w[7], (2, 1)), rtol=1e-12, atol=1e-12)
    # A row with no allowed key averages the values uniformly (no NaN).
    none = np.zeros((1, 2, 3), dtype=bool)
    mean = (v[0] @ w[4].T + w[5]).mean(axis=0) @ w[6].T + w[7]
    np.testing.assert_allclose(attn(q, k, v, mask=none)[0], np.tile(mean, (2, 1)), rtol=1e-9, atol=1e-12)


def test_value_defaults_to_key_and_key_to_query() -> None:
    rng = np.random.default_rng(1)
    attn = nn.MultiHeadAttention(2, 4)
    attn.initialize(seed=0)
    q, k = rng.standard_normal((2, 3, 4)).astype("float32"), rng.standard_normal((2, 5, 4)).astype("float32")
    np.testing.assert_array_equal(attn(q), attn(q, q, q))
    np.testing.assert_array_equal(attn(q, k), attn(q, k, k))


def test_attention_without_bias() -> None:
    rng = np.random.default_rng(2)
    attn = nn.MultiHeadAttention(2, 4, use_bias=False)
    assert list(attn.collect_params()) == ["query.weight", "key.weight", "value.weight", "output.weight"]
    attn.initialize(seed=0, dtype="float64")
    x = rng.standard_normal((2, 3, 5))
    np.testing.assert_allclose(attn(x), reference_attention(x, x, x, attn.get_weights(), 2, use_bias=False),
                               rtol=1e-12, atol=1e-13)


def test_attention_sizes_given_materialize_at_initialize() -> None:
    attn = nn.MultiHeadAttention(2, 8, in_units=3, key_units=4, value_units=5)
    attn.initialize(seed=0)
    assert all(p.initialized for p in attn.collect_params().values())
    out = attn(np.ones((1, 2, 3), "float32"), np.ones((1, 6, 4), "float32"), np.ones((1, 6, 5), "float32"))
    assert out.shape == (1, 2, 8)
    deferred = nn.MultiHeadAttention(2, 8)
    deferred.initialize(seed=0)
    states = {n: p.state for n, p in deferred.collect_params().items()}
    assert states["query.weight"] == "declared" and states["output.weight"] == "materialized"


@pytest.mark.parametrize(("args", "kwargs", "error", "message"), [
    (lambda r: (r((2, 3)),), {}, ValueError, "query of rank 3"),
    (lambda r: (r((2, 3, 4)), r((2, 5, 4)), r((2, 6, 4))), {}, deferral.ShapeMismatchError, "same length Tk"),
    (lambda r: (r((2, 3, 4)), r((3, 5, 4))), {}, deferral.ShapeMismatchError, "same batch size"),
    (lambda r: (r((2, 3, 4)),), {"mask": np.ones((2, 3, 4), bool)}, deferral.ShapeMismatchError, "mask"),
    (lambda r: (r((2, 3, 4)),), {"mask": np.ones((2, 2, 2, 3, 3), bool)}, deferral.ShapeMismatchError, "mask"),
    (lambda r: (r((2, 3, 4)),), {"mask": [[True]]}, TypeError, "mask as an array"),
    (lambda r: (r((2, 3, 4)), r((2, 5, 7)), r((2, 5, 4))), {}, deferral.ShapeMismatchError, "Dense 'key'"),
])
def test_bad_attention_input_changes_nothing(args: Any, kwargs: dict[str, Any], error: type, message: str) -> None:
    rng = np.random.default_rng(0)

    def r(shape: tuple[int, ...]) -> np.ndarray:
        return rng.standard_normal(shape).astype("float32")

    attn = nn.MultiHeadAttention(2, 4, key_units=4)
    attn.initialize(seed=0)
    for _stage in ("deferred", "materialized"):
        before = snapshot(attn)
        with pytest.raises(error, match=message):
            attn(*args(r), **kwargs)
        assert snapshot(attn) == before
        attn(r((2, 3, 4)))
    assert all(p.initialized for p in attn.collect_params().values())


@needs_torch
@pytest.mark.parametrize("same_sizes", [True, False])
def test_attention_matches_torch_multihead_attention(same_sizes: bool) -> None:
    import torch

    rng = np.random.default_rng(4)
    units, heads = 8, 2
    attn = nn.MultiHeadAttention(heads, units, bias_initializer=BIAS)
    attn.initialize(seed=6, dtype="float64")
    ck, cv = (units, units) if same_sizes else (3, 5)
    q, k, v = rng.standard_normal((2, 4, units)), rng.standard_normal((2, 6, ck)), rng.standard_normal((2, 6, cv))
    mask = rng.uniform(size=(2, 4, 6)) > 0.3
    mask[..., 0] = True  # torch gives NaN for a fully masked row
    out = attn(q, k, v, mask=mask)
    assert count(attn) == (4 * units * units + 4 * units if same_sizes else
                           units * (units + ck + cv + units) + 4 * units)

    module = torch.nn.MultiheadAttention(units, heads, batch_first=True, kdim=ck, vdim=cv).double()
    wq, bq, wk, bk, wv, bv, wo, bo = (torch.from_numpy(a) for a in attn.get_weights())
    with torch.no_grad():
        if same_sizes:
            module.in_proj_weight.copy_(torch.cat([wq, wk, wv]))
        else:
            module.q_proj_weight.copy_(wq)
            module.k_proj_weight.copy_(wk)
            module.v_proj_weight.copy_(wv)
        module.in_proj_bias.copy_(torch.cat([bq, bk, bv]))
        module.out_proj.weight.copy_(wo)
        module.out_proj.bias.copy_(bo)
    assert count(attn) == sum(p.numel() for p in module.parameters())
    # torch's boolean attn_mask marks positions NOT allowed, per (batch * heads).
    blocked = torch.from_numpy(np.repeat(~mask, heads, axis=0))
    theirs, _ = module(*(torch.from_numpy(a) for a in (q, k, v)), attn_mask=blocked, need_weights=False)
    np.testing.assert_allclose(out, host(theirs), rtol=1e-12, atol=1e-13)


@needs_torch
def test_torch_autograd_through_attention() -> None:
    import torch

    rng = np.random.default_rng(5)
    attn = nn.MultiHeadAttention(2, 6)
    attn.initialize(seed=1, dtype="float64", backend="torch")
    x = torch.tensor(rng.standard_normal((2, 3, 6)), requires_grad=True)
    mask = torch.from_numpy(rng.uniform(size=(2, 3, 3)) > 0.3)
    attn(x, mask=mask).pow(2).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for name, param in attn.collect_params().items():
        assert param.data().grad is not None, f"no gradient reached {name}"
    # The gradient equals the one of the same computation done by hand in torch.
    wq, bq, wk, bk, wv, bv, wo, bo = (p.data().detach().clone().requires_grad_() for p in attn.collect_params().values())
    x2 = x.detach().clone().requires_grad_()
    Q, K, V = (x2 @ w.T + b for w, b in ((wq, bq), (wk, bk), (wv, bv)))
    split = [t.reshape(2, 3, 2, 3).transpose(1, 2) for t in (Q, K, V)]
    scores = (split[0] @ split[1].transpose(-1, -2)) / math.sqrt(3)
    scores = torch.where(mask[:, None], scores, torch.tensor(-1e9, dtype=scores.dtype))
    ctx = (scores.softmax(-1) @ split[2]).transpose(1, 2).reshape(2, 3, 6)
    (ctx @ wo.T + bo).pow(2).sum().backward()
    np.testing.assert_allclose(host(x.grad), host(x2.grad), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(host(attn.query.weight.data().grad), host(wq.grad), rtol=1e-10, atol=1e-12)


# -- across backends -------------------------------------------------------------------------
def _pair(factory: Any, backend: str, dtype: str, seed: int = 13) -> tuple[nn.Block, nn.Block]:
    ref, net = factory(), factory()
    ref.initialize(seed=seed, dtype=dtype, backend="numpy")
    net.initialize(seed=seed, dtype=dtype, backend=backend)
    return ref, net


def _same_bits(net: nn.Block, ref: nn.Block) -> None:
    got, want = net.get_weights(), ref.get_weights()
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert np.array_equal(bits(a), bits(b))


@pytest.mark.parametrize("backend", FRAMEWORKS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
def test_recurrent_bit_identity_and_forward_across_backends(backend: str, dtype: str, kind: str) -> None:
    rng = np.random.default_rng(8)
    for batch_first in (True, False):
        ref, net = _pair(lambda bf=batch_first: make(kind, num_layers=2, batch_first=bf), backend, dtype)
        x = rng.standard_normal((3, 4, 2) if batch_first else (4, 3, 2)).astype(dtype)
        np.testing.assert_allclose(host(net(x)), ref(x), **TOL[dtype])
        _same_bits(net, ref)
        states = [rng.standard_normal((2, 3, 5)).astype(dtype) for _ in ref.begin_state(3)]
        out, new = net(x, states)  # NumPy states are converted to the backend's arrays
        want, want_new = ref(x, states)
        np.testing.assert_allclose(host(out), want, **TOL[dtype])
        for a, b in zip(new, want_new):
            np.testing.assert_allclose(host(a), b, **TOL[dtype])
        # begin_state on a materialized layer gives the backend's own arrays
        assert deferral.load_backend(backend).is_native(net.begin_state(3)[0])


@pytest.mark.parametrize("backend", FRAMEWORKS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_attention_bit_identity_and_forward_across_backends(backend: str, dtype: str) -> None:
    rng = np.random.default_rng(10)
    ref, net = _pair(lambda: nn.MultiHeadAttention(4, 8, bias_initializer=BIAS), backend, dtype)
    q, k, v = (rng.standard_normal(s).astype(dtype) for s in ((2, 5, 3), (2, 6, 4), (2, 6, 7)))
    mask = rng.uniform(size=(2, 5, 6)) > 0.5
    np.testing.assert_allclose(host(net(q, k, v, mask=mask)), ref(q, k, v, mask=mask), **TOL[dtype])
    _same_bits(net, ref)
    np.testing.assert_allclose(host(net(q, k, v)), ref(q, k, v), **TOL[dtype])


@needs_tf
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_tf_function_recurrent_and_attention(dtype: str) -> None:
    import tensorflow as tf

    rng = np.random.default_rng(12)
    x = rng.standard_normal((3, 4, 2)).astype(dtype)
    spec = getattr(tf, dtype)
    for kind in GATES:
        ref = make(kind, num_layers=2)
        ref.initialize(seed=2, dtype=dtype)
        net = make(kind, num_layers=2)
        net.initialize(seed=2, dtype=dtype, backend="tensorflow")
        # The first call inside tf.function materializes the same bits.
        graph = tf.function(lambda t, net=net: net(t), input_signature=[tf.TensorSpec([None, 4, 2], spec)])
        np.testing.assert_allclose(graph(tf.constant(x)).numpy(), ref(x), **TOL[dtype])
        _same_bits(net, ref)
        np.testing.assert_allclose(graph(tf.constant(x[:1])).numpy(), ref(x[:1]), **TOL[dtype])
        with_states = tf.function(lambda t, s, net=net: net(t, s))
        out, new = with_states(tf.constant(x), net.begin_state(3))
        want, want_new = ref(x, ref.begin_state(3))
        np.testing.assert_allclose(out.numpy(), want, **TOL[dtype])
        for a, b in zip(new, want_new):
            np.testing.assert_allclose(a.numpy(), b, **TOL[dtype])
        # An unknown sequence length cannot be unrolled: a clear error naming the layer.
        unknown = tf.function(lambda t, net=net: net(t), input_signature=[tf.TensorSpec([None, None, 2], spec)])
        with pytest.raises(ValueError, match=f"{kind}: the sequence length is unknown"):
            unknown(tf.constant(x))

    ref, net = _pair(lambda: nn.MultiHeadAttention(2, 6), "tensorflow", dtype)
    q, k = rng.standard_normal((2, 3, 4)).astype(dtype), rng.standard_normal((2, 5, 3)).astype(dtype)
    mask = rng.uniform(size=(2, 3, 5)) > 0.5
    sig = [tf.TensorSpec([None, None, 4], spec), tf.TensorSpec([None, None, 3], spec),
           tf.TensorSpec([None, None, None], tf.bool)]
    graph = tf.function(lambda a, b, m: net(a, b, mask=m), input_signature=sig)  # lengths may vary
    np.testing.assert_allclose(graph(q, k, mask).numpy(), ref(q, k, mask=mask), **TOL[dtype])
    _same_bits(net, ref)
    np.testing.assert_allclose(graph(q[:, :2], k[:, :4], mask[:, :2, :4]).numpy(),
                               ref(q[:, :2], k[:, :4], mask=mask[:, :2, :4]), **TOL[dtype])


@needs_tf
def test_tf_gradients_flow_through_lstm_and_attention() -> None:
    import tensorflow as tf

    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype("float32")
    net = Tagger()
    net.initialize(seed=0, backend="tensorflow")
    net(x)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(net(x) ** 2)
    grads = tape.gradient(loss, net.parameters())
    assert all(g is not None for g in grads)


# -- the ops -------------------------------------------------------------------------------------
def test_numpy_seq_ops() -> None:
    x = np.arange(24.0).reshape(2, 3, 4)
    parts = ops.split(x, 2, -1)
    assert [p.shape for p in parts] == [(2, 3, 2)] * 2 and np.array_equal(np.concatenate(parts, -1), x)
    with pytest.raises(ValueError, match="does not divide into 3 equal parts"):
        ops.split(x, 3, -1)
    slices = ops.unstack(x, 1)
    assert isinstance(slices, list) and len(slices) == 3 and np.array_equal(slices[1], x[:, 1])
    assert np.array_equal(ops.stack(slices, 1), x)
    out = ops.where(np.array([True, False, True, False]), x, -1.0)
    assert out.dtype == x.dtype and (out[..., 1] == -1).all() and np.array_equal(out[..., 0], x[..., 0])
    zeros = ops.zeros((2, 5), like=np.ones(1, dtype="float32"))
    assert zeros.dtype == np.float32 and zeros.shape == (2, 5) and not zeros.any()


@needs_torch
def test_torch_where_accepts_numpy_and_integer_conditions() -> None:
    import torch

    a = torch.ones(2, 3, dtype=torch.float64)
    got = ops.where(np.array([1, 0, 2]), a, -5.0)
    assert got.dtype == torch.float64 and got.tolist() == [[1.0, -5.0, 1.0]] * 2
    with pytest.raises(ValueError, match="equal parts"):
        ops.split(a, 2, -1)


@needs_tf
def test_tf_where_scalar_takes_the_other_dtype() -> None:
    import tensorflow as tf

    a = tf.ones((2, 3), dtype=tf.float64)
    got = ops.where(tf.constant([1, 0, 2]), a, -5.0)
    assert got.dtype == tf.float64 and got.numpy().tolist() == [[1.0, -5.0, 1.0]] * 2
    zeros = ops.zeros((2,), like=a)
    assert zeros.dtype == tf.float64


def test_shape_only_inference() -> None:
    lstm = nn.LSTM(4, num_layers=2)
    assert lstm.infer_shape((None, 5, 3)) == (None, 5, 4)
    assert lstm.l0_i2h_weight.shape == (16, 3) and lstm.l0_i2h_weight.state == "shaped"
    gru = nn.GRU(3, batch_first=False)
    assert gru.infer_shape((6, None, 2)) == (6, None, 3)
    with pytest.raises(ValueError, match="sequence length is unknown"):
        nn.RNN(2).infer_shape((None, None, 3))
    attn = nn.MultiHeadAttention(2, 8)
    assert attn.infer_shape((None, None, 3), (None, None, 5)) == (None, None, 8)
    assert (attn.query.weight.shape, attn.key.weight.shape, attn.value.weight.shape) == ((8, 3), (8, 5), (8, 5))
    attn.initialize(seed=0)
    assert all(p.initialized for p in attn.collect_params().values())
