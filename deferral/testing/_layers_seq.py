"""Conformance checks for the sequence family: RNN, GRU, LSTM, MultiHeadAttention (the seq ops
themselves are checked with every other op, by :mod:`deferral.testing._opchecks`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from .. import ops
from ..errors import ShapeMismatchError
from ..nn import GRU, LSTM, RNN, Block, MultiHeadAttention
from ..registry import Backend
from ._base import ConformanceBase
from ._reference import assert_bits_equal, assert_matches_reference, assert_unchanged, param_bits, snapshot

__all__ = ["SeqLayerChecks"]

_RECURRENT = {
    "RNN": lambda **kw: RNN(6, activation="relu", **kw),
    "GRU": lambda **kw: GRU(6, **kw),
    "LSTM": lambda **kw: LSTM(6, **kw),
    "RNN-bidirectional": lambda **kw: RNN(6, bidirectional=True, **kw),
    "GRU-bidirectional": lambda **kw: GRU(6, bidirectional=True, **kw),
    "LSTM-bidirectional": lambda **kw: LSTM(6, bidirectional=True, **kw),
}


class SeqLayerChecks(ConformanceBase):
    """Layers of the seq family: parameters bit-identical to the reference, outputs agree.

    Helpers are prefixed ``_seq_``: every family's checks are mixed into one class.
    """

    def _seq_require(self, under_test: Backend, *names: str) -> None:
        for name in names:
            if not ops.implements(under_test.ops, name):
                pytest.skip(f"backend {self.backend!r} does not provide the optional op {name!r}")

    def _seq_tolerance(self, device: str) -> dict[str, Any]:
        if device.lower().startswith(("cuda", "/gpu", "gpu")):
            return {"rtol": self.cuda_rtol, "atol": self.cuda_atol}
        return {"rtol": self.op_rtol * 10, "atol": self.op_atol * 10}

    def _seq_same_parameters(self, ours: Block, theirs: Block, under_test: Backend) -> None:
        mine, ref = ours.collect_params(), theirs.collect_params()
        assert list(mine) == list(ref)
        for path, param in mine.items():
            assert_matches_reference(param, under_test)
            assert_bits_equal(param_bits(param), param_bits(ref[path]), f"parameter {path!r}")

    @pytest.mark.parametrize("kind", sorted(_RECURRENT))
    def test_recurrent_layer_matches_reference(self, kind: str, under_test: Backend, reference: Backend,
                                               rng: np.random.Generator) -> None:
        """A two-layer RNN (relu) / GRU / LSTM, one- and bidirectional, with a deferred input
        size, in both layouts: parameters bit-identical to the reference, the outputs (with zero
        states, and with given NumPy states) and the new states agree with the NumPy backend's."""
        self._seq_require(under_test, "split", "stack", "unstack")
        make = _RECURRENT[kind]
        for device in self.device_list(under_test):
            for batch_first in (True, False):
                ours, theirs = make(num_layers=2, batch_first=batch_first), make(num_layers=2,
                                                                                batch_first=batch_first)
                self.initialize(ours, seed=21, device=device)
                theirs.initialize(seed=21, backend=reference.name)
                x = rng.standard_normal((3, 5, 4) if batch_first else (5, 3, 4)).astype(np.float32)
                tol = self._seq_tolerance(device)
                where = f"{kind}(batch_first={batch_first}) on {device}"
                np.testing.assert_allclose(self.host(under_test, ours(x)), theirs(x), err_msg=where, **tol)
                self._seq_same_parameters(ours, theirs, under_test)
                depth = 4 if ours.bidirectional else 2
                states = [rng.standard_normal((depth, 3, 6)).astype(np.float32) for _ in theirs.begin_state(3)]
                out, new = ours(x, states)
                want, want_new = theirs(x, states)
                np.testing.assert_allclose(self.host(under_test, out), want, err_msg=where, **tol)
                assert len(new) == len(want_new)
                for mine, ref in zip(new, want_new):
                    np.testing.assert_allclose(self.host(under_test, mine), ref, err_msg=where, **tol)

    def test_attention_matches_reference(self, under_test: Backend, reference: Backend,
                                         rng: np.random.Generator) -> None:
        """MultiHeadAttention with deferred query/key/value sizes: parameters bit-identical to
        the reference; self-attention, and cross-attention with a boolean mask (some rows
        fully masked), agree with the NumPy backend."""
        self._seq_require(under_test, "split", "stack", "unstack", "where")
        for device in self.device_list(under_test):
            tol = self._seq_tolerance(device)
            for cross in (False, True):
                ours, theirs = MultiHeadAttention(4, 16), MultiHeadAttention(4, 16)
                self.initialize(ours, seed=5, device=device)
                theirs.initialize(seed=5, backend=reference.name)
                q = rng.standard_normal((2, 5, 6)).astype(np.float32)
                args: tuple[Any, ...] = (q,)
                mask = None
                if cross:
                    args = (q, rng.standard_normal((2, 7, 3)).astype(np.float32),
                            rng.standard_normal((2, 7, 9)).astype(np.float32))
                    mask = rng.uniform(size=(2, 5, 7)) > 0.4
                    mask[0, 1] = False
                where = f"MultiHeadAttention(cross={cross}) on {device}"
                got = self.host(under_test, ours(*args, mask=mask))
                np.testing.assert_allclose(got, theirs(*args, mask=mask), err_msg=where, **tol)
                self._seq_same_parameters(ours, theirs, under_test)

    def test_bad_sequence_inputs_change_nothing(self, under_test: Backend, rng: np.random.Generator) -> None:
        """A rank-2 input to an LSTM, and a key and value of different lengths given to
        MultiHeadAttention, raise ValueError and leave the deferred and the materialized model
        exactly as they were."""
        self._seq_require(under_test, "split", "stack", "unstack", "where")
        lstm = LSTM(4)
        self.initialize(lstm, seed=2)
        for stage in ("deferred", "materialized"):
            before = snapshot(lstm)
            with pytest.raises(ValueError, match="rank 3"):
                lstm(rng.standard_normal((5, 3)).astype(np.float32))
            with pytest.raises(ShapeMismatchError, match="state"):
                lstm(rng.standard_normal((2, 5, 3)).astype(np.float32), lstm.begin_state(3))
            assert_unchanged(before, lstm, f"bad input to the {stage} LSTM")
            lstm(rng.standard_normal((2, 5, 3)).astype(np.float32))

        attn = MultiHeadAttention(2, 8)
        self.initialize(attn, seed=2)
        q = rng.standard_normal((2, 3, 4)).astype(np.float32)
        for stage in ("deferred", "materialized"):
            before = snapshot(attn)
            with pytest.raises(ShapeMismatchError, match="same length"):
                attn(q, rng.standard_normal((2, 5, 4)).astype(np.float32),
                     rng.standard_normal((2, 6, 4)).astype(np.float32))
            with pytest.raises(ShapeMismatchError, match="mask"):
                attn(q, mask=np.ones((2, 3, 4), dtype=bool))
            assert_unchanged(before, attn, f"bad input to the {stage} MultiHeadAttention")
            attn(q)
        for param in (*lstm.collect_params().values(), *attn.collect_params().values()):
            assert_matches_reference(param, under_test)

    def test_attention_dropout_in_training_mode_only(self, under_test: Backend, reference: Backend,
                                                     rng: np.random.Generator) -> None:
        """MultiHeadAttention(dropout=0.5): in inference mode, exactly the output of the same
        layer without dropout; in training mode, with one head and one key (every attention
        weight is 1), each query's context is either dropped (0) or scaled by 2, so every
        output row is the output projection's bias or its value for twice the projected value,
        and both occur."""
        self._seq_require(under_test, "split", "stack", "unstack", "dropout")
        ours, plain = MultiHeadAttention(1, 4, dropout=0.5), MultiHeadAttention(1, 4)
        self.initialize(ours, seed=9)
        self.initialize(plain, seed=9)
        q = rng.standard_normal((4, 16, 3)).astype(np.float32)
        kv = rng.standard_normal((4, 1, 3)).astype(np.float32)
        np.testing.assert_array_equal(self.host(under_test, ours(q, kv)), self.host(under_test, plain(q, kv)))
        ours.train()
        got = self.host(under_test, ours(q, kv)).reshape(-1, 4)
        weights = {name: self.host(under_test, p.data()).astype(np.float64)
                   for name, p in ours.collect_params().items()}
        value = kv.astype(np.float64)[:, 0] @ weights["value.weight"].T + weights["value.bias"]  # (N, units)
        kept = np.repeat(2.0 * value @ weights["output.weight"].T + weights["output.bias"], 16, axis=0)
        dropped = np.broadcast_to(weights["output.bias"], kept.shape)
        is_kept = np.isclose(got, kept, rtol=1e-4, atol=1e-5).all(axis=1)
        is_dropped = np.isclose(got, dropped, rtol=1e-4, atol=1e-5).all(axis=1)
        assert (is_kept | is_dropped).all(), "a training-mode output is neither a kept nor a dropped context"
        assert is_kept.any() and is_dropped.any(), f"kept {int(is_kept.sum())} of {len(got)} rows"
        assert ours.dropout == 0.5 and "dropout=0.5" in repr(ours)
