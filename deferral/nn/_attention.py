"""Multi-head scaled dot-product attention."""

from __future__ import annotations

import math
import sys
from typing import Any

from .. import init as _init
from .. import ops
from ..errors import ShapeMismatchError
from ._args import number as _number
from ._args import positive_int as _positive_int
from ._block import Block
from ._dense import Dense
from ._inputs import require_float, require_nonempty
from ._rnn import _fmt, to_backend

__all__ = ["MultiHeadAttention"]

#: The score given to masked positions before the softmax (as Keras; a fully masked row
#: becomes a uniform average instead of NaN). float16 cannot hold it and uses its own minimum.
MASKED_SCORE = -1e9
_MASKED_SCORE_FLOAT16 = -65504.0


class MultiHeadAttention(Block):
    """Multi-head attention (Vaswani et al.), as ``torch.nn.MultiheadAttention`` and Keras'
    ``MultiHeadAttention``.

    The query, key and value are projected to ``units`` features each (children ``query``,
    ``key``, ``value``: :class:`Dense` layers), split into ``num_heads`` heads of
    ``units // num_heads`` features, attended per head with
    ``softmax(q k^T / sqrt(units // num_heads)) v``, joined, and projected by ``output``
    (a :class:`Dense` ``units -> units``). Head ``i`` uses features
    ``[i*head_size, (i+1)*head_size)`` of each projection, as PyTorch does.

    Shapes: ``query`` ``(N, Tq, Cq)``, ``key`` ``(N, Tk, Ck)``, ``value`` ``(N, Tk, Cv)``;
    the output is ``(N, Tq, units)``. ``Cq``, ``Ck`` and ``Cv`` are inferred from the first
    call unless given.

    Args:
        num_heads: the number of heads.
        units: the model dimension: the size of each projection and of the output (PyTorch's
            ``embed_dim``; Keras' ``num_heads * key_dim``). Required, and divisible by
            ``num_heads``.
        use_bias: whether the four projections add a bias.
        in_units: the query feature size ``Cq``, if known.
        key_units: the key feature size ``Ck``, if known.
        value_units: the value feature size ``Cv``, if known. With all three known,
            ``initialize()`` materializes the layer at once.
        weight_initializer: the projections' weight initializer (default: the one given to
            ``initialize()``, else Xavier uniform).
        bias_initializer: the projections' bias initializer (default zeros).
        dropout: the probability of zeroing each attention weight (after the softmax, before
            the weighted sum of the values) in training mode, the survivors scaled by
            ``1 / (1 - dropout)``: PyTorch's ``dropout`` argument. In inference mode (the
            default; see ``net.train()``) nothing is dropped. In ``[0, 1)``, default 0.

    Call ``attn(query, key=None, value=None, mask=None)``: ``key`` defaults to ``query``
    (self-attention) and ``value`` to ``key``. ``mask`` is boolean (or 0/1), broadcastable to
    ``(N, Tq, Tk)`` or, with a head axis, ``(N, num_heads, Tq, Tk)``; ``True`` means the
    query position may attend to the key position (Keras' convention; PyTorch's boolean
    ``attn_mask`` is the opposite). Masked scores are set to ``-1e9`` before the softmax, so a
    row with no allowed position averages every value uniformly.

    Example:
        >>> import numpy as np
        >>> from deferral import nn
        >>> attn = nn.MultiHeadAttention(num_heads=4, units=32)
        >>> attn.query.weight.shape, attn.output.weight.shape
        ((32, -1), (32, 32))
        >>> _ = attn.initialize(seed=0)
        >>> x = np.ones((2, 5, 12), dtype="float32")        # (N, Tq, Cq)
        >>> memory = np.ones((2, 7, 3), dtype="float32")    # (N, Tk, Ck): cross-attention
        >>> attn(x, memory).shape, attn.key.weight.shape
        ((2, 5, 32), (32, 3))
    """

    def __init__(
        self,
        num_heads: int,
        units: int,
        use_bias: bool = True,
        in_units: int | None = None,
        key_units: int | None = None,
        value_units: int | None = None,
        weight_initializer: _init.InitializerLike = None,
        bias_initializer: _init.InitializerLike = "zeros",
        dropout: float = 0.0,
    ) -> None:
        cls = "MultiHeadAttention"
        num_heads = _positive_int(cls, "num_heads", num_heads)
        rate = _number(cls, "dropout", dropout, 0.0, 1.0, high_open=True)
        if units is None:
            raise ValueError(
                f"{cls}: expected a positive integer for units (the model dimension: PyTorch's "
                "embed_dim, Keras' num_heads * key_dim). Received: units=None"
            )
        units = _positive_int(cls, "units", units)
        if units % num_heads:
            raise ValueError(
                f"{cls}: units must be divisible by num_heads (each head gets units // num_heads "
                f"features). Received: units={units}, num_heads={num_heads}"
            )
        for name, value in (("in_units", in_units), ("key_units", key_units), ("value_units", value_units)):
            if value is not None:
                _positive_int(cls, name, value)
        super().__init__()
        self.dropout = rate
        self.num_heads = num_heads
        self.units = units
        self.head_size = units // num_heads
        self._scale = 1.0 / math.sqrt(self.head_size)

        def projection(size: int | None) -> Dense:
            return Dense(units, use_bias=use_bias, in_units=size, weight_initializer=weight_initializer,
                         bias_initializer=bias_initializer)

        self.query = projection(in_units)
        self.key = projection(key_units)
        self.value = projection(value_units)
        self.output = projection(units)

    def forward(self, query: Any, key: Any = None, value: Any = None, mask: Any = None) -> Any:
        key = query if key is None else key
        value = key if value is None else value
        for name, array in (("query", query), ("key", key), ("value", value)):
            require_float(self, array, name)
        if not ops.shape(key)[1]:  # no keys (every backend would do something else), or unknown
            self.build(ops.shape(query), ops.shape(key), ops.shape(value))
        if mask is not None:
            mask = self._prepare_mask(mask, ops.shape(query), ops.shape(key))

        heads = self.num_heads
        q = self._split_heads(ops.multiply(self.query(query), self._scale), heads)
        k = self._split_heads(self.key(key), heads)
        v = self._split_heads(self.value(value), heads)
        scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2)))  # (N, heads, Tq, Tk)
        if mask is not None:
            fill = _MASKED_SCORE_FLOAT16 if self.output.weight.dtype == "float16" else MASKED_SCORE
            scores = ops.where(mask, scores, fill)
        weights = ops.softmax(scores, -1)
        if self.dropout and self.training:
            weights = ops.dropout(weights, self.dropout)
        context = ops.matmul(weights, v)  # (N, heads, Tq, head_size)
        parts = ops.unstack(context, 1)
        return self.output(parts[0] if heads == 1 else ops.concat(parts, -1))  # (N, Tq, units)

    @staticmethod
    def _split_heads(x: Any, heads: int) -> Any:
        """``(N, T, units) -> (N, heads, T, head_size)``, head ``i`` taking the ``i``-th slice."""
        return ops.stack(ops.split(x, heads, -1) if heads > 1 else [x], 1)

    # -- build -------------------------------------------------------------------------------
    def build(self, qs: Any, ks: Any = None, vs: Any = None, mask: Any = None) -> None:
        """Check that query, key and value have rank 3, one batch size and one key length.

        The projections complete their own input sizes when they are called.
        """
        ks = qs if ks is None else ks
        vs = ks if vs is None else vs
        where = self.describe()
        for name, shape, dims in (("query", qs, "(N, Tq, Cq)"), ("key", ks, "(N, Tk, Ck)"),
                                  ("value", vs, "(N, Tk, Cv)")):
            if len(shape) != 3:
                raise ValueError(
                    f"{where}: expected the {name} of rank 3 {dims}. Received shape {_fmt(shape)}. "
                    "Add the missing axis, e.g. x.reshape(1, *x.shape) for one sequence."
                )
        if ks[1] is not None and vs[1] is not None and ks[1] != vs[1]:
            raise ShapeMismatchError(
                f"{where}: the key and the value must have the same length Tk (one value per key). "
                f"Received key shape {_fmt(ks)}, value shape {_fmt(vs)}."
            )
        require_nonempty(self, ks, (1,), ("key length Tk",),
                         "Attention needs at least one key to attend to (the softmax of nothing is undefined).")
        batches = {b for b in (qs[0], ks[0], vs[0]) if b is not None}
        if len(batches) > 1:
            raise ShapeMismatchError(
                f"{where}: the query, key and value must have the same batch size N. Received "
                f"query {_fmt(qs)}, key {_fmt(ks)}, value {_fmt(vs)}."
            )

    def _prepare_mask(self, mask: Any, qs: tuple[Any, ...], ks: tuple[Any, ...]) -> Any:
        """Convert ``mask`` to a boolean array of this backend, checked and ready to broadcast
        against the scores ``(N, heads, Tq, Tk)``."""
        where = self.describe()
        np = sys.modules.get("numpy")
        if np is not None and isinstance(mask, np.ndarray) and mask.dtype != np.bool_:
            mask = mask != 0
        mask = to_backend(mask, self.output.weight, where, "the mask", None)
        shape = ops.shape(mask)
        target = (qs[0], self.num_heads, qs[1], ks[1])
        wanted = target if len(shape) == 4 else target[:1] + target[2:]
        ok = 1 <= len(shape) <= 4 and all(
            d == 1 or d is None or w is None or d == w for d, w in zip(shape[::-1], wanted[::-1])
        )
        if not ok:
            raise ShapeMismatchError(
                f"{where}: expected a mask broadcastable to (N, Tq, Tk) = {_fmt(wanted[-3:])} or "
                f"(N, num_heads, Tq, Tk) = {_fmt(target)}. Received mask shape {_fmt(shape)}."
            )
        return ops.stack([mask], 1) if len(shape) == 3 else mask

    def _extra_repr(self) -> str:
        sizes = "/".join(str(d.weight.shape[1]) for d in (self.query, self.key, self.value))
        drop = f", dropout={self.dropout:g}" if self.dropout else ""
        return f"{sizes} -> {self.units}, num_heads={self.num_heads}{drop}"
